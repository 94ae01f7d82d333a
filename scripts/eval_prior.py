"""Evaluate a VPoser prior on held-out motion: reconstruction error and sample realism.

    python scripts/eval_prior.py build/mocap/val --json
    python scripts/eval_prior.py path/to/cmu_asfamc_bvh --subjects 06 49 --json
    python scripts/eval_prior.py "clips/*.bvh" --weights build/train_run/best.pt

PATH may be a folder of BVH files (the CMU main-set format of the training data), a folder of
already converted AMASS-style .npz pose files, single files, or glob patterns (several may be
given). BVH files are converted exactly as scripts/prepare_mocap.py converts them (core/mocap/convert.py) (30 fps,
near-duplicate frames dropped, no mirroring); .npz files are used as they are.

Metrics (bodies posed on the body model with betas 0, global orientation 0 and flat hands):
  frames             poses evaluated (all frames of all files)
  recon_v2v_mm       mean vertex-to-vertex distance, full mesh, pose vs decode(encoder mean)
  recon_mpjpe_mm     the same for the 22 body joints
  sample_to_data_mm  over --samples seeded prior samples: MPJPE (22 joints, root-relative) to the
                     nearest real pose, averaged (do samples look like real poses?)
  data_to_sample_mm  over the real poses (at most --max-data, evenly spaced): MPJPE to the nearest
                     sample, averaged (do samples cover the real poses?)

Both sample metrics have a floor set by the data themselves: with --reference TRAIN_DIR the script
also reports them for --samples real training poses used in place of prior samples
(reference_sample_to_data_mm, reference_data_to_sample_mm), i.e. what a prior that reproduced its
training data exactly would score against held-out motion.

The field's protocols (DPoser, Pose-NDF, NRDF), on --protocol-poses held-out poses (evenly spaced;
core/prior_protocols.py), each seeded from --seed and listed under "protocols" in the JSON:
  completion_leg_mm, completion_arm_mm  the left leg's rotations (hip, knee, ankle, foot) or the
                     right arm's (collar, shoulder, elbow, wrist) are hidden; the prior's latent is
                     fitted through the IK (latent weight --latent-weight, default 0.01: the prior
                     pulls the hidden part) to the other joints' positions from --starts seeded latent
                     draws; MPJPE of the joints the hidden part moves (leg: knee, ankle, foot; arm:
                     shoulder, elbow, wrist), mean over the starts; *_best_of_10_mm: the best start
                     per pose (best of --starts; the key keeps the name). With --reference,
                     reference_completion_leg_mm / _arm_mm: the hidden rotations set to their mean
                     over the reference (training) poses, whatever the rest shows: what a completion
                     that learnt nothing but the average part scores
  denoise_40_mm, denoise_100_mm  the 22 joints plus 40 / 100 mm Gaussian noise per coordinate as the
                     IK's targets (orientation, translation and pose with the prior, cold start, the
                     IK's weights with latent weight --latent-weight, default 0.01; one frame at a time,
                     no temporal term); MPJPE of the fit to the clean joints. denoise_*_input_mm: the
                     noisy joints' own error (~1.6 sigma)
  apd_mm             average pairwise distance (MPJPE, root-relative) of --samples prior samples:
                     diversity; data_apd_mm: the same for --samples seeded held-out poses
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
from core.ik import IKWeights  # noqa: E402
from core.mocap.convert import DEFAULT_MIN_CHANGE, convert_file, find_mocap_files, load_target  # noqa: E402
from core.mocap.skeletons import load_preset  # noqa: E402
from core.pose_files import load_pose_file  # noqa: E402
from core.prior_protocols import (  # noqa: E402
    LEFT_LEG,
    PROTOCOL_WEIGHTS,
    RIGHT_ARM,
    average_pairwise_distance,
    body_joints,
    complete,
    denoise,
    mean_part_completion,
)
from core.rotations import axis_angle_to_matrix  # noqa: E402
from core.train import display_path, full_rotations  # noqa: E402
from core.vposer import VPoser, default_vposer_path, load_vposer  # noqa: E402

NUM_BODY_JOINTS = 22


# --------------------------------------------------------------------------------------------
# Inputs


def find_files(paths: list[str], subjects: list[str] | None = None) -> list[Path]:
    try:
        files = find_mocap_files(paths, subjects, (".bvh", ".npz"))
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    if len({p.suffix.lower() for p in files}) > 1:
        raise SystemExit("error: give either BVH files or .npz files, not both (they would count twice)")
    return files


def load_body_poses(files: list[Path], body: str | None, log=None) -> np.ndarray:
    """(N, 63) body poses (joints 1..21, axis-angle) from BVH (converted) or .npz files."""
    chunks = []
    if files[0].suffix.lower() == ".bvh":
        target = load_target(body)
        preset = load_preset("cmu")
        for path in files:
            clip = convert_file(path, target, preset, 30.0, DEFAULT_MIN_CHANGE)
            chunks.append(clip["poses"][:, 3:66])
            if log:
                log(f"  {path.name}: {len(clip['poses'])} frames")
    else:
        for path in files:
            chunks.append(load_pose_file(path).poses[:, 3:66])
    return np.concatenate(chunks).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Metrics


def _pose(body: BodyModel, matrices: torch.Tensor, vertices: bool):
    out = body.forward_rotations(full_rotations(matrices, body.num_joints), return_vertices=vertices)
    joints = out.joints[:, :NUM_BODY_JOINTS]
    return out.vertices, joints - joints[:, :1]


def _nearest_mpjpe(queries: torch.Tensor, refs: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    """For each query (Q, 22, 3): the smallest MPJPE (mean joint distance) to any ref (R, 22, 3)."""
    best = []
    for q in queries.split(chunk):
        distance = (q[:, None] - refs[None]).norm(dim=-1).mean(-1)  # (chunk, R)
        best.append(distance.min(dim=1).values)
    return torch.cat(best)


@torch.no_grad()
def evaluate(
    model: VPoser,
    body: BodyModel,
    poses: np.ndarray,
    samples: int = 1000,
    seed: int = 0,
    max_data: int = 5000,
    chunk: int = 200,
    reference: np.ndarray | None = None,
) -> dict[str, float]:
    """The metrics described in the module doc, for (N, 63) poses."""
    model = model.eval()
    poses_t = torch.as_tensor(poses, dtype=torch.float32)
    v2v_sum, mpjpe_sum, joints_all = 0.0, 0.0, []
    for part in poses_t.split(chunk):
        matrices = pose_rotations(part)
        verts, joints = _pose(body, matrices, True)
        rec_verts, rec_joints = _pose(body, model.decode_matrix(model.encode(part).mean), True)
        v2v_sum += float((rec_verts - verts).norm(dim=-1).mean(-1).sum())
        mpjpe_sum += float((rec_joints - joints).norm(dim=-1).mean(-1).sum())
        joints_all.append(joints)
    data_joints = torch.cat(joints_all)
    n = len(poses_t)

    z = model.sample_latent(samples, seed=seed)
    sample_joints = torch.cat([_pose(body, model.decode_matrix(part), False)[1] for part in z.split(chunk)])
    subset = data_joints[torch.linspace(0, n - 1, min(n, max_data)).round().long()] if n > max_data else data_joints
    result = {
        "frames": n,
        "recon_v2v_mm": 1000 * v2v_sum / n,
        "recon_mpjpe_mm": 1000 * mpjpe_sum / n,
        "sample_to_data_mm": 1000 * float(_nearest_mpjpe(sample_joints, data_joints).mean()),
        "data_to_sample_mm": 1000 * float(_nearest_mpjpe(subset, sample_joints).mean()),
        "samples": samples,
        "data_poses_for_coverage": len(subset),
    }
    if reference is not None:
        # The same two numbers for `samples` real poses drawn from other data (e.g. the training
        # set) in place of prior samples: what a prior that reproduced that data exactly would get.
        pick = torch.randperm(len(reference), generator=torch.Generator().manual_seed(seed))[:samples]
        ref = torch.as_tensor(reference[pick.numpy()], dtype=torch.float32)
        ref_joints = torch.cat([_pose(body, pose_rotations(part), False)[1]
                                for part in ref.split(chunk)])
        result["reference_sample_to_data_mm"] = 1000 * float(_nearest_mpjpe(ref_joints, data_joints).mean())
        result["reference_data_to_sample_mm"] = 1000 * float(_nearest_mpjpe(subset, ref_joints).mean())
    pick = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:samples]
    result["apd_mm"] = 1000 * average_pairwise_distance(sample_joints)
    result["data_apd_mm"] = 1000 * average_pairwise_distance(data_joints[pick])
    result["data_poses_for_apd"] = len(pick)
    return result


def evaluate_protocols(model: VPoser, body: BodyModel, poses: np.ndarray, count: int = 500, starts: int = 10,
                       seed: int = 0, noise_mm: tuple[float, ...] = (40.0, 100.0), weights: IKWeights = PROTOCOL_WEIGHTS,
                       log=None, reference: np.ndarray | None = None) -> dict:
    """Completion and denoising (module doc) on `count` evenly spaced (N, 63) poses, fitted with the
    IK's `weights`; with (M, 63) reference poses, also the completion by their mean part."""
    model = model.eval()
    rows = protocol_rows(len(poses), count)
    rotations = pose_rotations(poses[rows])
    reference_rotations = None if reference is None else pose_rotations(reference)
    with torch.no_grad():
        truth = body_joints(body, rotations)
    result: dict = {}
    info: dict = {"poses": len(rows), "completion_starts": starts, "completion_seeds": [seed + k for k in range(starts)]}
    for name, hidden in (("leg", LEFT_LEG), ("arm", RIGHT_ARM)):
        fit = complete(body, model, truth, hidden, starts=starts, seed=seed, weights=weights)
        result[f"completion_{name}_mm"] = 1000 * float(fit.mean.mean())
        result[f"completion_{name}_best_of_10_mm"] = 1000 * float(fit.best.mean())
        if reference_rotations is not None:
            average = mean_part_completion(body, rotations, reference_rotations, hidden)
            result[f"reference_completion_{name}_mm"] = 1000 * float(average.mean())
        info[f"completion_{name}_hidden"] = list(hidden)
        info[f"completion_{name}_scored"] = list(fit.scored)
        if log:
            log(f"  completion {name}: {result[f'completion_{name}_mm']:.1f} mm "
                f"(best of {starts}: {result[f'completion_{name}_best_of_10_mm']:.1f} mm)")
    for sigma in noise_mm:
        fitted, noisy = denoise(body, model, truth, sigma / 1000, seed=seed, weights=weights)
        result[f"denoise_{sigma:g}_mm"] = 1000 * float(fitted.mean())
        result[f"denoise_{sigma:g}_input_mm"] = 1000 * float(noisy.mean())
        if log:
            log(f"  denoise {sigma:g} mm: {result[f'denoise_{sigma:g}_mm']:.1f} mm "
                f"(noisy input {result[f'denoise_{sigma:g}_input_mm']:.1f} mm)")
    info["denoise_seed"] = seed
    info["apd_seed"] = seed
    info["ik_latent_weight"] = weights.latent
    result["protocols"] = info
    return result


