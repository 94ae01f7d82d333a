"""Posing a body with targets in real Blender: Add Targets, Solve Pose, pins, Live Posing, undo.

Expectations come from core's own forward pass (joint positions of a known pose, taken into the
scene through the rig's world matrix) and from Blender's evaluation of the pose bones, never from
the solver that is being tested. The rig stands somewhere other than the origin, turned and
scaled, so every conversion between the scene and model space is exercised.
"""

from __future__ import annotations

import math

import bpy
import numpy as np
import pytest
import torch
from mathutils import Matrix

from core.keypoints import EFFECTORS
from core.rotations import axis_angle_to_matrix, axis_angle_to_quaternion, quaternion_to_matrix
from core.vposer import load_default_vposer

PLACEMENT = Matrix.Translation((0.4, -1.2, 0.3)) @ Matrix.Rotation(math.radians(30), 4, "Z") @ Matrix.Scale(1.1, 4)


@pytest.fixture
def targets_module(addon):
    import importlib

    return importlib.import_module(f"{addon.__name__}.vposer_addon.targets")


@pytest.fixture
def rig(addon, bridge, empty_scene):
    """A body placed away from the origin, in a bent pose (so targets differ from the rest pose)."""
    assert bpy.ops.vposer.add_body() == {"FINISHED"}
    body = bpy.context.active_object
    body.matrix_world = PLACEMENT @ bridge.Y_UP_TO_Z_UP
    _set_pose(body, bridge, _pose(seed=1, orient=(0.1, 0.3, 0.0)), np.array([0.05, 0.9, 0.1]))
    return body


def _pose(seed: int, orient: tuple[float, float, float]) -> np.ndarray:
    """(52, 3) axis-angle: a natural body pose drawn from the prior, turned by `orient`, hands at rest."""
    axis_angle = np.zeros((52, 3))
    axis_angle[0] = orient
    axis_angle[1:22] = load_default_vposer().sample(1, seed=seed, temperature=0.7).view(21, 3).double().numpy()
    return axis_angle


def _set_pose(rig, bridge, axis_angle: np.ndarray, transl: np.ndarray) -> None:
    quaternions = axis_angle_to_quaternion(torch.from_numpy(axis_angle)).numpy()
    bridge.set_pose(rig, rig.vposer_body.joint_names(), quaternions, transl)
    bpy.context.view_layer.update()


def _to_world(rig, points: np.ndarray) -> np.ndarray:
    matrix = np.array(rig.matrix_world)
    return points @ matrix[:3, :3].T + matrix[:3, 3]


def _core_world_joints(rig, adult, rotations: torch.Tensor, transl: np.ndarray) -> np.ndarray:
    """World positions of all joints for local rotations (J, 3, 3), by core's forward pass."""
    with torch.no_grad():
        joints = adult.forward_rotations(rotations[None].double(), transl=torch.tensor(transl)[None]).joints[0]
    return _to_world(rig, joints.numpy())


def _rig_rotations(rig) -> torch.Tensor:
    names = rig.vposer_body.joint_names()
    quaternions = np.array([rig.pose.bones[name].rotation_quaternion for name in names])
    return quaternion_to_matrix(torch.from_numpy(quaternions))


def _rig_transl(rig) -> np.ndarray:
    return np.array(rig.pose.bones["pelvis"].location)


def _bone_world_head(rig, name: str) -> np.ndarray:
    """Where Blender's own evaluation puts a joint in the scene."""
    bpy.context.view_layer.update()
    return np.array(rig.matrix_world @ rig.pose.bones[name].head)


def _targets(rig) -> dict[str, bpy.types.Object]:
    return {obj.vposer_target.joint: obj for obj in bpy.context.scene.objects if obj.vposer_target.body == rig}


def _add_targets(rig, preset: str) -> dict[str, bpy.types.Object]:
    bpy.context.view_layer.objects.active = rig
    assert bpy.ops.vposer.add_targets(preset=preset) == {"FINISHED"}
    return _targets(rig)


