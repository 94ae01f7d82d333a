"""Blender's own Armature-modifier deformation of a built body equals core's LBS.

This pins down bones, rolls, skin weights and axes at once: any mismatch in one of them moves
vertices by millimetres or more.
"""

from __future__ import annotations

import importlib

import bpy
import numpy as np
import pytest
import torch

from core.body_model import BodyModel
from core.rotations import axis_angle_to_matrix, axis_angle_to_quaternion


@pytest.fixture(scope="module")
def bridge(extension_package):
    return importlib.import_module(f"{extension_package.__name__}.vposer_addon.bridge")


@pytest.fixture(scope="module")
def body_model():
    return BodyModel.open_default(dtype=torch.float64)


def _arrays(bridge, model: BodyModel, betas: torch.Tensor):
    return bridge.BodyArrays(
        joint_names=list(model.joint_names),
        parents=model.parents.numpy(),
        rest_joints=model.rest_joints(betas)[0].numpy(),
        vertices=model.shaped_vertices(betas)[0].numpy(),
        faces=model.faces.numpy(),
        weights=model.weights.numpy(),
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_evaluated_mesh_equals_core_lbs(bridge, body_model, empty_scene, seed):
    generator = torch.Generator().manual_seed(seed)
    betas = torch.randn(1, body_model.num_betas, generator=generator, dtype=torch.float64)
    pose = torch.randn(1, body_model.num_joints, 3, generator=generator, dtype=torch.float64) * 0.4
    transl = torch.randn(1, 3, generator=generator, dtype=torch.float64) * 0.5
    expected = body_model.forward_rotations(axis_angle_to_matrix(pose), betas=betas, transl=transl).vertices[0].numpy()

    rig, skin = bridge.create_body(empty_scene.collection, "Body", _arrays(bridge, body_model, betas))
    bridge.set_pose(rig, list(body_model.joint_names), axis_angle_to_quaternion(pose[0]).numpy(), transl[0].numpy())
    bpy.context.view_layer.update()
    deformed = bridge.evaluated_vertices(skin, bpy.context.evaluated_depsgraph_get())

    assert np.abs(deformed - expected).max() < 1e-4  # 0.1 mm


def test_rest_pose_bones_sit_on_the_joints_with_identity_frames(bridge, body_model, empty_scene):
    betas = torch.zeros(1, body_model.num_betas, dtype=torch.float64)
    rig, _ = bridge.create_body(empty_scene.collection, "Body", _arrays(bridge, body_model, betas))
    joints = body_model.rest_joints(betas)[0].numpy()
    for index, name in enumerate(body_model.joint_names):
        bone = rig.data.bones[name]
        np.testing.assert_allclose(np.array(bone.head_local), joints[index], atol=1e-6)
        np.testing.assert_allclose(np.array(bone.matrix_local)[:3, :3], np.eye(3), atol=1e-6)
        parent = body_model.parents[index].item()
        assert (bone.parent.name if bone.parent else None) == (body_model.joint_names[parent] if parent >= 0 else None)
    world_up = np.array(rig.matrix_world)[:3, :3] @ np.array([0.0, 1.0, 0.0])
    np.testing.assert_allclose(world_up, [0, 0, 1], atol=1e-6)  # model +Y is the scene's +Z
