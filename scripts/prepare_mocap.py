"""Convert a folder of CMU-style BVH files into AMASS-style pose files for the open body.

    python scripts/prepare_mocap.py INPUT_DIR OUT_DIR [--fps 30] [--val-subjects 06 49]
                                    [--no-mirror] [--min-change 0.01] [--keep-flips] [--body MODEL.npz]
                                    [--preset cmu|cmu_daz|PRESET.json]
    python scripts/prepare_mocap.py TRAINING_ROOT OUT_DIR [--no-hdm05] [--same-person 13 14] [--plan]

INPUT_DIR holding .bvh files is one folder read with --preset. A TRAINING_ROOT (a folder of such
folders, e.g. ../shared/data/mocap/train) is read whole: every sub-folder of `TRAINING_FOLDERS`
with its own preset (and, for the 30 fps DAZ-friendly folder, whose T-pose frame was cut, the rest
from a same-skeleton clip of `cmu_daz_bvh/`, the same person's where there is one); a sub-folder of
.bvh files not in the table is refused. People, not subject numbers, are split: HDM05 files are
their actor's (HDM05-bd, ...), the `papagina_martial_*` / `papagina_indian_*` DAZ files CMU subjects
135 / 94 (the training set's README), and --same-person groups CMU subject numbers that are one
person (CMU notes that happens; a group with a validation member is all validation). --no-hdm05
leaves out HDM05 (CC BY-SA 3.0; the rest is CMU's). Per-folder counts (clips, frames, people,
train/val) are printed before the conversion (--plan stops there) and after it.

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
source_file, source_frames. The run is deterministic (sorted files, no randomness).

Default validation subjects 06 and 49: two held-out people whose takes are varied and not
locomotion only -- 06 basketball (dribbling low, crossovers, shooting: crouches, arm raises) and
49 (dance, hops on one foot, one-leg balance, run and leap) -- while training keeps close
relatives of those motions (05 ballet, 13/14 squats and jumping jacks, 02 punching, 16 runs), so
validation measures generalisation to new people and takes (~21% of the main set's frames).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from core.mocap.bvh import BVHError  # noqa: E402
from core.mocap.convert import DEFAULT_MIN_CHANGE, convert_file, load_target  # noqa: E402
from core.mocap.skeletons import load_preset  # noqa: E402
from core.mocap.transfer import mirror_axis_angle, mirror_translation  # noqa: E402
from core.pose_files import PoseSequence, save_pose_file  # noqa: E402

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


def write_clip(path: Path, poses: np.ndarray, trans: np.ndarray, fps: float, subject: str, source: str,
               frames: np.ndarray) -> None:
    sequence = PoseSequence(poses=poses, trans=trans, betas=np.zeros(NUM_BETAS), gender="neutral", framerate=float(fps))
    save_pose_file(path, sequence, subject=subject, source_file=source, source_frames=frames.astype(np.int32))


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
) -> dict:
    """Convert every *.bvh in input_dir; returns a summary dict (files and frames per split, and
    'kept': frames kept per file). person(path): who the clip shows, matched against val_subjects;
    rest_clips: file -> the clip holding its rest frame (`convert_file`'s rest_clip)."""
    input_dir, out_dir = Path(input_dir), Path(out_dir)
    files = sorted(p for p in input_dir.iterdir() if p.suffix.lower() == ".bvh")
    if not files:
        raise SystemExit(f"no .bvh files in {input_dir}")
    preset = load_preset(preset)
    val_subjects = {str(s) for s in val_subjects}
    rest, parents, names = target
    pelvis_rest = rest[int((parents < 0).nonzero()[0])].numpy()
    summary = {
        split: {"files": 0, "clips": 0, "frames": 0, "source_frames": 0, "subsampled": 0, "flips": 0,
                "subjects": set()}
        for split in ("train", "val")
    }
    align_max: dict[str, float] = {}
    kept: dict[Path, int] = {}
    for split in summary:
        (out_dir / split).mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for k, path in enumerate(files, 1):
        subject = person(path)
        split = "val" if subject in val_subjects else "train"
        try:
            clip = convert_file(path, target, preset, fps, min_change, fix_flips, (rest_clips or {}).get(path))
        except (BVHError, ValueError) as error:
            raise SystemExit(f"error: {error}") from None
        n = len(clip["source_frames"])
        kept[path] = n
        write_clip(out_dir / split / f"{path.stem}.npz", clip["poses"], clip["trans"], fps, subject, path.name,
                   clip["source_frames"])
        s = summary[split]
        s["files"] += 1
        s["clips"] += 1
        s["frames"] += n
        s["source_frames"] += clip["num_source"]
        s["subsampled"] += clip["num_subsampled"]
        s["subjects"].add(subject)
        s["flips"] += clip["flips"]
        extra = f", {clip['flips']} ankle/wrist flips undone" if clip["flips"] else ""
        if mirror and split == "train":
            poses_m = mirror_axis_angle(clip["poses"], names)
            trans_m = mirror_translation(clip["trans"], pelvis_rest)
            write_clip(out_dir / split / f"{path.stem}_mirror.npz", poses_m, trans_m, fps, subject, path.name,
                       clip["source_frames"])
            s["clips"] += 1
            s["frames"] += n
            extra += " + mirror"
        for joint, angle in clip["align_deg"].items():
            align_max[joint] = max(align_max.get(joint, 0.0), angle)
        log(
            f"[{k:3d}/{len(files)}] {path.name}  subject {subject} -> {split}: {clip['num_source']} frames, "
            f"{clip['num_subsampled']} at {fps:g} fps, kept {n} ({clip['num_subsampled'] - n} near-duplicates){extra}"
        )
    elapsed = time.perf_counter() - start
    log(f"done in {elapsed:.1f} s -> {out_dir}")
    for split, s in summary.items():
        log(
            f"  {split:5s}: {s['files']} files from subjects {' '.join(sorted(s['subjects'])) or '-'}; "
            f"{s['source_frames']} source frames -> {s['subsampled']} at {fps:g} fps -> {s['frames']} frames "
            f"kept in {s['clips']} clips" + (" (incl. mirrored)" if mirror and split == "train" else "")
            + f"; {s['flips']} ankle/wrist twist flips undone (subsampled frames)"
        )
    log("  rest alignment A_j, max over files (deg): "
        + ", ".join(f"{j} {a:.1f}" for j, a in align_max.items() if a > 0.05))
    summary["seconds"] = elapsed
    summary["align_max_deg"] = align_max
    summary["kept"] = kept
    return summary


def prepare_training_set(root: Path, out_dir: Path, target, val_people=DEFAULT_VAL_SUBJECTS, include_hdm05: bool = True,
                         same_person: dict[str, str] | None = None, plan_only: bool = False, log=print, **options) -> dict:
    """Every known folder of a training root (`plan_training_set`) converted with its preset into
    one OUT_DIR/train and OUT_DIR/val; per-folder counts before and after. options: `prepare`'s."""
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
    kept: dict[Path, int] = {}
    people = {c.path: c.person for c in clips}
    for spec in TRAINING_FOLDERS:
        mine = [c for c in clips if c.folder is spec]
        if not mine:
            continue
        log(f"{spec.name} (preset {spec.preset}" + (f", rest from {spec.rest_from}" if spec.rest_from else "") + ")")
        summary = prepare(root / spec.name, out_dir, target, val_subjects={c.person for c in clips if c.split == "val"},
                          preset=spec.preset, log=log, person=people.__getitem__,
                          rest_clips={c.path: c.rest_clip for c in mine if c.rest_clip}, **options)
        kept.update(summary["kept"])
    log("frames kept (30 fps, near-duplicates dropped; mirrors not counted):")
    for line in format_counts(folder_counts(clips, kept), "kept frames"):
        log(line)
    result["kept"] = folder_counts(clips, kept)
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
    args = parser.parse_args(argv)
    if args.fps <= 0:
        parser.error("--fps must be positive")
    # The work is many small batched tensor ops: one thread is fastest, and stays fast when other
    # jobs share the CPU (two threads on a busy 2-core machine were 20x slower here).
    torch.set_num_threads(1)
    if not args.input_dir.is_dir():
        parser.error(f"{args.input_dir} is not a folder")
    if not any(p.suffix.lower() == ".bvh" for p in args.input_dir.iterdir()):  # a training root
        target = None if args.plan else load_target(args.body)
        try:
            prepare_training_set(args.input_dir, args.out_dir, target, val_people=args.val_subjects,
                                 include_hdm05=not args.no_hdm05, same_person=person_groups(args.same_person),
                                 plan_only=args.plan, fps=args.fps, mirror=not args.no_mirror,
                                 min_change=args.min_change, fix_flips=not args.keep_flips)
        except (ValueError, BVHError) as error:
            raise SystemExit(f"error: {error}") from None
        return 0
    target = load_target(args.body)
    prepare(args.input_dir, args.out_dir, target, fps=args.fps, val_subjects=args.val_subjects,
            mirror=not args.no_mirror, min_change=args.min_change, preset=args.preset,
            fix_flips=not args.keep_flips)
    return 0


if __name__ == "__main__":
    sys.exit(main())
