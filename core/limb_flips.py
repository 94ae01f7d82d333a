"""Limb depth twins: the discrete ambiguity a single view leaves, for a solver that only walks downhill.

One camera sees a bone's far joint only along its ray: at the bone's length from the near joint
the ray has two points, one nearer the camera and one farther, and both give the same pixel. An
elbow pointing at the camera and one pointing away look alike; so do a forearm folded forward and
one folded back. The prior and the temporal term tell the two apart (the natural one costs less),
but LM only goes downhill from where it starts, and the two sit in different valleys: measured on
mocap seen by one camera, a fit started from the true poses ended with a lower objective than the
fit from the usual start in every clip, at two thirds of its PA-MPJPE, and almost all of the
difference was limbs on the wrong side in depth (docs/benchmarks.md).

So the search is made discrete where the ambiguity is: `limb_twins` reflects each limb's upper bone,
lower bone or both in depth along the camera rays (every pixel kept), and `likeliest_twins` keeps,
per frame and limb, the candidate the prior finds likeliest (the smallest squared norm of its
encoder's latent); the solver then goes on from there. The twins share their pixels, so the data
term cannot tell them apart and the prior alone judges: on training subjects, judging them by the
whole objective (pixels, prior and joint limits after the encoder-decoder round trip) chose no
better and cost four times as much.

Shapes: B frames, J joints; rotations (B, J, 3, 3) local (the root's is the global orientation),
transl (B, 3) and eye (B, 3) or (3,) (the camera's centre) in world coordinates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .body_model import BodyModel, BodyOutput
from .errors import VPoserError
from .ik_terms import BODY
from .keypoints import NUM_BODY_JOINTS
from .mocap.transfer import minimal_rotation
from .vposer import VPoser

# Each limb as (root, middle, end) joints: the upper bone turns at the root, the lower at the middle.
LIMBS: tuple[tuple[str, str, str], ...] = (
    ("left_shoulder", "left_elbow", "left_wrist"),
    ("right_shoulder", "right_elbow", "right_wrist"),
    ("left_hip", "left_knee", "left_ankle"),
    ("right_hip", "right_knee", "right_ankle"),
)


class LimbTwinsError(VPoserError):
    """Limbs the body cannot give twins for (a joint missing, a bone that is not one)."""


@dataclass
class LimbTwins:
    """candidates (N, B, J, 3, 3): [0] the rotations as given, then for each limb its upper bone
    reflected, its lower bone, and both (N = 1 + 3 * limbs); per limb, `joints` (the two joints whose
    rotations its twins change) and `rows` (its three candidates' indices into N)."""

    candidates: Tensor
    joints: list[tuple[int, int]]
    rows: list[tuple[int, int, int]]


def reflect_bone(model: BodyModel, rotations: Tensor, transl: Tensor, eye: Tensor, joint: int, child: int,
                 posed: BodyOutput | None = None) -> Tensor:
    """rotations with `joint`'s local rotation turned (least angle) so that `child` moves to the
    other point of its camera ray at the bone's length from `joint`: its pixel and the bone's length
    kept, the joints below it carried along. Where that point is behind the camera, or `child` is the
    ray's only such point, the rotations stay as they were. `child`'s parent must be `joint`.
    `posed`: the body joints' forward kinematics at `rotations`, `transl` when already known."""
    if int(model.parents[child]) != joint:
        raise LimbTwinsError(f"limb twins: joint {child} is not a child of joint {joint}")
    posed = _pose(model, rotations, transl) if posed is None else posed
    world, points = posed.joint_rotations, posed.joints
    ray = points[:, child] - eye
    distance = ray.norm(dim=-1, keepdim=True)
    direction = ray / distance.clamp_min(1e-12)
    # |eye + s d - p| = |c - p| has the roots s = distance and s = 2 d.(p - eye) - distance.
    other = 2 * (direction * (points[:, joint] - eye)).sum(-1, keepdim=True) - distance
    turn = minimal_rotation(points[:, child] - points[:, joint], eye + other * direction - points[:, joint])
    parent = world[:, int(model.parents[joint])]
    out = rotations.clone()
    turned = parent.transpose(-1, -2) @ turn @ parent @ rotations[:, joint]
    out[:, joint] = torch.where((other > 0)[..., None], turned, rotations[:, joint])
    return out


def _pose(model: BodyModel, rotations: Tensor, transl: Tensor) -> BodyOutput:
    """The body joints' forward kinematics (world rotations and positions)."""
    return model.forward_rotations(rotations[:, :NUM_BODY_JOINTS], None, None, transl, return_vertices=False)


def limb_twins(model: BodyModel, rotations: Tensor, transl: Tensor, eye: Tensor,
               limbs: Sequence[tuple[str, str, str]] = LIMBS) -> LimbTwins:
    """The rotations and, per limb of `limbs` (joint names), its three depth twins (see LimbTwins)."""
    names = list(model.joint_names[:NUM_BODY_JOINTS])
    missing = sorted({name for limb in limbs for name in limb if name not in names})
    if missing:
        raise LimbTwinsError(f"limb twins: the body has no joint(s) {', '.join(missing)} among its first "
                             f"{NUM_BODY_JOINTS}")
    candidates, joints, rows = [rotations], [], []
    posed = _pose(model, rotations, transl)  # shared by every limb's upper and lower twin
    for limb in limbs:
        root, middle, end = (names.index(name) for name in limb)
        upper = reflect_bone(model, rotations, transl, eye, root, middle, posed)
        lower = reflect_bone(model, rotations, transl, eye, middle, end, posed)
        both = reflect_bone(model, upper, transl, eye, middle, end)
        rows.append((len(candidates), len(candidates) + 1, len(candidates) + 2))
        candidates += [upper, lower, both]
        joints.append((root, middle))
    return LimbTwins(torch.stack(candidates), joints, rows)


def keep_cheapest(twins: LimbTwins, costs: Tensor) -> Tensor:
    """(B, J, 3, 3): the given rotations with each limb's two joints taken, frame by frame, from
    whichever of the given rotations and that limb's twins has the lowest cost (N, B). Limbs are
    judged one at a time against the rotations as given (their costs hardly interact)."""
    frames = torch.arange(costs.shape[1], device=costs.device)
    out = twins.candidates[0].clone()
    for joints, rows in zip(twins.joints, twins.rows):
        options = torch.tensor((0,) + rows, device=costs.device)
        best = options[costs[options].argmin(0)]
        for joint in joints:
            out[:, joint] = twins.candidates[best, frames, joint]
    return out


def likeliest_twins(model: BodyModel, prior: VPoser, rotations: Tensor, transl: Tensor, eye: Tensor,
                    limbs: Sequence[tuple[str, str, str]] = LIMBS, chunk: int = 256) -> Tensor:
    """(B, J, 3, 3): `rotations` with each frame's limbs set to the twin the prior finds likeliest
    (keep_cheapest over the squared norms of the encoder's latents), `chunk` frames at a time
    (1 + 3 * limbs candidates each)."""
    chosen = []
    with torch.no_grad():
        for rows in torch.arange(rotations.shape[0], device=rotations.device).split(chunk):
            twins = limb_twins(model, rotations[rows], transl[rows], eye[rows] if eye.dim() == 2 else eye, limbs)
            count = twins.candidates.shape[0]
            latent = prior.encode_matrix(twins.candidates[:, :, BODY].flatten(0, 1))
            chosen.append(keep_cheapest(twins, latent.square().sum(-1).view(count, len(rows))))
    return torch.cat(chosen)
