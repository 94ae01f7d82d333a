"""Sample Poses and In-betweens in real Blender: keys read back from the f-curves are compared with
the prior run directly through core (and slerps through Blender's own mathutils)."""

from __future__ import annotations

import importlib
import time

import bpy
import numpy as np
import pytest
import torch
from mathutils import Quaternion

from core.keypoints import NUM_BODY_JOINTS
from core.rotations import axis_angle_to_quaternion, matrix_to_quaternion, quaternion_to_axis_angle
from core.synthetic_models import write_model
from core.vposer import load_default_vposer

BODY = slice(1, NUM_BODY_JOINTS)  # the 21 joints the prior poses
LEFT_HAND_BONE = "left_index1"


@pytest.fixture(scope="module")
def prior():
    """The prior the add-on uses when the preferences name no VPoser folder, as core loads it."""
    return load_default_vposer()


@pytest.fixture
def body(addon, empty_scene):
    assert bpy.ops.vposer.add_body() == {"FINISHED"}
    return bpy.context.active_object


@pytest.fixture
def preferences(addon):
    prefs = bpy.context.preferences.addons[addon.__name__].preferences
    saved = {name: getattr(prefs, name) for name in ("vposer_path", "model_path")}
    yield prefs
    for name, value in saved.items():
        setattr(prefs, name, value)


def _curve(rig, bone, prop, index):
    animation_data = rig.animation_data
    channelbag = animation_data.action.layers[0].strips[0].channelbag(animation_data.action_slot)
    return channelbag.fcurves.find(f'pose.bones["{bone}"].{prop}', index=index)


def _key_co(curve):
    """A curve's keys as a flat (frame, value, frame, value, ...) array."""
    co = np.empty(2 * len(curve.keyframe_points), dtype=np.float32)
    curve.keyframe_points.foreach_get("co", co)
    return co


def _keys(rig, bones, prop="rotation_quaternion", size=4):
    """(frames (K,), values (K, len(bones), size)) read from the action's curves, which must all
    key the same frames."""
    frames = _key_co(_curve(rig, bones[0], prop, 0))[0::2]
    values = np.empty((len(frames), len(bones), size))
    for b, bone in enumerate(bones):
        for index in range(size):
            co = _key_co(_curve(rig, bone, prop, index))
            np.testing.assert_array_equal(co[0::2], frames)
            values[:, b, index] = co[1::2]
    return frames, values


def _angles(a, b):
    """Angles in radians between quaternions (any signs), elementwise over the leading axes."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    dot = np.abs(np.sum(a * b, axis=-1))
    dot /= np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return 2 * np.arccos(np.clip(dot, 0.0, 1.0))


def _keep_old_action(rig):
    """An action the user already had on the rig."""
    rig.pose.bones["head"].rotation_quaternion = (0.0, 1.0, 0.0, 0.0)
    rig.pose.bones["head"].keyframe_insert("rotation_quaternion", frame=1)
    return rig.animation_data.action


def _all_keys(rig):
    """Every key of the rig's action, to check that a refused run changed nothing."""
    animation_data = rig.animation_data
    channelbag = animation_data.action.layers[0].strips[0].channelbag(animation_data.action_slot)
    return {(curve.data_path, curve.array_index): _key_co(curve) for curve in channelbag.fcurves}


def _sampled_quaternions(prior, count, seed, temperature=1.0):
    return axis_angle_to_quaternion(prior.sample(count, seed=seed, temperature=temperature).double().view(count, 21, 3))


# --------------------------------------------------------------------------------------------
# Sample Poses


