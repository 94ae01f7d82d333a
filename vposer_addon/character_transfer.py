"""Blender side of core.character: bind a character armature to a body, and carry poses across.

Core does the binding (bone map, rest alignment, scale, body shape fit) and the transfer; this
module reads the armature for it, places the body on the character and turns core's posed bone
orientations into the character's channels through its calibrated poser (character.py).

Where the body sits. Core's model space for a character is its armature space turned to Y up (by
the armature object's rotation at bind time) and in metres; the character's pelvis is `scale`
times the body's. The body is parented to the character with matrix_basis = to_model^T * scale /
unit_scale, so the body's model space lands on the character's in the scene, and both move
together when the character object is moved.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import bpy
import numpy as np
from mathutils import Matrix

from ..core.errors import VPoserError
from . import bridge
from .character import (Channels, CharacterPoser, channels_from_basis, posers, read_armature,
                        show_body)

if TYPE_CHECKING:
    from ..core.character import CharacterBinding, CharacterSkeleton


class TransferError(VPoserError):
    """A bone map or character cannot be used; the message names the file or armature and says why."""


def skeleton_of(character: bpy.types.Object, world: np.ndarray | None = None,
                keep: set[str] | None = None) -> CharacterSkeleton:
    """Core's skeleton of an armature (bones parents first). world: the object matrix whose
    rotation sets the model axes (the one stored at bind time; None: the object's current one).
    keep: only these bones and their ancestors (the others, e.g. face and mechanism bones that
    no body joint drives, cost time in every transfer and change nothing in it)."""
    from ..core.character import CharacterSkeleton

    rest = read_armature(character)
    order = _parents_first(rest.parents)
    if keep is not None:
        kept = np.zeros(len(rest.names), dtype=bool)
        for name in keep:
            i = rest.names.index(name)
            while i >= 0 and not kept[i]:
                kept[i], i = True, rest.parents[i]
        order = order[kept[order]]
    position = np.full(len(rest.names), -1, dtype=np.int64)
    position[order] = np.arange(len(order))
    parents = np.array([position[p] if p >= 0 else -1 for p in rest.parents[order]], dtype=np.int64)
    return CharacterSkeleton.from_arrays([rest.names[i] for i in order], parents, rest.matrix_local[order],
                                         rest.tails[order], rest.world if world is None else world,
                                         source=character.name)


def _parents_first(parents: np.ndarray) -> np.ndarray:
    depth = np.zeros(len(parents), dtype=np.int64)
    for i in range(len(parents)):
        j, d = i, 0
        while parents[j] >= 0:
            j, d = parents[j], d + 1
        depth[i] = d
    return np.argsort(depth, kind="stable")


def bind(context: bpy.types.Context, character: bpy.types.Object, body: bpy.types.Object | None,
         mapping: dict[str, list[str]] | None) -> tuple[bpy.types.Object, str]:
    """Bind the character (auto-detected map, or `mapping`) to `body` (None: a new body), fit the
    body to it, give the body the character's pose; returns the body and a line for the report.
    Raises TransferError (nothing changed) when the map or skeleton cannot be used."""
    from ..core.character import BoneMapError, CharacterError, bind_character

    skeleton = skeleton_of(character)
    model = body.vposer_body.body_model() if body is not None else _default_model(context)
    try:
        preset = _preset_from(mapping, character.vposer_character.preset) if mapping else "auto"
        binding = bind_character(skeleton, preset, model=model)
    except (BoneMapError, CharacterError) as error:
        raise TransferError(str(error)) from None
    if body is None:
        body = _add_body(context, character)
    settings = character.vposer_character
    settings.set_mapping(binding.character_map())
    settings.preset = binding.bone_map.name
    settings.scale = binding.scale
    settings.bind_world = [value for row in np.array(character.matrix_world) for value in row]
    settings.body = body
    body.vposer_character.character = character
    _place_body(body, character, binding)
    if binding.betas is not None:
        betas = np.zeros(len(body.vposer_body.betas))
        betas[: min(len(betas), len(binding.betas))] = binding.betas.numpy()[: len(betas)]
        body.vposer_body.betas = betas
    _use_fk_switches(character)
    show_body(body, settings.body_display)
    forget_bindings()
    posers.clear()
    pull_pose(context, character, body)
    fitted = "shape and scale fitted" if binding.betas is not None else "scale fitted"
    return body, (f"{settings.preset} map, {sum(map(len, binding.character_map().values()))} bones, "
                  f"{fitted} (character {binding.scale:.3g} x the body)")


def _default_model(context: bpy.types.Context):  # noqa: ANN202 - a core BodyModel
    """The preferences' default body model: the one Add Body builds, so the fit is the body's."""
    from .preferences import get_preferences
    from .properties import load_body_model

    preferences = get_preferences(context)
    choice = preferences.default_body if preferences else "ADULT"
    if choice == "USER_FILE":
        return load_body_model("FILE", bpy.path.abspath(preferences.model_path))
    return load_body_model(choice)


def _add_body(context: bpy.types.Context, character: bpy.types.Object) -> bpy.types.Object:
    """A new body (Add Body's, with the preferences' default model) for the character."""
    active = context.view_layer.objects.active
    selected = list(context.selected_objects)
    bpy.ops.vposer.add_body(source="DEFAULT", name=f"{character.name} Body")
    body = context.view_layer.objects.active
    for obj in selected:
        obj.select_set(True)
    context.view_layer.objects.active = active
    return body


def _place_body(body: bpy.types.Object, character: bpy.types.Object, binding: CharacterBinding) -> None:
    """Parent the body to the character so its model space is the character's (see module doc)."""
    placement = np.eye(4)
    placement[:3, :3] = binding.to_model.numpy().T * binding.scale / binding.unit_scale
    body.parent = character
    body.parent_type = "OBJECT"
    body.matrix_parent_inverse.identity()
    body.matrix_basis = Matrix(placement.tolist())


RIGIFY_FK_SWITCHES = {"IK_FK": 1.0, "neck_follow": 1.0, "head_follow": 1.0}


def _use_fk_switches(character: bpy.types.Object) -> None:
    """A generated Rigify rig is posed through its FK controls: its limbs' IK/FK switches go to FK,
    and the neck and head follow the spine (instead of half following the torso), so each control
    turns with one other control and a clip converts in numpy rather than frame by frame."""
    for pose_bone in character.pose.bones:
        for switch, value in RIGIFY_FK_SWITCHES.items():
            if switch in pose_bone.keys():
                pose_bone[switch] = value


def _preset_from(mapping: dict[str, list[str]], preset: str = ""):  # noqa: ANN202 - a core SkeletonPreset
    """A bone map from a joint -> bones table. preset: the built-in map it was detected as, whose
    name and `segments` (the bones giving a joint's rest direction, e.g. a Rigify rig's FK spine)
    it keeps for the joints still mapped; otherwise "custom"."""
    from ..core.mocap.skeletons import PRESETS, SkeletonPreset

    joints = {joint: tuple(bones) for joint, bones in mapping.items()}
    if preset not in PRESETS:
        return SkeletonPreset("custom", joints)
    segments = {joint: bone for joint, bone in PRESETS[preset].segments.items() if joint in joints}
    return SkeletonPreset(preset, joints, segments=segments)


# -------------------------------------------------------------------------------- the binding in use
_bindings: dict[int, tuple[tuple, CharacterBinding]] = {}


def binding_of(character: bpy.types.Object, body: bpy.types.Object) -> CharacterBinding:
    """The core binding of a bound pair, rebuilt (without refitting) when the map, the body's shape
    or the stored scale changed; the body at its current shape stands for the fitted one."""
    import torch

    from ..core.character import bind_character

    settings = character.vposer_character
    mapping = settings.mapping()
    key = (tuple((joint, tuple(bones)) for joint, bones in mapping.items()), settings.preset, settings.scale,
           tuple(body.vposer_body.betas), tuple(settings.bind_world))
    cached = _bindings.get(character.session_uid)
    if cached is None or cached[0] != key:
        model = body.vposer_body.body_model()
        with torch.no_grad():
            rest = model.rest_joints(torch.as_tensor(body.vposer_body.betas_array(), dtype=model.dtype)[None])[0]
        world = np.array(settings.bind_world).reshape(4, 4)
        preset = _preset_from(mapping, settings.preset)
        skeleton = skeleton_of(character, world, set(preset.source_names()) & set(character.data.bones.keys()))
        binding = bind_character(skeleton, preset, rest.double().numpy(),
                                 model.parents.numpy(), list(model.joint_names), scale=settings.scale)
        cached = _bindings[character.session_uid] = (key, binding)
    return cached[1]


def forget_bindings() -> None:
    """Drop the cached bindings (the add-on is unregistered, or a bind changed them)."""
    _bindings.clear()
    _index[:] = [None, None, []]


def poser_of(context: bpy.types.Context, character: bpy.types.Object, binding: CharacterBinding,
             fresh: bool = True) -> CharacterPoser:
    names = binding.skeleton.names
    bones = [names[b] for chain in binding.joint_bones for b in chain]
    return posers.get(context, character, bones, [names[binding.root_bone]], fresh=fresh)


def body_to_character(context: bpy.types.Context, character: bpy.types.Object, body: bpy.types.Object,
                      quaternions: np.ndarray, translations: np.ndarray, fresh: bool = True,
                      contacts=None) -> Channels:
    """Body poses ((T, J, 4) local quaternions, (T, 3) root locations) -> the character's channels
    for them (its mapped bones, each in its own rotation mode; the root bone's location too).
    contacts: foot contacts, a row per pose (or "body"), whose planted feet the character keeps
    still (core.foot_contact); None: none held."""
    import torch

    from ..core.character import body_to_character as transfer
    from ..core.character import character_fk, rig_world_rotations
    from ..core.rotations import quaternion_to_matrix

    binding = binding_of(character, body)
    poser = poser_of(context, character, binding, fresh)
    local = quaternion_to_matrix(torch.as_tensor(quaternions, dtype=torch.float64))
    current = current_quaternions(character, binding.skeleton.names)
    pose = transfer(binding, local, torch.as_tensor(translations, dtype=torch.float64), current=current)
    if contacts is not None and len(quaternions) > 1:
        pose = _lock_feet(context, binding, local, translations, pose, contacts, current)
    # The poser's bones are the mapped ones (the root bone among them): the transfer's own world
    # rotations serve, and only the located root bone's head counts (poser.basis), so no second FK.
    # A root bone below another posed bone (not seen in rigs) needs every head: character_fk then.
    index = _poser_index(binding, poser)
    root = index.index(binding.root_bone)
    if poser.anchors[root] >= 0:
        heads, world = character_fk(binding, pose.quaternions, pose.location)
    else:
        heads, world = pose.root_head.unsqueeze(1).expand(-1, binding.skeleton.num_bones, 3), pose.world
    posed = np.zeros((len(quaternions), len(index), 4, 4))
    posed[..., :3, :3] = rig_world_rotations(binding, world).numpy()[:, index]
    posed[..., :3, 3] = heads.numpy()[:, index] @ binding.to_model.numpy() / binding.unit_scale
    posed[..., 3, 3] = 1.0
    return channels_from_basis(character, poser.bones, poser.basis(posed), poser.located)


_index: list = [None, None, []]  # the last (binding, poser, index): Live Posing asks on every update


def _poser_index(binding: CharacterBinding, poser: CharacterPoser) -> list[int]:
    """The poser's bones' positions in the binding's skeleton."""
    if _index[0] is not binding or _index[1] is not poser:
        position = {name: i for i, name in enumerate(binding.skeleton.names)}
        _index[:] = [binding, poser, [position[name] for name in poser.bones]]
    return _index[2]


def _lock_feet(context: bpy.types.Context, binding: CharacterBinding, local, translations: np.ndarray, pose,
               contacts, current: np.ndarray):
    """The character pose with its root moved so its feet stay where `contacts` are planted (see
    core.foot_contact); contacts that do not cover the frames leave the pose as it is."""
    import torch

    from ..core.character import character_fk
    from ..core.foot_contact import body_contacts, lock_character_feet

    fps = bridge.scene_frame_rate(context.scene)
    transl = torch.as_tensor(translations, dtype=torch.float64)
    if isinstance(contacts, str) and contacts == "body":
        contacts = body_contacts(binding, local, transl, fps)
    if contacts.planted.shape[0] != len(transl):
        return pose
    heads, _ = character_fk(binding, pose.quaternions, pose.location)
    return lock_character_feet(binding, local, transl, heads, contacts, fps, current=current).pose


def current_quaternions(character: bpy.types.Object, names: list[str]) -> np.ndarray:
    """(N, 4) the named pose bones' current rotations as quaternions (w, x, y, z), whatever their
    mode: every bone's matrix_basis in one read, converted at once."""
    import torch

    from ..core.rotations import matrix_to_quaternion

    pose_bones = character.pose.bones
    basis = bridge.matrix_array(pose_bones, "matrix_basis")[bridge.pose_bone_positions(character, names), :3, :3]
    basis /= np.linalg.norm(basis, axis=-2, keepdims=True)  # a bone's scale is no rotation
    return matrix_to_quaternion(torch.from_numpy(basis)).numpy()


def pull_pose(context: bpy.types.Context, character: bpy.types.Object, body: bpy.types.Object) -> None:
    """Give the body the character's current pose, so solving starts from what the user sees: the
    mapped bones as Blender evaluates them (a generated Rigify rig's fingers and upper arms hang
    from bones its constraints move, which the pose channels alone do not tell)."""
    from ..core.character import posed_character_to_body
    from ..core.rotations import axis_angle_to_quaternion

    binding = binding_of(character, body)
    names = binding.skeleton.names
    character.update_tag()  # a switch set from Python (Bind's FK switches) tags nothing
    posed = character.evaluated_get(context.evaluated_depsgraph_get()).pose.bones  # the original's order
    matrices = bridge.matrix_array(posed, "matrix")[bridge.pose_bone_positions(character, names)]
    rotations = matrices[:, :3, :3] / np.linalg.norm(matrices[:, :3, :3], axis=-2, keepdims=True)  # no bone scale
    poses, transl = posed_character_to_body(binding, rotations[None], matrices[binding.root_bone, :3, 3][None])
    joint_names = body.vposer_body.joint_names()
    quaternions = axis_angle_to_quaternion(poses[0]).numpy()
    bridge.set_pose(body, joint_names[: len(quaternions)], quaternions, transl[0].numpy())


# ------------------------------------------------------------------------------------- map files
def save_map(path: str, mapping: dict[str, list[str]], preset: str = "") -> None:
    """The map as core's bone-map JSON (a skeleton preset: {"joints": {joint: bone or [bones]}}).
    preset: the built-in map it was detected as; its name and `segments` are written too, so the
    map loaded back binds as it did (a Rigify rig's FK spine needs its segments)."""
    with open(bpy.path.abspath(path), "w", encoding="utf-8") as file:
        json.dump(_preset_from(mapping, preset).to_dict(), file, indent=1)


def map_preset_name(path: str) -> str:
    """The built-in map a saved map file names (whose segments a bind then uses), else ""."""
    from ..core.mocap.skeletons import PRESETS, load_preset

    name = load_preset(bpy.path.abspath(path)).name
    return name if name in PRESETS else ""


def load_map(path: str, bone_names: list[str]) -> dict[str, list[str]]:
    """A bone-map JSON resolved to an armature's bones; TransferError names the file and what is wrong."""
    from ..core.mocap.skeletons import load_preset

    path = bpy.path.abspath(path)
    try:
        preset = load_preset(path)
    except (ValueError, KeyError) as error:
        raise TransferError(f"{path}: not a bone map ({error.args[0] if error.args else error})") from None
    resolved = preset.resolve(bone_names)
    lacking = [bone for bone in preset.source_names() if bone not in set(resolved.source_names())]
    if lacking:
        raise TransferError(f"{path}: names bones the armature lacks: {', '.join(lacking[:8])}")
    return {joint: list(resolved.sources(joint)) for joint in resolved.joints}
