"""Blender's own Armature-modifier deformation of a built body equals core's LBS.

This pins down bones, rolls, skin weights and axes at once: any mismatch in one of them moves
vertices by millimetres or more.
"""

from __future__ import annotations


import bpy
import numpy as np
import pytest
import torch

from core.body_model import BodyModel
from core.rotations import axis_angle_to_matrix, axis_angle_to_quaternion


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
def test_evaluated_mesh_equals_core_lbs(bridge, adult, empty_scene, seed):
    generator = torch.Generator().manual_seed(seed)
    betas = torch.randn(1, adult.num_betas, generator=generator, dtype=torch.float64)
    pose = torch.randn(1, adult.num_joints, 3, generator=generator, dtype=torch.float64) * 0.4
    transl = torch.randn(1, 3, generator=generator, dtype=torch.float64) * 0.5
    expected = adult.forward_rotations(axis_angle_to_matrix(pose), betas=betas, transl=transl).vertices[0].numpy()

    rig, skin = bridge.create_body(empty_scene.collection, "Body", _arrays(bridge, adult, betas))
    bridge.set_pose(rig, list(adult.joint_names), axis_angle_to_quaternion(pose[0]).numpy(), transl[0].numpy())
    bpy.context.view_layer.update()
    deformed = bridge.evaluated_vertices(skin, bpy.context.evaluated_depsgraph_get())

    assert np.abs(deformed - expected).max() < 1e-4  # 0.1 mm


def test_rest_pose_bones_sit_on_the_joints_with_identity_frames(bridge, adult, empty_scene):
    betas = torch.zeros(1, adult.num_betas, dtype=torch.float64)
    rig, _ = bridge.create_body(empty_scene.collection, "Body", _arrays(bridge, adult, betas))
    joints = adult.rest_joints(betas)[0].numpy()
    for index, name in enumerate(adult.joint_names):
        bone = rig.data.bones[name]
        np.testing.assert_allclose(np.array(bone.head_local), joints[index], atol=1e-6)
        np.testing.assert_allclose(np.array(bone.matrix_local)[:3, :3], np.eye(3), atol=1e-6)
        parent = adult.parents[index].item()
        assert (bone.parent.name if bone.parent else None) == (adult.joint_names[parent] if parent >= 0 else None)
    world_up = np.array(rig.matrix_world)[:3, :3] @ np.array([0.0, 1.0, 0.0])
    np.testing.assert_allclose(world_up, [0, 0, 1], atol=1e-6)  # model +Y is the scene's +Z
