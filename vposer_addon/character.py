"""A user's own character bound to a VPoser body: what the binding stores, how a character's
armature is read for core, and how the body's pose and keys are written onto the character.

The body stays the one thing every job solves (IK, retarget, the prior); a bound character is a
view of it. Jobs run on the body (selecting the character selects its body for them, see
properties.active_body) and `drives_character` wraps each job: it notes the body's pose and keys
before the job and, after it, writes what changed onto the character. A new body action (Retarget,
Sample Poses, Import Poses) becomes a new character action, keys added or replaced on the body's
action (Solve & Key, In-betweens) are keyed on the character's, and the current pose follows.
Live Posing, which is no operator, calls `follow_pose` after each solve.

Posing a bone. Core gives each mapped bone's posed matrix in the character's armature space
(G_b, rotation and head). Blender chains a pose bone as pose_b = pose_parent @ inv(rest_parent) @
rest_b @ basis_b, so basis_b = inv(inv(rest_parent) @ rest_b) @ inv(pose_parent) @ G_b. In a plain
hierarchy pose_parent is the nearest mapped ancestor's G times the (constant) offset of the
unmapped bones in between; in a Rigify rig an FK control's parent is a mechanism bone that follows
another control through constraints. `CharacterPoser` finds, for every mapped bone, which mapped
bone its parent moves rigidly with by letting Blender evaluate the rig twice (its current pose and
a scrambled one), so one rule serves both and a whole clip is converted in numpy.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import wraps

import bpy
import numpy as np
from mathutils import Matrix, Quaternion

from ..core.errors import VPoserError
from . import bridge

ROTATION_PATHS = {"QUATERNION": "rotation_quaternion", "AXIS_ANGLE": "rotation_axis_angle"}
DISPLAY_ITEMS = [
    ("HIDDEN", "Hidden", "Hide the body that is solved for the character"),
    ("GHOST", "Ghost", "Show the body as a wireframe next to the character"),
    ("SOLID", "Solid", "Show the body as it is"),
]
RIGID_TOLERANCE = 1e-3  # matrix entries (rotation, and translation in armature units) that count as equal


class CharacterError(VPoserError):
    """A character cannot be bound or posed as asked; the message names the armature and says why."""


# ------------------------------------------------------------------------------------ the binding
class VPoserCharacterBone(bpy.types.PropertyGroup):
    """One entry of a character's bone map: the body joint (its name) and the character's bone."""

    bone: bpy.props.StringProperty(name="Bone", description="The character's bone that follows this body joint")


def _set_body_display(self: VPoserCharacter, _context: bpy.types.Context) -> None:
    if self.body is not None:
        show_body(self.body, self.body_display)


def _is_armature(_self: VPoserCharacter, obj: bpy.types.Object) -> bool:
    return obj.type == "ARMATURE"


class VPoserCharacter(bpy.types.PropertyGroup):
    """Set on a character's armature object (body, map) and on its body (character) by Bind Character."""

    body: bpy.props.PointerProperty(
        name="Body", type=bpy.types.Object, poll=_is_armature, description="The VPoser body solved for this character"
    )
    character: bpy.props.PointerProperty(
        name="Character", type=bpy.types.Object, poll=_is_armature, description="The character this body drives"
    )
    preset: bpy.props.StringProperty(name="Map", description="The bone map preset the binding was detected as")
    bones: bpy.props.CollectionProperty(type=VPoserCharacterBone, description="Body joint -> character bone")
    active_bone: bpy.props.IntProperty(name="Active Map Entry", default=0)
    body_display: bpy.props.EnumProperty(
        name="Body", description="How the body solved for the character shows", items=DISPLAY_ITEMS,
        default="HIDDEN", update=_set_body_display,
    )

    scale: bpy.props.FloatProperty(name="Scale", description="Character metres per body metre, fitted at bind")
    bind_world: bpy.props.FloatVectorProperty(size=16, options={"HIDDEN"}, description="matrix_world at bind, rows")

    def mapping(self) -> dict[str, list[str]]:
        """Body joint -> the character bones it drives (root to tip), the entries with a bone."""
        mapping: dict[str, list[str]] = {}
        for entry in self.bones:
            if entry.bone:
                mapping.setdefault(entry.name, []).append(entry.bone)
        return mapping

    def set_mapping(self, mapping: dict[str, list[str]]) -> None:
        self.bones.clear()
        for joint, bones in mapping.items():
            for bone in bones:
                entry = self.bones.add()
                entry.name, entry.bone = joint, bone


