"""Add Body stands the body on the 3D cursor, and Snap to Floor stands a posed or animated body on
the floor, both checked on Blender's own evaluated mesh; the keys it writes leave every other
channel alone."""

from __future__ import annotations

import math

import bpy
import numpy as np
import pytest
import torch
from curves_testing import action_curves, key_co

from core.rotations import axis_angle_to_quaternion
from core.synthetic_models import write_model

ROOT = "pelvis"
LOCATION = f'pose.bones["{ROOT}"].location'


@pytest.fixture
def preferences(addon):
    prefs = bpy.context.preferences.addons[addon.__name__].preferences
    saved = prefs.model_path
    yield prefs
    prefs.model_path = saved


@pytest.fixture
def body(addon, empty_scene):
    assert bpy.ops.vposer.add_body() == {"FINISHED"}
    return bpy.context.active_object


def _world_vertices(rig):
    """(V, 3) the deformed mesh in the scene, as Blender evaluates it now."""
    skin = rig.vposer_body.mesh
    mesh = skin.evaluated_get(bpy.context.evaluated_depsgraph_get()).data
    local = np.empty(3 * len(mesh.vertices), dtype=np.float32)
    mesh.vertices.foreach_get("co", local)
    matrix = np.array(skin.matrix_world)
    return local.reshape(-1, 3).astype(np.float64) @ matrix[:3, :3].T + matrix[:3, 3]


def _lowest(rig, frame=None):
    if frame is not None:
        bpy.context.scene.frame_set(frame)
    else:
        bpy.context.view_layer.update()
    return _world_vertices(rig)[:, 2].min()


def _poses(count, seed=0):
    """(count, 52, 4) standing poses (small joint rotations, a slight root tilt) and (count, 3) root
    locations that walk along and bob up and down well off the floor."""
    generator = torch.Generator().manual_seed(seed)
    quaternions = axis_angle_to_quaternion(
        0.15 * torch.randn(count, 52, 3, generator=generator, dtype=torch.float64)).numpy()
    steps = np.arange(count)
    locations = np.column_stack([0.3 * steps, 0.2 + 0.1 * np.sin(steps), -0.1 * steps])
    return quaternions, locations


def _all_keys(rig):
    return {key: key_co(curve) for key, curve in action_curves(rig).items()}


def _assert_only_changed(before, after, changed):
    """Every curve but the `changed` ones holds exactly its old keys."""
    assert before.keys() <= after.keys()
    for key in after:
        if key not in changed:
            np.testing.assert_array_equal(after[key], before[key], err_msg=str(key))


# --------------------------------------------------------------------------------------------
# Add Body


@pytest.mark.parametrize("source, kind", [("ADULT", None), ("ALL_AGES", None), ("USER_FILE", "smplh"),
                                          ("USER_FILE", "smplx"), ("USER_FILE", "mano")])
def test_add_body_stands_on_the_cursor(addon, empty_scene, preferences, tmp_path, source, kind):
    if kind:
        preferences.model_path = str(write_model(tmp_path / f"{kind}.npz", kind))
    empty_scene.cursor.location = (1.0, -2.0, 0.3)

    assert bpy.ops.vposer.add_body(source=source) == {"FINISHED"}

    rig = bpy.context.active_object
    vertices = _world_vertices(rig)
    assert abs(vertices[:, 2].min() - 0.3) < 1e-6  # the soles (a hand's underside) on the cursor
    assert tuple(rig.location)[:2] == pytest.approx((1.0, -2.0))
    if kind is None:  # the open bodies stand up: the pelvis well above the feet, the head higher still
        heads = {bone.name: (rig.matrix_world @ bone.head).z for bone in rig.pose.bones}
        assert heads["left_ankle"] < heads["pelvis"] - 0.3 < heads["head"] - 0.6


# --------------------------------------------------------------------------------------------
# Snap to Floor


def test_snap_a_posed_body_without_an_action(body, bridge):
    names = body.vposer_body.joint_names()
    quaternions, locations = _poses(1)
    bridge.set_pose(body, names, quaternions[0], locations[0])
    assert _lowest(body) > 0.05  # floating

    assert bpy.ops.vposer.snap_to_floor() == {"FINISHED"}

    assert abs(_lowest(body)) < 1e-5
    location = np.array(body.pose.bones[ROOT].location)
    np.testing.assert_allclose(location[[0, 2]], locations[0, [0, 2]], atol=1e-12)  # no horizontal move
    assert body.animation_data is None  # nothing keyed

    bpy.context.scene.cursor.location = (5.0, 5.0, 0.4)
    assert bpy.ops.vposer.snap_to_floor(floor="CURSOR") == {"FINISHED"}
    assert abs(_lowest(body) - 0.4) < 1e-5


def test_snap_a_shaped_turned_and_scaled_body(body, bridge):
    body.vposer_body.betas[0] = 2.0  # taller: the mesh and joints move
    body.location = (1.0, 2.0, 3.0)
    body.rotation_euler = (math.pi / 2, 0.0, 0.5)
    body.scale = (1.3, 1.3, 1.3)
    quaternions, locations = _poses(1, seed=2)
    bridge.set_pose(body, body.vposer_body.joint_names(), quaternions[0], locations[0])
    bpy.context.view_layer.update()
    pelvis = np.array(body.matrix_world @ body.pose.bones[ROOT].head)

    assert bpy.ops.vposer.snap_to_floor() == {"FINISHED"}

    assert abs(_lowest(body)) < 1e-5
    moved = np.array(body.matrix_world @ body.pose.bones[ROOT].head)
    np.testing.assert_allclose(moved[:2], pelvis[:2], atol=1e-6)  # straight down in the world


