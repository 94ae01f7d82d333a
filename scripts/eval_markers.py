"""Marker retargeting before and after calibration, on realistic synthetic C3D takes.

There are no real optical marker takes here, so each take is made from a real CMU clip (held-out
subjects): the BVH clip is retargeted onto the body (its skeleton solve: poses and a shape), a
different subject is made (its shape moved by N(0, --shape-spread) per beta, and the shipped
Plug-in Gait layout's markers slid 1-3 cm along the skin and put 5-15 mm off it), the markers are
placed on that subject posed by the clip, --noise-mm of Gaussian noise and --gaps of random
occlusions are added, and the take is written as a C3D file in millimetres in a Z-up lab with the
analog header CMU's own takes carry (1 analog sample per frame against 600 / 120 in the
parameters). Each take is then read back and retargeted from its markers with the shipped layout,
uncalibrated and calibrated (core.markers), and compared with the truth:

    marker_mm  mean distance from each fitted marker to its target (retarget.py's mpjpe_mm)
    joint_mm   mean distance of the 22 body joints from the subject's true joints

    python scripts/eval_markers.py path/to/cmu_asfamc_bvh          # clips 06_12 and 49_03, 1,000 frames each
    python scripts/eval_markers.py CLIP.bvh ... --frames 600 --keep-c3d DIR
    python scripts/eval_markers.py path/to/cmu_asfamc_bvh --plot docs/images/marker_calibration.png
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
for folder in (REPO, REPO / "scripts"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from core.body_model import BodyModel  # noqa: E402
from core.keypoints import KeypointSet  # noqa: E402
from core.markers import displaced_layout  # noqa: E402
from core.mocap.bvh import read_bvh  # noqa: E402
from core.mocap.c3d import C3DWarning, lab_to_model_rotation, read_c3d, to_model_space, write_c3d  # noqa: E402
from core.retarget import Retarget, RetargetOptions, bvh_targets, marker_targets  # noqa: E402
from core.rotations import axis_angle_to_matrix  # noqa: E402
from core.vposer import load_default_vposer  # noqa: E402

DEFAULT_CLIPS = ("06_12.bvh", "49_03.bvh")  # subjects kept apart from the prior's training
LAYOUT = REPO / "core" / "data" / "markers_plugin_gait_open.json"


def solve(model: BodyModel, targets, prior, options: RetargetOptions):
    run = Retarget(model, targets, prior, options)
    for _ in run:
        pass
    return run.result()


def body_joints(model: BodyModel, poses: torch.Tensor, betas: torch.Tensor, transl: torch.Tensor) -> np.ndarray:
    """(T, 22, 3) posed body joints for AMASS-layout poses (T, 3 J)."""
    with torch.no_grad():
        rotations = axis_angle_to_matrix(poses.view(len(poses), -1, 3))
        output = model.forward_rotations(rotations, betas.expand(len(poses), -1), None, transl,
                                         return_vertices=False)
    return output.joints[:, :22].double().numpy()


def cmu_analog_header(path: Path) -> None:
    """Give a C3D file written with ANALOG:RATE 5 x POINT:RATE the header CMU's own takes carry:
    1 analog sample per frame (word 10 of the header) against 5 in the parameters."""
    data = bytearray(path.read_bytes())
    data[18:20] = struct.pack("<H", 1)
    path.write_bytes(bytes(data))


def make_take(model: BodyModel, clip: Path, frames: int, seed: int, folder: Path, noise_mm: float = 1.5,
              gaps: float = 0.01, shape_spread: float = 0.5):
    """The clip's skeleton solve, a subject, and their marker take written as C3D: (path, truth
    joints (T, 22, 3)). A clip shorter than `frames` is looped."""
    motion = read_bvh(clip)
    rows = np.arange(frames) % motion.num_frames
    source = solve(model, bvh_targets(motion, "cmu", model, rows), None, RetargetOptions())
    generator = torch.Generator().manual_seed(seed)
    betas = source.betas + shape_spread * torch.randn(model.num_betas, generator=generator, dtype=model.dtype)
    subject = displaced_layout(KeypointSet.from_json(model, LAYOUT), seed)
    with torch.no_grad():
        rotations = axis_angle_to_matrix(source.poses.view(len(rows), -1, 3))
        points = subject.evaluate(rotations, betas.expand(len(rows), -1), source.transl).double().numpy()
    rng = np.random.default_rng(seed)
    points = points + rng.normal(scale=noise_mm / 1000, size=points.shape)
    points[rng.random(points.shape[:2]) < gaps] = np.nan
    lab = points @ lab_to_model_rotation("z")  # model -> Z-up lab (row vectors: the inverse rotation)
    path = write_c3d(folder / f"{clip.stem}_markers.c3d", list(subject.names), lab, round(motion.fps, 3), units="mm",
                      analog_rate=5 * round(motion.fps, 3))
    cmu_analog_header(path)
    return path, body_joints(model, source.poses, betas, source.transl)


def evaluate(model: BodyModel, prior, path: Path, truth: np.ndarray, calibrate: bool) -> tuple[dict, object, object]:
    """The take retargeted from its markers: (report, retarget result, targets)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", C3DWarning)
        clip = read_c3d(path)
    targets = marker_targets(model, LAYOUT, clip.labels, to_model_space(clip.positions, "z"), clip.frame_rate,
                             source=path.name)
    start = time.perf_counter()
    result = solve(model, targets, prior, RetargetOptions(calibrate=calibrate))
    seconds = time.perf_counter() - start
    fitted = body_joints(model, result.poses, result.betas, result.transl)
    joint_mm = 1000 * np.linalg.norm(fitted - truth[targets.source_frames], axis=-1).mean()
    report = {"marker_mm": round(result.mpjpe_mm, 2), "joint_mm": round(float(joint_mm), 2),
              "frames": len(targets.source_frames), "seconds": round(seconds, 2),
              "c3d_warnings": sum(issubclass(w.category, C3DWarning) for w in caught)}
    if result.calibration:
        values = result.calibration["calibration"].values()
        report["mean_slide_mm"] = round(float(np.mean([v["slide_mm"] for v in values])), 1)
        report["mean_offset_mm"] = round(float(np.mean([v["offset_mm"] for v in values])), 1)
    return report, result, targets


