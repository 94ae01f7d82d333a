"""Convert a folder of CMU-style BVH files into AMASS-style pose files for the open body.

    python scripts/prepare_mocap.py INPUT_DIR OUT_DIR [--fps 30] [--val-subjects 06 49]
                                    [--no-mirror] [--min-change 0.01] [--keep-flips] [--body MODEL.npz]
                                    [--preset cmu|cmu_daz|PRESET.json] [--workers N | --ray[=ADDRESS]]

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
core/batch.py: a file whose outputs exist with the same settings is skipped (a stopped run
resumes), a file that cannot be read is reported in OUT_DIR/report.jsonl and the others go on
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

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from core.batch import (REPORT_NAME, ScriptJob, Task, add_runner_arguments, check_runner_arguments,  # noqa: E402
                        print_summary, run_batch, settings_hash)
from core.mocap.convert import DEFAULT_MIN_CHANGE, convert_file, load_target  # noqa: E402
from core.mocap.skeletons import load_preset  # noqa: E402
from core.mocap.transfer import mirror_axis_angle, mirror_translation  # noqa: E402
from core.pose_files import PoseSequence, pose_arrays  # noqa: E402

DEFAULT_VAL_SUBJECTS = ("06", "49")
NUM_BETAS = 16


def subject_of(path: Path) -> str:
    return path.stem.split("_")[0]


def clip_arrays(poses: np.ndarray, trans: np.ndarray, fps: float, subject: str, source: str,
                frames: np.ndarray) -> dict[str, np.ndarray]:
    sequence = PoseSequence(poses=poses, trans=trans, betas=np.zeros(NUM_BETAS), gender="neutral", framerate=float(fps))
    return pose_arrays(sequence, subject=subject, source_file=source, source_frames=frames.astype(np.int32))


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
    workers: int | None = None,
    ray: str | None = None,
) -> dict:
    """Convert every *.bvh in input_dir with core.batch's runner (workers local processes, or Ray
    when `ray` is an address, "" for its local cluster); files done earlier with the same settings
    are skipped, bad files reported (OUT_DIR/report.jsonl). Returns a summary dict (files and
    frames per split, "failed": the number of files that could not be converted)."""
    input_dir, out_dir = Path(input_dir), Path(out_dir)
    files = sorted(p for p in input_dir.iterdir() if p.suffix.lower() == ".bvh")
    if not files:
        raise SystemExit(f"no .bvh files in {input_dir}")
    settings = {"target": tuple(target), "fps": fps, "val_subjects": sorted(str(s) for s in val_subjects),
                "mirror": mirror, "min_change": min_change, "preset": preset, "fix_flips": fix_flips}
    tasks = []
    for path in files:
        split = split_of(path, settings)
        names = [f"{path.stem}.npz"] + ([f"{path.stem}_mirror.npz"] if mirror and split == "train" else [])
        tasks.append(Task(path.name, str(path.resolve()), tuple(str(out_dir / split / name) for name in names)))
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
    for record in result.records:
        if record["status"] != "ok" or "split" not in record:  # failed, or done by a run whose report is lost
            continue
        s = summary[record["split"]]
        clips = len(record.get("outputs", [record["output"]]))
        s["files"] += 1
        s["clips"] += clips
        s["frames"] += clips * record["frames"]
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
    return summary


def split_of(path: Path, settings: dict) -> str:
    return "val" if subject_of(path) in settings["val_subjects"] else "train"


def convert_clip(path: Path, settings: dict) -> tuple[list[dict[str, np.ndarray]], dict]:
    """One file (a batch task): its arrays, and its mirror's for a train file when asked for."""
    rest, parents, names = settings["target"]
    fps, subject = settings["fps"], subject_of(path)
    split = split_of(path, settings)
    clip = convert_file(path, settings["target"], load_preset(settings["preset"]), fps, settings["min_change"],
                        settings["fix_flips"])
    arrays = [clip_arrays(clip["poses"], clip["trans"], fps, subject, path.name, clip["source_frames"])]
    if settings["mirror"] and split == "train":
        pelvis_rest = rest[int((parents < 0).nonzero()[0])].numpy()
        arrays.append(clip_arrays(mirror_axis_angle(clip["poses"], names), mirror_translation(clip["trans"], pelvis_rest),
                                  fps, subject, path.name, clip["source_frames"]))
    info = {"subject": subject, "split": split, "frames": len(clip["source_frames"]), "num_source": int(clip["num_source"]),
            "num_subsampled": int(clip["num_subsampled"]), "flips": int(clip["flips"]),
            "align_deg": {joint: round(angle, 3) for joint, angle in clip["align_deg"].items()}}
    return arrays, info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input_dir", type=Path, help="folder of .bvh files (CMU main-set format)")
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
    parser.add_argument("--preset", default="cmu", help="skeleton preset name or JSON file (default cmu)")
    add_runner_arguments(parser)
    args = parser.parse_args(argv)
    check_runner_arguments(parser, args)
    if args.fps <= 0:
        parser.error("--fps must be positive")
    # The work is many small batched tensor ops: one thread is fastest, and stays fast when other
    # jobs share the CPU (two threads on a busy 2-core machine were 20x slower here).
    torch.set_num_threads(1)
    target = load_target(args.body)
    summary = prepare(args.input_dir, args.out_dir, target, fps=args.fps, val_subjects=args.val_subjects,
                      mirror=not args.no_mirror, min_change=args.min_change, preset=args.preset,
                      fix_flips=not args.keep_flips, workers=args.workers, ray=args.ray)
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
