"""Retarget in real Blender: a BVH written from known body poses comes back onto the body through
Blender's own BVH importer, the numpy sampling of an armature matches Blender's evaluation, marker
empties placed on a known posed body are fitted, and refusals and undo leave the scene as it was."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import bpy
import numpy as np
import pytest
import torch
from mathutils import Matrix

from core.body_model import DATA_DIR
from core.keypoints import KeypointSet
from core.mocap.bvh import format_bvh, read_bvh
from core.mocap.skeletons import SMPL_BODY_JOINT_NAMES, SMPL_BODY_PARENTS, get_preset
from core.retarget import RetargetOptions, bvh_targets, retarget
from core.rotations import axis_angle_to_matrix, quaternion_to_matrix
from core.vposer import load_default_vposer
from tests.core.mocap_testing import T_POSE, daz_like_text

FRAMES = 12
BODY = 22
LAYOUT = DATA_DIR / "markers_plugin_gait_open.json"
WALK = DATA_DIR.parents[1] / "examples" / "cmu_02_01_walk.bvh"  # CMU 02_01, 343 frames
CMU_SCALE = 0.05644


@pytest.fixture(scope="module")
def prior():
    return load_default_vposer()


@pytest.fixture(scope="module")
def module(addon):
    return importlib.import_module(f"{addon.__name__}.vposer_addon.operators.retarget")


@pytest.fixture
def rig(addon, empty_scene):
    assert bpy.ops.vposer.add_body() == {"FINISHED"}
    rig = bpy.context.active_object
    rig.location = (0.0, 0.0, 0.0)  # Add Body stands it on the cursor; here model space is the clip's world
    return rig


def _known_poses(prior, frames: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Plausible body rotations (T, 22, 3, 3) from the prior, turned and moving about, and root
    translations (T, 3)."""
    generator = torch.Generator().manual_seed(seed)
    rotations = torch.empty(frames, BODY, 3, 3, dtype=torch.float64)
    rotations[:, 1:] = axis_angle_to_matrix(prior.sample(frames, seed=seed, temperature=0.7).double().view(frames, 21, 3))
    turn = torch.tensor([0.2, 1.1, -0.1], dtype=torch.float64) + 0.1 * torch.randn(frames, 3, generator=generator,
                                                                                 dtype=torch.float64)
    rotations[:, 0] = axis_angle_to_matrix(turn)
    transl = torch.tensor([0.3, 0.05, -0.4], dtype=torch.float64) + 0.2 * torch.randn(
        frames, 3, generator=generator, dtype=torch.float64)
    return rotations, transl


def _depth_first() -> list[int]:
    order: list[int] = []

    def visit(joint: int) -> None:
        order.append(joint)
        order_children = [child for child in range(BODY) if SMPL_BODY_PARENTS[child] == joint]
        for child in order_children:
            visit(child)

    visit(0)
    return order


def _write_bvh(path, adult, betas: torch.Tensor, rotations: torch.Tensor, transl: torch.Tensor) -> None:
    """An SMPL-named skeleton with the shaped body's bones (metres, Y up), posed per frame."""
    from scipy.spatial.transform import Rotation

    rest = adult.rest_joints(betas[None])[0, :BODY].numpy()
    offsets = rest.copy()
    offsets[1:] -= rest[list(SMPL_BODY_PARENTS[1:])]
    order = _depth_first()
    frames = len(rotations)
    euler = Rotation.from_matrix(rotations.reshape(-1, 3, 3).numpy()).as_euler("XYZ", degrees=True)
    euler = euler.reshape(frames, BODY, 3)
    position = ("Xposition", "Yposition", "Zposition")
    rotation = ("Xrotation", "Yrotation", "Zrotation")
    text = format_bvh(
        [SMPL_BODY_JOINT_NAMES[joint] for joint in order],
        [order.index(SMPL_BODY_PARENTS[joint]) if joint else -1 for joint in order],
        np.where(np.arange(BODY)[:, None] == 0, 0.0, offsets)[order],
        [position + rotation if joint == 0 else rotation for joint in order],
        np.concatenate([rest[0] + transl.numpy()] + [euler[:, joint] for joint in order], axis=1),
        1 / 30,
    )
    path.write_text(text)