def test_sample_poses_keys_the_priors_samples_as_a_new_action(body, prior):
    names = body.vposer_body.joint_names()
    old = _keep_old_action(body)
    pose_bones = body.pose.bones
    pose_bones["pelvis"].rotation_quaternion = Quaternion((0.0, 1.0, 0.0), 0.7)
    pose_bones["pelvis"].location = (0.1, 0.2, 0.3)
    pose_bones[LEFT_HAND_BONE].rotation_quaternion = Quaternion((1.0, 0.0, 0.0), 0.4)
    bpy.context.scene.frame_current = 5

    result = bpy.ops.vposer.sample_poses(count=4, spacing=3, seed=7, temperature=0.8)

    assert result == {"FINISHED"}
    action = body.animation_data.action
    assert action != old and old.name in bpy.data.actions and old.use_fake_user
    frames, quaternions = _keys(body, names)
    np.testing.assert_array_equal(frames, [5, 8, 11, 14])
    expected = _sampled_quaternions(prior, 4, seed=7, temperature=0.8).numpy()
    assert _angles(quaternions[:, BODY], expected).max() < 1e-4
    # Root and hands hold the pose they had.
    assert _angles(quaternions[:, 0], Quaternion((0.0, 1.0, 0.0), 0.7)).max() < 1e-6
    assert _angles(quaternions[:, names.index(LEFT_HAND_BONE)], Quaternion((1.0, 0.0, 0.0), 0.4)).max() < 1e-6
    _, locations = _keys(body, ["pelvis"], "location", 3)
    np.testing.assert_allclose(locations[:, 0], np.tile([0.1, 0.2, 0.3], (4, 1)), atol=1e-6)
    assert _curve(body, "spine1", "rotation_quaternion", 0).keyframe_points[1].interpolation == "LINEAR"

    bpy.context.scene.frame_set(11)  # Blender's own evaluation of the new action
    evaluated = body.evaluated_get(bpy.context.evaluated_depsgraph_get()).pose.bones
    shown = np.array([evaluated[name].rotation_quaternion for name in names[BODY]])
    assert _angles(shown, expected[2]).max() < 1e-4


def test_sample_poses_is_deterministic_for_a_seed(body):
    names = body.vposer_body.joint_names()[BODY]

    def keyed(seed):
        assert bpy.ops.vposer.sample_poses(count=3, spacing=1, seed=seed) == {"FINISHED"}
        return _keys(body, names)[1]

    first, again, other = keyed(3), keyed(3), keyed(4)
    np.testing.assert_array_equal(first, again)
    assert _angles(first, other).mean() > 0.1
    assert len(bpy.data.actions) == 3  # each run is a new action; the earlier ones are kept


def test_sample_poses_without_keep_root_uses_the_rest_placement(body):
    body.pose.bones["pelvis"].rotation_quaternion = Quaternion((0.0, 0.0, 1.0), 1.0)
    body.pose.bones["pelvis"].location = (1.0, 2.0, 3.0)

    assert bpy.ops.vposer.sample_poses(count=2, keep_root=False) == {"FINISHED"}

    _, rotations = _keys(body, ["pelvis"])
    _, locations = _keys(body, ["pelvis"], "location", 3)
    np.testing.assert_allclose(rotations[:, 0], [[1.0, 0.0, 0.0, 0.0]] * 2)
    np.testing.assert_allclose(locations[:, 0], np.zeros((2, 3)))


def test_sample_poses_with_an_unreadable_prior_changes_nothing(body, preferences, tmp_path):
    old = _keep_old_action(body)
    preferences.vposer_path = str(tmp_path / "V02_05")

    with pytest.raises(RuntimeError, match="V02_05"):
        bpy.ops.vposer.sample_poses()

    assert body.animation_data.action == old and not old.use_fake_user
    assert list(bpy.data.actions) == [old]


def test_undo_restores_the_previous_action(body):
    old_name = _keep_old_action(body).name
    bpy.ops.ed.undo_push(message="before sampling")
    assert bpy.ops.vposer.sample_poses("EXEC_DEFAULT", True, count=3) == {"FINISHED"}
    assert len(bpy.data.actions) == 2

    bpy.ops.ed.undo()

    rig = bpy.data.objects["Body"]  # undo replaces every datablock: look them up again
    assert [action.name for action in bpy.data.actions] == [old_name]
    assert rig.animation_data.action.name == old_name and not rig.animation_data.action.use_fake_user