def bound_character(body: bpy.types.Object) -> bpy.types.Object | None:
    """The character a body drives, if the binding still holds on both sides."""
    character = body.vposer_character.character
    if character is None or character.vposer_character.body != body:
        return None
    return character


def selected_joints(context: bpy.types.Context, body: bpy.types.Object) -> list[str]:
    """The body joints of the selected pose bones, in model order: the body's own bones, and the
    bones of its bound character through the bone map (any bone of a joint's chain stands for it),
    so Pin and Add Targets > Selected Bones work on the character the user sees."""
    character = bound_character(body)
    bone_joint = {} if character is None else {
        bone: joint for joint, bones in character.vposer_character.mapping().items() for bone in bones}
    chosen = set()
    for bone in context.selected_pose_bones or ():
        if bone.id_data == body:
            chosen.add(bone.name)
        elif bone.id_data == character and bone.name in bone_joint:
            chosen.add(bone_joint[bone.name])
    return [name for name in body.vposer_body.joint_names() if name in chosen]


def target_places(context: bpy.types.Context, body: bpy.types.Object,
                  joints: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Where Add Targets puts each joint's target (K, 3 world) and its offset from the joint (K, 3;
    body metres in the body's rest axes, carried by the joint's parent, as core.keypoints' `local`).
    On a bound character a target sits on the head of the joint's first mapped bone, which the body
    fit leaves a few centimetres from the body's joint: the offset makes the target pull that point,
    so an untouched target pulls nothing. Elsewhere it sits on the body's joint (offset 0), as does
    the pelvis' (the character's root bone is placed with its head on it, and the root joint has no
    parent segment to carry an offset)."""
    depsgraph = context.evaluated_depsgraph_get()
    posed = body.evaluated_get(depsgraph)
    bones = posed.pose.bones
    world = np.array(posed.matrix_world)
    heads = np.array([bones[joint].head for joint in joints]).reshape(-1, 3)  # model space (the body's)
    places = heads @ world[:3, :3].T + world[:3, 3]
    offsets = np.zeros_like(heads)
    character = bound_character(body)
    if character is None:
        return places, offsets
    mapping = character.vposer_character.mapping()
    shown = character.evaluated_get(depsgraph)
    to_model = np.linalg.inv(world)
    for k, joint in enumerate(joints):
        parent = bones[joint].parent  # the body's bones are its joints
        if not mapping.get(joint) or parent is None:  # the root bone's head is on the pelvis by construction
            continue
        places[k] = np.array(shown.matrix_world @ shown.pose.bones[mapping[joint][0]].head)
        turned = np.array(parent.matrix)[:3, :3] @ np.array(parent.bone.matrix_local)[:3, :3].T  # its world delta
        point = to_model[:3, :3] @ places[k] + to_model[:3, 3]
        offsets[k] = turned.T @ (point - heads[k])
    return places, offsets


def character_body(obj: bpy.types.Object) -> bpy.types.Object | None:
    """The body a character is bound to, if the binding still holds on both sides."""
    body = obj.vposer_character.body if obj.type == "ARMATURE" else None
    if body is None or body.vposer_character.character != obj or not body.vposer_body.is_body:
        return None
    return body


def show_body(body: bpy.types.Object, display: str) -> None:
    """Hide the body, show it as a wireframe ghost, or as it is. A hidden body's armature stays
    evaluated (Add Targets reads its posed joints), but its mesh is left out of the viewport's
    evaluation, so Live Posing does not deform a skin nobody sees on every update; neither a
    hidden nor a ghost body renders (the character does)."""
    mesh = body.vposer_body.mesh
    for obj in [body] + ([mesh] if mesh else []):
        obj.hide_viewport = obj is mesh and display == "HIDDEN"
        obj.hide_set(display == "HIDDEN")
        obj.hide_select = display != "SOLID"
        obj.hide_render = display != "SOLID"
    if mesh:
        mesh.display_type = "WIRE" if display == "GHOST" else "TEXTURED"


# ----------------------------------------------------------------------------- reading an armature
@dataclass
class ArmatureRest:
    """A character armature's rest as Blender stores it (armature space, Blender units).

    matrix_local (B, 4, 4): each bone's rest frame (Y runs head -> tail, roll turns X/Z about it);
    tails (B, 3); parents (B,) with -1 for roots; world (4, 4) the armature object's matrix_world
    (axes and units of the scene).
    """

    names: list[str]
    parents: np.ndarray
    matrix_local: np.ndarray
    tails: np.ndarray
    world: np.ndarray

    @property
    def heads(self) -> np.ndarray:
        return self.matrix_local[:, :3, 3]


def read_armature(obj: bpy.types.Object) -> ArmatureRest:
    """The rest of every bone of an armature object, read in a few foreach_get calls."""
    bones = obj.data.bones
    names = [bone.name for bone in bones]
    index = {name: i for i, name in enumerate(names)}
    parents = np.array([index[bone.parent.name] if bone.parent else -1 for bone in bones], dtype=np.int64)
    tails = np.empty(3 * len(bones), dtype=np.float32)
    bones.foreach_get("tail_local", tails)
    return ArmatureRest(names, parents, bridge.matrix_array(bones, "matrix_local"),
                        tails.reshape(-1, 3).astype(np.float64),
                        np.array(obj.matrix_world, dtype=np.float64))


def pose_matrices(obj: bpy.types.Object, names: list[str]) -> np.ndarray:
    """(B, 4, 4) the named pose bones' evaluated matrices (armature space), as of the last update."""
    pose_bones = obj.pose.bones
    return np.array([pose_bones[name].matrix for name in names], dtype=np.float64)