def _import_bvh(path, **options) -> bpy.types.Object:
    assert bpy.ops.import_anim.bvh(filepath=str(path), **options) == {"FINISHED"}
    return bpy.context.active_object


def _select_source(rig, source) -> None:
    """The source selected, the body selected and active, as a user would pick them."""
    for obj in bpy.context.scene.objects:
        obj.select_set(obj in (rig, source))
    bpy.context.view_layer.objects.active = rig


def _keep_old_action(rig) -> bpy.types.Action:
    rig.pose.bones["head"].rotation_quaternion = (0.0, 1.0, 0.0, 0.0)
    rig.pose.bones["head"].keyframe_insert("rotation_quaternion", frame=1)
    return rig.animation_data.action


def _channelbag(obj):
    animation_data = obj.animation_data
    return animation_data.action.layers[0].strips[0].channelbag(animation_data.action_slot)


def _body_joints(rig, frames) -> np.ndarray:
    """(T, 22, 3) the body's joints in model space as Blender evaluates them (pose bone heads in
    armature space)."""
    joints = []
    for frame in frames:
        bpy.context.scene.frame_set(int(frame))
        joints.append([tuple(rig.pose.bones[name].head) for name in SMPL_BODY_JOINT_NAMES])  # copies, not views
    return np.array(joints)


def _keyed_pose(bridge, rig, frames) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The body's action read back from its curves: rotations (T, J, 3, 3), translations, betas."""
    quaternions, translations = bridge.read_action(rig, rig.vposer_body.joint_names(), np.asarray(frames))
    return (quaternion_to_matrix(torch.from_numpy(quaternions)), torch.from_numpy(translations),
            torch.from_numpy(rig.vposer_body.betas_array()))


def _scene_state(rig) -> tuple:
    """What a refused run must leave alone."""
    action = rig.animation_data.action if rig.animation_data else None
    return len(bpy.data.actions), action, tuple(rig.vposer_body.betas), bpy.context.scene.frame_current


# --------------------------------------------------------------------------------------------
# Skeletons


@pytest.mark.parametrize("fit_shape", [True, False], ids=["fit-shape", "body-shape"])
def test_bvh_clip_lands_on_the_known_poses(rig, adult, prior, tmp_path, fit_shape):
    betas = torch.zeros(adult.num_betas, dtype=torch.float64)
    betas[:3] = torch.tensor([1.2, -0.8, 0.6])
    if not fit_shape:
        rig.vposer_body.betas = betas.tolist()  # the user built the body already
    rotations, transl = _known_poses(prior, FRAMES, seed=4)
    _write_bvh(tmp_path / "known.bvh", adult, betas, rotations, transl)
    old = _keep_old_action(rig)
    source = _import_bvh(tmp_path / "known.bvh", frame_start=3)
    _select_source(rig, source)

    result = bpy.ops.vposer.retarget(source="ARMATURE", preset="SMPL_LIKE", fit_shape=fit_shape)

    assert result == {"FINISHED"}
    action = rig.animation_data.action
    assert action != old and old.use_fake_user and old.name in bpy.data.actions
    curves = _channelbag(rig).fcurves
    assert len(curves) == 4 * len(rig.data.bones) + 3  # every joint's quaternion, the root's location
    co = np.empty(2 * FRAMES, dtype=np.float32)
    for curve in curves:
        assert len(curve.keyframe_points) == FRAMES
    curves[0].keyframe_points.foreach_get("co", co)
    np.testing.assert_array_equal(co[0::2], np.arange(3, 3 + FRAMES))  # the source's frames

    with torch.no_grad():
        truth = adult.forward_rotations(rotations, betas.expand(FRAMES, -1), None, transl,
                                        return_vertices=False).joints[:, :BODY].numpy()
    joints = _body_joints(rig, np.arange(3, 3 + FRAMES))
    assert np.linalg.norm(joints - truth, axis=-1).max() < 0.005
    if not fit_shape:
        np.testing.assert_allclose(rig.vposer_body.betas_array()[:3], betas[:3].numpy(), atol=1e-6)


