"""Convert a folder of CMU-style BVH files into AMASS-style pose files for the open body.

    python scripts/prepare_mocap.py INPUT_DIR OUT_DIR [--fps 30] [--val-subjects 06 49]
                                    [--no-mirror] [--min-change 0.01] [--keep-flips] [--body MODEL.npz]
                                    [--preset cmu|cmu_daz|PRESET.json] [--workers N | --ray[=ADDRESS]]
    python scripts/prepare_mocap.py TRAINING_ROOT OUT_DIR [--no-hdm05] [--same-person 13 14] [--plan]
                                    [--workers N | --ray[=ADDRESS]]

INPUT_DIR holding .bvh files is one folder read with --preset. A TRAINING_ROOT (a folder of such
folders, e.g. ../shared/data/mocap/train) is read whole: every sub-folder of `TRAINING_FOLDERS`
with its own preset (and, for the 30 fps DAZ-friendly folder, whose T-pose frame was cut, the rest
from a same-skeleton clip of `cmu_daz_bvh/`, the same person's where there is one); a sub-folder of
.bvh files not in the table is refused. People, not subject numbers, are split: HDM05 files are
their actor's (HDM05-bd, ...), the `papagina_martial_*` / `papagina_indian_*` DAZ files CMU subjects
135 / 94 (the training set's README), and --same-person groups CMU subject numbers that are one
person (CMU notes that happens; a group with a validation member is all validation). --no-hdm05
leaves out HDM05 (CC BY-SA 3.0; the rest is CMU's). Per-folder counts (clips, frames, people,
train/val) are printed before the conversion (--plan stops there) and after it. All folders'
clips run as one batch, each with its folder's preset.

Per BVH file (skeleton preset `cmu` by default: the main training set's 31-joint skeleton;
`cmu_daz` for the extra set in cgspeed's DAZ-friendly release, whose first frame, a T-pose, is the
rest and is left out). Run it once per folder with the same OUT_DIR to pool several sets.

1. Subsample to --fps (nearest source frame; 120 -> 30 fps keeps every 4th frame).
2. Rotation transfer onto the body's rest skeleton (`core.mocap.transfer`): poses are SMPL-H
   axis-angle (T, 3 * 52) with zero hands, trans puts the body's pelvis on the source hips.
3. Undo 180-degree flips of the ankles and wrists about their bone (CMU tracking artefacts:
   subject 05's feet, take 06_13's left hand; the twist is either < 60 or > 150 deg, never
   between), keeping the bone directions (`core.mocap.transfer.fix_twist_flips`; --keep-flips
   skips this).
4. Drop near-duplicate poses: a frame is kept when some body joint, with the root rotation and
   translation removed, has moved at least --min-change metres (default 0.01) from the last kept
   frame. Static holds then cost one frame instead of dozens; time steps in the output are no
   longer uniform (`source_frames` lists the kept frames, in the file's own numbering).
5. Split by subject (file name prefix before "_") into OUT_DIR/train and OUT_DIR/val.
6. Mirror left/right (x -> -x in SMPL space) for the train split only, written as a separate
   file with a "_mirror" suffix.

Output keys: poses, trans, betas (16 zeros), gender "neutral", mocap_framerate, subject,
source_file, source_frames, batch_settings. The run is deterministic (sorted files, no randomness).
Files run in parallel (--workers, default: the machine's cores; --ray: on a Ray cluster) through
core/batch.py: a file whose outputs exist with the same settings (options, each file's person,
split, preset and rest clip, and the contents of the files named) is skipped, so a stopped run
resumes; a file that cannot be read is reported in OUT_DIR/report.jsonl and the others go on
(exit status 1 when some failed).

Default validation subjects 06 and 49: two held-out people whose takes are varied and not
locomotion only -- 06 basketball (dribbling low, crossovers, shooting: crouches, arm raises) and
49 (dance, hops on one foot, one-leg balance, run and leap) -- while training keeps close
relatives of those motions (05 ballet, 13/14 squats and jumping jacks, 02 punching, 16 runs), so
validation measures generalisation to new people and takes (~21% of the main set's frames).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from core.batch import (REPORT_NAME, ScriptJob, Task, add_runner_arguments, check_runner_arguments,  # noqa: E402
                        print_summary, run_batch, settings_hash)
from core.mocap.bvh import BVHError  # noqa: E402
from core.mocap.convert import DEFAULT_MIN_CHANGE, convert_file, load_target  # noqa: E402
from core.mocap.skeletons import load_preset  # noqa: E402
from core.mocap.transfer import mirror_axis_angle, mirror_translation  # noqa: E402
from core.pose_files import PoseSequence, pose_arrays  # noqa: E402

DEFAULT_VAL_SUBJECTS = ("06", "49")
NUM_BETAS = 16


def subject_of(path: Path) -> str:
    return path.stem.split("_")[0]


# --------------------------------------------------------------------------------------------
# The training set's folders, people and split (the per-clip work is `prepare`)


class FolderSpec(NamedTuple):
    """One folder of the training set: its skeleton preset, the folder whose clips hold the rest
    frame this one lacks (None: its own), and its data set (for the licence switch)."""

    name: str
    preset: str
    rest_from: str | None = None
    dataset: str = "CMU"


# The training set's README describes each folder. cmu_mb_bvh30 is cgspeed's 3dsMax release of
# CMU 131 renamed to the main set's 31 joint names (thorax/wrist OFFSETs 0, which move no rotation):
# the cmu preset reads it.
TRAINING_FOLDERS = (
    FolderSpec("cmu_asfamc_bvh", "cmu"),
    FolderSpec("cmu_asfamc_bvh30", "cmu"),
    FolderSpec("hdm05_asfamc_bvh30", "cmu", dataset="HDM05"),
    FolderSpec("cmu_daz_bvh", "cmu_daz"),
    FolderSpec("cmu_daz_bvh30", "cmu_daz", rest_from="cmu_daz_bvh"),
    FolderSpec("cmu_mb_bvh30", "cmu"),
)
# DAZ-friendly files renamed upstream (take numbers lost): whose they are, per the README.
NAMED_PEOPLE = {"papagina_martial": "135", "papagina_indian": "94"}


class PlannedClip(NamedTuple):
    """A clip of the training root: its folder, person, split, header frame count and rate, and
    the clip holding its rest frame where its own was cut."""

    path: Path
    folder: FolderSpec
    person: str
    split: str
    frames: int
    fps: float
    rest_clip: Path | None = None


def person_of(path: Path, same_person: dict[str, str] | None = None) -> str:
    """The person a clip shows: CMU 'NN_MM' -> 'NN', HDM05 'HDM_bd_...' -> 'HDM05-bd', the renamed
    DAZ files by `NAMED_PEOPLE`; then `same_person` maps a subject number to its group's name."""
    stem = path.stem
    person = subject_of(path)
    if stem.startswith("HDM_"):
        person = "HDM05-" + stem.split("_")[1]
    for prefix, subject in NAMED_PEOPLE.items():
        if stem.startswith(prefix + "_"):
            person = subject
    return (same_person or {}).get(person, person)