# --------------------------------------------------------------------------------- posing bones
class CharacterPoser:
    """Turns armature-space matrices of a character's mapped bones into their pose-bone channels.

    bones: the mapped bones, parents before children. Built by `calibrate`, which asks Blender how
    each bone's parent moves. Where a parent turns rigidly with one mapped bone (any plain
    hierarchy; most Rigify controls) `basis` works on whole clips in numpy; a parent that blends
    several bones (Rigify's spine mechanism) is read from Blender's evaluation, one update per frame.
    """

    def __init__(self, obj: bpy.types.Object, bones: list[str], located: list[str], anchors: np.ndarray,
                 offsets: np.ndarray) -> None:
        rest = bridge.matrix_array(obj.data.bones, "matrix_local")
        index = {bone.name: i for i, bone in enumerate(obj.data.bones)}
        self.obj, self.bones, self.located = obj, bones, located
        self.anchors = anchors  # (B,) mapped bone the parent turns with; -1: still; -2: blends, ask Blender
        self.offsets = offsets  # (B, 4, 4) parent pose = G[anchor] @ offset (or offset itself)
        self.relative = np.empty((len(bones), 4, 4))  # inv(rest_parent) @ rest_bone
        for i, name in enumerate(bones):
            parent = obj.data.bones[name].parent
            own = rest[index[name]]
            self.relative[i] = own if parent is None else np.linalg.inv(rest[index[parent.name]]) @ own
        self.relative_inverse = np.linalg.inv(self.relative)  # constant: basis() runs on every live update

    @classmethod
    def calibrate(cls, obj: bpy.types.Object, bones: Iterable[str], located: Iterable[str] = ()) -> CharacterPoser:
        """Find what each mapped bone's parent follows by evaluating the rig in its current pose and
        with every mapped bone turned by a different rotation; the pose is put back afterwards.
        Bones in `located` (the root) also take their location, so their parent must follow in
        position as well as in rotation."""
        bones = _parents_first(obj, list(bones))
        located = [name for name in bones if name in set(located)]
        pose_bones = obj.pose.bones
        parents = [pose_bones[name].parent for name in bones]
        saved = [pose_bones[name].matrix_basis.copy() for name in bones]
        try:
            _update(obj)
            before = _pose_and_parents(obj, bones, parents)
            rng = np.random.default_rng(0)
            for name in bones:
                axis = rng.normal(size=3)
                turn = Quaternion(axis / np.linalg.norm(axis), rng.uniform(0.3, 0.9)).to_matrix().to_4x4()
                pose_bones[name].matrix_basis = pose_bones[name].matrix_basis @ turn
            _update(obj)
            after = _pose_and_parents(obj, bones, parents)
        finally:
            _set_bases(obj, bones, saved)
            _update(obj)
        anchors, offsets = _rigid_anchors(bones, [name in located for name in bones], *before, *after)
        return cls(obj, bones, located, anchors, offsets)

    def basis(self, posed: np.ndarray) -> np.ndarray:
        """(T, B, 4, 4) armature-space matrices of the bones (in self.bones' order) -> their
        matrix_basis (T, B, 4, 4), rotation normalised. Only the rotations of bones not in
        `located` count: their locations stay as they are."""
        anchors = np.maximum(self.anchors, 0)
        parent = np.where((self.anchors >= 0)[:, None, None], posed[:, anchors] @ self.offsets, self.offsets)
        basis = self.relative_inverse @ _affine_inverse(parent) @ posed
        blended = np.flatnonzero(self.anchors == -2)
        if blended.size:
            basis[:, blended] = self._evaluated_basis(posed, basis, blended)
        # Parent matrices may carry a bone's scale: keep the rotation by normalising the columns (exact
        # for uniform scale, which is what rigs use; an SVD would cost most of a clip's conversion).
        basis[..., :3, :3] /= np.linalg.norm(basis[..., :3, :3], axis=-2, keepdims=True)
        return basis

    def _evaluated_basis(self, posed: np.ndarray, basis: np.ndarray, blended: np.ndarray) -> np.ndarray:
        """The blended bones' bases, frame by frame: the others are set, Blender evaluates the rig,
        and each blended bone's basis follows from its parent's evaluated matrix (a blended bone
        below another gets its own update). The rig's pose is put back afterwards."""
        pose_bones = self.obj.pose.bones
        saved = [pose_bones[name].matrix_basis.copy() for name in self.bones]
        levels = _levels(self.obj, [self.bones[i] for i in blended])
        out = np.empty((len(posed), len(blended), 4, 4))
        try:
            for t in range(len(posed)):
                _set_rotations(self.obj, self.bones, basis[t], self.located)
                for level in levels:
                    _update(self.obj)
                    for name in level:
                        i = self.bones.index(name)
                        parent = np.array(pose_bones[name].parent.matrix)
                        frame_basis = np.linalg.inv(self.relative[i]) @ np.linalg.inv(parent) @ posed[t, i]
                        out[t, list(blended).index(i)] = frame_basis
                        _set_rotations(self.obj, [name], frame_basis[None], self.located)
        finally:
            _set_bases(self.obj, self.bones, saved)
            _update(self.obj)
        return out


