"""Foot contacts on a source motion, and a root pass that keeps a character's planted feet still (no bpy).

Why. A character driven by a clip (its rotations, or the solved body) walks with its own leg
proportions while its root follows the source's path scaled by one ratio (the leg lengths, see
core.character): where the source's foot is planted, the character's slides by the mismatch
(0-1.3 mm/frame more than the source's on the benchmark clips). This pass finds the source's
contacts and moves the character's root horizontally so that its planted foot points stay put.
It moves only the root: every bone keeps its rotation, so limb directions are unchanged.

Contact rule (`detect_contacts`, `ContactRule`), per foot point of the source (ankle and toe,
where the skeleton has them), with hysteresis: a point becomes planted when it is within
`height_in` (3 cm) of its own lowest height over the clip and moves slower than `speed_in`
(0.15 m/s, 5 mm/frame at 30 fps: the benchmark's rule); it stays planted while within
`height_out` (5 cm) and slower than `speed_out` (0.3 m/s); runs shorter than `min_frames` are
dropped. Heights are model space Y (up); a frame's speed is the slower of its steps in and out
(the 3D position), so the frames a foot lands and leaves on count as planted. The
floor is each point's lowest height over the clip, so a clip on stairs or a ladder finds contacts
only near its lowest level.

Lock (`lock_offsets`): a horizontal root offset o_t (T, 3), o_0 = 0. Between two frames where
some points are planted at both, o_t = o_(t-1) minus the mean horizontal step of those points on
the character (a foot on the ground cancels its own travel; both feet down: their mean); the
change per frame is clamped to `max_speed` / fps, so the root never pops. Frames without a
planted point keep the offset, so the swing and flight carry it on smoothly: the character walks
with its own stride and may end a clip a little ahead of or behind the scaled source path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .character import CharacterBinding, CharacterPose, body_to_character, character_fk
from .errors import VPoserError
from .mocap.transfer import skeleton_fk
from .rotations import axis_angle_to_matrix

__all__ = ["FOOT_JOINTS", "ContactRule", "FootContacts", "FootContactError", "FootLock", "detect_contacts",
           "source_contacts", "body_contacts", "body_foot_points", "character_foot_points", "lock_offsets",
           "lock_character_feet", "foot_slide", "slide_report"]

FOOT_JOINTS = ("left_ankle", "left_foot", "right_ankle", "right_foot")  # body joints that touch the ground
HORIZONTAL = (0, 2)  # model space x and z (Y up)


class FootContactError(VPoserError):
    """Foot points or contacts do not fit together; the message names what was expected."""


@dataclass(frozen=True)
class ContactRule:
    """When a source's foot point counts as planted (see the module doc): heights in metres above
    the point's lowest, speeds in metres per second."""

    height_in: float = 0.03
    height_out: float = 0.05
    speed_in: float = 0.15
    speed_out: float = 0.30
    min_frames: int = 3


@dataclass
class FootContacts:
    """Planted (T, K) bool per frame and foot point, for the body joints `names` (K of FOOT_JOINTS),
    and the source's points (T, K, 3) they were found on (model-space metres), if known."""

    names: tuple[str, ...]
    planted: Tensor
    points: Tensor | None = None


@dataclass
class FootLock:
    """A character motion after the lock: its pose, heads (T, N, 3) and D (T, N, 3, 3) as
    character_fk gives them, and the root offsets (T, 3) that were added (model-space metres)."""

    pose: CharacterPose
    heads: Tensor
    D: Tensor
    offsets: Tensor


def _speeds(points: Tensor, fps: float) -> Tensor:
    """(T, K) speed in m/s of points (T, K, 3): the slower of the steps into and out of each frame,
    so a foot is still on the ground on the frame it lands and the frame it leaves."""
    if points.shape[0] < 2:
        return torch.zeros(points.shape[:2], dtype=points.dtype)
    step = (points[1:] - points[:-1]).norm(dim=-1)
    padded = torch.cat([step[:1], step, step[-1:]], 0)
    return torch.minimum(padded[:-1], padded[1:]) * fps