def person_groups(groups: list[list[str]]) -> dict[str, str]:
    """--same-person groups -> subject -> group name ('13+14'); overlapping groups are merged."""
    merged: list[set[str]] = []
    for group in groups:
        members = set(group)
        for other in [m for m in merged if m & members]:
            members |= other
            merged.remove(other)
        merged.append(members)
    return {s: "+".join(sorted(m)) for m in merged if len(m) > 1 for s in m}


def bvh_header_frames(path: Path) -> tuple[int, float]:
    """(frame count, fps) from a BVH header's 'Frames:' and 'Frame Time:' lines, without reading
    the motion. BVHError naming the file when they are missing."""
    frames = None
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            key, _, value = line.strip().partition(":")
            try:
                if key == "Frames":
                    frames = int(value)
                elif key == "Frame Time":
                    if frames is None:
                        break
                    return frames, 1.0 / float(value)
            except ValueError:
                raise BVHError(str(path), number, f"expected a number after '{key}:', got {value.strip()!r}") from None
    raise BVHError(str(path), None, "no 'Frames:' and 'Frame Time:' lines (not a BVH file?)")


def plan_training_set(root: Path, val_people=DEFAULT_VAL_SUBJECTS, include_hdm05: bool = True,
                      same_person: dict[str, str] | None = None) -> list[PlannedClip]:
    """Every clip of the training root's known folders, with its preset, person and split.
    ValueError for a folder of .bvh files the table does not know, or a root with none."""
    root = Path(root)
    known = {spec.name: spec for spec in TRAINING_FOLDERS}
    folders = sorted(p for p in root.iterdir() if p.is_dir() and any(q.suffix.lower() == ".bvh" for q in p.iterdir()))
    unknown = [p.name for p in folders if p.name not in known]
    if unknown:
        raise ValueError(f"{root}: no skeleton preset known for folder(s) {', '.join(unknown)}; the known folders are "
                         f"{', '.join(known)} (TRAINING_FOLDERS in scripts/prepare_mocap.py)")
    if not folders:
        raise ValueError(f"{root}: no .bvh files and no sub-folders of .bvh files (known: {', '.join(known)})")
    val = {(same_person or {}).get(str(s), str(s)) for s in val_people}
    clips = []
    for spec in TRAINING_FOLDERS:
        folder = root / spec.name
        if folder not in folders or (spec.dataset == "HDM05" and not include_hdm05):
            continue
        rests = sorted((root / spec.rest_from).glob("*.bvh")) if spec.rest_from else []
        if spec.rest_from and not rests:
            raise ValueError(f"{folder}: its clips have no rest frame and take it from {root / spec.rest_from}, "
                             "which has no .bvh files")
        for path in sorted(p for p in folder.iterdir() if p.suffix.lower() == ".bvh"):
            person = person_of(path, same_person)
            frames, fps = bvh_header_frames(path)
            rest = None
            if rests:  # the same person's rest pose where there is one, else the first clip's
                rest = next((r for r in rests if person_of(r, same_person) == person), rests[0])
            clips.append(PlannedClip(path, spec, person, "val" if person in val else "train", frames, fps, rest))
    return clips


