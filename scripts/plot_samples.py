"""Render seeded samples from a VPoser prior on the open body as a grid of meshes (PNG).

    python scripts/plot_samples.py                                  # docs/images/vposer_samples.png
    python scripts/plot_samples.py --weights build/train_run/best.pt --out samples.png --seed 3

Each cell is one draw z ~ N(0, temperature^2 I) decoded to a body pose, shown from the front
(Y up, global orientation 0, flat hands, betas 0), drawn with the matplotlib mesh renderer of
scripts/plot_body.py (depth-sorted Lambert-shaded triangles; no OpenGL needed).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
for folder in (REPO, REPO / "scripts"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from plot_body import draw_mesh, finish, plt  # noqa: E402  (sets the Agg backend)

from core.body_model import BodyModel  # noqa: E402
from core.train import full_rotations  # noqa: E402
from core.vposer import default_vposer_path, load_vposer  # noqa: E402


@torch.no_grad()
def sample_meshes(weights: Path, body: BodyModel, count: int, seed: int, temperature: float) -> np.ndarray:
    """(count, V, 3) vertices of `count` seeded prior samples posed on `body`."""
    model = load_vposer(weights)
    matrices = model.decode_matrix(model.sample_latent(count, seed=seed, temperature=temperature))
    return body.forward_rotations(full_rotations(matrices, body.num_joints)).vertices.numpy()


def plot_grid(vertices: np.ndarray, faces: np.ndarray, out: Path, columns: int, title: str) -> None:
    rows = int(np.ceil(len(vertices) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.6 * rows))
    for k, ax in enumerate(np.atleast_1d(axes).ravel()):
        if k < len(vertices):
            v = vertices[k] - np.array([vertices[k][:, 0].mean(), vertices[k][:, 1].min(), 0.0])
            draw_mesh(ax, v, faces, "front")
            finish(ax, f"#{k + 1}")
            ax.set_xlim(-1.0, 1.0)
            ax.set_ylim(-0.05, 2.1)
        else:
            ax.set_axis_off()
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=None, help="VPoser weights (default: the shipped open prior)")
    parser.add_argument("--body", default=None, help="body model .npz (default: the open adult body)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "vposer_samples.png")
    parser.add_argument("--count", type=int, default=25)
    parser.add_argument("--columns", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--temperature", type=float, default=1.0)
    args = parser.parse_args(argv)

    weights = args.weights or default_vposer_path()
    body = BodyModel.open_default("adult") if args.body is None else BodyModel.from_file(args.body)
    vertices = sample_meshes(weights, body.eval(), args.count, args.seed, args.temperature)
    name = "open prior" if args.weights is None else weights.name
    title = f"VPoser {name}: {args.count} samples, seed {args.seed}, temperature {args.temperature:g} (front view)"
    plot_grid(vertices, body.faces.numpy(), args.out, args.columns, title)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
