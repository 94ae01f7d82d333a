"""How far the training poses let *any* model go on the pose-prior protocols of eval_prior.py.

    python scripts/protocol_baselines.py path/to/cmu_asfamc_bvh --subjects 06 49 --train build/mocap_all/train --json

A prior is judged by fitting it to what a protocol shows (core/prior_protocols.py). This script
instead trains estimators for exactly each protocol's task on the training poses and scores them
on the same held-out poses, the same way (joints of the open body, root at rest, the evenly spaced
--poses of eval_prior):

  completion_{leg,arm}: the joints the hidden part moves, from the positions of the other joints:
      mean_part    the hidden rotations set to their mean over the training poses (what eval_prior
                   reports as reference_completion_*_mm)
      knn          the mean of the hidden joints of the --neighbours training poses nearest in the
                   visible joints
      ridge        a linear map from the visible joints to the hidden ones (least squares, ridge
                   --ridge on standardised inputs)
      mlp          a two-layer MLP (256 units) trained on exactly that, --epochs passes (and
                   *_mlp_train_mm: its error on as many of the training poses it learnt from)
  denoise_40: the 22 joints from the joints plus 40 mm Gaussian noise per coordinate (the noise drawn
      afresh for every training batch; on the held-out poses seeded as eval_prior draws it): an MLP
      (512 units) that predicts the correction.

An estimator trained for a task with the answer at hand is a generous reference for a prior that
must infer it; where even it stays far from a goal on held-out people, the goal asks more than the
training data hold. Every draw is seeded (--seed); CPU, one thread by default.
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
for folder in (REPO, REPO / "scripts"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from core.body_model import BodyModel  # noqa: E402
from core.prior_protocols import LEFT_LEG, RIGHT_ARM, body_joints, mean_part_completion, moved_joints  # noqa: E402
from eval_prior import find_files, load_body_poses, pose_rotations, protocol_rows  # noqa: E402

NOISE = 0.04  # metres, eval_prior's denoise_40


def knn_mean(train_in: torch.Tensor, train_out: torch.Tensor, query: torch.Tensor, k: int, chunk: int = 256
             ) -> torch.Tensor:
    """(Q, d_out): the mean output of the k training rows nearest to each query row (Euclidean)."""
    out = []
    for part in query.split(chunk):
        nearest = torch.cdist(part, train_in).topk(min(k, len(train_in)), largest=False).indices
        out.append(train_out[nearest].mean(1))
    return torch.cat(out)


def ridge(train_in: torch.Tensor, train_out: torch.Tensor, query: torch.Tensor, weight: float) -> torch.Tensor:
    """(Q, d_out): least squares from standardised inputs (plus a constant) with a ridge `weight`."""
    mean, scale = train_in.mean(0), train_in.std(0).clamp_min(1e-6)

    def design(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([(x - mean) / scale, torch.ones(len(x), 1, dtype=x.dtype)], 1)

    a = design(train_in)
    penalty = weight * torch.eye(a.shape[1], dtype=a.dtype)
    penalty[-1, -1] = 0.0  # the constant is not shrunk
    return design(query) @ torch.linalg.solve(a.T @ a + penalty, a.T @ train_out)


def train_mlp(train_in: torch.Tensor, train_out: torch.Tensor, width: int, epochs: int, seed: int,
              noise: float = 0.0, residual: bool = False) -> torch.nn.Module:
    """A two-hidden-layer ReLU MLP minimising the mean per-joint distance (outputs are (x, y, z)
    triples), Adam 1e-3, batches of 512. noise: Gaussian noise added to each batch's inputs, drawn
    afresh; residual: the net predicts the correction to its input (inputs and outputs alike)."""
    torch.manual_seed(seed)
    # standardised as the net sees them, noise included: a coordinate that never moves (the pelvis
    # at rest) must not turn the noise into huge inputs
    mean, scale = train_in.mean(0), (train_in.var(0) + noise ** 2).sqrt().clamp_min(1e-3)
    layers = torch.nn.Sequential(torch.nn.Linear(train_in.shape[1], width), torch.nn.ReLU(),
                                 torch.nn.Linear(width, width), torch.nn.ReLU(), torch.nn.Linear(width, train_out.shape[1]))

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = layers

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.layers((x - mean) / scale)
            return x + y if residual else y

    net = Net()
    optimiser = torch.optim.Adam(net.parameters(), 1e-3)
    for _ in range(epochs):
        for rows in torch.randperm(len(train_in)).split(512):
            x = train_in[rows]
            if noise:
                x = x + noise * torch.randn_like(x)
            loss = (net(x) - train_out[rows]).view(len(rows), -1, 3).norm(dim=-1).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return net.eval()


def _mpjpe_mm(predicted: torch.Tensor, truth: torch.Tensor) -> float:
    return 1000 * float((predicted.reshape(truth.shape) - truth).norm(dim=-1).mean())


def baselines(body: BodyModel, held: np.ndarray, train: np.ndarray, count: int = 500, neighbours: int = 50,
              ridge_weight: float = 10.0, epochs: int = 8, seed: int = 0) -> dict:
    """Every estimator's held-out error in mm (module doc), keyed e.g. completion_leg_knn_mm.
    held, train: (N, 63) axis-angle body poses."""
    held_rotations = pose_rotations(held[protocol_rows(len(held), count)]).to(body.dtype)
    train_rotations = pose_rotations(train).to(body.dtype)
    with torch.no_grad():
        truth = body_joints(body, held_rotations).float()
        known = body_joints(body, train_rotations).float()
    result: dict = {"poses": len(truth), "train_poses": len(known)}
    for name, hidden in (("leg", LEFT_LEG), ("arm", RIGHT_ARM)):
        scored = moved_joints(hidden)
        seen = [j for j in range(truth.shape[1]) if j not in scored]
        train_in, train_out = known[:, seen].flatten(1), known[:, scored].flatten(1)
        query, answer = truth[:, seen].flatten(1), truth[:, scored]
        key = f"completion_{name}"
        result[f"{key}_mean_part_mm"] = 1000 * float(mean_part_completion(body, held_rotations, train_rotations,
                                                                          hidden).mean())
        result[f"{key}_knn_mm"] = _mpjpe_mm(knn_mean(train_in, train_out, query, neighbours), answer)
        result[f"{key}_ridge_mm"] = _mpjpe_mm(ridge(train_in.double(), train_out.double(), query.double(),
                                                    ridge_weight).float(), answer)
        net = train_mlp(train_in, train_out, 256, epochs, seed)
        with torch.no_grad():
            result[f"{key}_mlp_mm"] = _mpjpe_mm(net(query), answer)
            learnt = torch.randperm(len(known), generator=torch.Generator().manual_seed(seed))[:len(truth)]
            result[f"{key}_mlp_train_mm"] = _mpjpe_mm(net(train_in[learnt]), known[learnt][:, scored])
    generator = torch.Generator().manual_seed(seed)  # eval_prior's denoise draw
    noisy = truth + NOISE * torch.randn(truth.shape, generator=generator, dtype=truth.dtype)
    net = train_mlp(known.flatten(1), known.flatten(1), 512, epochs, seed, noise=NOISE, residual=True)
    with torch.no_grad():
        result["denoise_40_mlp_mm"] = _mpjpe_mm(net(noisy.flatten(1)), truth)
    result["denoise_40_input_mm"] = _mpjpe_mm(noisy, truth)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", metavar="PATH", help="held-out BVH or .npz files, folders or globs")
    parser.add_argument("--subjects", nargs="*", default=None, help="only files named '<subject>_*'")
    parser.add_argument("--train", nargs="+", required=True, metavar="PATH",
                        help="training poses (e.g. prepare_mocap.py's OUT_DIR/train)")
    parser.add_argument("--poses", type=int, default=500, help="held-out poses, evenly spaced (eval_prior's)")
    parser.add_argument("--neighbours", type=int, default=50)
    parser.add_argument("--ridge", type=float, default=10.0)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.poses < 1 or args.neighbours < 1 or args.epochs < 1 or not args.ridge >= 0:
        parser.error("--poses, --neighbours and --epochs must be positive, --ridge 0 or more")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    held = load_body_poses(find_files(args.paths, args.subjects), None)
    train = load_body_poses(find_files(args.train), None)
    body = BodyModel.open_default("adult").eval().requires_grad_(False)
    result = baselines(body, held, train, args.poses, args.neighbours, args.ridge, args.epochs, args.seed)
    result["seconds"] = round(time.perf_counter() - start, 1)
    if args.json:
        print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()}, indent=1))
    else:
        for key, value in result.items():
            print(f"{key:32s} {value:.1f}" if isinstance(value, float) else f"{key:32s} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