def folder_counts(clips: list[PlannedClip], frames: dict[Path, int] | None = None) -> dict[str, dict]:
    """Per folder (and 'total'): clips, source frames (or `frames`, e.g. kept frames per clip),
    minutes of source motion, people, per split."""
    table: dict[str, dict] = {}
    for clip in clips:
        for key in (clip.folder.name, "total"):
            row = table.setdefault(key, {"clips": 0, "frames": 0, "minutes": 0.0, "people": set(),
                                         "train": {"clips": 0, "frames": 0, "people": set()},
                                         "val": {"clips": 0, "frames": 0, "people": set()}})
            count = clip.frames if frames is None else frames.get(clip.path, 0)
            for part in (row, row[clip.split]):
                part["clips"] += 1
                part["frames"] += count
                part["people"].add(clip.person)
            row["minutes"] += clip.frames / clip.fps / 60
    if "total" in table:
        table["total"] = table.pop("total")  # last
    return table


def format_counts(table: dict[str, dict], frames_label: str = "source frames") -> list[str]:
    """The per-folder table as text lines."""
    lines = [f"  {'folder':20s} {'clips':>5s} {frames_label:>14s} {'min':>6s} {'people':>6s}   train clips/frames/people"
             "   val clips/frames/people"]
    for name, row in table.items():
        t, v = row["train"], row["val"]
        lines.append(f"  {name:20s} {row['clips']:5d} {row['frames']:14d} {row['minutes']:6.1f} {len(row['people']):6d}   "
                     f"{t['clips']:5d} {t['frames']:7d} {len(t['people']):3d}        {v['clips']:5d} {v['frames']:7d} "
                     f"{len(v['people']):3d} ({' '.join(sorted(v['people'])) or '-'})")
    return lines


def clip_arrays(poses: np.ndarray, trans: np.ndarray, fps: float, subject: str, source: str,
                frames: np.ndarray) -> dict[str, np.ndarray]:
    sequence = PoseSequence(poses=poses, trans=trans, betas=np.zeros(NUM_BETAS), gender="neutral", framerate=float(fps))
    return pose_arrays(sequence, subject=subject, source_file=source, source_frames=frames.astype(np.int32))


class ClipJob(NamedTuple):
    """One file to convert, as the driver plans it: the report's name for it, its skeleton preset
    (name or JSON file), person, split and the clip holding its rest frame (None: its own)."""

    name: str
    path: Path
    preset: str
    person: str
    split: str
    rest_clip: Path | None = None


