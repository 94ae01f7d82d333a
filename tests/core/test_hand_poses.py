"""Named hand poses on the open adult body: a fist closes every finger onto the palm, point keeps
the index straight, the right hand mirrors the left, and a bad pose file is refused by name."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.body_model import BodyModel
from core.hand_poses import HAND_POSE_FILE, HandPoseError, hand_joint_names, hand_pose, hand_poses
from core.model_files import HAND_JOINTS
from core.rotations import axis_angle_to_matrix

FINGERS = ("index", "middle", "pinky", "ring", "thumb")
MIRROR = np.array([-1.0, 1.0, 1.0])  # SMPL's mid-plane is x = 0


@pytest.fixture(scope="module")
def adult():
    return BodyModel.open_default("adult", dtype=torch.float64)


def _joints(model, poses: dict[str, str]) -> dict[str, np.ndarray]:
    """Joint positions by name with the named pose on each given side (other joints at rest)."""
    names = list(model.joint_names)
    axis_angles = torch.zeros(1, model.num_joints, 3, dtype=torch.float64)
    for side, name in poses.items():
        axis_angles[0, [names.index(joint) for joint in hand_joint_names(side)]] = torch.from_numpy(
            hand_pose(name, side))
    joints = model.forward_rotations(axis_angle_to_matrix(axis_angles), return_vertices=False).joints[0].numpy()
    return dict(zip(names, joints))


def _palm(joints: dict[str, np.ndarray], side: str) -> np.ndarray:
    """The palm's centre: the wrist and the four knuckles (fixed by the wrist, not by the fingers)."""
    return np.mean([joints[f"{side}_{name}"] for name in ("wrist", "index1", "middle1", "ring1", "pinky1")], axis=0)


def test_the_file_holds_the_four_poses_for_every_finger_joint():
    poses = hand_poses()
    assert list(poses) == ["flat", "relaxed", "fist", "point"]
    assert all(values.shape == (15, 3) for _, values in poses.values())
    np.testing.assert_array_equal(poses["flat"][1], 0.0)
    assert json.loads(HAND_POSE_FILE.read_text())["joints"] == list(HAND_JOINTS)


@pytest.mark.parametrize("side", ["left", "right"])
def test_a_fist_closes_every_finger_onto_the_palm(adult, side):
    flat, relaxed, fist = (_joints(adult, {side: name}) for name in ("flat", "relaxed", "fist"))
    for finger in FINGERS:
        tip = f"{side}_{finger}3"
        distances = [np.linalg.norm(pose[tip] - _palm(pose, side)) for pose in (flat, relaxed, fist)]
        assert distances[2] < 0.65 * distances[0], (finger, distances)
        assert distances[2] < distances[1] <= distances[0] + 1e-9, (finger, distances)  # relaxed lies between
    # The fingers close towards the palm side (-Y in the rest T-pose), not the back of the hand.
    assert fist[f"{side}_middle3"][1] < flat[f"{side}_middle3"][1] - 0.02


def test_point_keeps_the_index_straight_and_closes_the_others(adult):
    flat, fist, point = (_joints(adult, {"left": name}) for name in ("flat", "fist", "point"))
    for joint in ("left_index1", "left_index2", "left_index3"):
        np.testing.assert_allclose(point[joint], flat[joint], atol=1e-12)
    for finger in ("middle", "ring", "pinky", "thumb"):
        np.testing.assert_allclose(point[f"left_{finger}3"], fist[f"left_{finger}3"], atol=1e-12)


@pytest.mark.parametrize("name", ["relaxed", "fist", "point"])
def test_the_right_hand_mirrors_the_left(adult, name):
    joints = _joints(adult, {"left": name, "right": name})
    rest = _joints(adult, {})
    for left, right in zip(hand_joint_names("left"), hand_joint_names("right")):
        # The open body is left/right symmetric to well under a millimetre, so the posed hands must be too.
        np.testing.assert_allclose(joints[right], MIRROR * joints[left], atol=1e-3)
    assert max(np.linalg.norm(joints[j] - rest[j]) for j in hand_joint_names("right")) > 0.02  # it did move
    left, right = hand_pose(name, "left"), hand_pose(name, "right")
    np.testing.assert_allclose(right, left * np.array([1.0, -1.0, -1.0]))  # M R M, M = diag(-1, 1, 1)


def test_bad_requests_and_files_are_refused(tmp_path):
    with pytest.raises(HandPoseError, match="unknown hand pose 'wave'; expected one of"):
        hand_pose("wave", "left")
    with pytest.raises(HandPoseError, match="unknown hand side 'middle'"):
        hand_pose("fist", "middle")
    document = json.loads(HAND_POSE_FILE.read_text())
    document["poses"]["fist"]["axis_angle"] = document["poses"]["fist"]["axis_angle"][:14]
    path = tmp_path / "hands.json"
    path.write_text(json.dumps(document))
    with pytest.raises(HandPoseError, match=r"hands.json: pose 'fist': 'axis_angle' must be 15 finite"):
        hand_poses(path)
    path.write_text("{not json")
    with pytest.raises(HandPoseError, match="hands.json: cannot read the hand poses"):
        hand_poses(path)
