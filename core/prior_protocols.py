"""The pose-prior protocols of the literature (DPoser, Pose-NDF, NRDF), on the body's 22 joints.

Used by scripts/eval_prior.py and scripts/eval_ik.py; pure PyTorch, no I/O.

* Pose completion: the rotations of one body part (the left leg, the right arm) are unknown; the
  prior's latent is fitted, through the IK (`core.ik.IKSolver`), to the positions of the joints
  that part does not move, from several seeded latent starts; the error is the MPJPE of the joints
  the part does move. The body's root stays at rest (orientation identity, translation 0) as the
  poses are given. Its floor for a prior that learnt nothing of how parts go together: the hidden
  rotations set to their mean over the training poses (`mean_part_completion`).
* Denoising: the 22 joints with isotropic Gaussian noise (sigma in metres) are the IK's targets
  (orientation, translation and pose solved with the prior from a cold start); the error is the
  MPJPE of the fitted joints against the clean ones.
* Diversity: average pairwise distance (APD) of a set of poses, MPJPE between every two of them.
* Rotation error: geodesic angle between local joint rotations.

Joint positions are (N, 22, 3) in metres throughout; errors are returned in metres or radians
(callers convert to mm / degrees for reports).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from .body_model import BodyModel
from .errors import VPoserError
from .ik import IKSolver, IKState, IKWeights, Stage
from .keypoints import NUM_BODY_JOINTS, KeypointSet
from .model_files import SMPL_BODY_JOINTS, SMPL_BODY_PARENTS
from .rotations import mean_rotation
from .vposer import VPoser

__all__ = [
    "LEFT_LEG",
    "RIGHT_ARM",
    "PROTOCOL_WEIGHTS",
    "ProtocolError",
    "CompletionResult",
    "moved_joints",
    "body_joints",
    "average_pairwise_distance",
    "geodesic_error",
    "complete",
    "mean_part_completion",
    "denoise",
    "expected_noise_mpjpe",
]

# Rotations hidden by the completion protocols. The arm starts at the collar, as the leg at the hip:
# both are the whole chain from the trunk outwards.
LEFT_LEG = ("left_hip", "left_knee", "left_ankle", "left_foot")
RIGHT_ARM = ("right_collar", "right_shoulder", "right_elbow", "right_wrist")
BODY_NAMES = tuple(SMPL_BODY_JOINTS)
# The IK weights of the protocol fits: the product's, but the prior as a real term of the
# objective. With the IK's own latent weight (1e-5, for reaching targets) a hidden limb, which no
# target pulls, stays wherever its random start put it, so completion measured the start spread
# more than the prior (shipped v1: left leg 309 mm against 194 mm at 0.01, the published VPoser
# figure being ~180-200 mm); denoising also improves (42.4 -> 36.5 mm at 40 mm noise).
PROTOCOL_WEIGHTS = IKWeights(latent=0.01)


class ProtocolError(VPoserError):
    """A protocol asked for something that cannot be measured (unknown joint, nothing to score)."""


@dataclass
class CompletionResult:
    """Per pose (N,): mean and best masked-joint MPJPE (metres) over the starts; the joints scored."""

    mean: Tensor
    best: Tensor
    scored: tuple[str, ...]


def moved_joints(rotation_joints: Sequence[str]) -> list[int]:
    """Indices (into the 22 body joints) of the joints whose *position* the given local rotations
    move: the strict descendants of those joints. E.g. the left leg's rotations move the left
    knee, ankle and foot, not the left hip joint itself (it hangs off the pelvis)."""
    unknown = [n for n in rotation_joints if n not in BODY_NAMES]
    if unknown:
        raise ProtocolError(f"unknown body joints {unknown}; expected names from {', '.join(BODY_NAMES)}")
    rotated = {BODY_NAMES.index(n) for n in rotation_joints}
    moved = []
    for j in range(NUM_BODY_JOINTS):
        p = SMPL_BODY_PARENTS[j]
        while p >= 0 and p not in rotated:
            p = SMPL_BODY_PARENTS[p]
        if p >= 0:
            moved.append(j)
    return moved


def body_joints(body: BodyModel, rotations: Tensor, chunk: int = 500) -> Tensor:
    """(N, 22, 3) joint positions (metres) of (N, 21, 3, 3) body-joint rotations, root at rest
    (orientation identity, translation 0), betas 0."""
    eye = torch.eye(3, dtype=rotations.dtype, device=rotations.device)
    out = []
    for part in rotations.split(chunk):
        full = torch.cat([eye.expand(len(part), 1, 3, 3), part], 1)
        out.append(body.forward_rotations(full, return_vertices=False).joints[:, :NUM_BODY_JOINTS])
    return torch.cat(out)


def average_pairwise_distance(joints: Tensor, chunk: int = 100) -> float:
    """APD in metres: the mean over all pairs i != j of the MPJPE between poses i and j, for
    (N, J, 3) joint positions (N >= 2). Root-relative positions are the convention."""
    n = joints.shape[0]
    if n < 2:
        raise ProtocolError(f"the average pairwise distance needs at least 2 poses, got {n}")
    total = 0.0
    for start in range(0, n, chunk):
        part = joints[start:start + chunk]
        total += float((part[:, None] - joints[None]).norm(dim=-1).mean(-1).sum())  # the diagonal adds 0
    return total / (n * (n - 1))


def geodesic_error(predicted: Tensor, truth: Tensor) -> Tensor:
    """Angle in radians between two sets of rotation matrices (..., 3, 3), elementwise, as
    atan2(sin, cos) of the relative rotation: exact near 0 and pi, where acos of the trace (clamped)
    reads equal rotations as some 0.03 degrees apart."""
    relative = predicted.transpose(-1, -2) @ truth
    cos = (relative.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    skew = relative - relative.transpose(-1, -2)
    sin = torch.stack([skew[..., 2, 1], skew[..., 0, 2], skew[..., 1, 0]], -1).norm(dim=-1) / 2
    return torch.atan2(sin, cos)


def _mpjpe(a: Tensor, b: Tensor, joints: Sequence[int] | None = None) -> Tensor:
    if joints is not None:
        a, b = a[:, joints], b[:, joints]
    return (a - b).norm(dim=-1).mean(-1)


def complete(
    body: BodyModel,
    prior: VPoser,
    truth: Tensor,
    hidden: Sequence[str],
    starts: int = 10,
    seed: int = 0,
    iterations: int = 30,
    weights: IKWeights = PROTOCOL_WEIGHTS,
) -> CompletionResult:
    """Fit the prior's latent to the joints the `hidden` rotations do not move, from `starts`
    seeded latent draws (seed, seed + 1, ...; N(0, I)), and score the joints they do move.

    truth: (N, 22, 3) joint positions with the root at rest (see `body_joints`). weights: the IK's
    (`PROTOCOL_WEIGHTS`; the latent weight is what pulls the hidden part towards the prior's mean,
    the data term does not see it). With nothing
    hidden every joint is both fitted and scored: the fit's reconstruction error.
    """
    scored = moved_joints(hidden) if hidden else list(range(NUM_BODY_JOINTS))
    if not scored:
        raise ProtocolError(f"hiding {list(hidden)} moves no body joint: nothing to score")
    n = truth.shape[0]
    confidence = torch.ones(n, NUM_BODY_JOINTS, dtype=truth.dtype)
    if hidden:
        confidence[:, scored] = 0.0
    solver = IKSolver(body, KeypointSet.from_joints(body, BODY_NAMES), prior, unknowns=("pose",), weights=weights)
    stage = [Stage(("pose",), max_iterations=iterations)]
    eye = torch.eye(3, dtype=truth.dtype)
    errors = []
    for k in range(starts):
        latent = prior.sample_latent(n, seed=seed + k).to(truth.dtype)
        rotations = eye.expand(n, body.num_joints, 3, 3).clone()
        with torch.no_grad():
            rotations[:, 1:NUM_BODY_JOINTS] = prior.decode_matrix(latent)
        init = IKState(rotations, torch.zeros(n, 3, dtype=truth.dtype), latent)
        result = solver.solve(truth, confidence, init=init, stages=stage)
        fitted = body_joints(body, result.rotations[:, 1:NUM_BODY_JOINTS])
        errors.append(_mpjpe(fitted, truth, scored))
    stacked = torch.stack(errors)  # (starts, N)
    return CompletionResult(stacked.mean(0), stacked.min(0).values, tuple(BODY_NAMES[j] for j in scored))


def mean_part_completion(body: BodyModel, rotations: Tensor, reference: Tensor, hidden: Sequence[str]) -> Tensor:
    """Per pose (N,): the completion error (MPJPE of the joints `hidden` moves, root at rest) when
    the hidden rotations are the chordal mean of the same joints over `reference` poses, the rest
    as given: a completion that ignores what it sees and answers with the training data's average
    part. A prior's completion should beat it. rotations (N, 21, 3, 3), reference (M, 21, 3, 3)."""
    scored = moved_joints(hidden)
    if not scored:
        raise ProtocolError(f"hiding {list(hidden)} moves no body joint: nothing to score")
    parts = [BODY_NAMES.index(name) - 1 for name in hidden]  # the 21 rotations start after the pelvis
    if min(parts) < 0:
        raise ProtocolError("the pelvis (the root) is at rest in the protocols: it cannot be hidden")
    completed = rotations.clone()
    completed[:, parts] = mean_rotation(reference[:, parts])
    return _mpjpe(body_joints(body, completed), body_joints(body, rotations), scored)