def batch_settings(clips: list[ClipJob], target, fps: float, mirror: bool, min_change: float,
                   fix_flips: bool) -> dict:
    """The workers' settings: plain data only (picklable for processes and Ray, and hashed for
    resume). Per file, keyed by the absolute input path the worker receives: person, split, and
    indices into the distinct presets and rest clips (so that a rest clip's or preset file's
    content is hashed once, and a new split or rest clip changes the hash)."""
    presets = sorted({str(c.preset) for c in clips})
    rests = sorted({str(c.rest_clip.absolute()) for c in clips if c.rest_clip is not None})
    files = {
        str(c.path.absolute()): {"person": c.person, "split": c.split, "preset": presets.index(str(c.preset)),
                                 "rest": None if c.rest_clip is None else rests.index(str(c.rest_clip.absolute()))}
        for c in clips
    }
    return {"target": tuple(target), "fps": fps, "mirror": mirror, "min_change": min_change, "fix_flips": fix_flips,
            "presets": presets, "rest_clips": rests, "files": files}


def convert_clips(clips: list[ClipJob], out_dir: Path, target, fps: float = 30.0, mirror: bool = True,
                  min_change: float = DEFAULT_MIN_CHANGE, fix_flips: bool = True, log=print,
                  workers: int | None = None, ray: str | None = None) -> dict:
    """Convert `clips` with core.batch's runner (workers local processes, or Ray when `ray` is an
    address, "" for its local cluster); files done earlier with the same settings are skipped,
    bad files reported (OUT_DIR/report.jsonl) while the others go on. Returns a summary dict:
    files and frames per split, "failed" (files that could not be converted) and "kept" (frames
    kept per clip path, mirrors not counted)."""
    out_dir = Path(out_dir)
    settings = batch_settings(clips, target, fps, mirror, min_change, fix_flips)
    tasks, by_name = [], {}
    for clip in clips:
        names = [f"{clip.path.stem}.npz"] + ([f"{clip.path.stem}_mirror.npz"] if mirror and clip.split == "train" else [])
        tasks.append(Task(clip.name, str(clip.path.absolute()),
                          tuple(str(out_dir / clip.split / name) for name in names)))
        by_name[clip.name] = clip
    summary = {
        split: {"files": 0, "clips": 0, "frames": 0, "source_frames": 0, "subsampled": 0, "flips": 0,
                "subjects": set()}
        for split in ("train", "val")
    }
    for split in summary:
        (out_dir / split).mkdir(parents=True, exist_ok=True)
    done = 0

    def log_clip(record: dict) -> None:
        nonlocal done
        done += 1
        if record["status"] != "ok":
            log(f"[{done:3d}/{len(tasks)}] {record['clip']}  failed: {record['error']}")
            return
        extra = f", {record['flips']} ankle/wrist flips undone" if record["flips"] else ""
        extra += " + mirror" if "outputs" in record else ""
        log(f"[{done:3d}/{len(tasks)}] {record['clip']}  subject {record['subject']} -> {record['split']}: "
            f"{record['num_source']} frames, {record['num_subsampled']} at {fps:g} fps, kept {record['frames']} "
            f"({record['num_subsampled'] - record['frames']} near-duplicates){extra}")

    job = ScriptJob(str(Path(__file__).resolve()), "convert_clip", settings)
    result = run_batch(tasks, job, settings_hash(settings), out_dir, workers, ray, on_record=log_clip)
    align_max: dict[str, float] = {}
    kept: dict[Path, int] = {}
    for record in result.records:
        clip = by_name[record["clip"]]
        if record["status"] != "ok":
            continue
        if "split" not in record:  # done by a run whose report is lost: its frames from its file
            with np.load(record["output"]) as data:
                kept[clip.path] = len(data["source_frames"])
            continue
        kept[clip.path] = record["frames"]
        s = summary[record["split"]]
        outputs = len(record.get("outputs", [record["output"]]))
        s["files"] += 1
        s["clips"] += outputs
        s["frames"] += outputs * record["frames"]
        s["source_frames"] += record["num_source"]
        s["subsampled"] += record["num_subsampled"]
        s["subjects"].add(record["subject"])
        s["flips"] += record["flips"]
        for joint, angle in record["align_deg"].items():
            align_max[joint] = max(align_max.get(joint, 0.0), angle)
    print_summary(result, out_dir / REPORT_NAME, log)
    for split, s in summary.items():
        log(
            f"  {split:5s}: {s['files']} files from subjects {' '.join(sorted(s['subjects'])) or '-'}; "
            f"{s['source_frames']} source frames -> {s['subsampled']} at {fps:g} fps -> {s['frames']} frames "
            f"kept in {s['clips']} clips" + (" (incl. mirrored)" if mirror and split == "train" else "")
            + f"; {s['flips']} ankle/wrist twist flips undone (subsampled frames)"
        )
    log("  rest alignment A_j, max over files (deg): "
        + ", ".join(f"{j} {a:.1f}" for j, a in align_max.items() if a > 0.05))
    summary["seconds"] = result.seconds
    summary["align_max_deg"] = align_max
    summary["failed"] = result.failed
    summary["kept"] = kept
    return summary


