"""core.foot_contact: contacts on a source with hysteresis, and the root pass that keeps a character's
planted feet still (a synthetic walk whose own feet do not slide, on characters whose legs are
proportioned differently from the body's)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from character_testing import build_character
from core.body_model import BodyModel
from core.character import bind_character, body_to_character, character_fk, limb_direction_errors
from core.foot_contact import (
    ContactRule,
    FootContactError,
    body_foot_points,
    detect_contacts,
    lock_character_feet,
    lock_offsets,
    source_contacts,
)
from core.mocap.transfer import skeleton_fk
from core.rotations import axis_angle_to_matrix

FPS = 30.0
MAX_SPEED = 0.5  # m/s, lock_character_feet's default


@pytest.fixture(scope="module")
def body():
    model = BodyModel.open_default("adult", dtype=torch.float64)
    with torch.no_grad():
        rest = model.rest_joints()[0]
    return rest, list(model.joint_names), model.parents.tolist()


def _walk(rest, names, parents, frames: int = 120, period: int = 40):
    """A walk (poses (T, J, 3), transl (T, 3)) whose stance ankle (the lower one) never moves, and
    the stance side per frame (0 left, 1 right; -1 near the switch, where both feet are down)."""
    J = len(names)
    phase = 2 * math.pi * torch.arange(frames, dtype=torch.float64) / period
    poses = torch.zeros(frames, J, 3, dtype=torch.float64)
    poses[:, names.index("pelvis"), 1] = 0.15 * torch.sin(phase)  # the pelvis turns with the stride
    for side, sign in (("left", 1.0), ("right", -1.0)):
        swing = (sign * torch.cos(phase)).clamp(min=0)
        poses[:, names.index(f"{side}_hip"), 0] = -0.45 * sign * torch.sin(phase)
        poses[:, names.index(f"{side}_knee"), 0] = 0.25 + 0.9 * swing ** 2  # stance knee flexed a little
        poses[:, names.index(f"{side}_ankle"), 0] = -0.1 * swing
    joints, _ = skeleton_fk(axis_angle_to_matrix(poses), rest, parents)
    ankles = joints[:, [names.index("left_ankle"), names.index("right_ankle")]]
    stance = ankles[..., 1].argmin(1)
    transl = torch.zeros(frames, 3, dtype=torch.float64)
    for t in range(1, frames):
        a = ankles[:, int(stance[t])]
        transl[t] = transl[t - 1] - (a[t] - a[t - 1])
    transl[:, 1] = -ankles[..., 1].min(1).values + ankles[0, :, 1].min()
    switching = torch.cos(phase).abs() < 0.3
    return poses, transl, torch.where(switching, -1, stance)


def _character(body, thigh: float, shin: float, seed: int = 0):
    """A rig over the body's joints with each thigh scaled by `thigh` and shin by `shin` (the rest
    of the skeleton as the body's), bound to the body (its scale: the leg-length ratio)."""
    rest, names, parents = body
    moved = rest.clone().numpy()
    for side in ("left", "right"):
        hip, knee, ankle = (names.index(f"{side}_{j}") for j in ("hip", "knee", "ankle"))
        new_knee = moved[hip] + thigh * (rest[knee] - rest[hip]).numpy()
        new_ankle = new_knee + shin * (rest[ankle] - rest[knee]).numpy()
        below = [j for j in range(22) if j == ankle or names[j] == f"{side}_foot"]
        moved[below] += new_ankle - rest[ankle].numpy()
        moved[knee] = new_knee
    built = build_character("mixamo", moved, names, parents, seed=seed, a_pose=False)
    return bind_character(built.skeleton(), "mixamo", rest, parents, names)


def _stance_slide(binding, heads, stance) -> float:
    """Mean horizontal travel (m/frame) of the character's stance ankle between two frames with the same stance."""
    ankles = [heads[:, binding.joint_bones[binding.body_names.index(f"{s}_ankle")][0]] for s in ("left", "right")]
    steps = []
    for t in range(1, heads.shape[0]):
        s = int(stance[t])
        if s >= 0 and int(stance[t - 1]) == s:
            step = ankles[s][t] - ankles[s][t - 1]
            steps.append(float(torch.hypot(step[0], step[2])))
    return float(np.mean(steps))