def protocol_rows(n: int, count: int) -> np.ndarray:
    """The protocols' poses: `count` of n, evenly spaced (all of them where n <= count)."""
    return np.unique(np.linspace(0, n - 1, min(count, n)).round().astype(np.int64))


def pose_rotations(poses: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(N, 63) axis-angle body poses -> (N, 21, 3, 3)."""
    return axis_angle_to_matrix(torch.as_tensor(poses).view(-1, 21, 3))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", metavar="PATH", help="folder(s), file(s) or glob pattern(s)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--weights", default=None, help="VPoser weights (default: the shipped open prior)")
    parser.add_argument("--body", default=None, help="body model .npz (default: the open adult body)")
    parser.add_argument("--subjects", nargs="*", default=None, help="only files named '<subject>_*'")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-data", type=int, default=5000, help="real poses used for data_to_sample_mm")
    parser.add_argument("--reference", nargs="+", default=None, metavar="PATH",
                        help="real poses (e.g. the training folder) to compute the same sample metrics for "
                             "--samples poses drawn from them instead of from the prior: a floor for comparison")
    parser.add_argument("--protocol-poses", type=int, default=500,
                        help="held-out poses (evenly spaced) for the completion and denoising protocols; 0 skips them")
    parser.add_argument("--starts", type=int, default=10, help="seeded latent starts per completion")
    parser.add_argument("--latent-weight", type=float, default=PROTOCOL_WEIGHTS.latent,
                        help="the IK's latent weight for the completion and denoising fits (default 0.01, "
                             f"core.prior_protocols.PROTOCOL_WEIGHTS; {IKWeights().latent:g} fits as the product solves)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.samples < 2 or args.starts < 1 or args.protocol_poses < 0 or not args.latent_weight >= 0:
        parser.error("--samples must be 2 or more, --starts 1 or more, --protocol-poses and --latent-weight 0 or more")
    if args.threads:
        torch.set_num_threads(args.threads)

    start = time.perf_counter()
    files = find_files(args.paths, args.subjects)
    say = None if args.json else print
    if say:
        say(f"{len(files)} {files[0].suffix.lower()[1:].upper()} files")
    poses = load_body_poses(files, args.body, log=say)
    weights = Path(args.weights) if args.weights else default_vposer_path()
    model = load_vposer(weights)
    body = BodyModel.open_default("adult") if args.body is None else BodyModel.from_file(args.body)
    body = body.eval().requires_grad_(False)
    reference = None
    if args.reference:
        reference = load_body_poses(find_files(args.reference), args.body)
    metrics = evaluate(model, body, poses, samples=args.samples, seed=args.seed, max_data=args.max_data,
                       reference=reference)
    if args.protocol_poses:
        metrics.update(evaluate_protocols(model, body, poses, count=args.protocol_poses, starts=args.starts,
                                          seed=args.seed, weights=IKWeights(latent=args.latent_weight), log=say,
                                          reference=reference))
    metrics.update(
        weights=display_path(weights),
        body="open default (adult)" if args.body is None else display_path(args.body),
        files=len(files),
        seed=args.seed,
        seconds=round(time.perf_counter() - start, 1),
    )
    if args.json:
        print(json.dumps(metrics, indent=1))
    else:
        print(
            f"{metrics['frames']} poses from {len(files)} files; weights {metrics['weights']}\n"
            f"  reconstruction (encoder mean -> decode): {metrics['recon_v2v_mm']:.1f} mm per vertex, "
            f"{metrics['recon_mpjpe_mm']:.1f} mm per joint\n"
            f"  {args.samples} samples (seed {args.seed}): nearest real pose {metrics['sample_to_data_mm']:.1f} mm "
            f"MPJPE on average\n"
            f"  real poses ({metrics['data_poses_for_coverage']}): nearest sample "
            f"{metrics['data_to_sample_mm']:.1f} mm MPJPE on average\n"
            f"  diversity: {metrics['apd_mm']:.1f} mm average pairwise distance of the samples, "
            f"{metrics['data_apd_mm']:.1f} mm of real held-out poses\n"
            f"  ({metrics['seconds']:.0f} s)"
        )
        if args.protocol_poses:
            print(f"  completion (mean / best of {args.starts} starts): left leg {metrics['completion_leg_mm']:.1f} / "
                  f"{metrics['completion_leg_best_of_10_mm']:.1f} mm, right arm {metrics['completion_arm_mm']:.1f} / "
                  f"{metrics['completion_arm_best_of_10_mm']:.1f} mm; denoising 40 mm -> {metrics['denoise_40_mm']:.1f} mm, "
                  f"100 mm -> {metrics['denoise_100_mm']:.1f} mm")
        if reference is not None:
            print(f"  reference: {args.samples} real poses from {' '.join(args.reference)} in place of samples: "
                  f"{metrics['reference_sample_to_data_mm']:.1f} mm and {metrics['reference_data_to_sample_mm']:.1f} mm")
            if args.protocol_poses:
                print(f"  completion by the reference's mean part: left leg {metrics['reference_completion_leg_mm']:.1f} mm, "
                      f"right arm {metrics['reference_completion_arm_mm']:.1f} mm")
    return 0


if __name__ == "__main__":
    sys.exit(main())