def _affine_inverse(matrix: np.ndarray) -> np.ndarray:
    """(..., 4, 4) affine matrices (last row 0, 0, 0, 1) -> their inverses, in closed form (the 3x3
    part's adjugate over its determinant). LAPACK's batched inverse of a live update's ~50 parents
    took milliseconds on a busy machine (its thread pool waking up), this a few numpy operations."""
    a, b, c = matrix[..., :3, 0], matrix[..., :3, 1], matrix[..., :3, 2]  # the 3x3 part's columns
    rows = np.stack([np.cross(b, c), np.cross(c, a), np.cross(a, b)], axis=-2)
    inverse3 = rows / (a * rows[..., 0, :]).sum(-1)[..., None, None]
    out = np.zeros_like(matrix)
    out[..., :3, :3] = inverse3
    out[..., :3, 3] = -(inverse3 @ matrix[..., :3, 3:])[..., 0]
    out[..., 3, 3] = 1.0
    return out


def _update(obj: bpy.types.Object) -> None:
    obj.update_tag()
    bpy.context.view_layer.update()


def _set_bases(obj: bpy.types.Object, bones: list[str], bases: list[Matrix]) -> None:
    for name, basis in zip(bones, bases):
        obj.pose.bones[name].matrix_basis = basis


def _set_rotations(obj: bpy.types.Object, bones: list[str], basis: np.ndarray, located: list[str]) -> None:
    """Set the bones' rotations from (B, 4, 4) bases (and the location of `located` ones)."""
    for name, matrix in zip(bones, basis):
        pose_bone = obj.pose.bones[name]
        u, _, vt = np.linalg.svd(matrix[:3, :3])
        location = matrix[:3, 3] if name in located else pose_bone.location
        pose_bone.matrix_basis = Matrix.LocRotScale(location, Matrix(u @ vt).to_quaternion(), pose_bone.scale)


def _levels(obj: bpy.types.Object, names: list[str]) -> list[list[str]]:
    """Bones grouped by how many of the others are their ancestors: each group can be evaluated
    once the groups before it are set."""
    chosen = set(names)
    depth = {name: sum(parent.name in chosen for parent in obj.data.bones[name].parent_recursive) for name in names}
    return [[name for name in names if depth[name] == level] for level in sorted(set(depth.values()))]


