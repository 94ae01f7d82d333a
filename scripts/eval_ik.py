"""Evaluate the IK on real motion capture: whole-clip retargeting, sparse effectors, live latency.

    python scripts/eval_ik.py path/to/cmu_asfamc_bvh --subjects 06 49 --json

PATH: BVH files in the CMU main-set format of the training data (folders, files or glob patterns).
Every clip is read at --fps (30 by default, as the prior's training data).

  full_mpjpe_mm, full_frames_per_s  core.retarget on each whole clip: the CMU preset's landmark
      joints (hips, knees, ankles, feet, shoulders, elbows, wrists, head) as targets at the
      source skeleton's joint positions, one fitted shape and one calibrated landmark offset per
      joint per clip (core.retarget), started from the rotation transfer; mean distance to the
      targets, and frames per second of solve time (shape fit and calibration included)
  sparse_mpjpe_mm, sparse_noprior_mpjpe_mm  the clips converted as for training (core/mocap/convert.py)
      and posed on the open body; only pelvis, head, wrists and ankles of that body given as targets
      (cold start from the T-pose), error over all 22 body joints against the converted pose, with
      the prior and with raw joint rotations; on --sparse-frames frames spread over all clips
  full_geodesic_deg, sparse_geodesic_deg  mean geodesic angle (degrees) between the solved and the
      converted local rotations of the 21 body joints (not the root), over the same frames as
      full_mpjpe_mm / sparse_mpjpe_mm: joint positions can be right with the limbs wrongly twisted;
      sparse_noprior_geodesic_deg likewise without the prior
  interactive_ms, interactive_error_mm  median time of a warm-started single-frame solve with those
      6 effectors (the previous frame's solution as the start, with core.ik.live_lm_options(): 4 LM
      iterations and without retries, as a Live Posing step runs), and the effectors' mean distance
      to their targets after it

Keys are stable: other tools read them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from core.body_model import BodyModel  # noqa: E402
from core.ik import IKSolver, live_lm_options  # noqa: E402
from core.keypoints import EFFECTORS, NUM_BODY_JOINTS, KeypointSet  # noqa: E402
from core.mocap.bvh import read_bvh  # noqa: E402
from core.mocap.convert import convert_file, find_mocap_files, load_target, subsample_indices  # noqa: E402
from core.mocap.skeletons import load_preset  # noqa: E402
from core.retarget import bvh_targets, retarget  # noqa: E402
from core.prior_protocols import geodesic_error  # noqa: E402
from core.rotations import axis_angle_to_matrix  # noqa: E402
from core.train import display_path  # noqa: E402
from core.vposer import default_vposer_path, load_vposer  # noqa: E402


BODY_ROTATIONS = slice(1, NUM_BODY_JOINTS)  # the 21 body joints' local rotations (not the root)


def body_geodesic_deg(predicted: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Per frame (T,): mean geodesic angle in degrees between the 21 body joints' local rotations
    of two (T, J, 3, 3) poses."""
    return torch.rad2deg(geodesic_error(predicted[:, BODY_ROTATIONS], truth[:, BODY_ROTATIONS])).mean(-1)


def evaluate_full(model: BodyModel, files: list[Path], fps: float, log, truth: list[torch.Tensor] | None = None) -> dict:
    """Whole-clip retargets: frame-weighted error and solve throughput; with `truth` (per file, the
    converted local rotations (T, J, 3, 3) of the same frames) also the rotation error."""
    errors, frames, seconds, per_joint, angles = 0.0, 0, 0.0, {}, 0.0
    for k, path in enumerate(files):
        motion = read_bvh(path)
        targets = bvh_targets(motion, "cmu", model, subsample_indices(motion.num_frames, motion.fps, fps))
        result = retarget(model, targets)
        count = result.poses.shape[0]
        if truth is not None:
            if truth[k].shape[0] != count:
                raise SystemExit(f"error: {path.name}: {count} retargeted frames but {truth[k].shape[0]} converted ones")
            solved = axis_angle_to_matrix(result.poses.view(count, -1, 3).to(truth[k].dtype))
            angles += float(body_geodesic_deg(solved, truth[k]).sum())
        errors += result.mpjpe_mm * count
        frames += count
        seconds += result.seconds
        for name, value in result.per_keypoint_mm().items():
            per_joint[name] = per_joint.get(name, 0.0) + value * count
        if log:
            log(f"  {path.name}: {count} frames, {result.mpjpe_mm:.1f} mm, {count / result.seconds:.0f} frames/s")
    result = {"full_mpjpe_mm": errors / frames, "full_frames_per_s": frames / seconds, "full_frames": frames,
              "full_per_joint_mm": {name: value / frames for name, value in per_joint.items()}}
    if truth is not None:
        result["full_geodesic_deg"] = angles / frames
    return result