def test_speed(body):
    """Measured, not asserted: the figures go in the report."""
    start = time.perf_counter()
    assert bpy.ops.vposer.sample_poses(count=500, spacing=1) == {"FINISHED"}
    sampled = time.perf_counter() - start
    start = time.perf_counter()
    assert bpy.ops.vposer.inbetweens(use_frames=True, frame_a=1, frame_b=500, replace_existing=True) == {"FINISHED"}
    filled = time.perf_counter() - start
    print(f"\nsample_poses 500 poses x 52 bones: {sampled:.3f} s; in-betweens over 498 keyed frames: {filled:.3f} s")


# --------------------------------------------------------------------------------------------
# In-betweens


def _key_poses(rig, bridge, prior, frames, seed=11):
    """Poses with the prior's sampled body, a turning root and posed hands, keyed at `frames`
    (evenly spaced) by write_action; returns (quaternions (K, 52, 4), translations (K, 3))."""
    count = len(frames)
    generator = torch.Generator().manual_seed(seed)
    axis_angles = torch.randn(count, 52, 3, generator=generator, dtype=torch.float64) * 0.3
    quaternions = axis_angle_to_quaternion(axis_angles).numpy()
    quaternions[:, BODY] = _sampled_quaternions(prior, count, seed=seed, temperature=0.7).numpy()
    translations = np.random.default_rng(seed).normal(scale=0.3, size=(count, 3))
    step = frames[1] - frames[0]
    bridge.write_action(rig, rig.vposer_body.joint_names(), quaternions, translations, frames[0], "keys", step)
    return quaternions, translations


def _expected_path(prior, quaternions, translations, steps):
    """The in-betweens' definition, computed independently: core's encoder means, latent
    interpolation and decoder for the body, mathutils slerps for the end residuals and the root."""
    with torch.no_grad():
        axis_angles = quaternion_to_axis_angle(torch.from_numpy(quaternions[:, BODY]).float()).flatten(1)
        latents = prior.encode(axis_angles).mean
        decoded = matrix_to_quaternion(prior.decode_matrix(prior.interpolate(latents[0], latents[1], steps))).numpy()
    expected = np.empty((steps, NUM_BODY_JOINTS, 4))
    for step in range(steps):
        fraction = step / (steps - 1)
        expected[step, 0] = Quaternion(quaternions[0, 0]).slerp(Quaternion(quaternions[1, 0]), fraction)
        for joint in range(21):
            start = Quaternion(decoded[0, joint]).conjugated() @ Quaternion(quaternions[0, joint + 1])
            end = Quaternion(decoded[-1, joint]).conjugated() @ Quaternion(quaternions[1, joint + 1])
            expected[step, joint + 1] = Quaternion(decoded[step, joint]) @ start.slerp(end, fraction)
    fractions = np.linspace(0, 1, steps)[:, None]
    return expected, (1 - fractions) * translations[0] + fractions * translations[1], decoded


def test_inbetweens_fill_between_two_keyed_poses(body, bridge, prior):
    names = body.vposer_body.joint_names()
    keyed, translations = _key_poses(body, bridge, prior, [1, 11])
    bpy.context.scene.frame_current = 4

    assert bpy.ops.vposer.inbetweens() == {"FINISHED"}

    frames, quaternions = _keys(body, names[:NUM_BODY_JOINTS])
    np.testing.assert_array_equal(frames, np.arange(1, 12))
    _, locations = _keys(body, ["pelvis"], "location", 3)
    assert len(_curve(body, LEFT_HAND_BONE, "rotation_quaternion", 0).keyframe_points) == 2  # hands untouched
    expected, expected_locations, decoded = _expected_path(prior, keyed, translations, 11)
    # The ends are still the keyed poses, and the path is the latent interpolation blended onto them.
    assert _angles(quaternions[[0, -1]], keyed[:, :NUM_BODY_JOINTS]).max() < 1e-6
    assert _angles(quaternions, expected).max() < 2e-4
    np.testing.assert_allclose(locations[:, 0], expected_locations, atol=1e-6)
    # Half-way the body is the prior's decoded latent midpoint, up to half of the end residuals.
    residuals = np.maximum(_angles(decoded[0], keyed[0, BODY]), _angles(decoded[-1], keyed[1, BODY]))
    assert (_angles(quaternions[5, BODY], decoded[5]) <= residuals + 1e-4).all()
    assert _angles(quaternions[5, BODY], decoded[5]).mean() < 0.5 * _angles(keyed[0, BODY], keyed[1, BODY]).mean()
    # No jump at the keys: the first and last steps are as small as the ones in between.
    steps = _angles(quaternions[1:], quaternions[:-1]).max(axis=1)
    assert max(steps[0], steps[-1]) < 2 * np.median(steps)
    assert (np.sum(quaternions[1:] * quaternions[:-1], axis=-1) > 0).all()  # linear keys take the short way

    bpy.context.scene.frame_set(6)  # Blender's own evaluation of the filled action
    evaluated = body.evaluated_get(bpy.context.evaluated_depsgraph_get()).pose.bones
    shown = np.array([evaluated[name].rotation_quaternion for name in names[:NUM_BODY_JOINTS]])
    assert _angles(shown, expected[5]).max() < 2e-4