def _parents_first(obj: bpy.types.Object, names: list[str]) -> list[str]:
    depth = {name: len(obj.data.bones[name].parent_recursive) for name in names}
    return sorted(names, key=lambda name: depth[name])


def _pose_and_parents(obj: bpy.types.Object, bones: list[str], parents: list) -> tuple[np.ndarray, np.ndarray]:
    posed = pose_matrices(obj, bones)
    parent = np.array([np.array(p.matrix) if p is not None else np.eye(4) for p in parents])
    return posed, parent


def _rigid_anchors(bones: list[str], located: list[bool], posed0: np.ndarray, parent0: np.ndarray,
                   posed1: np.ndarray, parent1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each bone, the mapped bone its parent stays rigidly attached to across the two
    evaluations (-1 when the parent did not move, -2 when it follows no single bone), and the offset
    parent = G[anchor] @ offset. Only rotation counts for bones that take no location."""
    scale = max(1.0, float(np.abs(posed0[:, :3, 3]).max()))
    tolerance = np.full((4, 4), RIGID_TOLERANCE)
    tolerance[:3, 3] = RIGID_TOLERANCE * scale
    anchors = np.full(len(bones), -2)
    offsets = parent0.copy()
    for i in range(len(bones)):
        rows = slice(0, 4) if located[i] else slice(0, 3)
        cols = slice(0, 4) if located[i] else slice(0, 3)

        def same(a: np.ndarray, b: np.ndarray) -> bool:
            return bool(np.all(np.abs(a - b)[rows, cols] <= tolerance[rows, cols]))  # noqa: B023

        if same(parent0[i], parent1[i]):
            anchors[i] = -1
            continue
        for a in range(len(bones)):
            first = np.linalg.inv(posed0[a]) @ parent0[i]
            if a != i and same(first, np.linalg.inv(posed1[a]) @ parent1[i]):
                anchors[i], offsets[i] = a, first
                break
    return anchors, offsets


# ---------------------------------------------------------------------------- writing channels
@dataclass
class Channels:
    """Pose-bone channels of a character for a run of frames: (bone, data path, index) and a
    (T, C) array of values, one column per channel."""

    keys: list[tuple[str, str, int]]
    values: np.ndarray


def channels_from_basis(obj: bpy.types.Object, bones: list[str], basis: np.ndarray, located: Iterable[str]) -> Channels:
    """(T, B, 4, 4) matrix_basis of the bones -> their rotation channels in each bone's own rotation
    mode (quaternions continuous in sign, Euler angles continuous with the bone's current angles and
    from frame to frame, so nothing flips), plus the location of the bones in `located` (the root).
    The quaternion-mode bones are converted together (Live Posing does this on every update)."""
    import torch

    from ..core.rotations import matrix_to_quaternion

    quaternions = matrix_to_quaternion(torch.from_numpy(np.ascontiguousarray(basis[..., :3, :3]))).numpy()
    pose_bones = obj.pose.bones
    modes = [pose_bones[name].rotation_mode for name in bones]
    located = set(located)
    rotations = _rotation_values(pose_bones, bones, modes, quaternions, basis[..., :3, :3])
    keys: list[tuple[str, str, int]] = []
    columns: list[np.ndarray] = []
    for i, (name, mode, values) in enumerate(zip(bones, modes, rotations)):
        pose_bone = pose_bones[name]
        path = pose_bone.path_from_id(ROTATION_PATHS.get(mode, "rotation_euler"))
        keys += [(name, path, c) for c in range(values.shape[1])]
        columns.append(values)
        if name in located:
            keys += [(name, pose_bone.path_from_id("location"), c) for c in range(3)]
            columns.append(basis[:, i, :3, 3])
    return Channels(keys, np.concatenate(columns, axis=1))


def _rotation_values(pose_bones, bones: list[str], modes: list[str], quaternions: np.ndarray,
                     rotations: np.ndarray) -> list[np.ndarray]:
    """Each bone's rotations ((T, B, 4) quaternions and the (T, B, 3, 3) matrices) -> a (T, 4)
    array of quaternions / axis-angles or a (T, 3) one of Euler angles in the bone's mode."""
    out: list[np.ndarray | None] = [None] * len(bones)
    by_quaternion = [i for i, mode in enumerate(modes) if mode in ("QUATERNION", "AXIS_ANGLE")]
    if by_quaternion:
        chosen = quaternions[:, by_quaternion].copy()
        current = np.array([tuple(pose_bones[bones[i]].rotation_quaternion) for i in by_quaternion])
        chosen[0] *= np.where(np.sum(chosen[0] * current, axis=-1) < 0, -1.0, 1.0)[:, None]
        chosen = bridge.continuous_quaternions(chosen)
        for k, i in enumerate(by_quaternion):
            if modes[i] == "QUATERNION":
                out[i] = chosen[:, k]
            else:
                out[i] = np.array([[angle, *axis] for axis, angle in (Quaternion(q).to_axis_angle() for q in chosen[:, k])])
    for i, mode in enumerate(modes):
        if out[i] is None:
            previous = pose_bones[bones[i]].rotation_euler.copy()
            angles = np.empty((len(rotations), 3))
            for t, rotation in enumerate(rotations[:, i]):
                previous = Matrix(rotation).to_euler(mode, previous)
                angles[t] = previous
            out[i] = angles
    return out


def set_channels(obj: bpy.types.Object, channels: Channels, row: int = 0) -> None:
    """Set the pose bones' channels to one row (frame) of `channels`: each property of all bones is
    read and written back in one foreach call (Live Posing does this on every update, so which
    values go where is worked out once per armature and channel list: see _channel_groups)."""
    row_values = channels.values[row]
    for prop, bones, index, columns in _channel_groups(obj, channels.keys):
        bridge.write_pose_bones(obj, prop, bones, index, row_values[columns])
    # foreach_set tags nothing: without a tag the pose would not be evaluated again. The transform tag
    # re-evaluates the pose and what hangs from it (constraints, skinned meshes) without copying
    # the whole armature into the evaluated scene again, as a bare update_tag() does: on a generated
    # Rigify rig (706 bones) that copy was 2-3.5 ms of each Live Posing update.
    obj.update_tag(refresh={"OBJECT"})


# (armature session id, channel keys) -> (the keys' bones, per property (name, bone slots, channel
# index, column) arrays); cleared with the posers
_groups: dict[tuple[int, tuple], tuple[list[str], list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]]] = {}