def _drop_short(planted: Tensor, min_frames: int) -> Tensor:
    """planted (T, K) without runs shorter than min_frames."""
    out = planted.clone()
    for k in range(planted.shape[1]):
        start = None
        for t in range(planted.shape[0] + 1):
            on = t < planted.shape[0] and bool(planted[t, k])
            if on and start is None:
                start = t
            elif not on and start is not None:
                if t - start < min_frames:
                    out[start:t, k] = False
                start = None
    return out


def detect_contacts(points: Tensor, fps: float, rule: ContactRule = ContactRule()) -> Tensor:
    """Planted (T, K) bool of foot points (T, K, 3) in model-space metres (Y up) at `fps`, by the
    rule with hysteresis of the module doc."""
    points = torch.as_tensor(points, dtype=torch.float64)
    if points.ndim != 3 or points.shape[-1] != 3:
        raise FootContactError(f"foot points have shape {tuple(points.shape)}, expected (T, K, 3)")
    height = points[..., 1] - points[..., 1].min(0).values
    speed = _speeds(points, fps)
    enter = (height < rule.height_in) & (speed < rule.speed_in)
    stay = (height < rule.height_out) & (speed < rule.speed_out)
    planted = torch.zeros_like(enter)
    for t in range(points.shape[0]):
        planted[t] = enter[t] | (stay[t] & planted[t - 1]) if t else enter[t]
    return _drop_short(planted, rule.min_frames)


def source_contacts(names, positions, fps: float, rule: ContactRule = ContactRule()) -> FootContacts:
    """Contacts of a source's foot joints: names (K_all,) of the points positions (T, K_all, 3) in
    model-space metres (a ClipTargets' keypoint names and positions, the body's joints); the
    FOOT_JOINTS among them are used. Raises FootContactError when no ankle is among them."""
    names = list(names)
    found = tuple(n for n in FOOT_JOINTS if n in names)
    if not any(n.endswith("ankle") for n in found):
        raise FootContactError(f"no ankle among the source's points ({', '.join(names[:8])}...): foot contacts "
                               "need left_ankle or right_ankle")
    positions = torch.as_tensor(positions, dtype=torch.float64)
    points = positions[:, [names.index(n) for n in found]]
    return FootContacts(found, detect_contacts(points, fps, rule), points)


def body_foot_points(binding: CharacterBinding, poses, transl) -> tuple[list[str], Tensor]:
    """The bound body's joint names and positions (T, J, 3), model-space metres, in a motion
    (poses (T, J, 3) axis-angle or (T, J, 3, 3) rotations, transl (T, 3)): the source of contacts when the clip has no
    joints (markers)."""
    poses = torch.as_tensor(poses, dtype=torch.float64)
    local = poses if poses.shape[-2:] == (3, 3) else axis_angle_to_matrix(poses.reshape(poses.shape[0], -1, 3))
    joints, _ = skeleton_fk(local, binding.body_rest, binding.body_parents,
                            torch.as_tensor(transl, dtype=torch.float64))
    return list(binding.body_names), joints


def body_contacts(binding: CharacterBinding, poses, transl, fps: float,
                  rule: ContactRule = ContactRule()) -> FootContacts:
    """Contacts detected on the bound body's own motion (poses (T, J, 3), transl (T, 3)): for
    sources without joints (markers) or a body motion alone."""
    return source_contacts(*body_foot_points(binding, poses, transl), fps, rule)


def character_foot_points(binding: CharacterBinding, heads: Tensor, names) -> tuple[list[int], Tensor]:
    """The character's points (T, K', 3) for the body joints `names` that drive a bone (the first
    bone's head, model-space metres, from character_fk's heads (T, N, 3)) and their columns in `names`."""
    columns, points = [], []
    for k, name in enumerate(names):
        chain = binding.joint_bones[binding.body_names.index(name)] if name in binding.body_names else ()
        if chain:
            columns.append(k)
            points.append(heads[:, chain[0]])
    if not points:
        raise FootContactError(f"{binding.skeleton.source}: no bone is driven by {', '.join(names)}")
    return columns, torch.stack(points, 1)