def _daz_clip(folder) -> Path:
    """A DAZ-style clip: the release's T-pose at frame 0, then arms and legs moving."""
    frames = [T_POSE] + [T_POSE | {"hip": (0, 15 * k, 0), "lShldr": (90 + 12 * k, 10, 0), "rShldr": (-80, 0, 5 * k),
                                   "lForeArm": (0, -10 * k, 0), "lThigh": (0, -8 * k, 0), "rShin": (0, 12 * k, 0)}
                         for k in range(1, 6)]
    path = folder / "daz.bvh"
    path.write_text(daz_like_text(frames))
    return path


@pytest.mark.parametrize("preset", ["CMU", "CMU_DAZ"])
def test_clip_matches_core_retargeting_the_file(rig, adult, bridge, tmp_path, preset):
    """Blender's BVH importer (Z up, its own bone rolls, Euler curves) and the armature sampling
    give the same clip as core reading the file itself (for DAZ files, the rest taken from frame 0)."""
    path = WALK if preset == "CMU" else _daz_clip(tmp_path)
    source = _import_bvh(path, global_scale=get_preset(preset.lower()).unit_scale)
    source.matrix_world = Matrix.Translation((2.0, -1.0, 0.0)) @ Matrix.Rotation(0.4, 4, "Z")  # moves with it
    rig.matrix_world = Matrix.Translation((2.0, -1.0, 0.0)) @ Matrix.Rotation(0.4, 4, "Z") @ rig.matrix_world
    _select_source(rig, source)

    assert bpy.ops.vposer.retarget(source="ARMATURE", preset=preset) == {"FINISHED"}

    motion = read_bvh(path)
    expected = retarget(adult, bvh_targets(motion, preset.lower(), adult), options=RetargetOptions(batch_size=100))
    frames = np.arange(1, motion.num_frames + 1)
    rotations, translations, betas = _keyed_pose(bridge, rig, frames)
    np.testing.assert_allclose(betas, expected.betas, atol=1e-3)
    with torch.no_grad():
        keyed = adult.forward_rotations(rotations, betas.expand(len(frames), -1), None, translations,
                                        return_vertices=False).joints[:, :BODY]
        reference = adult(betas=expected.betas.expand(len(frames), -1), global_orient=expected.poses[:, :3],
                          body_pose=expected.poses[:, 3:66], transl=expected.transl, return_vertices=False).joints
    assert (keyed - reference[:, :BODY]).norm(dim=-1).max() < 1e-3
    # the rotations too, twist included (which joint positions do not show)
    expected_rotations = axis_angle_to_matrix(expected.poses[:, :3 * BODY].reshape(-1, BODY, 3)).to(rotations)
    assert (rotations[:, :BODY] - expected_rotations).abs().max() < 1e-3


def _blender_evaluation_forbidden(*_args):
    raise AssertionError("the curves alone should have been sampled, not Blender's per-frame evaluation")


@pytest.mark.parametrize("variant", ["euler", "quaternion", "constrained"])
def test_sampled_armature_matches_blenders_evaluation(rig, adult, prior, module, tmp_path, monkeypatch, variant):
    rotations, transl = _known_poses(prior, 6, seed=5)
    _write_bvh(tmp_path / "clip.bvh", adult, torch.zeros(adult.num_betas, dtype=torch.float64), rotations, transl)
    source = _import_bvh(tmp_path / "clip.bvh", rotate_mode="QUATERNION" if variant == "quaternion" else "NATIVE")
    source.matrix_world = Matrix.Translation((0.5, 1.0, -0.2)) @ Matrix.Rotation(0.7, 4, "Z") @ Matrix.Scale(1.3, 4)
    if variant == "constrained":  # only Blender knows what a constraint does: sampled frame by frame
        constraint = source.pose.bones["left_elbow"].constraints.new("LIMIT_ROTATION")
        constraint.use_limit_x = True
    else:
        monkeypatch.setattr(module, "_evaluated_by_blender", _blender_evaluation_forbidden)
    frames = np.array([1, 3, 6])
    bpy.context.scene.frame_set(2)

    names, rest, posed = module.sample_armature(bpy.context, source, frames)

    assert bpy.context.scene.frame_current == 2

    expected = []
    for frame in frames:
        bpy.context.scene.frame_set(int(frame))
        expected.append([np.array(source.matrix_world @ source.pose.bones[name].matrix) for name in names])
    np.testing.assert_allclose(posed, np.array(expected), atol=2e-5)
    np.testing.assert_allclose(rest, [np.array(source.matrix_world @ bone.matrix_local) for bone in source.data.bones],
                               atol=1e-5)