def _turn_degrees(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    cos = ((a.transpose(-1, -2) @ b).diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    return np.degrees(np.arccos(np.clip(cos.numpy(), -1.0, 1.0)))


def _move_targets_to_pose(rig, adult, targets, axis_angle: np.ndarray, transl: np.ndarray) -> np.ndarray:
    """Put each target at its joint in a known pose (core's forward); returns all joints' world positions."""
    expected = _core_world_joints(rig, adult, axis_angle_to_matrix(torch.from_numpy(axis_angle)), transl)
    names = rig.vposer_body.joint_names()
    for joint, target in targets.items():
        target.location = expected[names.index(joint)]
    bpy.context.view_layer.update()
    return expected


# --------------------------------------------------------------------------------------- Add Targets


def test_add_targets_puts_mapped_empties_at_the_posed_joints(rig, adult):
    expected = _core_world_joints(rig, adult, _rig_rotations(rig), _rig_transl(rig))
    names = rig.vposer_body.joint_names()

    targets = _add_targets(rig, "EFFECTORS")

    assert sorted(targets) == sorted(EFFECTORS)
    collection = bpy.data.collections[f"{rig.name} Targets"]
    assert collection.name in bpy.context.scene.collection.children
    for joint, target in targets.items():
        assert target.type == "EMPTY" and target.parent is None
        assert target.users_collection == (collection,)
        assert target.vposer_target.weight == 1.0
        np.testing.assert_allclose(np.array(target.matrix_world.translation), expected[names.index(joint)], atol=1e-4)
    assert bpy.context.active_object == rig


def test_add_targets_skips_joints_that_already_have_one(rig):
    _add_targets(rig, "EFFECTORS")
    assert bpy.ops.vposer.add_targets(preset="EFFECTORS") == {"CANCELLED"}
    assert len(_targets(rig)) == 6

    targets = _add_targets(rig, "BODY")

    assert sorted(targets) == sorted(rig.vposer_body.joint_names()[:22])
    assert len(bpy.data.collections[f"{rig.name} Targets"].objects) == 22


def test_add_targets_on_selected_bones(rig):
    bpy.ops.object.mode_set(mode="POSE")
    for bone in rig.pose.bones:
        bone.select = bone.name in {"left_elbow", "left_index1"}

    targets = _add_targets(rig, "SELECTED")

    assert sorted(targets) == ["left_elbow", "left_index1"]
    assert rig.mode == "POSE"


def test_selected_bones_needs_pose_mode_and_a_selection(rig):
    with pytest.raises(RuntimeError, match="Pose Mode"):
        bpy.ops.vposer.add_targets(preset="SELECTED")
    bpy.ops.object.mode_set(mode="POSE")
    for bone in rig.pose.bones:
        bone.select = False
    with pytest.raises(RuntimeError, match="No bones of Body are selected"):
        bpy.ops.vposer.add_targets(preset="SELECTED")
    assert not _targets(rig)


# --------------------------------------------------------------------------------------- Solve Pose


def test_solve_pose_reaches_the_joints_of_a_known_pose(rig, adult):
    targets = _add_targets(rig, "BODY")
    goal = _pose(seed=5, orient=(0.3, -0.6, 0.2))
    goal_transl = np.array([0.2, 0.95, -0.3])
    expected = _move_targets_to_pose(rig, adult, targets, goal, goal_transl)
    before = _rig_rotations(rig)

    assert bpy.ops.vposer.solve_pose() == {"FINISHED"}

    names = rig.vposer_body.joint_names()
    reached = _core_world_joints(rig, adult, _rig_rotations(rig), _rig_transl(rig))[:22]
    assert np.linalg.norm(reached - expected[:22], axis=1).max() < 0.005  # 5 mm, by core's forward
    blender = np.array([_bone_world_head(rig, name) for name in names[:22]])
    assert np.linalg.norm(blender - expected[:22], axis=1).max() < 0.005  # and by Blender's own evaluation
    assert _turn_degrees(before[:22], _rig_rotations(rig)[:22]).max() > 10  # the pose did change
    np.testing.assert_allclose(_rig_rotations(rig)[22:].numpy(), before[22:].numpy(), atol=1e-6)  # hands kept


def test_solve_pose_from_an_active_target_and_reports_errors(rig, adult):
    targets = _add_targets(rig, "EFFECTORS")
    targets["right_wrist"].location.z += 0.1
    bpy.context.view_layer.objects.active = targets["right_wrist"]
    bpy.context.view_layer.update()

    assert bpy.ops.vposer.solve_pose() == {"FINISHED"}

    reached = _bone_world_head(rig, "right_wrist")
    assert np.linalg.norm(reached - np.array(targets["right_wrist"].location)) < 0.005


def test_weight_zero_ignores_a_target(rig):
    targets = _add_targets(rig, "EFFECTORS")
    targets["head"].vposer_target.weight = 0.0
    targets["head"].location.z += 0.3
    targets["left_wrist"].location.x += 0.05
    bpy.context.view_layer.update()

    assert bpy.ops.vposer.solve_pose() == {"FINISHED"}

    assert np.linalg.norm(_bone_world_head(rig, "head") - np.array(targets["head"].location)) > 0.2
    assert np.linalg.norm(_bone_world_head(rig, "left_wrist") - np.array(targets["left_wrist"].location)) < 0.005


def test_pinned_joint_keeps_its_rotation(rig):
    targets = _add_targets(rig, "EFFECTORS")
    bpy.ops.object.mode_set(mode="POSE")
    for bone in rig.pose.bones:
        bone.select = bone.name == "left_elbow"
    assert bpy.ops.vposer.pin_bones(pin=True) == {"FINISHED"}
    assert rig.pose.bones["left_elbow"].vposer_pinned
    elbow = rig.vposer_body.joint_names().index("left_elbow")
    before = _rig_rotations(rig)
    targets["left_wrist"].location += type(targets["left_wrist"].location)((0.08, -0.05, 0.1))
    bpy.context.view_layer.update()

    assert bpy.ops.vposer.solve_pose() == {"FINISHED"}

    after = _rig_rotations(rig)
    assert _turn_degrees(before[elbow], after[elbow]) < 0.5
    assert _turn_degrees(before[:22], after[:22]).max() > 5  # other joints did the work
    assert np.linalg.norm(_bone_world_head(rig, "left_wrist") - np.array(targets["left_wrist"].location)) < 0.01

    assert bpy.ops.vposer.pin_bones(pin=False) == {"FINISHED"}
    assert not rig.pose.bones["left_elbow"].vposer_pinned


def test_pinned_joints_hold_exactly_over_ten_solves(rig):
    """Pins hold exactly, however many solves: left shoulder, left elbow and spine2 pinned, then ten
    Solve Pose clicks, each after moving the right wrist's target a little further."""
    targets = _add_targets(rig, "EFFECTORS")
    bpy.ops.object.mode_set(mode="POSE")
    pins = ("left_shoulder", "left_elbow", "spine2")
    for bone in rig.pose.bones:
        bone.select = bone.name in pins
    assert bpy.ops.vposer.pin_bones(pin=True) == {"FINISHED"}
    ids = [rig.vposer_body.joint_names().index(name) for name in pins]
    before = _rig_rotations(rig)
    wrist = targets["right_wrist"]
    start = np.array(wrist.location)
    for step in range(1, 11):
        wrist.location = start + step * np.array([0.006, -0.004, 0.008])
        bpy.context.view_layer.update()
        assert bpy.ops.vposer.solve_pose() == {"FINISHED"}
        turned = (_rig_rotations(rig)[ids] - before[ids]).flatten(-2).norm(dim=-1) / math.sqrt(2)  # ~ radians
        assert turned.max() < 1e-5, f"solve {step}: pinned joints turned {turned.tolist()} rad"
    assert _turn_degrees(before[:22], _rig_rotations(rig)[:22]).max() > 5  # other joints did the work
    assert np.linalg.norm(_bone_world_head(rig, "right_wrist") - np.array(wrist.location)) < 0.01


def _overhead_reach(scene):
    """A user's report: the open adult body added at the origin, Add Targets > Effectors, the right
    wrist's target moved to head + (-0.15, -0.05, 0.35) m. Returns (body, targets, left wrist at start)."""
    assert bpy.ops.vposer.add_body() == {"FINISHED"}
    body = bpy.context.active_object
    targets = _add_targets(body, "EFFECTORS")
    left_wrist = _bone_world_head(body, "left_wrist")
    targets["right_wrist"].location = np.array(targets["head"].location) + np.array([-0.15, -0.05, 0.35])
    bpy.context.view_layer.update()
    return body, targets, left_wrist


def _target_errors(body, targets) -> dict[str, float]:
    """Distances (m) from each target to its joint, by Blender's own evaluation."""
    return {joint: float(np.linalg.norm(_bone_world_head(body, joint) - np.array(target.location)))
            for joint, target in targets.items()}


def test_solve_pose_reaches_an_overhead_target_on_the_first_click(addon, empty_scene):
    body, targets, left_wrist = _overhead_reach(empty_scene)

    assert bpy.ops.vposer.solve_pose() == {"FINISHED"}  # was: mean error 82.9 mm, max 384.3 mm

    errors = _target_errors(body, targets)
    assert max(errors.values()) < 0.005, errors
    assert np.linalg.norm(_bone_world_head(body, "left_wrist") - left_wrist) < 0.005  # was dragged 71 mm


def test_live_posing_finishes_the_solve_when_the_target_stops(addon, empty_scene, targets_module):
    """A live step runs a few iterations, which a jump leaves short; once the target stops, a full
    solve finishes the pose: from the timer (headless: called directly) or from an update that
    finds the targets where the last step saw them."""
    body, targets, _ = _overhead_reach(empty_scene)
    bpy.context.scene.vposer_live = True
    targets["right_wrist"].location = targets["right_wrist"].location  # the jump, as a transform update
    bpy.context.view_layer.update()
    assert _target_errors(body, targets)["right_wrist"] > 0.05  # the live step alone stays short

    assert targets_module.finish_live_solves() == 1
    assert max(_target_errors(body, targets).values()) < 0.005
    assert targets_module.finish_live_solves() == 0  # finished: nothing more to do

    targets["right_wrist"].location.y -= 0.25  # another jump (forward), then an update with the target still
    bpy.context.view_layer.update()
    stepped = _target_errors(body, targets)["right_wrist"]
    assert stepped > 0.015
    targets["right_wrist"].location = targets["right_wrist"].location
    bpy.context.view_layer.update()
    assert _target_errors(body, targets)["right_wrist"] < 0.5 * stepped  # the prior's compromise: ~1 cm
    assert targets_module.finish_live_solves() == 0


def test_insert_keyframes_keys_the_current_frame_of_the_existing_action(rig):
    rig.pose.bones["head"].keyframe_insert("rotation_quaternion", frame=1)
    action = rig.animation_data.action
    targets = _add_targets(rig, "EFFECTORS")
    targets["left_ankle"].location.y += 0.1
    bpy.context.scene.frame_set(7)  # the action holds the head as keyed; no other channel is animated
    bpy.context.view_layer.update()

    assert bpy.ops.vposer.solve_pose(insert_keyframes=True) == {"FINISHED"}

    assert rig.animation_data.action == action and len(bpy.data.actions) == 1
    curves = {(c.data_path, c.array_index): c for c in _channelbag(rig).fcurves}
    for name in rig.vposer_body.joint_names()[:22]:
        bone = rig.pose.bones[name]
        for component in range(4):
            curve = curves[(bone.path_from_id("rotation_quaternion"), component)]
            frames = sorted(point.co[0] for point in curve.keyframe_points)
            assert frames == ([1.0, 7.0] if name == "head" else [7.0])
            assert curve.evaluate(7) == pytest.approx(bone.rotation_quaternion[component], abs=1e-6)
    pelvis = rig.pose.bones["pelvis"]
    for axis in range(3):
        assert curves[(pelvis.path_from_id("location"), axis)].evaluate(7) == pytest.approx(pelvis.location[axis])


def _channelbag(rig):
    from bpy_extras.anim_utils import action_get_channelbag_for_slot

    return action_get_channelbag_for_slot(rig.animation_data.action, rig.animation_data.action_slot)


def test_solve_keys_into_a_new_action_only_when_asked(rig):
    _add_targets(rig, "EFFECTORS")
    assert bpy.ops.vposer.solve_pose() == {"FINISHED"}
    assert rig.animation_data is None or rig.animation_data.action is None

    bpy.context.scene.frame_set(3)
    assert bpy.ops.vposer.solve_pose(insert_keyframes=True) == {"FINISHED"}
    assert len(_channelbag(rig).fcurves) == 22 * 4 + 3
    assert all([point.co[0] for point in curve.keyframe_points] == [3.0] for curve in _channelbag(rig).fcurves)


def test_solve_refuses_bad_mappings_and_leaves_the_pose(rig):
    before = _rig_rotations(rig)
    with pytest.raises(RuntimeError, match="Body has no targets"):
        bpy.ops.vposer.solve_pose()

    targets = _add_targets(rig, "EFFECTORS")
    copy = targets["head"].copy()
    bpy.context.scene.collection.objects.link(copy)
    with pytest.raises(RuntimeError, match="both drive head"):
        bpy.ops.vposer.solve_pose()

    copy.vposer_target.joint = "tail"
    with pytest.raises(RuntimeError, match=f"'{copy.name}' names joint 'tail'"):
        bpy.ops.vposer.solve_pose()

    bpy.data.objects.remove(copy)
    for target in targets.values():
        target.vposer_target.weight = 0.0
    with pytest.raises(RuntimeError, match="every target of Body has weight 0"):
        bpy.ops.vposer.solve_pose()
    assert torch.equal(_rig_rotations(rig), before)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error for a machine without CUDA")
def test_cuda_preference_without_a_gpu_is_reported_and_changes_nothing(rig):
    _add_targets(rig, "EFFECTORS")
    preferences = bpy.context.preferences.addons[rig.vposer_body.__module__.split(".")[0]].preferences
    before = _rig_rotations(rig)
    preferences.device = "CUDA"
    try:
        with pytest.raises(RuntimeError, match="Device is set to CUDA"):
            bpy.ops.vposer.solve_pose()
    finally:
        preferences.device = "AUTO"
    assert torch.equal(_rig_rotations(rig), before)
    preferences.device = "CPU"
    try:
        assert bpy.ops.vposer.solve_pose() == {"FINISHED"}
    finally:
        preferences.device = "AUTO"


def test_undo_restores_the_pose(rig):
    targets = _add_targets(rig, "EFFECTORS")
    targets["right_ankle"].location.x += 0.1
    bpy.context.view_layer.update()
    before = _rig_rotations(rig)
    bpy.ops.ed.undo_push(message="targets")

    assert bpy.ops.vposer.solve_pose("EXEC_DEFAULT", True) == {"FINISHED"}
    rig = bpy.data.objects["Body"]
    assert _turn_degrees(before[:22], _rig_rotations(rig)[:22]).max() > 1

    bpy.ops.ed.undo()
    rig = bpy.data.objects["Body"]  # undo replaces every datablock: look it up again
    np.testing.assert_allclose(_rig_rotations(rig).numpy(), before.numpy(), atol=1e-6)


def test_polls_say_what_is_missing(addon, empty_scene):
    assert not bpy.ops.vposer.solve_pose.poll()
    with pytest.raises(RuntimeError, match="Select a VPoser body or one of its targets"):
        bpy.ops.vposer.solve_pose()
    with pytest.raises(RuntimeError, match="Select a VPoser body or one of its targets"):
        bpy.ops.vposer.add_targets()
    with pytest.raises(RuntimeError, match="Pose Mode"):
        bpy.ops.vposer.pin_bones()


def test_pin_needs_selected_bones(rig):
    bpy.ops.object.mode_set(mode="POSE")
    for bone in rig.pose.bones:
        bone.select = False
    with pytest.raises(RuntimeError, match="Select the bones to pin"):
        bpy.ops.vposer.pin_bones()


# --------------------------------------------------------------------------------------- Live Posing


def test_live_posing_follows_a_moved_target(rig):
    targets = _add_targets(rig, "EFFECTORS")
    wrist = targets["right_wrist"]
    start = _bone_world_head(rig, "right_wrist")
    bpy.context.scene.vposer_live = True

    wrist.location.z += 0.15
    bpy.context.view_layer.update()  # the handler solves here
    first = _bone_world_head(rig, "right_wrist")
    goal = np.array(wrist.location)
    assert np.linalg.norm(first - goal) < 0.5 * np.linalg.norm(start - goal)

    for _ in range(4):  # holding the target still (re-moving it in place) lets the solve go on
        wrist.location = wrist.location
        bpy.context.view_layer.update()
    assert np.linalg.norm(_bone_world_head(rig, "right_wrist") - goal) < 0.005


def test_live_posing_leaves_torch_thread_count_as_it_was(rig):
    """A live step runs torch on one thread (a single frame gains nothing from more) and gives the
    caller's count back, also when the step fails."""
    import torch

    targets = _add_targets(rig, "EFFECTORS")
    bpy.context.scene.vposer_live = True
    before = torch.get_num_threads()
    torch.set_num_threads(max(2, before))
    try:
        targets["right_wrist"].location.z += 0.1
        bpy.context.view_layer.update()
        assert torch.get_num_threads() == max(2, before)
        targets["left_wrist"].vposer_target.joint = targets["right_wrist"].vposer_target.joint  # two on one joint
        targets["right_wrist"].location.z += 0.1
        bpy.context.view_layer.update()
        assert not bpy.context.scene.vposer_live  # the failed step turned Live Posing off
        assert torch.get_num_threads() == max(2, before)
    finally:
        torch.set_num_threads(before)


def test_live_posing_ignores_other_objects_and_stays_off_when_off(rig):
    targets = _add_targets(rig, "EFFECTORS")
    other = bpy.data.objects.new("Other", None)
    bpy.context.scene.collection.objects.link(other)
    before = _rig_rotations(rig)
    targets["left_wrist"].location.x += 0.15  # live is off: nothing follows
    bpy.context.view_layer.update()
    assert torch.equal(before, _rig_rotations(rig))

    bpy.context.scene.vposer_live = True
    other.location.x += 1.0  # not a target: no solve, although the wrist target is far off
    bpy.context.view_layer.update()
    assert torch.equal(before, _rig_rotations(rig))

    targets["head"].location.z += 0.0  # re-setting a target's location is a transform update
    bpy.context.view_layer.update()
    assert not torch.equal(before, _rig_rotations(rig))


def test_undo_and_redo_restore_a_live_pose_without_solving_again(rig):
    targets = _add_targets(rig, "EFFECTORS")
    bpy.context.scene.vposer_live = True
    before = _rig_rotations(rig)
    bpy.ops.ed.undo_push(message="before the drag")
    targets["right_wrist"].location.z += 0.1
    bpy.context.view_layer.update()
    dragged = _rig_rotations(rig)
    assert not torch.equal(before, dragged)
    bpy.ops.ed.undo_push(message="drag")  # what the transform tool does when the drag ends

    bpy.ops.ed.undo()
    bpy.context.view_layer.update()
    np.testing.assert_allclose(_rig_rotations(bpy.data.objects["Body"]).numpy(), before.numpy(), atol=1e-6)
    bpy.ops.ed.redo()
    bpy.context.view_layer.update()
    np.testing.assert_allclose(_rig_rotations(bpy.data.objects["Body"]).numpy(), dragged.numpy(), atol=1e-6)


def test_live_posing_turns_itself_off_on_a_bad_mapping(rig, capsys):
    targets = _add_targets(rig, "EFFECTORS")
    bpy.context.scene.vposer_live = True
    targets["head"].vposer_target.joint = "tail"
    targets["head"].location.z += 0.05
    before = _rig_rotations(rig)

    bpy.context.view_layer.update()  # must not raise

    assert not bpy.context.scene.vposer_live
    assert "names joint 'tail'" in capsys.readouterr().out
    assert torch.equal(before, _rig_rotations(rig))


def test_unregister_removes_the_live_handler(addon, targets_module):
    handler = targets_module.live_update
    assert handler in bpy.app.handlers.depsgraph_update_post
    addon.unregister()
    try:
        assert handler not in bpy.app.handlers.depsgraph_update_post
        assert not hasattr(bpy.types.Scene, "vposer_live")
    finally:
        addon.register()
    assert handler in bpy.app.handlers.depsgraph_update_post
