"""Pose files onto a body's action and back, in real Blender; fast keyframe writing."""

from __future__ import annotations

import time

import bpy
import numpy as np
import pytest
import torch

from core.pose_files import PoseSequence, load_pose_file, save_pose_file
from core.rotations import axis_angle_to_matrix, axis_angle_to_quaternion

FRAMES = 6
START = 10


@pytest.fixture
def pose_file(tmp_path):
    generator = np.random.default_rng(7)
    sequence = PoseSequence(
        poses=generator.normal(scale=0.5, size=(FRAMES, 52 * 3)),
        trans=generator.normal(scale=0.5, size=(FRAMES, 3)),
        betas=generator.normal(size=16),
        framerate=29.97,
    )
    path = tmp_path / "walk_01.npz"
    save_pose_file(path, sequence)
    return path


@pytest.fixture
def body(addon, empty_scene):
    assert bpy.ops.vposer.add_body() == {"FINISHED"}
    return bpy.context.active_object


def _keep_old_action(rig):
    """An action the user already had on the rig."""
    rig.pose.bones["head"].rotation_quaternion = (0.0, 1.0, 0.0, 0.0)
    rig.pose.bones["head"].keyframe_insert("rotation_quaternion", frame=1)
    return rig.animation_data.action


def _same_rotations(a, b, atol=1e-5):
    """Quaternions equal up to sign."""
    return np.abs(np.abs(np.sum(a * b, axis=-1)) - 1).max() < atol


def test_import_creates_a_new_action_and_keeps_the_old_one(body, pose_file, adult):
    scene = bpy.context.scene
    old = _keep_old_action(body)
    scene.frame_current = START

    assert bpy.ops.vposer.import_poses(filepath=str(pose_file)) == {"FINISHED"}

    action = body.animation_data.action
    assert action != old and action.name == "walk_01"
    assert old.name in bpy.data.actions and old.use_fake_user
    assert len(old.layers[0].strips[0].channelbags[0].fcurves) == 4  # untouched
    fcurves = action.layers[0].strips[0].channelbag(body.animation_data.action_slot).fcurves
    assert len(fcurves) == 52 * 4 + 3
    assert all(len(curve.keyframe_points) == FRAMES for curve in fcurves)
    assert scene.render.fps == 30 and scene.render.fps / scene.render.fps_base == pytest.approx(29.97)

    sequence = load_pose_file(pose_file)
    axis_angles = torch.from_numpy(sequence.poses).view(FRAMES, 52, 3)
    expected_quaternions = axis_angle_to_quaternion(axis_angles).numpy()
    expected_joints = adult.forward_rotations(
        axis_angle_to_matrix(axis_angles), transl=torch.from_numpy(sequence.trans), return_vertices=False
    ).joints.numpy()
    for frame in range(FRAMES):
        scene.frame_set(START + frame)
        evaluated = body.evaluated_get(bpy.context.evaluated_depsgraph_get())
        pose_bones = evaluated.pose.bones
        quaternions = np.array([pose_bones[name].rotation_quaternion for name in adult.joint_names])
        heads = np.array([pose_bones[name].head for name in adult.joint_names])
        assert _same_rotations(quaternions, expected_quaternions[frame])
        np.testing.assert_allclose(heads, expected_joints[frame], atol=1e-4)  # 0.1 mm


def test_export_then_import_round_trip(body, pose_file, bridge, tmp_path):
    bpy.context.scene.frame_current = 1
    body.vposer_body.betas[0] = 1.5
    assert bpy.ops.vposer.import_poses(filepath=str(pose_file)) == {"FINISHED"}
    exported = tmp_path / "exported.npz"
    assert bpy.ops.vposer.export_poses(filepath=str(exported)) == {"FINISHED"}

    original, written = load_pose_file(pose_file), load_pose_file(exported)
    assert written.poses.shape == original.poses.shape
    rotations = [axis_angle_to_matrix(torch.from_numpy(s.poses).view(FRAMES, 52, 3)) for s in (original, written)]
    assert (rotations[0] - rotations[1]).abs().max() < 1e-5
    np.testing.assert_allclose(written.trans, original.trans, atol=1e-6)
    assert written.framerate == pytest.approx(29.97)
    assert written.betas[0] == pytest.approx(1.5)

    names = body.vposer_body.joint_names()
    first = bridge.read_action(body, names, np.arange(1, FRAMES + 1))
    assert bpy.ops.vposer.add_body() == {"FINISHED"}
    second_body = bpy.context.active_object
    assert bpy.ops.vposer.import_poses(filepath=str(exported), use_betas=True) == {"FINISHED"}
    second = bridge.read_action(second_body, names, np.arange(1, FRAMES + 1))
    assert _same_rotations(first[0], second[0])
    np.testing.assert_allclose(first[1], second[1], atol=1e-6)
    assert second_body.vposer_body.betas[0] == pytest.approx(1.5)