def test_skeleton_imported_at_file_scale_is_refused_with_the_scale_to_use(rig, tmp_path):
    source = _import_bvh(WALK)  # Scale 1: CMU units as metres, a 30 m skeleton
    _select_source(rig, source)
    before = _scene_state(rig)
    with pytest.raises(RuntimeError, match=r"cmu_02_01_walk's skeleton is [\d.]+ m tall .* Scale 0\.05644"):
        bpy.ops.vposer.retarget(source="ARMATURE", preset="CMU")
    assert _scene_state(rig) == before


def test_missing_source_or_bones_are_reported_and_change_nothing(rig, adult, prior, tmp_path):
    rotations, transl = _known_poses(prior, 3, seed=6)
    _write_bvh(tmp_path / "smpl.bvh", adult, torch.zeros(adult.num_betas, dtype=torch.float64), rotations, transl)
    _keep_old_action(rig)
    before = _scene_state(rig)
    with pytest.raises(RuntimeError, match="select one source armature as well as Body"):
        bpy.ops.vposer.retarget(source="ARMATURE")

    source = _import_bvh(tmp_path / "smpl.bvh")
    _select_source(rig, source)
    before = _scene_state(rig)
    with pytest.raises(RuntimeError, match=r"smpl: preset 'cmu' needs source joint 'Hips'"):
        bpy.ops.vposer.retarget(source="ARMATURE", preset="CMU")
    (tmp_path / "broken.json").write_text(json.dumps({"name": "broken"}))
    with pytest.raises(RuntimeError, match=r"broken\.json: not a skeleton preset .*'joints'"):
        bpy.ops.vposer.retarget(source="ARMATURE", preset="CUSTOM", preset_path=str(tmp_path / "broken.json"))
    assert _scene_state(rig) == before


def test_undo_restores_the_body(rig, adult, prior, tmp_path):
    rotations, transl = _known_poses(prior, 4, seed=7)
    _write_bvh(tmp_path / "undo.bvh", adult, torch.zeros(adult.num_betas, dtype=torch.float64), rotations, transl)
    old = _keep_old_action(rig)
    old_name = old.name
    source = _import_bvh(tmp_path / "undo.bvh")
    _select_source(rig, source)
    bpy.ops.ed.undo_push(message="before the retarget")

    assert bpy.ops.vposer.retarget("EXEC_DEFAULT", True, source="ARMATURE", preset="SMPL_LIKE") == {"FINISHED"}
    assert bpy.data.objects["Body"].animation_data.action.name != old_name

    bpy.ops.ed.undo()
    rig = bpy.data.objects["Body"]  # undo replaces every datablock: look it up again
    assert rig.animation_data.action.name == old_name
    assert not any(rig.vposer_body.betas)
    assert len(bpy.data.actions) == 2  # the body's and the source's


# --------------------------------------------------------------------------------------------
# Markers


def test_sampled_channels_match_blenders_curve_evaluation(addon, empty_scene, bridge):
    """Linear keys with constant holds (Import C3D Markers' gaps) and Bezier keys, between keys and
    outside them, sampled in numpy or by the curve: as Blender evaluates them."""
    empty = bpy.data.objects.new("Marker", None)
    empty_scene.collection.objects.link(empty)
    _, channelbag = bridge.new_action(empty, "Marker")
    frames = np.array([2.0, 3.0, 7.0, 8.0, 12.0])
    bridge.write_curve(channelbag, "location", 0, "Marker", frames, [0.1, 0.4, -0.2, 0.5, 0.3],
                       hold=[False, True, False, True, False])
    bezier = channelbag.fcurves.new("location", index=1)
    for frame, value in zip(frames, [1.0, -1.0, 2.0, 0.0, 1.5]):
        bezier.keyframe_points.insert(frame, value)
    samples = np.arange(0.0, 14.0, 0.25)

    values = bridge.sample_channels(empty, [("location", 0, 9.0), ("location", 1, 9.0), ("location", 2, -3.0)], samples)

    expected = [[curve.evaluate(frame) for curve in channelbag.fcurves] for frame in samples]
    np.testing.assert_allclose(values[:, :2], expected, atol=1e-6)
    np.testing.assert_array_equal(values[:, 2], -3.0)  # no curve: the fallback