def plot_fits(model: BodyModel, fits: dict, out: Path, frame: int = 0) -> None:
    """One frame of a take, fitted before and after calibration: the body, the markers where the
    layout puts them on it (blue) and the measured markers (red), joined, front and side views."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from plot_body import VIEWS, draw_mesh, finish

    from core.keypoints import KeypointSet

    figure, axes = plt.subplots(1, 4, figsize=(13, 6.5))
    faces = model.faces.cpu().numpy()
    for column, (title, (report, result, targets)) in enumerate(fits.items()):
        layout = (KeypointSet.from_dict(model, result.calibration["markers"], source="calibrated")
                  if result.calibration else targets.keypoints)
        with torch.no_grad():
            rotations = axis_angle_to_matrix(result.poses[frame:frame + 1].view(1, -1, 3))
            output = model.forward_rotations(rotations, result.betas.reshape(1, -1), None,
                                             result.transl[frame:frame + 1])
            fitted = layout.evaluate(rotations, result.betas.reshape(1, -1), result.transl[frame:frame + 1])[0]
        vertices, fitted = output.vertices[0].double().numpy(), fitted.double().numpy()
        measured = targets.positions[frame].double().numpy()
        facing = _facing(rotations[0, 0].double().numpy())  # the body turned to face the camera
        centre = vertices.mean(0)
        vertices, fitted, measured = ((points - centre) @ facing.T for points in (vertices, fitted, measured))
        for view_index, view in enumerate(("front", "side")):
            ax = axes[2 * column + view_index]
            draw_mesh(ax, vertices, faces, view)
            screen = VIEWS[view]
            for start, end in zip(fitted @ screen.T, measured @ screen.T):
                ax.plot([start[0], end[0]], [start[1], end[1]], color="black", lw=0.8, zorder=4)
            for points, colour in ((fitted, "tab:blue"), (measured, "tab:red")):
                shown = points @ screen.T
                ax.scatter(shown[:, 0], shown[:, 1], s=8, color=colour, zorder=5)
            finish(ax, f"{title}: markers {report['marker_mm']:.1f} mm, joints {report['joint_mm']:.1f} mm"
                   if view == "front" else f"{title} (side)")
    figure.suptitle("Markers on the fitted body before and after calibration "
                    "(blue: where the layout puts them, red: measured)")
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)


def _facing(orient: np.ndarray) -> np.ndarray:
    """(3, 3) the turn about the vertical (Y) that makes a body with root rotation `orient` face +Z."""
    forward = orient @ np.array([0.0, 0.0, 1.0])
    yaw = np.arctan2(forward[0], forward[2])
    cos, sin = np.cos(-yaw), np.sin(-yaw)
    return np.array([[cos, 0.0, sin], [0.0, 1.0, 0.0], [-sin, 0.0, cos]])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clips", nargs="+", type=Path, help="CMU BVH clips, or a folder holding 06_12 and 49_03")
    parser.add_argument("--frames", type=int, default=1000, help="first frames of each clip")
    parser.add_argument("--noise-mm", type=float, default=1.5)
    parser.add_argument("--gaps", type=float, default=0.01, help="share of marker samples occluded")
    parser.add_argument("--shape-spread", type=float, default=0.5)
    parser.add_argument("--keep-c3d", type=Path, help="folder to keep the written takes in")
    parser.add_argument("--plot", type=Path, help="draw the first take's first frame before and after calibration")
    args = parser.parse_args(argv)
    clips = [folder / name for folder in args.clips if folder.is_dir() for name in DEFAULT_CLIPS]
    clips += [clip for clip in args.clips if not clip.is_dir()]
    model = BodyModel.open_default("adult")
    prior = load_default_vposer().eval()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep_c3d or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        for seed, clip in enumerate(clips, start=1):
            path, truth = make_take(model, clip, args.frames, seed, folder, args.noise_mm, args.gaps,
                                    args.shape_spread)
            row, fits = {"clip": clip.stem}, {}
            for calibrate in (False, True):
                key = "calibrated" if calibrate else "uncalibrated"
                fits[key] = evaluate(model, prior, path, truth, calibrate)
                row[key] = fits[key][0]
            rows.append(row)
            if args.plot and seed == 1:
                plot_fits(model, {"before": fits["uncalibrated"], "after": fits["calibrated"]}, args.plot)
            print(json.dumps(row), file=sys.stderr)
    summary = {key: {metric: round(float(np.mean([row[key][metric] for row in rows])), 2)
                     for metric in ("marker_mm", "joint_mm")} for key in ("uncalibrated", "calibrated")}
    print(json.dumps({"takes": rows, "mean": summary, "torch_threads": torch.get_num_threads()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