def test_inbetweens_around_the_current_frame_leave_other_spans_alone(body, bridge, prior):
    names = body.vposer_body.joint_names()[:NUM_BODY_JOINTS]
    _key_poses(body, bridge, prior, [1, 11, 21])
    bpy.context.scene.frame_current = 11  # on a key: fills towards the next one

    assert bpy.ops.vposer.inbetweens() == {"FINISHED"}

    frames, _ = _keys(body, names)
    np.testing.assert_array_equal(frames, [1, *range(11, 22)])
    bpy.context.scene.frame_current = 30
    with pytest.raises(RuntimeError, match="needs a keyed pose at or before frame 30 and one after it"):
        bpy.ops.vposer.inbetweens()


def test_inbetweens_refuse_keys_in_the_way_unless_told_to_replace_them(body, bridge, prior):
    names = body.vposer_body.joint_names()
    keyed, _ = _key_poses(body, bridge, prior, [1, 6, 11])
    before = _all_keys(body)

    with pytest.raises(RuntimeError, match=r"keys between frames 1 and 11 \(on frames 6\): turn on Replace Existing"):
        bpy.ops.vposer.inbetweens(use_frames=True, frame_a=1, frame_b=11)
    after = _all_keys(body)
    assert after.keys() == before.keys() and all(np.array_equal(after[key], before[key]) for key in before)

    assert bpy.ops.vposer.inbetweens(use_frames=True, frame_a=1, frame_b=11, replace_existing=True) == {"FINISHED"}
    frames, quaternions = _keys(body, names[:NUM_BODY_JOINTS])
    np.testing.assert_array_equal(frames, np.arange(1, 12))
    assert _angles(quaternions[5, BODY], keyed[1, BODY]).max() > 0.05  # the old middle pose is gone
    assert len(_curve(body, LEFT_HAND_BONE, "rotation_quaternion", 0).keyframe_points) == 3


def test_inbetweens_between_hand_keyed_poses_keep_the_users_keys(body, prior):
    """Poses keyed the usual way (bezier keys, only some bones): the keys at A and B stay as they
    are, and a bone that was not animated gets a curve that still holds its pose at A and B."""
    names = body.vposer_body.joint_names()
    pose_bones = body.pose.bones
    poses = _sampled_quaternions(prior, 2, seed=5).numpy()
    held = np.array(Quaternion((0.0, 0.0, 1.0), 0.3))
    pose_bones["spine1"].rotation_quaternion = held
    keyed_bones = [name for name in names[BODY] if name != "spine1"]
    for frame, pose in zip((1, 9), poses):
        for index, name in enumerate(names[BODY]):
            if name in keyed_bones:
                pose_bones[name].rotation_quaternion = pose[index]
                pose_bones[name].keyframe_insert("rotation_quaternion", frame=frame)
    pose_bones["pelvis"].keyframe_insert("location", frame=1)

    assert bpy.ops.vposer.inbetweens(use_frames=True, frame_a=1, frame_b=9) == {"FINISHED"}

    frames, quaternions = _keys(body, keyed_bones)
    np.testing.assert_array_equal(frames, np.arange(1, 10))
    assert _angles(quaternions[[0, -1]], poses[:, [names[BODY].index(name) for name in keyed_bones]]).max() < 1e-6
    assert _curve(body, "left_knee", "rotation_quaternion", 0).keyframe_points[0].interpolation == "BEZIER"
    assert _curve(body, "left_knee", "rotation_quaternion", 0).keyframe_points[1].interpolation == "LINEAR"
    frames, spine = _keys(body, ["spine1"])
    np.testing.assert_array_equal(frames, np.arange(1, 10))
    assert _angles(spine[[0, -1], 0], held).max() < 1e-6