def test_snap_every_frame_moves_each_keyed_frame_vertically(body, bridge):
    names = body.vposer_body.joint_names()
    quaternions, locations = _poses(6)
    bridge.write_action(body, names, quaternions, locations, 1, "walk", frame_step=2)
    before = _all_keys(body)

    assert bpy.ops.vposer.snap_to_floor(mode="FRAMES") == {"FINISHED"}

    for frame in range(1, 12, 2):
        assert abs(_lowest(body, frame)) < 1e-5, frame
    after = _all_keys(body)
    _assert_only_changed(before, after, {(LOCATION, 1)})  # the root's up axis, nothing else
    np.testing.assert_array_equal(after[LOCATION, 1][:, 0], before[LOCATION, 1][:, 0])  # no new keys
    assert np.ptp(after[LOCATION, 1][:, 1] - before[LOCATION, 1][:, 1]) > 0.01  # each frame its own move


def test_snap_the_whole_clip_keeps_its_motion(body, bridge):
    names = body.vposer_body.joint_names()
    quaternions, locations = _poses(6, seed=1)
    locations[3, 1] += 0.3  # a jump
    bridge.write_action(body, names, quaternions, locations, 1, "jump")
    before = _all_keys(body)
    lowest_before = np.array([_lowest(body, frame) for frame in range(1, 7)])

    assert bpy.ops.vposer.snap_to_floor(mode="CLIP") == {"FINISHED"}

    lowest_after = np.array([_lowest(body, frame) for frame in range(1, 7)])
    assert abs(lowest_after.min()) < 1e-5  # the lowest frame touches the floor, none goes through
    np.testing.assert_allclose(lowest_after - lowest_after[0], lowest_before - lowest_before[0], atol=1e-5)
    after = _all_keys(body)
    _assert_only_changed(before, after, {(LOCATION, 1)})  # horizontal motion and rotations untouched
    shift = after[LOCATION, 1][:, 1] - before[LOCATION, 1][:, 1]
    np.testing.assert_allclose(shift, shift[0], atol=1e-6)  # one offset, so nothing slides
    assert shift[0] < -0.01


def test_snap_hand_keyed_poses_adds_keys_only_where_needed(body):
    """Keys made the usual way: rotations keyed on frames 1 and 10, the root's location only on 1."""
    bones = body.pose.bones
    for frame, angle in ((1, 0.2), (10, -0.3)):
        bones["left_hip"].rotation_quaternion = (math.cos(angle / 2), math.sin(angle / 2), 0.0, 0.0)
        bones["left_hip"].keyframe_insert("rotation_quaternion", frame=frame)
    bones[ROOT].location = (0.0, 0.4, 0.0)
    bones[ROOT].keyframe_insert("location", frame=1)
    before = _all_keys(body)

    assert bpy.ops.vposer.snap_to_floor(mode="FRAMES") == {"FINISHED"}

    after = _all_keys(body)
    _assert_only_changed(before, after, {(LOCATION, 1)})
    np.testing.assert_array_equal(after[LOCATION, 1][:, 0], [1, 10])  # a key added on frame 10, on Y only
    assert len(after[LOCATION, 0]) == len(after[LOCATION, 2]) == 1
    for frame in (1, 10):
        assert abs(_lowest(body, frame)) < 1e-5, frame


def test_snap_current_frame_of_an_animated_root_keys_it_there(body, bridge):
    names = body.vposer_body.joint_names()
    quaternions, locations = _poses(3)
    bridge.write_action(body, names, quaternions, locations, 1, "walk", frame_step=10)  # frames 1, 11, 21
    before = _all_keys(body)
    bpy.context.scene.frame_set(6)

    assert bpy.ops.vposer.snap_to_floor(mode="CURRENT") == {"FINISHED"}

    after = _all_keys(body)
    _assert_only_changed(before, after, {(LOCATION, 1)})
    np.testing.assert_array_equal(after[LOCATION, 1][:, 0], [1, 6, 11, 21])
    np.testing.assert_array_equal(np.delete(after[LOCATION, 1], 1, axis=0), before[LOCATION, 1])
    assert abs(_lowest(body, 6)) < 1e-5


def test_snap_refusals_change_nothing(addon, body, preferences, tmp_path):
    location = tuple(body.pose.bones[ROOT].location)
    with pytest.raises(RuntimeError, match="Body has no keyed pose: Every Frame and Whole Clip"):
        bpy.ops.vposer.snap_to_floor(mode="CLIP")
    assert tuple(body.pose.bones[ROOT].location) == location and body.animation_data is None

    preferences.model_path = str(write_model(tmp_path / "mano.npz", "mano"))
    assert bpy.ops.vposer.add_body(source="USER_FILE", name="Hand") == {"FINISHED"}
    with pytest.raises(RuntimeError, match="Hand has no feet to stand on"):
        bpy.ops.vposer.snap_to_floor()


def test_undo_restores_the_keys(body, bridge):
    quaternions, locations = _poses(4)
    bridge.write_action(body, body.vposer_body.joint_names(), quaternions, locations, 1, "walk")
    before = _all_keys(body)
    bpy.ops.ed.undo_push(message="walk")
    assert bpy.ops.vposer.snap_to_floor("EXEC_DEFAULT", True, mode="FRAMES") == {"FINISHED"}
    assert not np.array_equal(_all_keys(bpy.data.objects["Body"])[LOCATION, 1], before[LOCATION, 1])

    bpy.ops.ed.undo()

    after = _all_keys(bpy.data.objects["Body"])
    _assert_only_changed(before, after, set())


def test_panel_settings_are_the_operators_own(addon):
    snap = bpy.context.window_manager.operator_properties_last("vposer.snap_to_floor")
    assert all(name in snap.bl_rna.properties for name in ("mode", "floor"))
