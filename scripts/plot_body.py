"""Render body meshes to PNG with matplotlib only (no OpenGL), for the docs.

A mesh is drawn as a depth-sorted PolyCollection of its camera-facing triangles with Lambert
shading: enough to judge a body's shape and pose at a glance on a machine without a GPU.
Posed samples go through the runtime body model (core.body_model), so the figure shows what
users get.

    python scripts/plot_body.py                  # renders the shipped open bodies into docs/images
    python scripts/plot_body.py --model core/data/openbody_allages.npz --out-dir build/images
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
from matplotlib.collections import PolyCollection  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from core.body_model import BodyModel  # noqa: E402

# Camera frames in SMPL model space (Y up, body faces +Z): the rows are the screen right, the
# screen up and the direction towards the camera.
VIEWS: dict[str, np.ndarray] = {
    "front": np.array([[1.0, 0, 0], [0, 1, 0], [0, 0, 1]]),
    "side": np.array([[0, 0, 1.0], [0, 1, 0], [-1, 0, 0]]),  # seen from the body's right
    "top": np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]]),  # seen from above, front down
}
SKIN = np.array([0.85, 0.72, 0.62])


def draw_mesh(
    ax: plt.Axes,
    vertices: np.ndarray,
    faces: np.ndarray,
    view: str = "front",
    offset: tuple[float, float] = (0.0, 0.0),
    color: np.ndarray = SKIN,
) -> None:
    """Draw one mesh on ``ax`` as seen from ``view``, shifted by ``offset`` on the screen."""
    cam = VIEWS[view]
    p = vertices @ cam.T  # (V, 3): screen x, screen y, depth (larger is nearer)
    tri = p[faces]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True) + 1e-12
    visible = normals[:, 2] > 0
    tri, normals = tri[visible], normals[visible]
    order = np.argsort(tri[:, :, 2].mean(axis=1))  # painter's algorithm: far first
    tri, normals = tri[order], normals[order]
    light = np.array([0.3, 0.4, 1.0]) / np.linalg.norm([0.3, 0.4, 1.0])
    shade = 0.25 + 0.75 * np.clip(normals @ light, 0.0, 1.0)
    colors = np.clip(shade[:, None] * color[None], 0.0, 1.0)
    polys = tri[:, :, :2] + np.asarray(offset)[None, None]
    ax.add_collection(PolyCollection(polys, facecolors=colors, edgecolors=colors, linewidths=0.1))


def draw_joints(
    ax: plt.Axes,
    joints: np.ndarray,
    parents: np.ndarray,
    view: str = "front",
    offset: tuple[float, float] = (0.0, 0.0),
) -> None:
    """Overlay the skeleton (joints and bones to their parents) on top of a drawn mesh."""
    p = joints @ VIEWS[view].T + np.array([*offset, 0.0])
    for j, parent in enumerate(parents):
        if parent >= 0:
            ax.plot(*p[[parent, j], :2].T, color="tab:blue", lw=0.8)
    ax.scatter(p[:, 0], p[:, 1], s=3, color="tab:red", zorder=3)


def finish(ax: plt.Axes, title: str) -> None:
    """Equal axes fitted to what was drawn, no ticks."""
    ax.autoscale_view()
    ax.set_aspect("equal")
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)


def load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def plot_template(models: dict[str, dict[str, np.ndarray]], out: Path) -> None:
    """Mean bodies in T-pose (front with the skeleton, and side), and the left hand from above."""
    fig, (ax, ax_hand) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [3.2, 1.0]})
    x = 0.0
    for view in ("front", "side"):
        for name, model in models.items():
            v, f = model["v_template"], model["f"]
            width = np.ptp((v @ VIEWS[view].T)[:, 0])
            x += width / 2
            draw_mesh(ax, v, f, view, (x, 0.0))
            if view == "front":
                draw_joints(ax, model["J_regressor"] @ v, model["kintree_table"][0], view, (x, 0.0))
            ax.text(x, v[:, 1].max() + 0.06, f"{name}, {view}", ha="center", fontsize=8)
            x += width / 2 + 0.25
    finish(ax, "mean bodies in the rest T-pose (skeleton: J_regressor joints)")
    model = next(iter(models.values()))
    v, f = model["v_template"], model["f"]
    left_hand = [20, *range(22, 37)]  # left wrist, then the left hand's 15 finger joints
    mask = model["weights"][:, left_hand].sum(axis=1) > 0.5
    draw_mesh(ax_hand, v, f[mask[f].all(axis=1)], "top")
    hand_parents = np.array([-1] + [0 if k % 3 == 0 else k for k in range(15)])
    draw_joints(ax_hand, (model["J_regressor"] @ v)[left_hand], hand_parents, "top")
    finish(ax_hand, "left hand from above\n(palm down, thumb to the front)")
    fig.tight_layout()
    fig.savefig(out, dpi=130)
    plt.close(fig)


def plot_samples(paths: dict[str, Path], out: Path, seed: int = 3) -> None:
    """beta 0 at -2 and +2, then random shapes (betas ~ N(0,1)) in random moderate poses, posed
    by the runtime body model (core.body_model)."""
    generator = torch.Generator().manual_seed(seed)
    fig, axes = plt.subplots(len(paths), 1, figsize=(12, 4.2 * len(paths)))
    for ax, (name, path) in zip(np.atleast_1d(axes), paths.items()):
        body = BodyModel.from_file(path)
        betas = torch.zeros(6, body.num_betas)
        betas[0, 0], betas[1, 0] = -2.0, 2.0
        betas[2:] = torch.randn(4, body.num_betas, generator=generator)
        pose = 0.3 * torch.randn(6, body.num_joints - 1, 3, generator=generator)
        pose[:2] = 0.0
        with torch.no_grad():
            vertices = body(
                betas=betas,
                body_pose=pose[:, :21].flatten(1),
                left_hand_pose=pose[:, 21:36].flatten(1),
                right_hand_pose=pose[:, 36:].flatten(1),
            ).vertices.numpy()
        titles = ["beta0=-2", "beta0=+2"] + [f"sample {k}" for k in range(1, 5)]
        x = 0.0
        for title, verts in zip(titles, vertices):
            verts = verts - np.array([verts[:, 0].mean(), verts[:, 1].min(), 0.0])
            width = np.ptp(verts[:, 0])
            x += width / 2
            draw_mesh(ax, verts, body.faces.numpy(), "front", (x, 0.0))
            ax.text(x, verts[:, 1].max() + 0.06, title, ha="center", fontsize=8)
            x += width / 2 + 0.15
        finish(ax, f"{name}: shapes and random poses (plain LBS on the shipped file)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, action="append",
                        help="SMPL-H-layout model .npz (repeatable); default: both shipped open bodies")
    parser.add_argument("--out-dir", type=Path, default=REPO / "docs" / "images")
    args = parser.parse_args(argv)
    paths = args.model or [REPO / "core/data/openbody_adult.npz", REPO / "core/data/openbody_allages.npz"]
    models = {path: load(path) for path in paths}
    names = {path: str(model.get("variant", path.stem)) for path, model in models.items()}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    plot_template({names[p]: m for p, m in models.items()}, args.out_dir / "openbody_template.png")
    plot_samples({names[p]: p for p in paths}, args.out_dir / "openbody_samples.png")
    print(f"wrote {args.out_dir / 'openbody_template.png'} and {args.out_dir / 'openbody_samples.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