def _channel_groups(obj: bpy.types.Object, keys: list[tuple[str, str, int]]
                    ) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """The channels grouped by pose-bone property: (property, positions of their bones in
    obj.pose.bones, channel index, column in Channels.values), each (K,). Sorting ~200 data paths
    cost Live Posing ~0.5 ms per update on a generated Rigify rig, so the grouping is kept; the bone
    positions come from pose_bone_positions, which checks them on every call."""
    key = (obj.session_uid, tuple(keys))
    cached = _groups.get(key)
    if cached is None:
        names = list(dict.fromkeys(bone for bone, _, _ in keys))
        slot = {name: i for i, name in enumerate(names)}
        by_prop: dict[str, list[tuple[int, int, int]]] = {}
        for column, (bone, path, index) in enumerate(keys):
            by_prop.setdefault(path.rpartition(".")[2], []).append((slot[bone], index, column))
        if len(_groups) > 32:  # jobs with other bone lists leave theirs: keep a few
            _groups.clear()
        cached = _groups[key] = (names, [(prop, *np.array(entries, dtype=np.int64).T) for prop, entries in by_prop.items()])
    positions = np.asarray(bridge.pose_bone_positions(obj, cached[0]), dtype=np.int64)
    return [(prop, positions[slots], index, columns) for prop, slots, index, columns in cached[1]]


def write_new_action(obj: bpy.types.Object, channels: Channels, frames: np.ndarray, name: str) -> bpy.types.Action:
    """Key the channels at `frames` into a new action assigned to the character; its previous action
    keeps a fake user so it stays in the file."""
    bridge.keep_current_action(obj)
    action, channelbag = bridge.new_action(obj, name)
    for (bone, path, index), column in zip(channels.keys, channels.values.T):
        bridge.write_curve(channelbag, path, index, bone, frames, column)
    return action


