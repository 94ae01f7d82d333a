"""Fit the open body to 2D keypoints (a JSON file, or a folder of per-frame files: a video).

    python scripts/fit_2d.py KEYPOINTS.json|FOLDER [KEYPOINTS2 ...] [--format openpose|coco|mediapipe]
        [--image-size W H] [--focal PX] [--cameras cameras.json] [--fps N] --out poses.npz [--overlay overlay.png]

One keypoint source per view: with no --cameras, one photo or video seen by an upright camera at the
origin (core.cameras.Cameras.for_image: focal --focal pixels, default the image's longer side); with
--cameras, one source per camera in the file, same frame count. Frames where fewer than 3 keypoints
are seen take the nearest fitted frame's pose. Prints a JSON report (frames, reproj_px: mean
reprojection error in pixels, seconds, frames_per_s) and writes AMASS-style poses (`poses`, `trans`,
`mocap_framerate`) in the body's Y-up model space. --overlay draws the first frame's detected
keypoints and the fitted body's projection (PNG; needs matplotlib).
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
from core.cameras import Cameras, read_cameras  # noqa: E402
from core.errors import VPoserError  # noqa: E402
from core.fit2d import Fit2DOptions, fill_from_nearest, fit_2d  # noqa: E402
from core.ik import IKSolver  # noqa: E402
from core.keypoints2d import FORMATS, KeypointMap, read_keypoints  # noqa: E402
from core.pose_files import PoseSequence, save_pose_file  # noqa: E402
from core.vposer import default_vposer_path, load_vposer  # noqa: E402


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", metavar="KEYPOINTS", help="keypoint JSON file or folder, one per view")
    parser.add_argument("--format", choices=sorted(FORMATS), default=None, help="default: recognised from the file")
    parser.add_argument("--image-size", nargs=2, type=int, metavar=("W", "H"), default=None)
    parser.add_argument("--focal", type=float, default=None, help="focal length in pixels (default: max(W, H))")
    parser.add_argument("--cameras", default=None, help="cameras JSON (core.cameras format), one per input")
    parser.add_argument("--fps", type=float, default=30.0, help="frame rate written to the pose file")
    parser.add_argument("--smoothness", type=float, default=Fit2DOptions.smoothness,
                        help="temporal term weight for a sequence (0: off)")
    parser.add_argument("--person", default="largest", help="'largest' or an index into each frame's people")
    parser.add_argument("--out", required=True, help="AMASS-style .npz to write")
    parser.add_argument("--overlay", default=None, help="PNG of the first frame's keypoints and fit")
    return parser.parse_args(argv)


def load_views(args: argparse.Namespace, model: BodyModel) -> tuple[KeypointMap, np.ndarray, np.ndarray, Cameras]:
    """The keypoint map, pixels (T, C, K, 2), confidence (T, C, K) and cameras (C,)."""
    person = int(args.person) if str(args.person).isdigit() else args.person
    files = [read_keypoints(path, args.format, person, args.image_size) for path in args.inputs]
    if len({item.format for item in files}) > 1:
        raise VPoserError(f"the inputs are in different formats: {[item.format for item in files]}")
    if len({len(item.data) for item in files}) > 1:
        raise VPoserError(f"the inputs have different frame counts: {[len(item.data) for item in files]}")
    mapping = KeypointMap.load(files[0].format, model)
    selected = [mapping.select(item) for item in files]
    pixels = np.stack([pixels for pixels, _ in selected], 1)
    confidence = np.stack([confidence for _, confidence in selected], 1)
    if args.cameras:
        cameras = read_cameras(args.cameras)
        if cameras.batch_shape != (len(files),):
            raise VPoserError(f"{args.cameras}: {cameras.batch_shape[0]} camera(s) for {len(files)} keypoint input(s)")
    else:
        if len(files) > 1:
            raise VPoserError("several keypoint inputs need --cameras (one camera per input)")
        size = files[0].image_size or (tuple(args.image_size) if args.image_size else None)
        if size is None:
            raise VPoserError(f"{args.inputs[0]}: the image size is unknown: give --image-size W H (or --cameras)")
        cameras = Cameras.for_image(*size, focal=args.focal).reshape(1)
    return mapping, pixels, confidence, cameras


def draw_overlay(path: str, cameras: Cameras, pixels: np.ndarray, points: np.ndarray) -> None:
    """The first view's detected keypoints (crosses) and the fit's projected keypoints (dots)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    camera = cameras[0]
    width, height = camera.image_size.tolist()
    fitted = camera.project(torch.as_tensor(points, dtype=camera.focal.dtype)).numpy()
    figure, axes = plt.subplots(figsize=(8, 8 * height / width))
    axes.set_xlim(0, width)
    axes.set_ylim(height, 0)
    axes.set_aspect("equal")
    axes.plot(pixels[:, 0], pixels[:, 1], "x", color="tab:red", label="keypoints")
    axes.plot(fitted[:, 0], fitted[:, 1], "o", color="tab:blue", markersize=4, label="fitted body")
    axes.legend(loc="upper right")
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    start = time.perf_counter()
    model = BodyModel.open_default("adult")
    prior = load_vposer(default_vposer_path()).eval()
    try:
        mapping, pixels, confidence, cameras = load_views(args, model)
    except VPoserError as error:
        raise SystemExit(f"error: {error}") from None
    seen = (np.isfinite(pixels).all(-1) & (confidence > 0)).reshape(len(pixels), -1).sum(1)
    usable = seen >= 3
    if not usable.any():
        raise SystemExit(f"error: {args.inputs[0]}: no frame shows 3 or more mapped keypoints")
    solver = IKSolver(model, mapping.keypoints, prior)
    options = Fit2DOptions(smoothness=args.smoothness)
    single = cameras.batch_shape[0] == 1  # (T, K, 2) for one view, (T, C, K, 2) for several
    view_pixels, view_confidence = (pixels[usable, 0], confidence[usable, 0]) if single else \
        (pixels[usable], confidence[usable])
    chosen = cameras[0] if single else cameras
    fit_start = time.perf_counter()
    fit = fit_2d(solver, chosen, view_pixels, view_confidence, sequence=len(view_pixels) > 1, options=options)
    seconds = time.perf_counter() - fit_start
    poses = fill_from_nearest(fit.poses.numpy(), usable) if not usable.all() else fit.poses.numpy()
    transl = fill_from_nearest(fit.transl.numpy(), usable) if not usable.all() else fit.transl.numpy()
    save_pose_file(args.out, PoseSequence(poses, transl, np.zeros(model.num_betas), framerate=args.fps))
    if args.overlay:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise SystemExit("error: --overlay needs matplotlib (pip install matplotlib); the poses were written") \
                from None
        draw_overlay(args.overlay, cameras, pixels[np.flatnonzero(usable)[0], 0], fit.result.points[0].numpy())
    report = {"frames": int(len(pixels)), "fitted_frames": int(usable.sum()),
              "reproj_px": round(float(fit.reproj_px.mean()), 3), "seconds": round(seconds, 3),
              "frames_per_s": round(float(usable.sum()) / seconds, 1),
              "total_seconds": round(time.perf_counter() - start, 2), "out": args.out}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
