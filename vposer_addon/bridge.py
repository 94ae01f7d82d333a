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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import bpy
import numpy as np
from bpy_extras.anim_utils import action_ensure_channelbag_for_slot, action_get_channelbag_for_slot
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
    """Local joint rotations as (J, 4) quaternions (w, x, y, z) and the root translation (3,).

    Written with write_pose_bones and one transform tag, which re-evaluates the pose and what hangs
    from it (the skin). Setting bone by bone (rotations or the root's location) tags the whole
    armature for a copy into the evaluated scene, which cost Live Posing ~1 ms of evaluation per update."""
    positions = np.asarray(pose_bone_positions(rig, joint_names))
    write_pose_bones(rig, "rotation_quaternion", positions[:, None], np.arange(4), np.asarray(quaternions))
    write_pose_bones(rig, "location", positions[:1, None], np.arange(3), np.asarray(translation)[None])
    rig.update_tag(refresh={"OBJECT"})


def write_pose_bones(obj: bpy.types.Object, prop: str, bones: np.ndarray, index: np.ndarray, values: np.ndarray) -> None:
    """Set entries of one pose-bone vector property (rotation_quaternion, location, ...) of every
    bone at once: the property is read and written back in one foreach call each; values go to
    [bones, index] (positions in obj.pose.bones, component), broadcast as numpy indexing does.
    foreach_set tags nothing: the caller tags the object once it is done (see set_pose)."""
    pose_bones = obj.pose.bones
    size = 4 if prop in ("rotation_quaternion", "rotation_axis_angle") else 3
    array = np.empty(len(pose_bones) * size, dtype=np.float32)
    pose_bones.foreach_get(prop, array)
    array = array.reshape(-1, size)
    array[bones, index] = values
    pose_bones.foreach_set(prop, array.ravel())


# (armature session id, bone names) -> (every pose bone's name, the named ones' positions)
_positions: dict[tuple[int, tuple[str, ...]], tuple[list[str], list[int]]] = {}


def pose_bone_positions(obj: bpy.types.Object, names: list[str]) -> list[int]:
    """Where the named bones sit in obj.pose.bones (for foreach_get / foreach_set arrays). The
    names of all pose bones come in one keys() call; a name -> position map of them (706 in a
    generated Rigify rig) is built again only when they changed, as Live Posing asks on every
    update."""
    every = obj.pose.bones.keys()
    key = (obj.session_uid, tuple(names))
    cached = _positions.get(key)
    if cached is None or cached[0] != every:
        position = {name: i for i, name in enumerate(every)}
        if len(_positions) > 32:
            _positions.clear()
        cached = _positions[key] = (every, [position[name] for name in names])
    return cached[1]


def forget_positions() -> None:
    """Drop pose_bone_positions' maps (the add-on is unregistered, or bones were renamed)."""
    _positions.clear()


