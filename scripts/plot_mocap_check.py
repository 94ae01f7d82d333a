"""Visual check of the mocap conversion: source BVH skeleton next to the posed body.

    python scripts/plot_mocap_check.py BVH_DIR [--out docs/images/mocap_check.png]
                                      [--clips 02_05:700 05_02:500 ...] [--body MODEL.npz]

For each chosen frame (clip name and source frame index) the figure shows, in SMPL space
(metres, Y up; both figures turned by the source root's heading; front view from +Z and side view
from the body's right):
left, the source skeleton (lines between BVH joints, converted with the preset's axes and units);
right, the body posed with the converted pose (joints as a stick figure, mesh vertices as a light
point cloud). Left-side bones are red, right-side bones blue, the spine black, in both, so facing
direction and sides can be compared at a glance.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from core.mocap.bvh import end_site_positions, forward_kinematics, read_bvh  # noqa: E402
from core.mocap.skeletons import SMPL_BODY_JOINT_NAMES, load_preset  # noqa: E402
from core.mocap.transfer import retarget_bvh  # noqa: E402

# Varied takes of the main set (clip:frame at 120 fps): punch, dance, basketball dribble,
# squat/jumping jacks, one-leg balance, walking.
DEFAULT_CLIPS = ["02_05:820", "05_02:560", "06_13:1500", "14_06:2200", "49_18:600", "16_15:240"]

# Screen axes (rows: right, up) in SMPL space for each view.
VIEWS = {"front": np.array([[1.0, 0, 0], [0, 1, 0]]), "side": np.array([[0, 0, 1.0], [0, 1, 0]])}


def side_colour(name: str) -> str:
    low = name.lower()
    if low.startswith("left") or low.startswith("l") and name[1:2].isupper():
        return "tab:red"
    if low.startswith("right") or low.startswith("r") and name[1:2].isupper():
        return "tab:blue"
    return "black"


def draw_lines(ax, points: np.ndarray, segments, colours, view: str, dx: float, lw=2.0) -> None:
    P = points @ VIEWS[view].T
    for (a, b), c in zip(segments, colours):
        ax.plot([P[a, 0] + dx, P[b, 0] + dx], [P[a, 1], P[b, 1]], color=c, lw=lw, solid_capstyle="round")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bvh_dir", type=Path, help="folder of .bvh files (main-set format)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "mocap_check.png")
    parser.add_argument("--clips", nargs="*", default=DEFAULT_CLIPS, help="CLIP:FRAME items (source frame index)")
    parser.add_argument("--body", default=None, help="body model .npz (default: the open adult body)")
    parser.add_argument("--preset", default="cmu")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # small tensors: one thread is fastest

    from core.body_model import BodyModel

    model = (BodyModel.from_file(args.body, dtype=torch.float64) if args.body
             else BodyModel.open_default("adult", dtype=torch.float64))
    rest = model.rest_joints()[0]
    parents = model.parents
    names = list(model.joint_names)
    preset = load_preset(args.preset)
    body_ids = [names.index(n) for n in SMPL_BODY_JOINT_NAMES]
    body_segments = [(j, int(parents[j])) for j in body_ids if int(parents[j]) >= 0]
    body_colours = [side_colour(names[j]) for j, _ in body_segments]
    verts_every = max(1, model.num_vertices // 2500)

    n = len(args.clips)
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(2 * rows, cols, figsize=(4.2 * cols, 7.0 * rows), squeeze=False)
    for k, item in enumerate(args.clips):
        clip, frame = item.split(":") if ":" in item else (item, "0")
        frame = int(frame)
        motion = read_bvh(args.bvh_dir / f"{clip}.bvh")
        frame = min(frame, motion.num_frames - 1)
        result = retarget_bvh(motion, preset, rest, parents, names, frames=[frame])
        setup = result.setup
        # source skeleton in SMPL space (metres)
        g, p = forward_kinematics(motion, frames=[frame])
        ends_j, ends = end_site_positions(motion, g, p)
        C = setup.axes.numpy()
        src = (p[0].numpy() * setup.scale) @ C.T
        src_ends = (ends[0].numpy() * setup.scale) @ C.T
        pts = np.concatenate([src, src_ends])
        segs = [(j, int(motion.parents[j])) for j in range(motion.num_joints) if motion.parents[j] >= 0]
        segs += [(motion.num_joints + e, j) for e, j in enumerate(ends_j)]
        seg_names = [motion.names[a] if a < motion.num_joints else motion.names[b] for a, b in segs]
        src_colours = [side_colour(nm) for nm in seg_names]
        # posed body
        pose = result.poses.reshape(1, -1)
        with torch.no_grad():
            out = model(global_orient=pose[:, :3], body_pose=pose[:, 3:66], transl=result.trans)
        joints = out.joints[0].numpy()
        verts = out.vertices[0].numpy()[::verts_every]
        # Turn both figures by the same heading (from the source root) so that the front view shows
        # the front, and centre each on its pelvis horizontally.
        forward = C @ g[0, setup.root_source].numpy() @ C.T @ np.array([0.0, 0.0, 1.0])
        yaw = np.arctan2(forward[0], forward[2])
        turn = np.array([[np.cos(yaw), 0, -np.sin(yaw)], [0, 1, 0], [np.sin(yaw), 0, np.cos(yaw)]])
        hips, pelvis = src[setup.root_source] * [1, 0, 1], joints[0] * [1, 0, 1]
        pts = (pts - hips) @ turn.T
        joints, verts = (joints - pelvis) @ turn.T, (verts - pelvis) @ turn.T
        r, c = divmod(k, cols)
        for v, view in enumerate(("front", "side")):
            ax = axes[2 * r + v, c]
            V = verts @ VIEWS[view].T
            ax.scatter(V[:, 0] + 0.6, V[:, 1], s=0.3, c="0.75", lw=0)
            draw_lines(ax, pts, segs, src_colours, view, -0.6)
            draw_lines(ax, joints, body_segments, body_colours, view, 0.6, lw=2.5)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{clip} frame {frame} ({view}): BVH | body", fontsize=9)
            ax.axvline(0, color="0.9", lw=0.5)
    fig.suptitle("Mocap check: source skeleton (left) vs converted body (right); red = left side, blue = right side\n"
                 "both turned by the source root's heading; front view from +Z (the body's left on screen right), "
                 "side view from its right (front to the right)",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