def test_file_with_more_joints_than_the_body_is_refused(body, tmp_path):
    path = tmp_path / "smplx_55.npz"
    save_pose_file(path, PoseSequence(poses=np.zeros((2, 55 * 3)), trans=np.zeros((2, 3))))
    with pytest.raises(RuntimeError, match="smplx_55.npz"):
        bpy.ops.vposer.import_poses(filepath=str(path))
    assert body.animation_data is None


def test_write_action_keeps_quaternion_signs_continuous(body, bridge):
    names = body.vposer_body.joint_names()
    angles = np.linspace(0.0, 2.0, 5)
    quaternions = np.zeros((5, 52, 4))
    quaternions[..., 0] = np.cos(angles / 2)[:, None]
    quaternions[..., 1] = np.sin(angles / 2)[:, None]
    quaternions[1::2] *= -1  # the same rotations, alternating signs, as a converter may produce

    bridge.write_action(body, names, quaternions, np.zeros((5, 3)), 1, "signs")
    written, _ = bridge.read_action(body, names, np.arange(1, 6))
    assert _same_rotations(written, quaternions)
    assert (np.sum(written[1:] * written[:-1], axis=-1) > 0).all()


@pytest.mark.parametrize("keys", ["linear", "bezier"])
def test_read_action_matches_blenders_own_evaluation(body, bridge, keys):
    """Between keys too: linear curves are read in numpy, edited (bezier) ones through Blender."""
    names = body.vposer_body.joint_names()
    quaternions = axis_angle_to_quaternion(torch.randn(3, 52, 3, generator=torch.Generator().manual_seed(1))).numpy()
    translations = np.random.default_rng(1).normal(size=(3, 3))
    if keys == "linear":
        bridge.write_action(body, names, quaternions, translations, 1, "linear")
    else:
        for frame in range(3):
            bridge.set_pose(body, names, quaternions[frame], translations[frame])
            for name in names:
                body.pose.bones[name].keyframe_insert("rotation_quaternion", frame=frame + 1)
            body.pose.bones[names[0]].keyframe_insert("location", frame=frame + 1)
        channelbag = body.animation_data.action.layers[0].strips[0].channelbag(body.animation_data.action_slot)
        assert channelbag.fcurves[0].keyframe_points[0].interpolation == "BEZIER"
    frames = np.array([0.0, 1.0, 1.3, 2.5, 3.0, 4.0])

    read_quaternions, read_translations = bridge.read_action(body, names, frames)
    for index, frame in enumerate(frames):
        bpy.context.scene.frame_set(int(frame), subframe=frame - int(frame))
        pose_bones = body.evaluated_get(bpy.context.evaluated_depsgraph_get()).pose.bones
        expected = np.array([pose_bones[name].rotation_quaternion for name in names])
        np.testing.assert_allclose(read_quaternions[index], expected, atol=1e-6)
        np.testing.assert_allclose(read_translations[index], pose_bones[names[0]].location, atol=1e-6)


def test_write_action_speed_1000_frames_52_bones(body, bridge):
    """Measured, not asserted: the figure goes in the report (goal below 0.5 s)."""
    names = body.vposer_body.joint_names()
    generator = torch.Generator().manual_seed(0)
    quaternions = axis_angle_to_quaternion(torch.randn(1000, 52, 3, generator=generator) * 0.5).numpy()
    translations = np.zeros((1000, 3))
    start = time.perf_counter()
    action = bridge.write_action(body, names, quaternions, translations, 1, "bench")
    write_seconds = time.perf_counter() - start
    start = time.perf_counter()
    bridge.read_action(body, names, np.arange(1, 1001))
    read_seconds = time.perf_counter() - start
    print(f"\nwrite_action 1000 frames x 52 bones: {write_seconds:.3f} s; read_action: {read_seconds:.3f} s")
    assert action.frame_range[:] == pytest.approx((1, 1000))