def get_pose(rig: bpy.types.Object, joint_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The rig's current pose in set_pose's form: (J, 4) quaternions and the root's (3,) location."""
    pose_bones = rig.pose.bones
    quaternions = np.array([pose_bones[name].rotation_quaternion for name in joint_names], dtype=np.float64)
    return quaternions, np.array(pose_bones[joint_names[0]].location, dtype=np.float64)


def evaluated_vertices(obj: bpy.types.Object, depsgraph: bpy.types.Depsgraph) -> np.ndarray:
    """(V, 3) positions of the deformed mesh in the object's local space (model space for a body)."""
    mesh = obj.evaluated_get(depsgraph).data
    buffer = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
    mesh.vertices.foreach_get("co", buffer)
    return buffer.reshape(-1, 3)


def set_rest_shape(
    rig: bpy.types.Object,
    skin: bpy.types.Object,
    joint_names: list[str],
    parents: np.ndarray,
    rest_joints: np.ndarray,
    vertices: np.ndarray,
) -> None:
    """Give a built body a new shape: rest mesh and bones move together, so skinning stays exact.

    The mesh's own coordinates are rewritten (and every shape key shifted by the same offsets, so
    a user's sculpted keys keep their relative edits); the bones keep their +Y direction.
    """
    _write_rest_vertices(skin.data, np.asarray(vertices, dtype=np.float32))
    lengths = _bone_lengths(parents, rest_joints)
    with _edit_mode(rig):
        edit_bones = rig.data.edit_bones
        for joint, name in enumerate(joint_names):
            bone = edit_bones[name]
            bone.head = rest_joints[joint]
            bone.tail = rest_joints[joint] + np.array([0.0, lengths[joint], 0.0])


def write_action(
    rig: bpy.types.Object,
    joint_names: list[str],
    quaternions: np.ndarray,
    translations: np.ndarray,
    frame_start: int,
    name: str,
    frame_step: int = 1,
) -> bpy.types.Action:
    """Key a whole clip into a new slotted action and assign it to the rig; returns the action.

    quaternions (T, J, 4) are local joint rotations (w, x, y, z), translations (T, 3) the root's
    location; frame t lands on frame_start + t * frame_step. Curves are written whole with
    foreach_set (orders of magnitude faster than keyframe_insert) and interpolate linearly, as
    sampled mocap should.
    """
    quaternions = continuous_quaternions(np.asarray(quaternions, dtype=np.float64))
    translations = np.asarray(translations, dtype=np.float64)
    frames = frame_start + frame_step * np.arange(len(quaternions), dtype=np.float64)

    action, channelbag = new_action(rig, name)
    values = _channel_values(quaternions, translations)
    for (bone, path, index), column in zip(_pose_channels(joint_names), values.T):
        _add_keys(channelbag.fcurves.new(path, index=index, group_name=bone), frames, column)
    return action


def keep_current_action(rig: bpy.types.Object) -> bpy.types.Action | None:
    """Give the rig's assigned action a fake user before a new one takes its place, so it stays in
    the action browser and is saved with the file; returns it (None when the rig has none)."""
    action = rig.animation_data.action if rig.animation_data else None
    if action is not None:
        action.use_fake_user = True
    return action


def keyed_frames(rig: bpy.types.Object, joint_names: list[str]) -> np.ndarray:
    """Sorted frames at which any of the joints' pose channels has a key in the rig's action."""
    frames = [_key_frames(curve) for curve in _existing_pose_curves(rig, joint_names)]
    return np.unique(np.concatenate(frames)) if frames else np.empty(0)


def delete_keys_between(rig: bpy.types.Object, joint_names: list[str], start: float, end: float) -> None:
    """Remove the keys strictly between frames start and end from the joints' pose channels (keys
    at start and end themselves stay)."""
    for curve in _existing_pose_curves(rig, joint_names):
        points = curve.keyframe_points
        frames = _key_frames(curve)
        doomed = np.flatnonzero((frames > start) & (frames < end))
        for index in doomed[::-1]:  # from the back, so earlier indices stay valid
            points.remove(points[int(index)], fast=True)
        if doomed.size:
            curve.update()


def insert_keys(
    rig: bpy.types.Object,
    joint_names: list[str],
    quaternions: np.ndarray,
    translations: np.ndarray,
    frames: np.ndarray,
) -> None:
    """Key poses ((T, J, 4) quaternions, (T, 3) root locations) into the rig's assigned action at
    `frames`, never replacing a key: where a channel already has a key at one of the frames, that
    key stays. A channel without a curve gets one. New keys interpolate linearly, as write_action's
    do; the quaternions' signs are the caller's to make continuous with the neighbouring keys."""
    animation_data = rig.animation_data
    channelbag = action_ensure_channelbag_for_slot(animation_data.action, animation_data.action_slot)
    values = _channel_values(np.asarray(quaternions, dtype=np.float64), np.asarray(translations, dtype=np.float64))
    frames = np.asarray(frames, dtype=np.float64)
    for (bone, path, index), column in zip(_pose_channels(joint_names), values.T):
        _add_keys(channelbag.fcurves.ensure(path, index=index, group_name=bone), frames, column)


def shift_location(
    rig: bpy.types.Object, bone: str, frames: np.ndarray, shifts: np.ndarray, whole_clip: bool
) -> tuple[list[int], int, int]:
    """Move a pose bone by (T, 3) location shifts at `frames`, touching no other channel.

    Only the location axes with a non-zero shift change. An axis the action animates has its keys
    moved in place (value and handles): with `whole_clip` all of its keys by the one shift (the
    curve keeps its shape), otherwise the keys at `frames`, and a frame without a key there gets
    one holding the curve's value there plus its shift. An axis without a curve holds one value,
    which moves (whole_clip, or a single frame) or gets keys at `frames` (frame by frame).
    Returns (axes changed, keys moved, keys added).
    """
    pose_bone = rig.pose.bones[bone]
    path = _bone_path(bone, "location")
    curves = _active_curves(rig)
    frames = np.asarray(frames, dtype=np.float64)
    axes = [axis for axis in range(3) if np.abs(shifts[:, axis]).max() > 1e-9]
    moved = added = 0
    for axis in axes:
        curve, column = curves.get((path, axis)), shifts[:, axis]
        if curve is None and (whole_clip or len(frames) == 1):
            pose_bone.location[axis] += column[0]
            continue
        if curve is None:
            animation_data = rig.animation_data
            channelbag = action_ensure_channelbag_for_slot(animation_data.action, animation_data.action_slot)
            _add_keys(channelbag.fcurves.new(path, index=axis, group_name=bone), frames,
                      pose_bone.location[axis] + column)
            added += len(frames)
            continue
        keys = _key_frames(curve).astype(np.float64)
        if whole_clip:
            offsets = np.full(len(keys), column[0])
            missing = np.zeros(0, dtype=bool)
        else:
            at = np.searchsorted(frames, keys).clip(max=len(frames) - 1)
            on_frames = np.isclose(frames[at], keys)
            offsets = np.where(on_frames, column[at], 0.0)
            missing = ~np.isin(frames, keys[on_frames])
        new_values = [curve.evaluate(frame) + shift for frame, shift in zip(frames[missing], column[missing])]
        _offset_keys(curve, offsets)
        for frame, value in zip(frames[missing], new_values):
            curve.keyframe_points.insert(frame, value, options={"FAST"})
        curve.update()
        moved += int(np.count_nonzero(offsets))
        added += len(new_values)
        pose_bone.location[axis] = curve.evaluate(bpy.context.scene.frame_current)
    return axes, moved, added


def pose_keys(rig: bpy.types.Object, joint_names: list[str]) -> dict[tuple[str, int], np.ndarray]:
    """The keys of the joints' pose channels in the rig's action: (data path, index) -> (N, 2)
    (frame, value) pairs, to tell what a job changed."""
    curves = _active_curves(rig)
    keys = {}
    for _, path, index in _pose_channels(joint_names):
        curve = curves.get((path, index))
        if curve is not None:
            co = np.empty(2 * len(curve.keyframe_points), dtype=np.float32)
            curve.keyframe_points.foreach_get("co", co)
            keys[path, index] = co.reshape(-1, 2)
    return keys


def add_curve_keys(curve: bpy.types.FCurve, frames: np.ndarray, values: np.ndarray) -> None:
    """Linear keys on a curve at the frames it does not key yet (keys already there stay)."""
    _add_keys(curve, np.asarray(frames, dtype=np.float64), np.asarray(values, dtype=np.float64))


def new_action(obj: bpy.types.Object, name: str) -> tuple[bpy.types.Action, bpy.types.ActionChannelbag]:
    """A new slotted action (one layer, one keyframe strip, a slot for `obj`) assigned to `obj`, and
    the channelbag its curves go in; the object's previous action is only unassigned."""
    action = bpy.data.actions.new(name)
    slot = action.slots.new(id_type="OBJECT", name=obj.name)
    strip = action.layers.new("Layer").strips.new(type="KEYFRAME")
    channelbag = strip.channelbag(slot, ensure=True)
    animation_data = obj.animation_data or obj.animation_data_create()
    animation_data.action = action
    animation_data.action_slot = slot
    return action, channelbag


def write_curve(
    channelbag: bpy.types.ActionChannelbag,
    path: str,
    index: int,
    group: str,
    frames: np.ndarray,
    values: np.ndarray,
    hold: np.ndarray | None = None,
) -> bpy.types.FCurve:
    """A new F-curve keyed whole at `frames` (linear keys); where `hold` (one bool per key) is True
    the key keeps its value until the next one (CONSTANT), e.g. across a gap in sampled data."""
    curve = channelbag.fcurves.new(path, index=index, group_name=group)
    _add_keys(curve, np.asarray(frames, dtype=np.float64), np.asarray(values, dtype=np.float64))
    if hold is not None:
        modes = np.where(np.asarray(hold, dtype=bool), _CONSTANT, _LINEAR).astype(np.int32)
        curve.keyframe_points.foreach_set("interpolation", modes)
    return curve


def matrix_array(collection: bpy.types.bpy_prop_collection, prop: str) -> np.ndarray:
    """(N, 4, 4) float64: a matrix property of every item (e.g. bones' matrix_local), read in one
    foreach_get (Blender stores matrices column-major)."""
    buffer = np.empty(len(collection) * 16, dtype=np.float32)
    collection.foreach_get(prop, buffer)
    return buffer.reshape(-1, 4, 4).transpose(0, 2, 1).astype(np.float64)


def scene_frame_rate(scene: bpy.types.Scene) -> float:
    """Frames per second the scene plays at."""
    return scene.render.fps / scene.render.fps_base


def set_scene_frame_rate(scene: bpy.types.Scene, frame_rate: float) -> None:
    """Play a clip at its recorded speed: Blender's rate is fps / fps_base, with an integer fps."""
    render = scene.render
    render.fps = max(1, round(frame_rate))
    render.fps_base = render.fps / frame_rate


def read_action(
    rig: bpy.types.Object, joint_names: list[str], frames: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The rig's active action sampled at `frames`: (T, J, 4) quaternions and (T, 3) root locations.

    Curves are evaluated directly (no scene frame changes, no depsgraph); a channel without a
    curve holds the pose bone's current value, as Blender's own evaluation does.
    """
    pose_bones = rig.pose.bones
    current = np.concatenate([np.ravel([pose_bones[name].rotation_quaternion for name in joint_names]),
                              pose_bones[joint_names[0]].location])
    channels = [(path, index, value) for (_, path, index), value in zip(_pose_channels(joint_names), current)]
    values = sample_channels(rig, channels, frames)
    quaternions = values[:, :-3].reshape(len(values), len(joint_names), 4)
    return quaternions, values[:, -3:]


def sample_channels(obj: bpy.types.Object, channels: list[tuple[str, int, float]], frames: np.ndarray) -> np.ndarray:
    """(T, C) values of animated properties of `obj` at `frames`, one column per channel (data path,
    array index, value when no curve animates it), e.g. ('pose.bones["Hips"].location', 0, 0.0).

    The assigned action's curves are evaluated directly, without frame changes or a depsgraph, so a
    whole clip samples in milliseconds; what else could move the property (drivers, NLA,
    constraints) is the caller's to rule out. A channel without a curve holds its fallback, as
    Blender's own evaluation holds the property's current value.
    """
    frames = np.asarray(frames, dtype=np.float64)
    curves = _active_curves(obj)
    values = np.empty((len(frames), len(channels)))
    for column, (path, index, fallback) in enumerate(channels):
        curve = curves.get((path, index))
        values[:, column] = fallback if curve is None else _sample_curve(curve, frames)
    return values


def continuous_quaternions(quaternions: np.ndarray) -> np.ndarray:
    """(T, J, 4) with q and -q chosen so consecutive frames agree in sign: per-component linear
    interpolation between keys then takes the short way round instead of spinning a joint."""
    if len(quaternions) < 2:
        return quaternions
    flips = np.where(np.sum(quaternions[1:] * quaternions[:-1], axis=-1) < 0, -1.0, 1.0)
    signs = np.concatenate([np.ones_like(flips[:1]), np.cumprod(flips, axis=0)])
    return quaternions * signs[..., None]


def _build_bones(rig: bpy.types.Object, body: BodyArrays) -> None:
    """Edit bones at the joints, all pointing +Y in model space (identity rest rotation)."""
    lengths = _bone_lengths(body.parents, body.rest_joints)
    with _edit_mode(rig):
        edit_bones = rig.data.edit_bones
        for joint, name in enumerate(body.joint_names):
            bone = edit_bones.new(name)
            bone.head = body.rest_joints[joint]
            bone.tail = body.rest_joints[joint] + np.array([0.0, lengths[joint], 0.0])
            bone.roll = 0.0
            parent = body.parents[joint]
            if parent >= 0:
                bone.parent = edit_bones[body.joint_names[parent]]
                bone.use_connect = False


@contextmanager
def _edit_mode(rig: bpy.types.Object) -> Iterator[None]:
    """Edit bones exist only in edit mode: enter it on the rig, then restore its mode and the active object."""
    if rig.mode == "EDIT":
        yield
        return
    view_layer = bpy.context.view_layer
    previous_active = view_layer.objects.active
    previous_mode = rig.mode
    view_layer.objects.active = rig
    bpy.ops.object.mode_set(mode="EDIT")
    try:
        yield
    finally:
        bpy.ops.object.mode_set(mode=previous_mode)
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


def _write_rest_vertices(mesh: bpy.types.Mesh, vertices: np.ndarray) -> None:
    flat = vertices.ravel()
    if mesh.shape_keys:
        old = np.empty_like(flat)
        mesh.vertices.foreach_get("co", old)
        buffer = np.empty_like(flat)
        for key_block in mesh.shape_keys.key_blocks:
            key_block.data.foreach_get("co", buffer)
            key_block.data.foreach_set("co", buffer + (flat - old))
    mesh.vertices.foreach_set("co", flat)
    mesh.update()


def _bone_path(bone: str, prop: str) -> str:
    return f'pose.bones["{bpy.utils.escape_identifier(bone)}"].{prop}'


def _pose_channels(joint_names: list[str]) -> list[tuple[str, str, int]]:
    """(bone, data path, index) of every curve a pose is keyed on: each joint's quaternion
    (w, x, y, z), then the root's location; the columns of _channel_values, in order."""
    channels = [(name, _bone_path(name, "rotation_quaternion"), c) for name in joint_names for c in range(4)]
    return channels + [(joint_names[0], _bone_path(joint_names[0], "location"), axis) for axis in range(3)]


def _channel_values(quaternions: np.ndarray, translations: np.ndarray) -> np.ndarray:
    """(T, J, 4) quaternions and (T, 3) root locations -> (T, 4J + 3), one column per pose channel."""
    return np.concatenate([quaternions.reshape(len(quaternions), -1), translations], axis=1)


_LINEAR = bpy.types.Keyframe.bl_rna.properties["interpolation"].enum_items["LINEAR"].value
_CONSTANT = bpy.types.Keyframe.bl_rna.properties["interpolation"].enum_items["CONSTANT"].value


def _add_keys(curve: bpy.types.FCurve, frames: np.ndarray, values: np.ndarray) -> None:
    """Linear keys at the frames the curve does not key yet, written in one foreach_set per
    attribute (the existing keys are read and written back unchanged); update() sorts them in."""
    points = curve.keyframe_points
    count = len(points)
    new = ~np.isin(frames, _key_frames(curve))
    co = np.empty(2 * count, dtype=np.float32)
    points.foreach_get("co", co)
    interpolation = np.empty(count, dtype=np.int32)
    points.foreach_get("interpolation", interpolation)
    added = int(new.sum())
    points.add(added)
    added_co = np.column_stack([frames[new], values[new]]).astype(np.float32).ravel()
    points.foreach_set("co", np.concatenate([co, added_co]))
    points.foreach_set("interpolation", np.concatenate([interpolation, np.full(added, _LINEAR, dtype=np.int32)]))
    curve.update()


def _offset_keys(curve: bpy.types.FCurve, offsets: np.ndarray) -> None:
    """Add one value per key to the keys' values and their handles (the curve keeps its shape)."""
    points = curve.keyframe_points
    buffer = np.empty(2 * len(points), dtype=np.float64)
    for attribute in ("co", "handle_left", "handle_right"):
        points.foreach_get(attribute, buffer)
        buffer[1::2] += offsets
        points.foreach_set(attribute, buffer)
    curve.update()


def _key_frames(curve: bpy.types.FCurve) -> np.ndarray:
    co = np.empty(2 * len(curve.keyframe_points), dtype=np.float32)
    curve.keyframe_points.foreach_get("co", co)
    return co[0::2]


def _sample_curve(curve: bpy.types.FCurve, frames: np.ndarray) -> np.ndarray:
    """Linear and constant keys without modifiers (what write_action, write_curve and the BVH
    importer make) are interpolated in numpy, some 50 times faster; any other curve is asked frame
    by frame, so edited curves stay exact."""
    points = curve.keyframe_points
    interpolation = np.empty(len(points), dtype=np.int32)
    points.foreach_get("interpolation", interpolation)
    simple = len(points) and np.isin(interpolation[:-1], (_LINEAR, _CONSTANT)).all()
    if not (simple and not curve.modifiers and curve.extrapolation == "CONSTANT"):
        return np.array([curve.evaluate(frame) for frame in frames])
    keys = np.empty(2 * len(points), dtype=np.float32)
    points.foreach_get("co", keys)
    times, values = keys[0::2], keys[1::2]
    sampled = np.interp(frames, times, values)  # holds the end values outside, as CONSTANT does
    left = np.searchsorted(times, frames, side="right") - 1  # the key at or before each frame
    held = (left >= 0) & (interpolation[np.maximum(left, 0)] == _CONSTANT)
    sampled[held] = values[left[held]]
    return sampled


def _active_curves(rig: bpy.types.Object) -> dict[tuple[str, int], bpy.types.FCurve]:
    """F-curves of the rig's assigned action and slot, by (data path, index); empty without an action."""
    animation_data = rig.animation_data
    if animation_data is None:
        return {}
    channelbag = action_get_channelbag_for_slot(animation_data.action, animation_data.action_slot)
    if channelbag is None:
        return {}
    return {(curve.data_path, curve.array_index): curve for curve in channelbag.fcurves}


def _existing_pose_curves(rig: bpy.types.Object, joint_names: list[str]) -> list[bpy.types.FCurve]:
    """The curves of the joints' pose channels that the rig's action animates."""
    curves = _active_curves(rig)
    return [curves[path, index] for _, path, index in _pose_channels(joint_names) if (path, index) in curves]