def test_inbetweens_need_frames_between_a_and_b(body, bridge, prior):
    _key_poses(body, bridge, prior, [1, 2])
    with pytest.raises(RuntimeError, match="No frames to fill between frame 1 and frame 2"):
        bpy.ops.vposer.inbetweens(use_frames=True, frame_a=1, frame_b=2)


def _stored_properties():
    """The settings the last run of In-betweens kept on its operator (what a redo runs with)."""
    operator = bpy.context.window_manager.operators[-1]
    assert operator.bl_idname == "VPOSER_OT_inbetweens"
    names = [name for name in operator.properties.bl_rna.properties.keys() if name != "rna_type"]
    values = {name: getattr(operator.properties, name) for name in names}
    return {name: value if isinstance(value, (bool, int, float, str)) else tuple(value)
            for name, value in values.items()}


def test_inbetweens_redo_fills_the_same_span(body, bridge, prior):
    """Adjust Last Operation (F9, the redo panel) undoes the run and executes the operator again
    with its stored settings; run again without the undo (Repeat Last, or an undo step that did not
    take the keys back) the same settings still mean the same span, not the keys now around the
    current frame."""
    names = body.vposer_body.joint_names()[:NUM_BODY_JOINTS]
    _key_poses(body, bridge, prior, [1, 11, 21])
    bpy.context.scene.frame_current = 4
    bpy.ops.ed.undo_push(message="three poses")
    assert bpy.ops.vposer.inbetweens("EXEC_DEFAULT", True) == {"FINISHED"}
    first = _keys(bpy.data.objects["Body"], names)
    stored = _stored_properties()

    bpy.ops.ed.undo()
    assert bpy.ops.vposer.inbetweens("EXEC_DEFAULT", True, **stored) == {"FINISHED"}

    rig = bpy.data.objects["Body"]
    again = _keys(rig, names)
    np.testing.assert_array_equal(again[0], [*range(1, 12), 21])
    np.testing.assert_allclose(again[1], first[1], atol=1e-6)
    # On the filled keys the same settings refuse with the real reason, and replace them when told.
    with pytest.raises(RuntimeError, match=r"keys between frames 1 and 11 \(on frames 2, 3, 4, 5, 6, 7, \.\.\.\)"):
        bpy.ops.vposer.inbetweens(**stored)
    assert bpy.ops.vposer.inbetweens(**{**stored, "replace_existing": True}) == {"FINISHED"}
    np.testing.assert_allclose(_keys(rig, names)[1], first[1], atol=1e-6)


def test_inbetweens_next_run_finds_its_own_span(body, bridge, prior):
    """The span a run resolved is its own: the next run (the panel's button) looks again."""
    names = body.vposer_body.joint_names()[:NUM_BODY_JOINTS]
    _key_poses(body, bridge, prior, [1, 11, 21])
    bpy.context.scene.frame_current = 4
    assert bpy.ops.vposer.inbetweens() == {"FINISHED"}
    assert tuple(bpy.context.window_manager.operator_properties_last("vposer.inbetweens").filled_span) == (0, 0)
    bpy.context.scene.frame_current = 15

    assert bpy.ops.vposer.inbetweens() == {"FINISHED"}

    np.testing.assert_array_equal(_keys(body, names)[0], np.arange(1, 22))
    bpy.context.scene.frame_current = 4
    with pytest.raises(RuntimeError, match="No frames to fill around frame 4: Body's keys on frames 4 and 5 are next"):
        bpy.ops.vposer.inbetweens()


