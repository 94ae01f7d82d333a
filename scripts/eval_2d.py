"""Evaluate the 2D fit on real mocap seen by random virtual cameras.

    python scripts/eval_2d.py BVH_FOLDER [--subjects 06 49] [--frames 300] [--json]

Held-out clips are retargeted onto the open body as for training (as scripts/eval_ik.py does); a
stretch of consecutive frames from each clip's middle is seen by one static random camera per clip
(core.synthetic_views: 1920 x 1080, focal 1000-2000 px, 3-6 m away, any heading, 2 px Gaussian
noise, 10 % of the points dropped), and its 22 body joints are fitted as a single-view sequence
(core.fit2d) without knowing the pose: with the prior, and without it (raw rotations, 40 LM
iterations: the baseline converged). Then the same frames from two cameras 90 degrees apart.

JSON keys (stable): frames; mpjpe_mm (joints after moving the pelvis onto the truth's, single view);
pa_mpjpe_mm (after the best similarity transform); noprior_pa_mpjpe_mm (the same without the prior);
reproj_px (mean distance to the noisy seen pixels); two_view_mpjpe_mm (pelvis-aligned, two views);
frames_per_s (single-view fit with the prior, torch threads as given). With --focal-search, each
clip's focal length is also estimated from the default guess (1920 px; core.fit2d.estimate_focal)
and the single view fitted again with it: focal_median_error_pct and focal_within_15pct (over the
clips), focal_guess_median_error_pct (the default guess's, for comparison), focal_pa_mpjpe_mm (the
fit with the estimated focal).

--renders N: instead, N held-out poses rendered by Blender (Workbench) from two known cameras each,
MediaPipe's landmarks detected in the pictures and each picture fitted as a single photo: a real
detector on real pixels (needs bpy and the `detect` extra; see scripts/eval_2d_renders.py). Same
keys, plus `detected` (the share of pictures where the detector found the body).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
for folder in (REPO, REPO / "scripts"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from eval_ik import converted_poses  # noqa: E402

from core.body_model import BodyModel  # noqa: E402
from core.cameras import Cameras  # noqa: E402
from core.fit2d import Fit2DOptions, estimate_focal, fit_2d, procrustes_errors  # noqa: E402
from core.ik import IKSolver  # noqa: E402
from core.keypoints import NUM_BODY_JOINTS, KeypointSet  # noqa: E402
from core.mocap.convert import find_mocap_files  # noqa: E402
from core.synthetic_views import synthetic_views  # noqa: E402
from core.vposer import default_vposer_path, load_vposer  # noqa: E402


def pelvis_errors(predicted: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """(T, K) joint distances with the pelvis (joint 0) of `predicted` moved onto the truth's."""
    return ((predicted - predicted[:, :1]) - (truth - truth[:, :1])).norm(dim=-1)