def denoise(body: BodyModel, prior: VPoser | None, truth: Tensor, sigma: float, seed: int = 0,
            weights: IKWeights = PROTOCOL_WEIGHTS) -> tuple[Tensor, Tensor]:
    """Per pose (N,): MPJPE (metres) of the IK fit (cold start, prior if given, `PROTOCOL_WEIGHTS`
    unless given) to the joints plus N(0, sigma^2) noise per coordinate,
    against the clean joints; and the noisy input's own MPJPE (about 1.6 sigma: what the fit must
    beat). truth: (N, 22, 3)."""
    generator = torch.Generator().manual_seed(seed)
    noisy = truth + sigma * torch.randn(truth.shape, generator=generator, dtype=truth.dtype)
    solver = IKSolver(body, KeypointSet.from_joints(body, BODY_NAMES), prior, weights=weights)
    result = solver.solve(noisy)
    with torch.no_grad():
        fitted = body.forward_rotations(result.rotations, None, None, result.transl,
                                        return_vertices=False).joints[:, :NUM_BODY_JOINTS]
    return _mpjpe(fitted, truth), _mpjpe(noisy, truth)


def expected_noise_mpjpe(sigma: float) -> float:
    """Mean length of a 3D N(0, sigma^2 I) vector: sigma * 2 sqrt(2 / pi) (Maxwell mean)."""
    return sigma * 2.0 * math.sqrt(2.0 / math.pi)