def replace_keys(obj: bpy.types.Object, channels: Channels, frames: np.ndarray, removed: np.ndarray) -> None:
    """Key the channels at `frames` in the character's action (one is made if it has none), replacing
    keys already there, and delete the keys at the `removed` frames."""
    from bpy_extras.anim_utils import action_ensure_channelbag_for_slot

    animation_data = obj.animation_data or obj.animation_data_create()
    if animation_data.action is None:
        bridge.new_action(obj, f"{obj.name}Action")
    channelbag = action_ensure_channelbag_for_slot(animation_data.action, animation_data.action_slot)
    drop = np.union1d(frames, removed)
    for (bone, path, index), column in zip(channels.keys, channels.values.T):
        curve = channelbag.fcurves.ensure(path, index=index, group_name=bone)
        _remove_keys(curve, drop)
        bridge.add_curve_keys(curve, frames, column)
    for curve in channelbag.fcurves:  # channels no longer mapped lose their keys at removed frames too
        _remove_keys(curve, removed)


def _remove_keys(curve: bpy.types.FCurve, frames: np.ndarray) -> None:
    points = curve.keyframe_points
    co = np.empty(2 * len(points), dtype=np.float32)
    points.foreach_get("co", co)
    doomed = np.flatnonzero(np.isin(co[0::2], np.asarray(frames, dtype=np.float32)))
    for index in doomed[::-1]:
        points.remove(points[int(index)], fast=True)
    if doomed.size:
        curve.update()


# -------------------------------------------------------------------- following the body's jobs
@dataclass
class BodyState:
    """What a job may change on a body: its action and the keys of its pose channels, and its pose."""

    action: bpy.types.Action | None
    keys: dict[tuple[str, int], np.ndarray]  # (data path, index) -> (N, 2) keys (frame, value)
    pose: np.ndarray
    betas: np.ndarray


def body_state(body: bpy.types.Object) -> BodyState:
    names = body.vposer_body.joint_names()
    quaternions, location = bridge.get_pose(body, names)
    animation_data = body.animation_data
    action = animation_data.action if animation_data else None
    return BodyState(action, bridge.pose_keys(body, names), np.concatenate([quaternions.ravel(), location]),
                     np.array(body.vposer_body.betas))


def changed_frames(before: BodyState, after: BodyState) -> tuple[np.ndarray, np.ndarray]:
    """Frames whose keys a job added or changed, and frames whose keys it removed, on one action."""
    added, removed = [], []
    for channel in set(before.keys) | set(after.keys):
        old = before.keys.get(channel, np.empty((0, 2)))
        new = after.keys.get(channel, np.empty((0, 2)))
        old_map = dict(map(tuple, old))
        added += [frame for frame, value in new if old_map.get(frame) != value]
        removed += list(np.setdiff1d(old[:, 0], new[:, 0]))
    return np.unique(added), np.unique(removed)