def stretches(counts: list[int], frames: int) -> list[tuple[int, int]]:
    """(start, stop) into the concatenated clips: up to frames / clips consecutive frames from each
    clip's middle."""
    each, spans, offset = max(3, frames // len(counts)), [], 0
    for count in counts:
        length = min(each, count)
        start = offset + (count - length) // 2
        spans.append((start, start + length))
        offset += count
    return spans


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", metavar="PATH", help="BVH folder(s), file(s) or glob pattern(s)")
    parser.add_argument("--subjects", nargs="*", default=["06", "49"], help="only files named '<subject>_*'")
    parser.add_argument("--frames", type=int, default=300, help="frames in all, spread over the clips")
    parser.add_argument("--fps", type=float, default=30.0, help="frame rate the clips are read at")
    parser.add_argument("--smoothness", type=float, default=Fit2DOptions.smoothness,
                        help="the temporal term's weight (0: off)")
    parser.add_argument("--latent", type=float, default=None,
                        help="the prior's weight (default: core.fit2d.Fit2DOptions' for one view / several)")
    parser.add_argument("--robust-scale", type=float, default=None,
                        help="Geman-McClure scale in pixels (default: core.fit2d.Fit2DOptions' for one view / several)")
    parser.add_argument("--iterations", type=int, default=Fit2DOptions.pose_iterations,
                        help="LM iterations of the prior stage")
    parser.add_argument("--edge-on", type=float, default=Fit2DOptions.edge_on,
                        help="shoulder width / torso length below which both facings are tried")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--renders", type=int, default=0, metavar="N",
                        help="N poses rendered by Blender and detected by MediaPipe instead of projected joints")
    parser.add_argument("--renders-out", default=None, metavar="DIR",
                        help="with --renders: keep the pictures and the detector's files there")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--focal-search", action="store_true", help="also estimate each clip's focal length")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        files = find_mocap_files(args.paths, args.subjects)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    model = BodyModel.open_default("adult")
    prior = load_vposer(default_vposer_path()).eval()
    keypoints = KeypointSet.from_joints(model, model.joint_names[:NUM_BODY_JOINTS])
    rotations, translations, counts = converted_poses(model, files, args.fps)
    options = Fit2DOptions(pose_iterations=args.iterations, edge_on=args.edge_on, latent=args.latent,
                           robust_scale=args.robust_scale, smoothness=args.smoothness)
    if args.renders:
        return report(render_metrics(model, prior, rotations, translations, args, options), args.json)
    solvers = {"prior": IKSolver(model, keypoints, prior), "noprior": IKSolver(model, keypoints, None)}
    generator = torch.Generator().manual_seed(args.seed)
    errors: dict[str, list[torch.Tensor]] = {"mpjpe": [], "pa": [], "noprior_pa": [], "reproj": [], "two_view": []}
    seconds, frames, focal_errors, guess_errors, focal_pa = 0.0, 0, [], [], []
    for start, stop in stretches(counts, args.frames):
        with torch.no_grad():
            truth = keypoints.evaluate(rotations[start:stop], None, translations[start:stop])
        # float64 points: the synthetic cameras are float64 (fit_2d casts them to the body's dtype)
        one = synthetic_views(truth.double(), generator, views=1, sequence=True)
        two = synthetic_views(truth.double(), generator, views=2, sequence=True)
        began = time.perf_counter()
        fit = fit_2d(solvers["prior"], one.cameras[0], one.pixels[:, 0], one.confidence[:, 0], sequence=True,
                     options=options)
        seconds += time.perf_counter() - began
        frames += stop - start
        bare = fit_2d(solvers["noprior"], one.cameras[0], one.pixels[:, 0], one.confidence[:, 0], sequence=True,
                      options=dataclasses.replace(options, pose_iterations=40, sequence_pose_iterations=40))  # run to convergence
        both = fit_2d(solvers["prior"], two.cameras, two.pixels, two.confidence, sequence=True, options=options)
        errors["mpjpe"].append(pelvis_errors(fit.result.points, truth).flatten())
        errors["pa"].append(procrustes_errors(fit.result.points, truth).flatten())
        errors["noprior_pa"].append(procrustes_errors(bare.result.points, truth).flatten())
        errors["reproj"].append(fit.reproj_px)
        errors["two_view"].append(pelvis_errors(both.result.points, truth).flatten())
        if args.focal_search:
            camera = one.cameras[0]
            guess = Cameras(torch.full_like(camera.focal, float(camera.image_size.max())), camera.principal,
                            camera.image_size, camera.rotation, camera.translation)
            found = estimate_focal(solvers["prior"], guess, one.pixels[:, 0], one.confidence[:, 0], options=options)
            focal_errors.append(abs(found.focal / float(camera.focal[0]) - 1))
            guess_errors.append(abs(float(guess.focal[0]) / float(camera.focal[0]) - 1))
            refit = fit_2d(solvers["prior"], found.camera, one.pixels[:, 0], one.confidence[:, 0], sequence=True,
                           options=options)
            focal_pa.append(procrustes_errors(refit.result.points, truth).flatten())
    mean = {name: float(torch.cat(values).double().mean()) for name, values in errors.items()}
    metrics = {"frames": frames, "mpjpe_mm": round(1000 * mean["mpjpe"], 1), "pa_mpjpe_mm": round(1000 * mean["pa"], 1),
               "noprior_pa_mpjpe_mm": round(1000 * mean["noprior_pa"], 1), "reproj_px": round(mean["reproj"], 2),
               "two_view_mpjpe_mm": round(1000 * mean["two_view"], 1),
               "frames_per_s": round(frames / seconds, 1), "clips": len(files), "threads": torch.get_num_threads()}
    if args.focal_search:
        metrics["focal_median_error_pct"] = round(100 * float(torch.tensor(focal_errors).median()), 1)
        metrics["focal_within_15pct"] = round(sum(e < 0.15 for e in focal_errors) / len(focal_errors), 2)
        metrics["focal_guess_median_error_pct"] = round(100 * float(torch.tensor(guess_errors).median()), 1)
        metrics["focal_pa_mpjpe_mm"] = round(1000 * float(torch.cat(focal_pa).double().mean()), 1)
    return report(metrics, args.json)


def render_metrics(model: BodyModel, prior, rotations: torch.Tensor, translations: torch.Tensor,
                   args: argparse.Namespace, options: Fit2DOptions) -> dict:
    """--renders: the metrics on pictures rendered by Blender and detected by MediaPipe."""
    from eval_2d_renders import evaluate_renders

    from core.detect2d import DetectError, import_detector

    try:
        import bpy  # noqa: F401
    except ImportError:
        raise SystemExit("error: --renders needs Blender as a module (bpy): pip install -e '.[dev]'") from None
    try:
        import_detector()
    except DetectError as error:  # the extra is absent: how to install it
        raise SystemExit(f"error: {error}") from None
    return {**evaluate_renders(model, prior, rotations, translations, args.renders, options, args.seed,
                                             args.renders_out),
            "threads": torch.get_num_threads(), "renders": True}


def report(metrics: dict, as_json: bool) -> int:
    if as_json:
        print(json.dumps(metrics, indent=1))
    else:
        print(", ".join(f"{key} {value}" for key, value in metrics.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