def test_inbetweens_refuse_frames_outside_the_keys(body, bridge, prior):
    _key_poses(body, bridge, prior, [1, 5, 9])
    before = _all_keys(body)

    for frame_a, frame_b in ((20, 40), (5, 12), (-3, 5)):
        with pytest.raises(RuntimeError, match=rf"Frames {frame_a}-{frame_b} reach outside Body's keyed poses "
                                               r"\(frames 1-9\).*from 1 to 9"):
            bpy.ops.vposer.inbetweens(use_frames=True, frame_a=frame_a, frame_b=frame_b, replace_existing=True)

    after = _all_keys(body)
    assert after.keys() == before.keys() and all(np.array_equal(after[key], before[key]) for key in before)
    # Within the keys, frames that are not keyed themselves are fine: the poses there are the action's.
    assert bpy.ops.vposer.inbetweens(use_frames=True, frame_a=2, frame_b=5) == {"FINISHED"}
    np.testing.assert_array_equal(_keys(body, body.vposer_body.joint_names()[:NUM_BODY_JOINTS])[0], [1, 2, 3, 4, 5, 9])


def test_undo_removes_the_inbetweens(body, bridge, prior):
    _key_poses(body, bridge, prior, [1, 11])
    bpy.ops.ed.undo_push(message="two poses")
    assert bpy.ops.vposer.inbetweens("EXEC_DEFAULT", True) == {"FINISHED"}
    assert len(_curve(body, "spine1", "rotation_quaternion", 0).keyframe_points) == 11

    bpy.ops.ed.undo()

    rig = bpy.data.objects["Body"]
    assert len(_curve(rig, "spine1", "rotation_quaternion", 0).keyframe_points) == 2


# --------------------------------------------------------------------------------------------
# Polls and panel


def test_polls_say_what_is_missing(addon, empty_scene, preferences, tmp_path):
    with pytest.raises(RuntimeError, match="Select a VPoser body"):
        bpy.ops.vposer.sample_poses()
    assert bpy.ops.vposer.add_body() == {"FINISHED"}
    assert bpy.ops.vposer.sample_poses.poll()
    with pytest.raises(RuntimeError, match="Body has no action: key a pose on each side"):
        bpy.ops.vposer.inbetweens()
    bpy.ops.object.mode_set(mode="EDIT")
    with pytest.raises(RuntimeError, match="Switch to Object or Pose Mode"):
        bpy.ops.vposer.sample_poses()
    bpy.ops.object.mode_set(mode="POSE")
    assert bpy.ops.vposer.sample_poses() == {"FINISHED"}  # posing works in Pose Mode too
    assert bpy.ops.vposer.inbetweens.poll()

    bpy.ops.object.mode_set(mode="OBJECT")
    preferences.model_path = str(write_model(tmp_path / "mano.npz", "mano"))
    assert bpy.ops.vposer.add_body(source="USER_FILE", name="Hand") == {"FINISHED"}
    with pytest.raises(RuntimeError, match="Hand is not a full body"):
        bpy.ops.vposer.sample_poses()
    generate = importlib.import_module(f"{addon.__name__}.vposer_addon.operators.generate")
    assert generate.BODY_JOINTS == NUM_BODY_JOINTS  # the polls' copy of core's count


def test_panel_settings_are_the_operators_own(addon):
    """The Generate panel draws each operator's last-used properties; these are the ones it shows."""
    window_manager = bpy.context.window_manager
    sample = window_manager.operator_properties_last("vposer.sample_poses")
    fill = window_manager.operator_properties_last("vposer.inbetweens")
    for properties, names in (
        (sample, ("count", "spacing", "seed", "temperature", "keep_root")),
        (fill, ("use_frames", "frame_a", "frame_b", "replace_existing")),
    ):
        assert all(name in properties.bl_rna.properties for name in names)