def convert_clip(path: Path, settings: dict) -> tuple[list[dict[str, np.ndarray]], dict]:
    """One file (a batch task, run in a worker): its arrays, and its mirror's for a train file
    when asked for. Its person, split, preset and rest clip are looked up in `settings`."""
    rest, parents, names = settings["target"]
    entry = settings["files"][str(path)]
    fps, subject, split = settings["fps"], entry["person"], entry["split"]
    rest_clip = None if entry["rest"] is None else Path(settings["rest_clips"][entry["rest"]])
    clip = convert_file(path, settings["target"], load_preset(settings["presets"][entry["preset"]]), fps,
                        settings["min_change"], settings["fix_flips"], rest_clip)
    arrays = [clip_arrays(clip["poses"], clip["trans"], fps, subject, path.name, clip["source_frames"])]
    if settings["mirror"] and split == "train":
        pelvis_rest = rest[int((parents < 0).nonzero()[0])].numpy()
        arrays.append(clip_arrays(mirror_axis_angle(clip["poses"], names), mirror_translation(clip["trans"], pelvis_rest),
                                  fps, subject, path.name, clip["source_frames"]))
    info = {"subject": subject, "split": split, "frames": len(clip["source_frames"]), "num_source": int(clip["num_source"]),
            "num_subsampled": int(clip["num_subsampled"]), "flips": int(clip["flips"]),
            "align_deg": {joint: round(angle, 3) for joint, angle in clip["align_deg"].items()}}
    return arrays, info


def prepare(
    input_dir: Path,
    out_dir: Path,
    target,
    fps: float = 30.0,
    val_subjects=DEFAULT_VAL_SUBJECTS,
    mirror: bool = True,
    min_change: float = DEFAULT_MIN_CHANGE,
    preset="cmu",
    fix_flips: bool = True,
    log=print,
    person=subject_of,
    rest_clips: dict[Path, Path] | None = None,
    workers: int | None = None,
    ray: str | None = None,
) -> dict:
    """Convert every *.bvh in input_dir (`convert_clips`); returns its summary. person(path): who
    the clip shows, matched against val_subjects (it runs here, not in the workers); rest_clips:
    file -> the clip holding its rest frame (`convert_file`'s rest_clip)."""
    input_dir = Path(input_dir)
    files = sorted(p for p in input_dir.iterdir() if p.suffix.lower() == ".bvh")
    if not files:
        raise SystemExit(f"no .bvh files in {input_dir}")
    load_preset(preset)  # a bad preset stops the run here, not once per file
    val_subjects = {str(s) for s in val_subjects}
    clips = [ClipJob(path.name, path, str(preset), person(path), "val" if person(path) in val_subjects else "train",
                     (rest_clips or {}).get(path)) for path in files]
    return convert_clips(clips, out_dir, target, fps, mirror, min_change, fix_flips, log, workers, ray)