@pytest.mark.parametrize("parented", [False, True], ids=["unparented", "parented"])
def test_marker_empties_on_a_known_pose_are_fitted(rig, adult, prior, bridge, module, monkeypatch, parented):
    """Empties at the layout's points of core's posed body (through the body's matrix_world, the
    body moved and turned), LFHD hidden on frame 3 and moved 5 cm there, to show it is ignored;
    only 5 markers seen on frame 5, too few to solve it."""
    rig.matrix_world = Matrix.Translation((1.0, 2.0, 0.0)) @ Matrix.Rotation(0.5, 4, "Z") @ rig.matrix_world
    frames, solvable = 5, 4
    rotations, transl = _known_poses(prior, frames, seed=8)
    full = torch.eye(3, dtype=torch.float64).repeat(frames, adult.num_joints, 1, 1)
    full[:, :BODY] = rotations
    layout = KeypointSet.from_json(adult, LAYOUT)
    with torch.no_grad():
        model_points = layout.evaluate(full, transl=transl).numpy()  # (T, K, 3)
    to_world = np.array(rig.matrix_world)
    world = model_points @ to_world[:3, :3].T + to_world[:3, 3]
    holder = bpy.data.objects.new("Lab", None)
    bpy.context.scene.collection.objects.link(holder)
    holder.matrix_world = Matrix.Translation((0.0, 0.0, 0.5)) @ Matrix.Rotation(-0.3, 4, "Z")
    collection = bpy.data.collections.new("trial")
    bpy.context.scene.collection.children.link(collection)
    hidden = (layout.names.index("LFHD"), 2)
    for k, label in enumerate(layout.names):
        empty = bpy.data.objects.new(label, None)
        collection.objects.link(empty)
        empty["vposer_marker"] = label
        if parented:
            empty.parent = holder
        for t in range(frames):
            seen = (k, t) != hidden and (t < solvable or k < 5)
            point = world[t, k] if seen else world[t, k] + 0.05
            empty.location = np.linalg.inv(np.array(holder.matrix_world))[:3] @ np.append(point, 1) if parented else point
            empty["vposer_visible"] = int(seen)
            empty.keyframe_insert("location", frame=t + 1)
            empty.keyframe_insert('["vposer_visible"]', frame=t + 1)
    bpy.context.view_layer.objects.active = rig
    before = np.array(rig.matrix_world)
    if not parented:  # a parent's motion is Blender's to evaluate; unparented empties are read from their curves
        monkeypatch.setattr(module, "_evaluated_by_blender", _blender_evaluation_forbidden)

    result = bpy.ops.vposer.retarget(source="MARKERS", marker_collection="trial", fit_shape=False)

    assert result == {"FINISHED"}
    co = np.empty(2 * solvable, dtype=np.float32)
    _channelbag(rig).fcurves[0].keyframe_points.foreach_get("co", co)
    np.testing.assert_array_equal(co[0::2], np.arange(1, solvable + 1))  # frame 5 is left out, not made up
    solved, solved_transl, betas = _keyed_pose(bridge, rig, np.arange(1, solvable + 1))
    with torch.no_grad():
        fitted = layout.evaluate(solved, betas.expand(solvable, -1), solved_transl).numpy()
    errors = np.linalg.norm(fitted - model_points[:solvable], axis=-1)  # (T, K) metres
    assert errors.max() < 0.01  # every marker on every frame, the frame with the hidden one too
    # Had the hidden marker counted, its point would sit ~2 cm off (measured) towards where it was moved.
    assert errors[hidden[1], hidden[0]] < 0.005
    np.testing.assert_allclose(np.array(rig.matrix_world), before, atol=1e-6)  # the body stays where it was


def test_markers_the_layout_does_not_know_are_refused(rig):
    collection = bpy.data.collections.new("lab")
    bpy.context.scene.collection.children.link(collection)
    for label in ("A1", "A2", "A3"):
        empty = bpy.data.objects.new(label, None)
        collection.objects.link(empty)
        empty["vposer_marker"] = label
        empty.keyframe_insert("location", frame=1)
    bpy.context.view_layer.objects.active = rig
    before = _scene_state(rig)
    with pytest.raises(RuntimeError, match=r"collection 'lab': only 0 of its markers are in the layout "
                                           r"markers_plugin_gait_open\.json"):
        bpy.ops.vposer.retarget(source="MARKERS", marker_collection="lab")
    with pytest.raises(RuntimeError, match="no collection named 'trial'"):
        bpy.ops.vposer.retarget(source="MARKERS", marker_collection="trial")
    assert _scene_state(rig) == before