def converted_poses(model: BodyModel, files: list[Path], fps: float) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Every clip converted as for training (no frames dropped): local rotations (N, J, 3, 3),
    translations (N, 3), and the frame count per clip."""
    target, preset = load_target(None), load_preset("cmu")
    rotations, translations, counts = [], [], []
    for path in files:
        clip = convert_file(path, target, preset, fps=fps, min_change=0.0)
        poses = torch.as_tensor(clip["poses"], dtype=model.dtype).view(len(clip["poses"]), -1, 3)
        rotations.append(axis_angle_to_matrix(poses))
        translations.append(torch.as_tensor(clip["trans"], dtype=model.dtype))
        counts.append(len(poses))
    return torch.cat(rotations), torch.cat(translations), counts


def evaluate_sparse(model: BodyModel, prior, files: list[Path], fps: float, count: int, log,
                    converted: tuple[torch.Tensor, torch.Tensor, list[int]] | None = None) -> dict:
    rotations, translations, counts = converted or converted_poses(model, files, fps)
    with torch.no_grad():
        truth = model.forward_rotations(rotations, None, None, translations, return_vertices=False).joints
    truth = truth[:, :NUM_BODY_JOINTS]
    effectors = KeypointSet.from_joints(model, EFFECTORS)
    ids = [model.joint_names.index(name) for name in EFFECTORS]
    rows = np.unique(np.linspace(0, len(truth) - 1, min(count, len(truth))).round().astype(np.int64))
    result = {"sparse_frames": len(rows)}
    for key, solver_prior in (("sparse_mpjpe_mm", prior), ("sparse_noprior_mpjpe_mm", None)):
        solved = IKSolver(model, effectors, solver_prior).solve(truth[rows][:, ids])
        with torch.no_grad():
            joints = model.forward_rotations(solved.rotations, None, None, solved.transl, return_vertices=False).joints
        result[key] = 1000 * float((joints[:, :NUM_BODY_JOINTS] - truth[rows]).norm(dim=-1).mean())
        angle_key = key.replace("_mpjpe_mm", "_geodesic_deg")
        result[angle_key] = float(body_geodesic_deg(solved.rotations, rotations[rows]).mean())
        if log:
            log(f"  {key}: {result[key]:.1f} mm over {len(rows)} frames")
    result.update(interactive_latency(model, prior, effectors, truth[:, ids], counts))
    return result


def interactive_latency(model: BodyModel, prior, effectors: KeypointSet, targets: torch.Tensor, counts: list[int],
                        solves: int = 200) -> dict:
    """Median ms of single-frame solves, each warm-started from the previous frame's solution
    along the clips (one cold solve per clip to start, not timed), and their mean effector error."""
    solver = IKSolver(model, effectors, prior, lm_options=live_lm_options(), retry=None)
    per_clip = max(2, solves // len(counts) + 1)
    times, errors, start = [], [], 0
    for frames in counts:
        last = solver.solve(targets[start])
        for frame in range(start + 1, start + min(frames, per_clip)):
            tick = time.perf_counter()
            last = solver.solve(targets[frame], init=last)
            times.append(time.perf_counter() - tick)
            errors.append(float(last.errors.mean()))
        start += frames
    return {"interactive_ms": 1000 * float(np.median(times)), "interactive_error_mm": 1000 * float(np.mean(errors))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", metavar="PATH", help="BVH folder(s), file(s) or glob pattern(s)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--subjects", nargs="*", default=None, help="only files named '<subject>_*'")
    parser.add_argument("--fps", type=float, default=30.0, help="frame rate the clips are read at")
    parser.add_argument("--sparse-frames", type=int, default=1000, help="frames for the sparse-effector metrics")
    parser.add_argument("--weights", default=None, help="VPoser weights (default: the shipped open prior)")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        files = find_mocap_files(args.paths, args.subjects)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    say = None if args.json else print
    start = time.perf_counter()
    model = BodyModel.open_default("adult").to(args.device)
    weights = Path(args.weights) if args.weights else default_vposer_path()
    prior = load_vposer(weights).to(args.device).eval()
    if say:
        say(f"{len(files)} clips at {args.fps:g} fps")
    converted = converted_poses(model, files, args.fps)
    per_file = list(converted[0].split(converted[2]))
    metrics = {**evaluate_full(model, files, args.fps, say, truth=per_file),
               **evaluate_sparse(model, prior, files, args.fps, args.sparse_frames, say, converted=converted)}
    metrics.update(files=len(files), fps=args.fps, weights=display_path(weights), device=args.device,
                   threads=torch.get_num_threads(), seconds=round(time.perf_counter() - start, 1))
    if args.json:
        print(json.dumps(metrics, indent=1))
    else:
        print(f"full: {metrics['full_mpjpe_mm']:.1f} mm, {metrics['full_geodesic_deg']:.1f} deg at "
              f"{metrics['full_frames_per_s']:.0f} frames/s; sparse: {metrics['sparse_mpjpe_mm']:.1f} mm, "
              f"{metrics['sparse_geodesic_deg']:.1f} deg with the prior, {metrics['sparse_noprior_mpjpe_mm']:.1f} mm, "
              f"{metrics['sparse_noprior_geodesic_deg']:.1f} deg without; interactive {metrics['interactive_ms']:.1f} ms ({metrics['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