@pytest.mark.parametrize("thigh,shin", [(1.3, 0.7), (1.25, 1.0), (0.75, 1.0)])
def test_the_lock_holds_the_planted_foot_of_a_differently_proportioned_character(body, thigh, shin):
    rest, names, parents = body
    poses, transl, stance = _walk(rest, names, parents)
    src_joints, _ = skeleton_fk(axis_angle_to_matrix(poses), rest, parents, transl)
    assert _source_slide(src_joints, names, stance) < 1e-9  # the walk's own feet stay put
    binding = _character(body, thigh, shin)
    pose = body_to_character(binding, poses, transl)
    heads, D = character_fk(binding, pose.quaternions, pose.location)
    before = _stance_slide(binding, heads, stance)
    contacts = source_contacts(*body_foot_points(binding, poses, transl), FPS)
    lock = lock_character_feet(binding, poses, transl, heads, contacts, FPS)
    after = _stance_slide(binding, lock.heads, stance)
    assert before > 0.0015  # m/frame: without the pass the character's stance foot slides
    assert after < 0.001
    # the pass moves the root only, horizontally, by at most MAX_SPEED / FPS per frame
    assert torch.equal(lock.offsets[:, 1], torch.zeros(len(poses), dtype=torch.float64))
    root = binding.root_bone
    jump = ((lock.heads[1:, root] - lock.heads[:-1, root]) - (heads[1:, root] - heads[:-1, root])).norm(dim=-1)
    assert float(jump.max()) <= MAX_SPEED / FPS + 1e-9
    assert torch.allclose(lock.D, D, atol=1e-12)
    mapped = [b for b, j in enumerate(binding.bone_joint) if j >= 0]  # the pelvis bone's subtree
    assert torch.allclose((lock.heads - lock.heads[:, root:root + 1])[:, mapped],
                          (heads - heads[:, root:root + 1])[:, mapped], atol=1e-9)
    errors_before = limb_direction_errors(binding, src_joints, heads)
    errors_after = limb_direction_errors(binding, src_joints, lock.heads)
    for joint, value in errors_before.items():
        assert torch.allclose(errors_after[joint], value, atol=1e-4), joint  # degrees (acos near 0)


def _source_slide(joints, names, stance) -> float:
    ankles = joints[:, [names.index("left_ankle"), names.index("right_ankle")]]
    worst = 0.0
    for t in range(1, len(stance)):
        s = int(stance[t])
        if s >= 0 and int(stance[t - 1]) == s:
            worst = max(worst, float((ankles[t, s] - ankles[t - 1, s]).norm()))
    return worst


def test_contacts_enter_on_the_tight_rule_and_leave_on_the_loose_one():
    # one point: still on the floor, then creeping at 6 mm/frame (0.18 m/s: above speed_in, below
    # speed_out), then lifted fast, then down and still for 2 frames only (too short to count)
    heights = [0.0] * 5 + [0.01] * 5 + [0.02, 0.06, 0.10, 0.14] + [0.001] * 2 + [0.3] * 4
    x = [0.0] * 5 + [0.006 * (i + 1) for i in range(5)] + [0.05, 0.15, 0.25, 0.35] + [1.0, 1.0] + [2.0] * 4
    points = torch.tensor([[[a, h, 0.0]] for a, h in zip(x, heights)], dtype=torch.float64)
    planted = detect_contacts(points, FPS)[:, 0].tolist()
    assert planted[:4] == [True] * 4  # low and still
    assert all(planted[5:9])  # creeping: kept by the hysteresis (would not start a contact)
    assert not any(planted[11:])  # lifted; the 2-frame touch is dropped (min_frames 3)
    creeping = points.clone()
    creeping[:5, 0, 0] = torch.arange(5) * 0.006  # creeping from the start: never planted
    assert not detect_contacts(creeping, FPS, ContactRule())[:9, 0].any()


def test_offsets_cancel_a_planted_points_travel_and_are_clamped():
    T = 10
    points = torch.zeros(T, 2, 3, dtype=torch.float64)
    points[:, 0, 0] = 0.004 * torch.arange(T)  # a planted point sliding 4 mm/frame along x
    points[6:, 0, 2] = 0.2  # ... and jumping 20 cm at frame 6
    points[:, 1, 0] = 0.5 * torch.arange(T)  # a swinging point (not planted)
    planted = torch.zeros(T, 2, dtype=torch.bool)
    planted[:, 0] = True
    offsets = lock_offsets(points, planted, FPS, max_speed=0.5)
    held = points[:, 0] + offsets
    steps = (held[1:] - held[:-1]).norm(dim=-1)
    assert float(steps[:5].max()) < 1e-12 and float(steps[6:].max()) < 1e-12  # held still
    assert abs(float((offsets[6] - offsets[5]).norm()) - 0.5 / FPS) < 1e-12  # the jump: clamped, not followed
    with pytest.raises(FootContactError, match="contacts have shape"):
        lock_offsets(points, planted[:5], FPS)


def test_source_contacts_need_an_ankle():
    with pytest.raises(FootContactError, match="no ankle"):
        source_contacts(["pelvis", "head"], torch.zeros(4, 2, 3), FPS)
