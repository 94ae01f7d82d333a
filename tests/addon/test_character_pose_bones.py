"""The character binding's pose-bone rotations, set on a real Blender armature (Rigify's human
metarig: rolled bones, bent elbows and knees in its rest) and evaluated by Blender: the bones'
directions follow the body's limbs."""

from __future__ import annotations

import bpy
import numpy as np
import pytest
import torch

from core.body_model import BodyModel
from core.character import CharacterSkeleton, bind_character, body_to_character
from core.mocap.skeletons import TARGET_DIRECTION_CHILD
from core.mocap.transfer import skeleton_fk
from core.rotations import axis_angle_to_matrix
from core.vposer import load_default_vposer

BLENDER_TO_MODEL = np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])


@pytest.fixture(scope="module")
def metarig():
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.preferences.addon_enable(module="rigify")
    bpy.ops.object.armature_human_metarig_add()
    rig = bpy.context.active_object
    rig.rotation_euler = (0.0, 0.0, 0.7)  # turned, and in other units
    rig.scale = (2.0, 2.0, 2.0)
    bpy.context.view_layer.update()
    return rig


def test_metarig_posed_from_the_body_follows_its_limbs(metarig):
    bones = list(metarig.data.bones)
    names = [b.name for b in bones]
    skeleton = CharacterSkeleton.from_arrays(
        names, [b.parent.name if b.parent else None for b in bones], np.array([np.array(b.matrix_local) for b in bones]),
        np.array([tuple(b.tail_local) for b in bones]), np.array(metarig.matrix_world), source="metarig")
    model = BodyModel.open_default("adult", dtype=torch.float64)
    binding = bind_character(skeleton, "auto", model=model)
    assert binding.bone_map.name == "rigify" and binding.betas is not None
    with torch.no_grad():
        pose = load_default_vposer().sample(4, seed=11).double().reshape(4, 21, 3)
    poses = torch.cat([torch.tensor([[[0.3, -0.5, 0.2]]], dtype=torch.float64).expand(4, 1, 3), pose,
                       torch.zeros(4, model.num_joints - 22, 3, dtype=torch.float64)], 1)
    transl = torch.tensor([[0.2, 0.1, -0.3]], dtype=torch.float64).expand(4, 3)
    character = body_to_character(binding, poses, transl)
    joints, _ = skeleton_fk(axis_angle_to_matrix(poses), binding.body_rest, binding.body_parents, transl)
    world = np.array(metarig.matrix_world)
    for frame in range(4):
        for name, q in zip(names, character.quaternions[frame].numpy()):
            metarig.pose.bones[name].rotation_mode = "QUATERNION"
            metarig.pose.bones[name].rotation_quaternion = q
        metarig.pose.bones[names[binding.root_bone]].location = character.location[frame].numpy()
        bpy.context.view_layer.update()
        pelvis = world @ np.append(np.array(metarig.pose.bones[names[binding.root_bone]].head), 1.0)
        np.testing.assert_allclose(BLENDER_TO_MODEL @ (pelvis[:3] - world[:3, 3]),
                                   binding.scale * joints[frame, 0].numpy(), atol=1e-5)
        for joint in ("left_hip", "right_knee", "left_shoulder", "right_elbow", "left_collar", "left_wrist"):
            child = TARGET_DIRECTION_CHILD[joint]
            first = binding.joint_bones[binding.body_names.index(joint)][0]
            then = binding.joint_bones[binding.body_names.index(child)][0]
            heads = [world[:3, :3] @ np.array(metarig.pose.bones[names[b]].head) for b in (first, then)]
            rig_dir = BLENDER_TO_MODEL @ (heads[1] - heads[0])
            body_dir = (joints[frame, binding.body_names.index(child)] - joints[frame, binding.body_names.index(joint)])
            cos = rig_dir @ body_dir.numpy() / np.linalg.norm(rig_dir) / float(body_dir.norm())
            assert np.degrees(np.arccos(min(1.0, cos))) < 1.0, (frame, joint)