def prepare_training_set(root: Path, out_dir: Path, target, val_people=DEFAULT_VAL_SUBJECTS, include_hdm05: bool = True,
                         same_person: dict[str, str] | None = None, plan_only: bool = False, log=print, **options) -> dict:
    """Every known folder of a training root (`plan_training_set`) converted with its preset into
    one OUT_DIR/train and OUT_DIR/val, in one batch (each clip with its folder's preset); per-folder
    counts before and after. options: `convert_clips`'s (fps, mirror, min_change, fix_flips,
    workers, ray)."""
    clips = plan_training_set(root, val_people, include_hdm05, same_person)
    names = [c.path.stem for c in clips]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise SystemExit(f"error: {root}: clips of the same name in several folders would overwrite each other: "
                         f"{', '.join(clash)}")
    val = sorted({c.person for c in clips if c.split == "val"})
    log(f"{root}: {len(clips)} clips in {len({c.folder.name for c in clips})} folders"
        + ("" if include_hdm05 else " (HDM05 left out)") + f"; validation people: {' '.join(val) or '-'}")
    for line in format_counts(folder_counts(clips)):
        log(line)
    result = {"clips": clips, "plan": folder_counts(clips)}
    if plan_only:
        return result
    for spec in TRAINING_FOLDERS:
        count = sum(c.folder is spec for c in clips)
        if count:
            log(f"{spec.name} (preset {spec.preset}" + (f", rest from {spec.rest_from}" if spec.rest_from else "")
                + f"): {count} clips")
    jobs = [ClipJob(f"{c.folder.name}/{c.path.name}", c.path, c.folder.preset, c.person, c.split, c.rest_clip)
            for c in clips]
    summary = convert_clips(jobs, out_dir, target, log=log, **options)
    log("frames kept (30 fps, near-duplicates dropped; mirrors not counted):")
    for line in format_counts(folder_counts(clips, summary["kept"]), "kept frames"):
        log(line)
    result["kept"] = folder_counts(clips, summary["kept"])
    result["failed"] = summary["failed"]
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input_dir", type=Path,
                        help="folder of .bvh files (CMU main-set format), or the training root (folders of them)")
    parser.add_argument("out_dir", type=Path, help="output folder; train/ and val/ are created in it")
    parser.add_argument("--fps", type=float, default=30.0, help="output frame rate (default 30)")
    parser.add_argument("--val-subjects", nargs="*", default=list(DEFAULT_VAL_SUBJECTS),
                        help="subjects (file name prefix before '_') for the validation split (default 06 49)")
    parser.add_argument("--no-mirror", action="store_true", help="do not add mirrored copies of the train clips")
    parser.add_argument("--min-change", type=float, default=DEFAULT_MIN_CHANGE,
                        help="drop a frame unless some body joint moved this far (metres, root removed) "
                             "since the last kept frame; 0 keeps all (default 0.01)")
    parser.add_argument("--keep-flips", action="store_true",
                        help="keep ankle/wrist rotations twisted > 90 deg about the bone (by default such "
                             "180-degree flips, CMU tracking artefacts, are undone)")
    parser.add_argument("--body", default=None, help="body model .npz (default: the open adult body)")
    parser.add_argument("--preset", default="cmu", help="skeleton preset name or JSON file (default cmu; a training "
                                                             "root uses each folder's own)")
    parser.add_argument("--no-hdm05", action="store_true",
                        help="training root: leave out HDM05 (CC BY-SA 3.0, share-alike), keeping only CMU data")
    parser.add_argument("--same-person", nargs="+", action="append", default=[], metavar="SUBJECT",
                        help="training root: CMU subject numbers that are one person (repeat for several groups); "
                             "they are split together")
    parser.add_argument("--plan", action="store_true", help="training root: print the per-folder counts and stop")
    add_runner_arguments(parser)
    args = parser.parse_args(argv)
    check_runner_arguments(parser, args)
    if args.fps <= 0:
        parser.error("--fps must be positive")
    # The work is many small batched tensor ops: one thread is fastest, and stays fast when other
    # jobs share the CPU (two threads on a busy 2-core machine were 20x slower here).
    torch.set_num_threads(1)
    if not args.input_dir.is_dir():
        parser.error(f"{args.input_dir} is not a folder")
    options = {"fps": args.fps, "mirror": not args.no_mirror, "min_change": args.min_change,
               "fix_flips": not args.keep_flips, "workers": args.workers, "ray": args.ray}
    if not any(p.suffix.lower() == ".bvh" for p in args.input_dir.iterdir()):  # a training root
        target = None if args.plan else load_target(args.body)
        try:
            result = prepare_training_set(args.input_dir, args.out_dir, target, val_people=args.val_subjects,
                                          include_hdm05=not args.no_hdm05, same_person=person_groups(args.same_person),
                                          plan_only=args.plan, **options)
        except (ValueError, BVHError) as error:
            raise SystemExit(f"error: {error}") from None
        return 1 if result.get("failed") else 0
    target = load_target(args.body)
    try:
        summary = prepare(args.input_dir, args.out_dir, target, val_subjects=args.val_subjects, preset=args.preset,
                          **options)
    except (ValueError, BVHError) as error:  # a bad preset, Ray that cannot start
        raise SystemExit(f"error: {error}") from None
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
