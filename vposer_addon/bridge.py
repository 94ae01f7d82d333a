"""Blender <-> core: build a skinned body from model arrays and pose it from model rotations.

Model space is SMPL's (Y up); the armature object carries a +90 degree rotation about X so the
body stands up in Blender's Z-up scene, and core never sees Blender axes. Every bone's rest
frame is world-aligned in model space (it points along +Y with zero roll), so a pose bone's
quaternion *is* the model's local joint rotation and the root bone's location *is* the model's
translation: no per-bone conversion is needed in either direction. Everything here takes numpy
arrays, so building and posing need no PyTorch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import bpy
import numpy as np
from mathutils import Matrix

Y_UP_TO_Z_UP = Matrix.Rotation(math.pi / 2, 4, "X")
MIN_BONE_LENGTH = 0.02  # metres; leaf joints and joints with a coincident child still get a visible bone


@dataclass
class BodyArrays:
    """What Blender needs of a (shaped) body model, in model space."""

    joint_names: list[str]
    parents: np.ndarray  # (J,) -1 for the root
    rest_joints: np.ndarray  # (J, 3)
    vertices: np.ndarray  # (V, 3) rest-pose mesh
    faces: np.ndarray  # (F, 3)
    weights: np.ndarray  # (V, J)


def create_body(collection: bpy.types.Collection, name: str, body: BodyArrays) -> tuple[bpy.types.Object, bpy.types.Object]:
    """An armature object (one bone per joint) and a mesh child skinned to it by an Armature modifier."""
    armature = bpy.data.armatures.new(f"{name}_Armature")
    rig = bpy.data.objects.new(name, armature)
    rig.matrix_world = Y_UP_TO_Z_UP
    collection.objects.link(rig)
    _build_bones(rig, body)

    mesh = _build_mesh(f"{name}_Mesh", body.vertices, body.faces)
    skin = bpy.data.objects.new(f"{name}_Mesh", mesh)
    collection.objects.link(skin)
    skin.parent = rig
    _add_vertex_groups(skin, body.joint_names, body.weights)
    modifier = skin.modifiers.new("Armature", "ARMATURE")
    modifier.object = rig
    modifier.use_vertex_groups = True
    modifier.use_deform_preserve_volume = False
    for pose_bone in rig.pose.bones:
        pose_bone.rotation_mode = "QUATERNION"
    return rig, skin


def set_pose(rig: bpy.types.Object, joint_names: list[str], quaternions: np.ndarray, translation: np.ndarray) -> None:
    """Local joint rotations as (J, 4) quaternions (w, x, y, z) and the root translation (3,)."""
    pose_bones = rig.pose.bones
    for name, quaternion in zip(joint_names, np.asarray(quaternions, dtype=np.float64)):
        pose_bones[name].rotation_quaternion = quaternion
    pose_bones[joint_names[0]].location = np.asarray(translation, dtype=np.float64)


def evaluated_vertices(obj: bpy.types.Object, depsgraph: bpy.types.Depsgraph) -> np.ndarray:
    """(V, 3) positions of the deformed mesh in the object's local space (model space for a body)."""
    mesh = obj.evaluated_get(depsgraph).data
    buffer = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
    mesh.vertices.foreach_get("co", buffer)
    return buffer.reshape(-1, 3)


def _build_bones(rig: bpy.types.Object, body: BodyArrays) -> None:
    """Edit bones at the joints, all pointing +Y in model space (identity rest rotation)."""
    view_layer = bpy.context.view_layer
    previous_active = view_layer.objects.active
    view_layer.objects.active = rig
    bpy.ops.object.mode_set(mode="EDIT")
    try:
        edit_bones = rig.data.edit_bones
        lengths = _bone_lengths(body.parents, body.rest_joints)
        for joint, name in enumerate(body.joint_names):
            bone = edit_bones.new(name)
            bone.head = body.rest_joints[joint]
            bone.tail = body.rest_joints[joint] + np.array([0.0, lengths[joint], 0.0])
            bone.roll = 0.0
            parent = body.parents[joint]
            if parent >= 0:
                bone.parent = edit_bones[body.joint_names[parent]]
                bone.use_connect = False
    finally:
        bpy.ops.object.mode_set(mode="OBJECT")
        view_layer.objects.active = previous_active


def _bone_lengths(parents: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """Each bone as long as the distance to its farthest child, so the rig reads at a glance."""
    lengths = np.full(len(parents), MIN_BONE_LENGTH)
    for child, parent in enumerate(parents):
        if parent >= 0:
            lengths[parent] = max(lengths[parent], float(np.linalg.norm(joints[child] - joints[parent])))
    return lengths


def _build_mesh(name: str, vertices: np.ndarray, faces: np.ndarray) -> bpy.types.Mesh:
    mesh = bpy.data.meshes.new(name)
    num_faces = len(faces)
    mesh.vertices.add(len(vertices))
    mesh.vertices.foreach_set("co", np.asarray(vertices, dtype=np.float32).ravel())
    mesh.loops.add(3 * num_faces)
    mesh.loops.foreach_set("vertex_index", np.asarray(faces, dtype=np.int32).ravel())
    mesh.polygons.add(num_faces)
    mesh.polygons.foreach_set("loop_start", np.arange(0, 3 * num_faces, 3, dtype=np.int32))
    mesh.update(calc_edges=True)
    mesh.validate()
    mesh.shade_smooth()
    return mesh


def _add_vertex_groups(obj: bpy.types.Object, joint_names: list[str], weights: np.ndarray) -> None:
    """One group per joint holding only the vertices it moves; vertices sharing a weight go in one call."""
    for joint, name in enumerate(joint_names):
        group = obj.vertex_groups.new(name=name)
        column = weights[:, joint]
        influenced = np.flatnonzero(column > 0)
        if not influenced.size:
            continue
        values, inverse = np.unique(column[influenced], return_inverse=True)
        for value_index, value in enumerate(values):
            group.add(influenced[inverse == value_index].tolist(), float(value), "REPLACE")
