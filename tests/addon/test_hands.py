"""Set Hand Pose in real Blender: the deformed mesh closes into a fist, the right hand mirrors the
left, keys read back per frame, undo, and the poll on bodies without fingers."""

from __future__ import annotations

import bpy
import numpy as np
import pytest
from mathutils import Quaternion

from core.hand_poses import hand_joint_names, hand_pose
from core.synthetic_models import write_model

FINGERS = ("index", "middle", "pinky", "ring", "thumb")
MIRROR = np.array([-1.0, 1.0, 1.0])


@pytest.fixture
def body(addon, empty_scene):
    assert bpy.ops.vposer.add_body() == {"FINISHED"}
    return bpy.context.active_object


def _evaluated(rig):
    """(deformed mesh vertices (V, 3), posed bone heads by name), both in model space."""
    depsgraph = bpy.context.evaluated_depsgraph_get()
    mesh = rig.vposer_body.mesh.evaluated_get(depsgraph).data
    vertices = np.empty(3 * len(mesh.vertices), dtype=np.float32)
    mesh.vertices.foreach_get("co", vertices)
    heads = {bone.name: np.array(bone.head) for bone in rig.evaluated_get(depsgraph).pose.bones}
    return vertices.reshape(-1, 3).astype(np.float64), heads


def _tip_vertices(adult, side):
    """Per finger, the rest mesh's vertex farthest out along the finger among those its last joint moves."""
    names, weights, rest = list(adult.joint_names), adult.weights.numpy(), adult.v_template.numpy()
    joints = adult.rest_joints()[0].numpy()
    tips = {}
    for finger in FINGERS:
        last, first = names.index(f"{side}_{finger}3"), names.index(f"{side}_{finger}1")
        ids = np.flatnonzero(weights[:, last] > 0.5)
        tips[finger] = ids[np.argmax(rest[ids] @ (joints[last] - joints[first]))]
    return tips


def _palm(heads, side):
    return np.mean([heads[f"{side}_{name}"] for name in ("wrist", "index1", "middle1", "ring1", "pinky1")], axis=0)


def test_a_fist_closes_the_deformed_hands(body, adult):
    assert bpy.ops.vposer.set_hand_pose(pose="FLAT", side="BOTH") == {"FINISHED"}
    flat, flat_heads = _evaluated(body)
    assert bpy.ops.vposer.set_hand_pose(pose="FIST", side="BOTH") == {"FINISHED"}
    fist, fist_heads = _evaluated(body)

    for side in ("left", "right"):
        for finger, tip in _tip_vertices(adult, side).items():
            before = np.linalg.norm(flat[tip] - _palm(flat_heads, side))
            after = np.linalg.norm(fist[tip] - _palm(fist_heads, side))
            assert after < (0.7 if finger == "thumb" else 0.4) * before, (side, finger, before, after)
    # Only the fingers moved.
    for name in ("left_wrist", "right_wrist", "head", "left_index1"):
        np.testing.assert_allclose(fist_heads[name], flat_heads[name], atol=1e-6)


def test_both_hands_are_mirror_images(body):
    assert bpy.ops.vposer.set_hand_pose(pose="POINT", side="BOTH") == {"FINISHED"}
    _, heads = _evaluated(body)
    for left, right in zip(hand_joint_names("left"), hand_joint_names("right")):
        np.testing.assert_allclose(heads[right], MIRROR * heads[left], atol=1e-3)


def test_one_side_leaves_the_other_hand_alone(body):
    bones = body.pose.bones
    held = Quaternion((0.0, 1.0, 0.0), 0.3)
    bones["right_index2"].rotation_quaternion = held

    assert bpy.ops.vposer.set_hand_pose(pose="FIST", side="LEFT") == {"FINISHED"}

    assert bones["right_index2"].rotation_quaternion.rotation_difference(held).angle < 1e-6
    expected = Quaternion(hand_pose("fist", "left")[hand_joint_names("left").index("left_index2")])
    assert bones["left_index2"].rotation_quaternion.rotation_difference(expected).angle < 1e-5


def test_keyed_hand_poses_read_back_per_frame(body):
    scene = bpy.context.scene
    body.pose.bones["spine1"].keyframe_insert("rotation_quaternion", frame=1)  # a key of the user's
    scene.frame_set(5)
    assert bpy.ops.vposer.set_hand_pose(pose="FIST", side="RIGHT", insert_keyframe=True) == {"FINISHED"}
    scene.frame_set(15)
    assert bpy.ops.vposer.set_hand_pose(pose="RELAXED", side="RIGHT", insert_keyframe=True) == {"FINISHED"}

    channelbag = body.animation_data.action.layers[0].strips[0].channelbag(body.animation_data.action_slot)
    for name in hand_joint_names("right"):
        curve = channelbag.fcurves.find(f'pose.bones["{name}"].rotation_quaternion', index=0)
        assert [tuple(point.co)[0] for point in curve.keyframe_points] == [5.0, 15.0]
    assert len(channelbag.fcurves.find('pose.bones["spine1"].rotation_quaternion', index=0).keyframe_points) == 1
    assert channelbag.fcurves.find('pose.bones["left_index1"].rotation_quaternion', index=0) is None
    for frame, pose in ((5, "fist"), (15, "relaxed")):
        scene.frame_set(frame)
        evaluated = body.evaluated_get(bpy.context.evaluated_depsgraph_get()).pose.bones
        for name, axis_angle in zip(hand_joint_names("right"), hand_pose(pose, "right")):
            assert evaluated[name].rotation_quaternion.rotation_difference(Quaternion(axis_angle)).angle < 1e-5


def test_undo_restores_the_hands(body):
    bpy.ops.ed.undo_push(message="flat hands")
    assert bpy.ops.vposer.set_hand_pose("EXEC_DEFAULT", True, pose="FIST") == {"FINISHED"}
    bpy.ops.ed.undo()
    rig = bpy.data.objects["Body"]
    assert all(rig.pose.bones[name].rotation_quaternion.angle < 1e-9 for name in hand_joint_names("left"))


def test_poll_needs_finger_joints(addon, empty_scene, tmp_path):
    with pytest.raises(RuntimeError, match="Select a VPoser body"):
        bpy.ops.vposer.set_hand_pose()
    preferences = bpy.context.preferences.addons[addon.__name__].preferences
    saved = preferences.model_path
    try:
        for kind, name in (("smpl", "Smpl"), ("mano", "Hand")):
            preferences.model_path = str(write_model(tmp_path / f"{kind}.npz", kind))
            assert bpy.ops.vposer.add_body(source="USER_FILE", name=name) == {"FINISHED"}
            with pytest.raises(RuntimeError, match=f"{name} has no finger joints: hand poses need an SMPL-H or SMPL-X"):
                bpy.ops.vposer.set_hand_pose()
        for kind in ("smplh", "smplx"):
            preferences.model_path = str(write_model(tmp_path / f"{kind}.npz", kind))
            assert bpy.ops.vposer.add_body(source="USER_FILE", name=kind) == {"FINISHED"}
            assert bpy.ops.vposer.set_hand_pose(pose="FIST") == {"FINISHED"}
    finally:
        preferences.model_path = saved


def test_panel_settings_are_the_operators_own(addon):
    hand = bpy.context.window_manager.operator_properties_last("vposer.set_hand_pose")
    assert all(name in hand.bl_rna.properties for name in ("pose", "side", "insert_keyframe"))
    poses = [item.identifier for item in hand.bl_rna.properties["pose"].enum_items]
    assert poses == ["FLAT", "RELAXED", "FIST", "POINT"]