def lock_offsets(points: Tensor, planted: Tensor, fps: float, max_speed: float = 0.5) -> Tensor:
    """Root offsets (T, 3) (y = 0) that hold the character's planted points still: points (T, K, 3)
    the character's foot points before the pass, planted (T, K) the source's contacts; the
    offset changes by at most max_speed / fps metres per frame (see the module doc)."""
    points = torch.as_tensor(points, dtype=torch.float64)
    planted = torch.as_tensor(planted, dtype=torch.bool)
    if planted.shape != points.shape[:2]:
        raise FootContactError(f"contacts have shape {tuple(planted.shape)}, the foot points {tuple(points.shape[:2])}")
    T = points.shape[0]
    offsets = torch.zeros(T, 3, dtype=torch.float64)
    if T < 2:
        return offsets
    both = (planted[1:] & planted[:-1]).to(torch.float64)  # (T-1, K) steps where a point stays down
    step = points[1:] - points[:-1]
    count = both.sum(1, keepdim=True)
    cancel = -(step * both.unsqueeze(-1)).sum(1) / count.clamp(min=1)
    cancel[:, 1] = 0.0
    limit = max_speed / fps
    length = cancel.norm(dim=-1, keepdim=True)
    cancel = cancel * (limit / length.clamp(min=limit))  # clamp each frame's change
    offsets[1:] = torch.cumsum(cancel, 0)
    return offsets


def lock_character_feet(binding: CharacterBinding, poses, transl, heads: Tensor, contacts: FootContacts,
                        fps: float, max_speed: float = 0.5, current=None) -> FootLock:
    """Re-drive a character with the root moved so its feet stay where the source's are planted.
    poses (T, J, 3) / transl (T, 3): the body motion that drove it (body_to_character's inputs),
    heads (T, N, 3) the character's heads in it (character_fk); contacts from the source, row for
    row. The body's transl moves by offset / scale, so the character's root moves by the offset."""
    columns, points = character_foot_points(binding, heads, contacts.names)
    planted = contacts.planted[:, columns]
    if planted.shape[0] != heads.shape[0]:
        raise FootContactError(f"contacts cover {planted.shape[0]} frames, the character motion {heads.shape[0]}")
    offsets = lock_offsets(points, planted, fps, max_speed)
    moved = torch.as_tensor(transl, dtype=torch.float64) + offsets / binding.scale
    poses = torch.as_tensor(poses, dtype=torch.float64)
    if poses.ndim == 2:  # (T, 3 J) axis-angles
        poses = poses.reshape(poses.shape[0], -1, 3)
    pose = body_to_character(binding, poses, moved, current)
    new_heads, D = character_fk(binding, pose.quaternions, pose.location)
    return FootLock(pose, new_heads, D, offsets)


def foot_slide(points: Tensor, planted: Tensor) -> float:
    """Mean horizontal travel (metres per frame) of points (T, K, 3) over the steps where they are
    planted (T, K) at both ends; NaN when there is none."""
    points = torch.as_tensor(points, dtype=torch.float64)
    planted = torch.as_tensor(planted, dtype=torch.bool)
    both = planted[1:] & planted[:-1]
    step = (points[1:] - points[:-1])[..., list(HORIZONTAL)].norm(dim=-1)
    return float(step[both].mean()) if bool(both.any()) else float("nan")


def slide_report(binding: CharacterBinding, contacts: FootContacts, heads: Tensor) -> dict[str, float]:
    """Foot slide (mm/frame, `foot_slide`) over the contacts' planted frames: the source's points
    and the character's (heads (T, N, 3)) at body size (divided by its scale)."""
    columns, points = character_foot_points(binding, heads, contacts.names)
    planted = contacts.planted[:, columns]
    report = {"character": 1000 * foot_slide(points / binding.scale, planted)}
    if contacts.points is not None:
        report["source"] = 1000 * foot_slide(contacts.points[:, columns], planted)
    return report