def test_presets_move_to_model_space_and_follow_the_bones_prefix(module):
    names = ["mixamorig1:Hips", "mixamorig1:Spine", "mixamorig1:LeftUpLeg"]
    preset = module._in_model_space(get_preset("mixamo"), names)
    assert preset.joints["pelvis"] == "mixamorig1:Hips" and preset.joints["left_hip"] == "mixamorig1:LeftUpLeg"
    assert preset.unit_scale == 1.0 and preset.axes == ("+x", "+y", "+z")
    assert module._in_model_space(get_preset("cmu"), ["Hips"]).joints == get_preset("cmu").joints


# --------------------------------------------------------------------------------------------
# Polls


def test_polls_say_what_is_missing(addon, empty_scene):
    assert not bpy.ops.vposer.retarget.poll()
    with pytest.raises(RuntimeError, match="Select a VPoser body"):
        bpy.ops.vposer.retarget()
    assert bpy.ops.vposer.add_body() == {"FINISHED"}
    bpy.ops.object.mode_set(mode="EDIT")
    with pytest.raises(RuntimeError, match="Switch to Object or Pose Mode"):
        bpy.ops.vposer.retarget()
    bpy.ops.object.mode_set(mode="POSE")
    assert bpy.ops.vposer.retarget.poll()


def test_marker_calibration_is_stored_with_the_action_and_reused(rig, adult, prior):
    """Markers of a subject whose markers sit off the layout's places: the calibration lands on the
    new action as JSON (layout + shape), and a second take reusing it gets that layout and shape."""
    from core.markers import displaced_layout, read_calibration

    frames = 12
    rotations, transl = _known_poses(prior, frames, seed=3)
    full = torch.eye(3, dtype=torch.float64).repeat(frames, adult.num_joints, 1, 1)
    full[:, :BODY] = rotations
    subject = displaced_layout(KeypointSet.from_json(adult, LAYOUT), seed=4)
    with torch.no_grad():
        model_points = subject.evaluate(full, transl=transl).numpy()
    to_world = np.array(rig.matrix_world)
    world = model_points @ to_world[:3, :3].T + to_world[:3, 3]
    collection = bpy.data.collections.new("take1")
    bpy.context.scene.collection.children.link(collection)
    for k, label in enumerate([*subject.names, "EXTRA"]):
        empty = bpy.data.objects.new(label, None)
        collection.objects.link(empty)
        empty["vposer_marker"] = label
        for t in range(frames):
            empty.location = world[t, k] if k < len(subject.names) else (0.0, 0.0, 3.0)
            empty.keyframe_insert("location", frame=t + 1)
    bpy.context.view_layer.objects.active = rig

    assert bpy.ops.vposer.retarget(source="MARKERS", marker_collection="take1") == {"FINISHED"}

    first = rig.animation_data.action
    document = json.loads(first["vposer_marker_calibration"])
    assert set(document["markers"]) == set(subject.names) == set(document["calibration"])
    np.testing.assert_allclose(rig.vposer_body.betas_array(), read_calibration(document)[: rig.vposer_body.num_betas],
                               atol=1e-5)
    rig.vposer_body.betas = np.zeros(len(rig.vposer_body.betas))

    assert bpy.ops.vposer.retarget(source="MARKERS", marker_collection="take1",
                                   calibration_action=first.name) == {"FINISHED"}
    second = rig.animation_data.action
    assert second != first and json.loads(second["vposer_marker_calibration"]) == document
    np.testing.assert_allclose(rig.vposer_body.betas_array(), read_calibration(document)[: rig.vposer_body.num_betas],
                               atol=1e-5)
    with pytest.raises(RuntimeError, match="action 'nothing' .*|no action named 'nothing'"):
        bpy.ops.vposer.retarget(source="MARKERS", marker_collection="take1", calibration_action="nothing")
