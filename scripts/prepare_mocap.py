"""Convert a folder of CMU-style BVH files into AMASS-style pose files for the open body.

    python scripts/prepare_mocap.py INPUT_DIR OUT_DIR [--fps 30] [--val-subjects 06 49]
                                    [--no-mirror] [--min-change 0.01] [--keep-flips] [--body MODEL.npz]
                                    [--preset cmu|cmu_daz|PRESET.json]

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
) -> dict:
    """Convert every *.bvh in input_dir; returns a summary dict (files and frames per split)."""
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
    for split in summary:
        (out_dir / split).mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for k, path in enumerate(files, 1):
        subject = subject_of(path)
        split = "val" if subject in val_subjects else "train"
        try:
            clip = convert_file(path, target, preset, fps, min_change, fix_flips)
        except BVHError as error:
            raise SystemExit(f"error: {error}") from None
        n = len(clip["source_frames"])
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
    return summary


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
    args = parser.parse_args(argv)
    if args.fps <= 0:
        parser.error("--fps must be positive")
    # The work is many small batched tensor ops: one thread is fastest, and stays fast when other
    # jobs share the CPU (two threads on a busy 2-core machine were 20x slower here).
    torch.set_num_threads(1)
    target = load_target(args.body)
    prepare(args.input_dir, args.out_dir, target, fps=args.fps, val_subjects=args.val_subjects,
            mirror=not args.no_mirror, min_change=args.min_change, preset=args.preset,
            fix_flips=not args.keep_flips)
    return 0


if __name__ == "__main__":
    sys.exit(main())