def drives_character(cls: type[bpy.types.Operator]) -> type[bpy.types.Operator]:
    """Make an operator that writes a body's pose or keys also write them onto the body's bound
    character: the one place where jobs reach characters. Wraps execute, and for modal jobs invoke
    (which notes the state) and modal (which follows once the job finishes)."""

    def note(context: bpy.types.Context) -> tuple[bpy.types.Object, BodyState, tuple] | None:
        """The body's state before the job, after giving it the character's pose (and that pose as
        the body had it, to put back if the job is refused); None without a bound character."""
        from .character_transfer import pull_pose
        from .targets import driven_body

        body = driven_body(context)
        character = bound_character(body) if body is not None else None
        if character is None:
            return None
        shown = bridge.get_pose(body, body.vposer_body.joint_names())
        pull_pose(context, character, body)  # the job starts from the pose the user sees
        return body, body_state(body), shown

    def after(self: bpy.types.Operator, context: bpy.types.Context, noted: tuple | None,
              result: set[str]) -> set[str]:
        if noted is None:
            return result
        body, before, shown = noted
        if "FINISHED" not in result:  # a refused job leaves the body as it was, too
            if "RUNNING_MODAL" not in result:
                bridge.set_pose(body, body.vposer_body.joint_names(), *shown)
            return result
        try:
            message = follow_body(context, body, before, getattr(self, "_vposer_foot_contacts", None))
        except ValueError as error:  # CharacterError, and core's for a map or pose it cannot use
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        if message:
            self.report({"INFO"}, message)
        return result

    execute = cls.execute

    @wraps(execute)
    def run_execute(self: bpy.types.Operator, context: bpy.types.Context) -> set[str]:
        noted = note(context)
        return after(self, context, noted, execute(self, context))

    cls.execute = run_execute
    if hasattr(cls, "modal"):  # Blender checks the argument count of invoke and modal
        invoke, modal = cls.invoke, cls.modal

        @wraps(invoke)
        def run_invoke(self: bpy.types.Operator, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
            self._vposer_noted = note(context)
            return after(self, context, self._vposer_noted, invoke(self, context, event))

        @wraps(modal)
        def run_modal(self: bpy.types.Operator, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
            return after(self, context, getattr(self, "_vposer_noted", None), modal(self, context, event))

        cls.invoke, cls.modal = run_invoke, run_modal
    return cls


def follow_body(context: bpy.types.Context, body: bpy.types.Object, before: BodyState, contacts=None) -> str:
    """Write what a job changed on the body onto its character; returns a line for the report.
    A job that refitted the body's shape (Retarget's Fit Shape) gets the shape fitted to the
    character back once its motion is written. contacts: foot contacts of a new action's frames
    (core.foot_contact.FootContacts, a row per keyed frame, or "body"): the character's feet are
    held where they are planted (Retarget's Foot Lock); None: the root follows the body's."""
    from .character_transfer import body_to_character

    character = bound_character(body)
    after = body_state(body)
    names = body.vposer_body.joint_names()
    shape = ""
    if not np.array_equal(after.betas, before.betas):
        body.vposer_body.betas = before.betas
        shape = f"; {body.name} keeps the shape fitted to {character.name}"
    keyed = ""
    fresh = True  # the first transfer calibrates the poser, the others reuse it
    if after.action is not None and after.action != before.action:
        frames = _keyed_frames(after)
        if frames.size:
            clip = body_to_character(context, character, body, *bridge.read_action(body, names, frames), fresh,
                                     contacts)
            fresh = False
            action_name = after.action.name.replace(body.name, character.name)
            if action_name == after.action.name:
                action_name = f"{after.action.name} on {character.name}"
            action = write_new_action(character, clip, frames, action_name)
            keyed = f"{character.name} keyed as action '{action.name}' ({frames.size} frames)"
    elif after.action is not None:
        added, removed = changed_frames(before, after)
        if added.size or removed.size:
            clip = body_to_character(context, character, body, *bridge.read_action(body, names, added), fresh)
            fresh = False
            replace_keys(character, clip, added, removed)
            keyed = f"{character.name} keyed on {added.size} frames"
    if keyed or not np.array_equal(after.pose, before.pose):
        follow_pose(context, body, fresh)
    return (keyed or f"{character.name} posed") + shape if keyed or shape else ""


def follow_pose(context: bpy.types.Context, body: bpy.types.Object, fresh: bool = False) -> None:
    """Give the character the body's current pose (Solve Pose, Live Posing)."""
    from .character_transfer import body_to_character

    character = bound_character(body)
    if character is None:
        return
    quaternions, location = bridge.get_pose(body, body.vposer_body.joint_names())
    set_channels(character, body_to_character(context, character, body, quaternions[None], location[None], fresh))


def _keyed_frames(state: BodyState) -> np.ndarray:
    frames = [keys[:, 0] for keys in state.keys.values()]
    return np.unique(np.concatenate(frames)) if frames else np.empty(0)


class _Posers:
    """Calibrated posers per character for this session. A job calibrates afresh (the rig or what
    its unmapped bones do may have changed); Live Posing reuses the last one, as it runs often."""

    def __init__(self) -> None:
        self._cache: dict[int, tuple[tuple, CharacterPoser]] = {}

    def get(self, context: bpy.types.Context, character: bpy.types.Object, bones: list[str], located: list[str],
            fresh: bool = True) -> CharacterPoser:
        key = (tuple(bones), tuple(located))
        cached = self._cache.get(character.session_uid)
        if fresh or cached is None or cached[0] != key:
            cached = self._cache[character.session_uid] = (key, CharacterPoser.calibrate(character, bones, located))
        return cached[1]

    def clear(self) -> None:
        self._cache.clear()
        _groups.clear()
        bridge.forget_positions()


posers = _Posers()


def attach() -> None:
    bpy.types.Object.vposer_character = bpy.props.PointerProperty(type=VPoserCharacter)


def detach() -> None:
    from .character_transfer import forget_bindings

    posers.clear()
    forget_bindings()
    del bpy.types.Object.vposer_character


CLASSES: tuple[type, ...] = (VPoserCharacterBone, VPoserCharacter)
