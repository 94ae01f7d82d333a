"""A user's own humanoid rig as a view of the body: bind, then transfer poses both ways (no bpy).

Contract (the Blender side and scripts/retarget.py build on it; shapes are batched, float64):

* `CharacterSkeleton`: bone names, parents (-1 roots; parents before children), rest head and tail
  positions (N, 3) and rest orientations (N, 3, 3) in the rig's own space and units, plus
  `to_model` (3, 3), the rotation taking rig axes to model axes (SMPL: Y up, faces +Z, left at +X;
  None: inferred from the rest skeleton when binding) and `unit_scale` (metres per rig unit; None:
  the bone map's, else guessed from the leg length). A rest orientation is the frame a pose
  bone's rotation is local to: a Blender bone's `matrix_local` rotation (Y runs head -> tail, roll
  turns X/Z about it), or for BVH the joint's world rotation in the rest pose (identity for the
  zero-rotation pose). Constructors: `CharacterSkeleton.from_bvh(motion_or_path, rest_frame=None)`
  and `CharacterSkeleton.from_arrays(names, parents, matrix_local (N, 4, 4), tails (N, 3),
  world_matrix (4, 4))` (Blender: armature space, the object's world matrix; Blender's Z-up world
  is turned into model space here).
* `bind_character(skeleton, bone_map, body_rest (J, 3), body_parents, body_names)` ->
  `CharacterBinding`: the bone map (a `core.mocap.skeletons.SkeletonPreset`, resolved to the
  rig's names; "auto" detects it), the per-joint rest alignment and the scale. Raises
  `BoneMapError` naming missing required joints, or refusing a non-humanoid rig.
* `body_to_character(binding, poses (B, J, 3) axis-angle, transl (B, 3), current=None)` ->
  `CharacterPose(quaternions (B, N, 4) wxyz pose-bone rotations in each bone's rest frame,
  location (B, 3) of `binding.root_bone` in its rest frame, rig units, and what it computed on the
  way: world (B, N, 3, 3) the mapped bones' D, root_head (B, 3))`. Unmapped bones keep
  `current` (B, N, 4) or (N, 4) quaternions, else their rest.
* `character_to_body(binding, quaternions (B, N, 4), location (B, 3))` -> (poses (B, J, 3), transl (B, 3));
  `posed_character_to_body(binding, rotations (B, N, 3, 3), root_head (B, 3))` the same from the
  bones' posed orientations as the host evaluates them (rigs whose parents move by constraints).
* `character_fk(binding, quaternions, location)` -> heads (B, N, 3) model-space metres and world
  rotation deltas D (B, N, 3, 3) (posed world orientation = D @ rest, model space);
  `rig_world_rotations(binding, D)` -> the bones' posed orientations in rig space (a BVH joint's
  world rotation, a Blender pose bone's `matrix` rotation in armature space).
* `fit_body(binding, model)` -> (betas, scale): the body's shape and a uniform scale fitted to the
  character's rest joints; `bind_character(..., model=model)` fits and binds in one call.
* `limb_direction_errors(binding, body_joints, heads)`: per limb, degrees between the body's and
  the character's bone directions (a check and the CLI's report).
* `rig_points_to_body(binding, points)` / `body_points_to_rig`: positions between the rig's space
  (units) and the body's model space (targets placed on the character, and back).
* `CharacterBinding.character_map()`: body joint -> bone names, as reports and map editors show it.
* Headless helpers: `character_motion` (a solved body motion on a character, its planted feet
  held by core.foot_contact's root pass unless contacts=None), `bvh_channels` /
  `armature_bvh` + `armature_bvh_channels` (BVH output), `source_agreement` / `clip_agreement`
  (limb directions and hand/foot rotations against a mocap source).

The parents are the rig's own bone parents. A bone whose parent is driven by constraints (a
generated Rigify rig's FK controls sit under MCH- bones) has a pose-bone rotation relative to that
parent's rest as computed here (unmapped parents keep `current`), not to its evaluated pose: such
rigs are read back with `posed_character_to_body` from the host's evaluated bones (the Blender
side does), and written through a poser that knows what each parent follows (vposer_addon).

The math (DESIGN.md "Characters"). All in model space after the rig's axes and units. The body's
joints are world-aligned at rest (R_j0 = I) and its posed world rotations are G_j. A character
bone b has rest orientation R_b0 and posed orientation D_b R_b0 (D_b: its world rotation from
rest). For a body joint j and its chain of bones, A_j is the rotation taking the rig's rest bone
onto the body's rest bone: at the pelvis the one matching both rests' frames (pelvis -> upper body
up, right -> left hip); below it, the parent's A carries the bone rigidly (a limb continues), then
the least rotation bends the bone's direction (the chain's first head to the next mapped joint's
first head, or the head -> tail of the bone the map's `segments` names, for controls that turn
about a pivot away from their segment: Rigify's FK spine) onto the body's (joint -> child):
A_j = min(A_p d_rig -> d_body) A_p. A `segments` bone of the pelvis gives its up direction. A rest that bends
a limb (A-pose arms, flexed elbows, splayed legs) is undone exactly, without adding twist; the
bones' roll is in their rest orientations, which the formula never needs to read. Joints without a
direction (head, toes, finger tips) keep their parent's A.
Body -> character: the chain's last bone gets D = G_j A_j; earlier bones of a chain get a share of
the joint's local rotation (spine and neck: a slerp fraction of all of it, limbs: the swing and a
fraction of the twist about the bone, so split limb segments stay straight); unmapped bones keep
their local rotation. A pose bone's rotation is R_b0^T (D_p^T D_b) R_b0. Character -> body:
G_j = D_last A_j^T; unmapped body joints follow their parent. The root translation: the character's
pelvis bone's head sits at `scale` times the body's pelvis joint (model space, about the origin, so
a floor at y = 0 stays the floor); `scale` is character metres per body metre (leg lengths, or the
fitted scale).
A bone map's chain for one joint lists bones root to tip; a bone named by several joints goes to
the deepest of them (cmu_daz's spine2 = abdomen + chest: abdomen drives spine2, chest spine3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from torch import Tensor

from .errors import VPoserError
from .mocap.bvh import (
    BVHMotion,
    depth_first_order,
    format_bvh,
    forward_kinematics,
    motion_channels,
    parse_bvh,
    read_bvh,
    rest_positions,
)
from .mocap.skeletons import (
    TARGET_DIRECTION_CHILD,
    BoneMapError,
    SkeletonPreset,
    check_required,
    default_target_names,
    detect_preset,
    load_preset,
)
from .mocap.transfer import (
    TransferSetup,
    axes_matrix,
    build_transfer,
    infer_axes,
    minimal_rotation,
    skeleton_fk,
    source_rest,
)
from .rotations import (
    axis_angle_to_matrix,
    matrix_to_axis_angle,
    matrix_to_quaternion,
    quaternion_to_axis_angle,
    quaternion_to_matrix,
)

__all__ = [
    "BLENDER_TO_MODEL",
    "CharacterError",
    "BoneMapError",
    "CharacterSkeleton",
    "CharacterBinding",
    "CharacterPose",
    "bind_character",
    "body_to_character",
    "character_to_body",
    "posed_character_to_body",
    "character_fk",
    "rig_world_rotations",
    "rig_points_to_body",
    "body_points_to_rig",
    "fit_body",
    "limb_direction_errors",
    "source_agreement",
    "character_motion",
    "clip_agreement",
    "bvh_channels",
    "armature_bvh",
    "armature_bvh_channels",
    "LIMB_JOINTS",
    "END_JOINTS",
]

# Blender's world (Z up, a character facing -Y) -> model space: p_model = (x, z, -y).
BLENDER_TO_MODEL = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
_SPREAD_WHOLE = ("pelvis", "spine1", "spine2", "spine3", "neck", "head")  # chains bend along their length
# Limbs whose direction a character must follow (the collars are left out: mocap skeletons and
# rigs place the clavicle too differently for its direction to be compared).
LIMB_JOINTS = tuple(f"{side}_{joint}" for side in ("left", "right")
                    for joint in ("hip", "knee", "ankle", "shoulder", "elbow", "wrist"))  # fmt: skip
END_JOINTS = ("left_wrist", "right_wrist", "left_ankle", "right_ankle")  # hands and feet
_UNIT_GUESSES = (1.0, 0.01, 0.001, 0.0254)  # metres, centimetres, millimetres, inches
_LEG_METRES = 0.85  # a typical adult's hip -> ankle length, for guessing units


class CharacterError(VPoserError):
    """A character skeleton or pose is malformed; the message names the field."""


# ----------------------------------------------------------------------------------------------
# The character's skeleton


@dataclass
class CharacterSkeleton:
    """A rig at rest. names (N,); parents (N,) with -1 for roots, parents before children; heads
    and tails (N, 3) in rig units and axes; rest (N, 3, 3) each bone's rest orientation (the frame
    its pose rotation is local to); to_model (3, 3) rig axes -> model axes (None: inferred when
    binding); unit_scale metres per rig unit (None: the bone map's or guessed)."""

    names: list[str]
    parents: np.ndarray
    heads: np.ndarray
    tails: np.ndarray
    rest: np.ndarray
    to_model: np.ndarray | None = None
    unit_scale: float | None = None
    source: str = "character"

    def __post_init__(self) -> None:
        self.names = [str(n) for n in self.names]
        N = len(self.names)
        self.parents = np.asarray(self.parents, dtype=np.int64).reshape(-1)
        self.heads = np.asarray(self.heads, dtype=np.float64)
        self.tails = np.asarray(self.tails, dtype=np.float64)
        self.rest = np.asarray(self.rest, dtype=np.float64)
        for field_name, value, shape in (("parents", self.parents, (N,)), ("heads", self.heads, (N, 3)),
                                         ("tails", self.tails, (N, 3)), ("rest", self.rest, (N, 3, 3))):
            if value.shape != shape:
                raise CharacterError(f"{self.source}: {field_name} has shape {value.shape}, expected {shape}")
        if N == 0:
            raise CharacterError(f"{self.source}: a character needs at least one bone")
        if len(set(self.names)) != N:
            raise CharacterError(f"{self.source}: repeated bone names")
        bad = [self.names[j] for j, p in enumerate(self.parents) if p >= j or p < -1]
        if bad:
            raise CharacterError(f"{self.source}: bones {bad[:5]} come before their parents (parents must come first)")
        if not np.isfinite(self.heads).all() or not np.isfinite(self.tails).all():
            raise CharacterError(f"{self.source}: heads/tails must be finite")
        ortho = np.abs(self.rest @ self.rest.transpose(0, 2, 1) - np.eye(3)).max(initial=0.0)
        if ortho > 1e-4 or (np.linalg.det(self.rest) < 0).any():
            raise CharacterError(f"{self.source}: rest orientations must be rotations (orthonormal, det +1)")
        if self.to_model is not None:
            self.to_model = np.asarray(self.to_model, dtype=np.float64)
            if self.to_model.shape != (3, 3) or np.abs(self.to_model @ self.to_model.T - np.eye(3)).max() > 1e-6 \
                    or np.linalg.det(self.to_model) < 0:
                raise CharacterError(f"{self.source}: to_model must be a 3x3 rotation")
        if self.unit_scale is not None and not self.unit_scale > 0:
            raise CharacterError(f"{self.source}: unit_scale must be positive, got {self.unit_scale}")

    @property
    def num_bones(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"{self.source}: no bone {name!r}") from None

    @classmethod
    def from_bvh(cls, motion: BVHMotion | str | Path, rest_frame: int | None = None,
                 axes: tuple[str, str, str] | None = None, unit_scale: float | None = None) -> "CharacterSkeleton":
        """A BVH file's hierarchy: bones from each joint to its End Site, only child or the mean of
        its children. The rest is the zero-rotation (OFFSET) pose, whose joint frames are
        world-aligned, or the pose of frame `rest_frame` (for files whose OFFSET pose is not a
        bind pose). axes: SMPL's axes in the file's terms, as in skeleton presets (None: inferred
        when binding)."""
        if not isinstance(motion, BVHMotion):
            motion = read_bvh(motion)
        J = motion.num_joints
        if rest_frame is None:
            heads = rest_positions(motion, root_at_origin=False)
            rest = np.broadcast_to(np.eye(3), (J, 3, 3)).copy()
        else:
            if not 0 <= rest_frame < motion.num_frames:
                raise CharacterError(f"{motion.source}: rest frame {rest_frame} is outside its "
                                     f"{motion.num_frames} frames")
            rot, pos = forward_kinematics(motion, frames=[rest_frame])
            heads, rest = pos[0].numpy(), rot[0].numpy()
        tails = heads.copy()
        children: dict[int, list[int]] = {}
        for j, p in enumerate(motion.parents.tolist()):
            children.setdefault(p, []).append(j)
        for j in range(J):
            if j in motion.end_sites:
                tails[j] = heads[j] + rest[j] @ motion.end_sites[j]
            elif children.get(j):
                tails[j] = heads[children[j]].mean(0)
            if np.linalg.norm(tails[j] - heads[j]) < 1e-9:  # a zero-length bone: continue its parent's
                p = int(motion.parents[j])
                step = heads[j] - heads[p] if p >= 0 else np.array([0.0, 1.0, 0.0])
                tails[j] = heads[j] + (step if np.linalg.norm(step) > 1e-9 else np.array([0.0, 1.0, 0.0]))
        to_model = axes_matrix(axes).numpy() if axes is not None else None
        return cls(list(motion.names), motion.parents.copy(), heads, tails, rest, to_model, unit_scale, motion.source)

    @classmethod
    def from_arrays(cls, names, parents, matrix_local, tails, world_matrix=None, unit_scale: float = 1.0,
                    source: str = "armature") -> "CharacterSkeleton":
        """A Blender armature: per bone `matrix_local` (N, 4, 4) and `tail_local` (N, 3) in armature
        space, parents as indices (-1) or names (None for roots), and the object's `matrix_world`
        (4, 4; None: identity). Its rotation turns armature space into Blender's Z-up world, which
        is turned into model space; its (uniform) scale times unit_scale (metres per Blender unit,
        the scene's unit scale) gives metres per armature unit."""
        names = [str(n) for n in names]
        parents = [(-1 if p is None else names.index(p)) if (p is None or isinstance(p, str)) else int(p)
                   for p in parents]
        M = np.asarray(matrix_local, dtype=np.float64)
        if M.shape != (len(names), 4, 4):
            raise CharacterError(f"{source}: matrix_local has shape {M.shape}, expected ({len(names)}, 4, 4)")
        W = np.eye(4) if world_matrix is None else np.asarray(world_matrix, dtype=np.float64)
        if W.shape != (4, 4):
            raise CharacterError(f"{source}: world_matrix has shape {W.shape}, expected (4, 4)")
        scales = np.linalg.norm(W[:3, :3], axis=0)
        if not np.allclose(scales, scales[0], rtol=1e-4) or scales[0] <= 0:
            raise CharacterError(f"{source}: the armature object's scale {scales.round(4).tolist()} must be uniform")
        rotation = W[:3, :3] / scales[0]
        rest = M[:, :3, :3] / np.linalg.norm(M[:, :3, :3], axis=1, keepdims=True)  # drop any bone scale
        return cls(names, np.asarray(parents), M[:, :3, 3], tails, rest, BLENDER_TO_MODEL @ rotation,
                   float(unit_scale) * float(scales[0]), source)


# ----------------------------------------------------------------------------------------------
# Binding


@dataclass
class CharacterBinding:
    """A character bound to the body. Model space (metres) throughout:
    heads (N, 3) and rest (N, 3, 3) the character's rest; body_rest (J, 3) the body's rest joints;
    joint_bones[j] the chain of bone indices driven by body joint j (root to tip; () unmapped);
    bone_joint (N,) the body joint driving each bone (-1 unmapped); align (J, 3, 3) the A_j;
    scale character metres per body metre; root_bone the bone that takes the location (the first
    of the pelvis' chain); to_model (3, 3) and unit_scale as used; betas the fitted shape, if any."""

    skeleton: CharacterSkeleton
    bone_map: SkeletonPreset
    body_names: list[str]
    body_parents: list[int]
    body_rest: Tensor
    heads: Tensor
    rest: Tensor
    joint_bones: list[tuple[int, ...]]
    bone_joint: list[int]
    align: Tensor
    scale: float
    root_bone: int
    to_model: Tensor
    unit_scale: float
    betas: Tensor | None = None
    _plan_cache: object = field(default=None, repr=False, compare=False)  # index tensors of the transfer

    def character_map(self) -> dict[str, list[str]]:
        """Body joint -> the character bones it drives (mapped joints only), as the report prints."""
        names = self.skeleton.names
        return {j: [names[b] for b in bones] for j, bones in zip(self.body_names, self.joint_bones) if bones}


@dataclass
class CharacterPose:
    """Pose-bone rotations (B, N, 4) wxyz in each bone's rest frame; location (B, 3) of the root
    bone (binding.root_bone) in its rest frame, rig units. What `body_to_character` computed on the
    way, so a caller that needs posed orientations need not run `character_fk` again: world
    (B, N, 3, 3) the mapped bones' world rotation deltas D as character_fk gives them (unmapped
    bones: identity, not computed; `rig_world_rotations` turns D into rig-space orientations) and
    root_head (B, 3) the root bone's posed head, model-space metres (None when not computed)."""

    quaternions: Tensor
    location: Tensor
    world: Tensor | None = None
    root_head: Tensor | None = None


def _resolve_map(skeleton: CharacterSkeleton, bone_map) -> SkeletonPreset:
    if isinstance(bone_map, str) and bone_map == "auto":
        return detect_preset(skeleton.names, skeleton.source)
    strict = isinstance(bone_map, Mapping) or (isinstance(bone_map, (str, Path)) and str(bone_map).endswith(".json"))
    try:
        preset = load_preset(bone_map)
    except (KeyError, ValueError, OSError) as error:
        raise BoneMapError(f"{skeleton.source}: {error.args[0] if error.args else error}") from None
    resolved = preset.resolve(skeleton.names)
    absent = preset.absent_bones(skeleton.names) if strict else []  # a map written for this rig names its bones
    if absent:
        raise BoneMapError(f"{skeleton.source}: bone map {preset.name!r} names bones the rig lacks: "
                           f"{', '.join(absent[:10])}")
    return check_required(resolved, skeleton.source)


def _depths(parents) -> list[int]:
    depth = []
    for p in parents:
        depth.append(0 if p < 0 else depth[p] + 1)
    return depth


def _frame(direction: Tensor, reference: Tensor) -> Tensor:
    """(3, 3) orthonormal columns (x, y, z): y along direction, x the reference made perpendicular."""
    y = torch.nn.functional.normalize(direction, dim=-1)
    x = reference - (reference @ y) * y
    if float(x.norm()) < 1e-6:
        raise CharacterError("the pelvis' up and left directions are parallel in the rest pose")
    x = torch.nn.functional.normalize(x, dim=-1)
    return torch.stack([x, y, torch.cross(x, y, dim=-1)], dim=-1)


def _rig_to_model(skeleton: CharacterSkeleton, preset: SkeletonPreset, dtype) -> Tensor:
    """(3, 3) rig axes -> model axes: the skeleton's, the preset's, or from the rest skeleton (hips
    give left, pelvis -> chest up; snapped to signed axes when within 30 degrees of them)."""
    if skeleton.to_model is not None:
        return torch.as_tensor(skeleton.to_model, dtype=dtype)
    if preset.axes is not None:
        return axes_matrix(preset.axes, dtype)
    heads = skeleton.heads
    first = {k: skeleton.index(preset.sources(k)[0]) for k in preset.joints if preset.sources(k)}
    upper = _upper_joint(torch.as_tensor(heads), first, ("neck", "spine3", "spine2", "spine1", "head"))
    up = heads[first[upper]] - heads[first["pelvis"]]
    left = heads[first["left_hip"]] - heads[first["right_hip"]]
    if not _across(torch.as_tensor(up), torch.as_tensor(left)):  # sides coincide in this rest: BVH's own Y up
        return torch.eye(3, dtype=dtype)
    exact = _frame(torch.as_tensor(up, dtype=dtype), torch.as_tensor(left, dtype=dtype))  # columns: left, up, fwd
    snapped = axes_matrix(infer_axes(up, left), dtype)
    C = exact.T  # rows: model x (left), y (up), z (forward) in rig terms
    cos = ((snapped.T @ C).trace() - 1) / 2
    return snapped if float(cos) > math.cos(math.radians(30)) else C


def _unit_scale(skeleton: CharacterSkeleton, preset: SkeletonPreset, leg_units: float) -> float:
    if skeleton.unit_scale is not None:
        return float(skeleton.unit_scale)
    if preset.unit_scale is not None:
        return float(preset.unit_scale)
    return min(_UNIT_GUESSES, key=lambda u: abs(math.log(max(leg_units * u, 1e-12) / _LEG_METRES)))


def _leg_length(points: Tensor, index: Mapping[str, int]) -> float:
    """Mean hip -> knee -> ankle length of both legs, from positions (., 3) by joint name."""
    total = 0.0
    for side in ("left", "right"):
        hip, knee, ankle = (points[index[f"{side}_{j}"]] for j in ("hip", "knee", "ankle"))
        total += float((knee - hip).norm() + (ankle - knee).norm())
    return total / 2


def bind_character(skeleton: CharacterSkeleton, bone_map="auto", body_rest=None, body_parents=None,
                   body_names: list[str] | None = None, model=None, fit_shape: bool = True,
                   scale: float | None = None, dtype=torch.float64) -> CharacterBinding:
    """Bind a character to the body.

    bone_map: "auto" (detected from the bone names), a built-in preset name, a JSON path, a dict or
        a SkeletonPreset. Built-in maps drop bones the rig lacks; a JSON/dict map must name
        existing bones. Raises BoneMapError for missing required joints or a non-humanoid rig.
    body_rest (J, 3), body_parents (J,), body_names: the body at rest in model space (metres).
    model: a BodyModel instead of those; with fit_shape its betas and a uniform scale are fitted
        to the character's rest (`fit_body`) and the binding uses the fitted body.
    scale: character metres per body metre (None: the ratio of leg lengths, or the fitted scale).
    """
    preset = _resolve_map(skeleton, bone_map)
    if model is not None:
        body_names = list(model.joint_names)
        body_parents = model.parents.tolist()
        with torch.no_grad():
            body_rest = model.rest_joints()[0].detach().to("cpu", dtype)
    if body_rest is None or body_parents is None:
        raise CharacterError("bind_character needs body_rest and body_parents, or a model")
    body_rest = torch.as_tensor(np.asarray(body_rest), dtype=dtype)
    body_parents = [int(p) for p in (body_parents.tolist() if hasattr(body_parents, "tolist") else body_parents)]
    J = body_rest.shape[0]
    body_names = list(body_names) if body_names is not None else default_target_names(J)
    if len(body_names) != J or len(body_parents) != J:
        raise CharacterError(f"body has {J} joints but {len(body_names)} names and {len(body_parents)} parents")
    binding = _bind(skeleton, preset, body_rest, body_parents, body_names, scale, dtype)
    if model is not None and fit_shape and model.num_betas:
        betas, fitted_scale = fit_body(binding, model)
        with torch.no_grad():
            rest = model.rest_joints(betas.to(model.device, model.dtype).unsqueeze(0))[0].detach().to("cpu", dtype)
        binding = _bind(skeleton, preset, rest, body_parents, body_names, scale or fitted_scale, dtype)
        binding.betas = betas.detach().to("cpu", dtype)
    return binding


def _bind(skeleton, preset, body_rest, body_parents, body_names, scale, dtype) -> CharacterBinding:
    N = skeleton.num_bones
    depth = _depths(skeleton.parents.tolist())
    jindex = {n: i for i, n in enumerate(body_names)}
    # Each bone goes to the deepest body joint naming it; chains ordered root to tip.
    owner: dict[int, int] = {}
    for name in preset.joints:
        if name not in jindex:
            continue
        for bone in preset.sources(name):
            b = skeleton.index(bone)
            owner[b] = max(owner.get(b, -1), jindex[name])
    J = len(body_names)
    joint_bones: list[tuple[int, ...]] = [() for _ in range(J)]
    for b, j in sorted(owner.items()):
        joint_bones[j] = joint_bones[j] + (b,)
    joint_bones = [tuple(sorted(chain, key=lambda b: depth[b])) for chain in joint_bones]
    bone_joint = [-1] * N
    for j, chain in enumerate(joint_bones):
        for b in chain:
            bone_joint[b] = j
    first = {body_names[j]: chain[0] for j, chain in enumerate(joint_bones) if chain}
    missing = [n for n in ("pelvis", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
                           "right_ankle") if n not in first]
    if missing:
        raise BoneMapError(f"{skeleton.source}: no bone drives the body joint(s) {', '.join(missing)}")

    C = _rig_to_model(skeleton, preset, dtype)
    heads_rig = torch.as_tensor(skeleton.heads, dtype=dtype)
    leg_units = _leg_length(heads_rig, first)
    unit = _unit_scale(skeleton, preset, leg_units)
    heads = unit * heads_rig @ C.T
    tails = unit * torch.as_tensor(skeleton.tails, dtype=dtype) @ C.T
    rest = C @ torch.as_tensor(skeleton.rest, dtype=dtype)

    segments = {name: skeleton.index(bone) for name, bone in preset.segments.items() if name in jindex}
    align = torch.eye(3, dtype=dtype).expand(J, 3, 3).clone()
    for j in range(J):  # body joints come parents first
        name, chain = body_names[j], joint_bones[j]
        parent_align = align[body_parents[j]] if body_parents[j] >= 0 else torch.eye(3, dtype=dtype)
        if not chain:
            align[j] = parent_align
        elif body_parents[j] < 0:
            align[j] = _root_alignment(heads, body_rest, first, jindex, _segment(name, segments, heads, tails, body_rest,
                                                                                 jindex))
        else:  # carried rigidly with its parent, then bent (not twisted) onto the body's bone
            d = _segment(name, segments, heads, tails, body_rest, jindex) \
                or _directions(name, chain, heads, tails, body_rest, first, jindex)
            usable = d is not None and float(d[0].norm()) > 1e-9 and float(d[1].norm()) > 1e-9
            align[j] = minimal_rotation(parent_align @ d[0], d[1]) @ parent_align if usable else parent_align
    body_legs = _leg_length(body_rest, jindex)
    return CharacterBinding(
        skeleton=skeleton, bone_map=preset, body_names=list(body_names), body_parents=list(body_parents),
        body_rest=body_rest, heads=heads, rest=rest, joint_bones=joint_bones, bone_joint=bone_joint, align=align,
        scale=float(scale) if scale else _leg_length(heads, first) / body_legs,
        root_bone=first["pelvis"], to_model=C, unit_scale=unit,
    )


def _segment(name, segments, heads, tails, body_rest, jindex):
    """(rig direction, body direction) of a joint whose bone map names its segment's bone (the
    preset's `segments`): that bone's rest head -> tail, and the body joint -> its child; None
    for other joints."""
    child = "spine1" if name == "pelvis" else TARGET_DIRECTION_CHILD.get(name)
    if name not in segments or child not in jindex:
        return None
    b = segments[name]
    return tails[b] - heads[b], body_rest[jindex[child]] - body_rest[jindex[name]]


def _directions(name, chain, heads, tails, body_rest, first, jindex):
    """(rig direction, body direction) of a joint's bone at rest: to the next mapped joint along
    TARGET_DIRECTION_CHILD, else to the chain's last tail; None where the body joint has no child."""
    child = TARGET_DIRECTION_CHILD.get(name)
    if child is None or child not in jindex:
        return None
    reach = child
    while reach is not None and reach not in first:
        reach = TARGET_DIRECTION_CHILD.get(reach)
    if reach is not None and reach in jindex:
        return heads[first[reach]] - heads[chain[0]], body_rest[jindex[reach]] - body_rest[jindex[name]]
    return tails[chain[-1]] - heads[chain[0]], body_rest[jindex[child]] - body_rest[jindex[name]]


def _upper_joint(heads, first, order=("spine1", "spine2", "spine3", "neck", "head")) -> str:
    """The first mapped upper-body joint whose bone starts away from the pelvis bone's head (CMU's
    LowerBack starts where its Hips does)."""
    pelvis = heads[first["pelvis"]]
    reach = max(float((heads[b] - pelvis).norm()) for b in first.values())
    for k in order:
        if k in first and float((heads[first[k]] - pelvis).norm()) > 1e-3 * reach:
            return k
    raise BoneMapError("no upper-body bone starts away from the pelvis bone: cannot tell up from the rest pose")


def _root_alignment(heads, body_rest, first, jindex, segment=None) -> Tensor:
    """The pelvis: both rests' frames from (pelvis -> upper body, right hip -> left hip); the up
    directions are the pelvis segment's (rig, body) when the bone map names it (`_segment`)."""
    if segment is not None:
        up_rig, up_body = segment
    else:
        upper = _upper_joint(heads, first)
        up_rig = heads[first[upper]] - heads[first["pelvis"]]
        up_body = body_rest[jindex[upper]] - body_rest[jindex["pelvis"]]
    for left, right in (("left_hip", "right_hip"), ("left_shoulder", "right_shoulder"), ("left_knee", "right_knee")):
        if left not in first or right not in first:
            continue
        left_rig = heads[first[left]] - heads[first[right]]
        left_body = body_rest[jindex[left]] - body_rest[jindex[right]]
        if _across(up_rig, left_rig) and _across(up_body, left_body):
            return _frame(up_body, left_body) @ _frame(up_rig, left_rig).T
    # a rest whose sides coincide (OFFSETs written along each bone's own axis): trust the axes
    return torch.eye(3, dtype=heads.dtype)


def _across(up: Tensor, left: Tensor) -> bool:
    """Whether `left` has a part across `up` (at least 10 % of the longer)."""
    cross = torch.linalg.cross(torch.nn.functional.normalize(up, dim=0), left).norm()
    return float(cross) > 0.1 * max(float(left.norm()), 1e-12) and float(left.norm()) > 1e-3 * float(up.norm())


# ----------------------------------------------------------------------------------------------
# Kinematics and transfer


def _batch_quaternions(q, B: int, N: int, dtype) -> Tensor:
    q = torch.as_tensor(np.asarray(q) if not isinstance(q, Tensor) else q, dtype=dtype)
    if q.shape == (N, 4):
        q = q.expand(B, N, 4)
    if q.shape != (B, N, 4):
        raise CharacterError(f"quaternions have shape {tuple(q.shape)}, expected ({B}, {N}, 4) or ({N}, 4)")
    return q


def character_fk(binding: CharacterBinding, quaternions, location=None, bones=None) -> tuple[Tensor, Tensor]:
    """Posed heads (B, N, 3) in model-space metres and world rotation deltas D (B, N, 3, 3) from
    pose-bone quaternions (B, N, 4) and the root bone's location (B, 3) in its rest frame (rig
    units). bones: only these (closed under ancestors) are computed; the others are left at rest."""
    rest = binding.rest
    q = torch.as_tensor(quaternions, dtype=rest.dtype)
    B, N = q.shape[0], binding.skeleton.num_bones
    q = _batch_quaternions(q, B, N, rest.dtype)
    parents = binding.skeleton.parents.tolist()
    if bones is None:
        keep = list(range(N))
    else:
        keep = sorted(bones)
    index = {b: i for i, b in enumerate(keep)}
    R = rest[keep]
    local = R @ quaternion_to_matrix(q[:, keep]) @ R.transpose(-1, -2)  # world-aligned local rotations
    sub_heads, sub_D = skeleton_fk(local, binding.heads[keep], [index.get(parents[b], -1) for b in keep])
    if bones is None:
        heads, D = sub_heads, sub_D
    else:
        heads = binding.heads.expand(B, N, 3).clone()
        D = torch.eye(3, dtype=rest.dtype).expand(B, N, 3, 3).clone()
        heads[:, keep], D[:, keep] = sub_heads, sub_D
    if location is not None:
        heads = heads + _location_shift(binding, D, torch.as_tensor(location, dtype=rest.dtype))
    return heads, D


def _subtree(parents, root: int) -> list[int]:
    inside = [False] * len(parents)
    inside[root] = True
    for b in range(root + 1, len(parents)):
        inside[b] = parents[b] >= 0 and inside[parents[b]]
    return [b for b, x in enumerate(inside) if x]


def _location_shift(binding: CharacterBinding, D: Tensor, location: Tensor) -> Tensor:
    """(B, N, 3) displacement the root bone's location gives its subtree (model metres)."""
    r = binding.root_bone
    p = int(binding.skeleton.parents[r])
    Dp = D[:, p] if p >= 0 else torch.eye(3, dtype=D.dtype).expand(D.shape[0], 3, 3)
    shift = binding.unit_scale * (Dp @ binding.rest[r] @ location.reshape(-1, 3, 1)).squeeze(-1)
    out = torch.zeros(D.shape[0], D.shape[1], 3, dtype=D.dtype)
    out[:, _subtree(binding.skeleton.parents.tolist(), r)] = shift.unsqueeze(1)
    return out


def rig_points_to_body(binding: CharacterBinding, points) -> Tensor:
    """Points (..., 3) in the rig's space and units (e.g. IK targets placed on the character) ->
    where the body must reach them, in model-space metres: the inverse of the character's
    `scale` about the origin, as the root translation uses."""
    p = torch.as_tensor(points, dtype=binding.rest.dtype)
    return binding.unit_scale * p @ binding.to_model.T / binding.scale


def body_points_to_rig(binding: CharacterBinding, points) -> Tensor:
    """Model-space metres on the body (..., 3) -> the rig's space and units (rig_points_to_body's inverse)."""
    p = torch.as_tensor(points, dtype=binding.rest.dtype)
    return binding.scale * p @ binding.to_model / binding.unit_scale


def rig_world_rotations(binding: CharacterBinding, D: Tensor) -> Tensor:
    """(B, N, 3, 3) posed bone orientations in rig axes (C^T D R0): a BVH joint's world rotation, a
    Blender pose bone's armature-space `matrix` rotation."""
    C = binding.to_model.to(D.dtype)
    return C.T @ D @ binding.rest.to(D.dtype)


def _shares(local: Tensor, axis: Tensor, fraction: Tensor, whole: Tensor) -> Tensor:
    """Fractions of local rotations (B, M, 3, 3), per column m: all of it slerped (whole[m]), or its
    swing with fraction[m] of its twist about axis[m] (the bone's rest direction, unit)."""
    q = matrix_to_quaternion(local)
    f = fraction.to(q.dtype).unsqueeze(-1)
    p = (q[..., 1:] * axis).sum(-1, keepdim=True)
    twist = torch.nn.functional.normalize(torch.cat([q[..., :1], p * axis.expand_as(q[..., 1:])], -1), dim=-1)
    twist = torch.where(p.abs() + q[..., :1].abs() < 1e-12, torch.zeros_like(twist) + _IDENTITY_Q.to(q.dtype), twist)
    swing = local @ quaternion_to_matrix(twist).transpose(-1, -2)
    split = swing @ axis_angle_to_matrix(f * quaternion_to_axis_angle(twist))
    spread = axis_angle_to_matrix(f * quaternion_to_axis_angle(q))
    return torch.where(whole.view(1, -1, 1, 1), spread, split)


_IDENTITY_Q = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)


@dataclass
class _Plan:
    """Index tensors for the batched transfer, built once per binding: the mapped bones (M,), their
    body joint, the joint's body parent (J = identity), their share of the joint's rotation, the
    bone axis for twist shares, and each mapped bone's nearest mapped ancestor (M = none) with the
    unmapped bones between them (top down)."""

    mapped: Tensor
    joint: Tensor
    parent_joint: Tensor
    share: Tensor
    whole: Tensor
    axis: Tensor
    anchor: Tensor
    between: list[list[int]]
    tips: Tensor  # (J,) the last bone of each joint's chain, -1 unmapped
    needed: list[int]  # bones whose world rotation character_to_body needs (tips and their ancestors)
    # `between` by depth, for one batched product per depth instead of one per bone (a Rigify rig has
    # dozens of mechanism bones between its controls; Live Posing transfers on every update):
    # (rows m (K,), bones (K,)) with between[m][depth] == bones[k] for rows[k] == m
    between_levels: list[tuple[Tensor, Tensor]] = field(default_factory=list)
    rest_mapped: Tensor | None = None  # (M, 3, 3) rest[mapped]
    align_mapped: Tensor | None = None  # (M, 3, 3) align[joint]


def _plan(binding: CharacterBinding) -> _Plan:
    if getattr(binding, "_plan_cache", None) is not None:
        return binding._plan_cache
    parents = binding.skeleton.parents.tolist()
    J = len(binding.body_names)
    mapped = [b for b, j in enumerate(binding.bone_joint) if j >= 0]
    slot = {b: m for m, b in enumerate(mapped)}
    joint, parent_joint, share, whole, axis, anchor, between = [], [], [], [], [], [], []
    for b in mapped:
        j = binding.bone_joint[b]
        chain = binding.joint_bones[j]
        joint.append(j)
        parent_joint.append(binding.body_parents[j] if binding.body_parents[j] >= 0 else J)
        share.append((chain.index(b) + 1) / len(chain))
        a = _body_bone_axis(binding, j)
        whole.append(binding.body_names[j] in _SPREAD_WHOLE or a is None)
        axis.append(torch.zeros(3, dtype=binding.rest.dtype) if a is None else torch.nn.functional.normalize(a, dim=0))
        path, up = [], parents[b]
        while up >= 0 and up not in slot:
            path.append(up)
            up = parents[up]
        anchor.append(slot[up] if up >= 0 else len(mapped))
        between.append(path[::-1])
    tips = [chain[-1] if chain else -1 for chain in binding.joint_bones]
    needed: set[int] = set()
    for b in [t for t in tips if t >= 0] + [binding.root_bone]:
        while b >= 0 and b not in needed:
            needed.add(b)
            b = parents[b]
    plan = _Plan(torch.tensor(mapped), torch.tensor(joint), torch.tensor(parent_joint),
                 torch.tensor(share, dtype=binding.rest.dtype), torch.tensor(whole, dtype=torch.bool),
                 torch.stack(axis) if axis else torch.zeros(0, 3, dtype=binding.rest.dtype), torch.tensor(anchor),
                 between, torch.tensor(tips), sorted(needed))
    depth = max((len(path) for path in between), default=0)
    for level in range(depth):
        rows = [m for m, path in enumerate(between) if len(path) > level]
        plan.between_levels.append((torch.tensor(rows), torch.tensor([between[m][level] for m in rows])))
    plan.rest_mapped = binding.rest[plan.mapped]
    plan.align_mapped = binding.align[plan.joint]
    binding._plan_cache = plan
    return plan


def body_to_character(binding: CharacterBinding, poses, transl=None, current=None) -> CharacterPose:
    """Body local axis-angles (B, J, 3) (or rotation matrices (B, J, 3, 3)) and transl (B, 3) ->
    character pose (quaternions (B, N, 4), root location (B, 3)). Unmapped bones keep `current`
    quaternions ((B, N, 4) or (N, 4)), else their rest. Batched over frames and mapped bones."""
    dtype = binding.rest.dtype
    poses = torch.as_tensor(poses, dtype=dtype)
    local = poses if poses.shape[-2:] == (3, 3) else axis_angle_to_matrix(poses)
    B, J = local.shape[:2]
    if J != len(binding.body_names):
        raise CharacterError(f"poses have {J} joints, the bound body {len(binding.body_names)}")
    transl = torch.zeros(B, 3, dtype=dtype) if transl is None else torch.as_tensor(transl, dtype=dtype).reshape(B, 3)
    joints, G = skeleton_fk(local, binding.body_rest, binding.body_parents, transl)
    N, rest, plan = binding.skeleton.num_bones, binding.rest, _plan(binding)
    eye = torch.eye(3, dtype=dtype).expand(B, 1, 3, 3)
    G = torch.cat([G, eye], 1)  # index J: the identity, the root joint's parent
    Gp = G[:, plan.parent_joint]
    part = _shares(Gp.transpose(-1, -2) @ G[:, plan.joint], plan.axis, plan.share, plan.whole)
    D = Gp @ part @ plan.align_mapped  # (B, M, 3, 3) world deltas of the mapped bones
    D_anchor = torch.cat([D, eye], 1)[:, plan.anchor]
    quaternions = (torch.tensor([1.0, 0, 0, 0], dtype=dtype).expand(B, N, 4) if current is None
                   else _batch_quaternions(current, B, N, dtype)).clone()
    cur = None if current is None else rest @ quaternion_to_matrix(quaternions) @ rest.transpose(-1, -2)
    D_parent = D_anchor.clone()
    if cur is not None:  # unmapped bones between a mapped bone and its mapped ancestor keep their rotation
        for rows, bones in plan.between_levels:  # the same products as bone by bone down each path
            D_parent[:, rows] = D_parent[:, rows] @ cur[:, bones]
    R = plan.rest_mapped
    quaternions[:, plan.mapped] = matrix_to_quaternion(R.transpose(-1, -2) @ D_parent.transpose(-1, -2) @ D @ R)
    # Root location: the pelvis bone's head at scale x the body's pelvis joint.
    r = binding.root_bone
    head, Dp = _unmapped_path_head(binding, r, cur, B)
    pelvis = binding.body_names.index("pelvis")
    delta = binding.scale * joints[:, pelvis] - head
    location = (rest[r].T @ Dp.transpose(-1, -2) @ delta.unsqueeze(-1)).squeeze(-1) / binding.unit_scale
    world = torch.eye(3, dtype=dtype).expand(B, N, 3, 3).clone()
    world[:, plan.mapped] = D
    return CharacterPose(quaternions, location, world, binding.scale * joints[:, pelvis])


def _unmapped_path_head(binding: CharacterBinding, bone: int, cur: Tensor | None, B: int) -> tuple[Tensor, Tensor]:
    """The posed head (B, 3) of a bone whose ancestors are all unmapped (the root bone), before its
    own location, and its parent's world delta (B, 3, 3): the ancestors keep `cur` (or rest)."""
    parents = binding.skeleton.parents.tolist()
    path = []
    b = parents[bone]
    while b >= 0:
        path.append(b)
        b = parents[b]
    dtype = binding.rest.dtype
    D = torch.eye(3, dtype=dtype).expand(B, 3, 3)
    if not path:
        return binding.heads[bone].expand(B, 3), D
    head = binding.heads[path[-1]].expand(B, 3)
    for b, child in zip(path[::-1], path[::-1][1:] + [bone]):
        if cur is not None:
            D = D @ cur[:, b]
        head = head + D @ (binding.heads[child] - binding.heads[b])
    return head, D


def _body_bone_axis(binding: CharacterBinding, j: int) -> Tensor | None:
    child = TARGET_DIRECTION_CHILD.get(binding.body_names[j])
    if child is None or child not in binding.body_names:
        return None
    return binding.body_rest[binding.body_names.index(child)] - binding.body_rest[j]


def character_to_body(binding: CharacterBinding, quaternions, location=None) -> tuple[Tensor, Tensor]:
    """Character pose (quaternions (B, N, 4), root location (B, 3)) -> body local axis-angles
    (B, J, 3) and transl (B, 3). Body joints without bones follow their parent. The bones' posed
    orientations come from FK along the rig's parents (unmapped bones keep their rest relation
    to them, rotated by their own quaternions); for a rig whose parents move by constraints use
    `posed_character_to_body` with the host's evaluated bones."""
    plan = _plan(binding)
    heads, D = character_fk(binding, quaternions, location, bones=plan.needed)
    return _body_from_world(binding, D, heads[:, binding.root_bone])


def posed_character_to_body(binding: CharacterBinding, rotations, root_head) -> tuple[Tensor, Tensor]:
    """The body pose of a character posed as its host evaluates it -> body local axis-angles
    (B, J, 3) and transl (B, 3), as `character_to_body` gives them.

    rotations (B, N, 3, 3): the bones' posed orientations in rig axes (a Blender pose bone's
    armature-space `matrix` rotation; `rig_world_rotations`' output); only the last bone of each
    mapped joint's chain is read. root_head (B, 3): the root bone's posed head, rig units.
    Why: in a generated Rigify rig the finger controls hang from ORG/MCH bones that constraints
    move with the hand control, and the FK controls of the upper arms from bones that follow the
    shoulders; FK from pose-bone rotations along the rig's parents leaves those parents at rest,
    so `character_to_body` would give the fingers the whole arm's turn and the upper arms the
    collars'. The evaluated orientations carry what the constraints did."""
    dtype = binding.rest.dtype
    M = torch.as_tensor(rotations, dtype=dtype)
    N = binding.skeleton.num_bones
    if M.ndim != 4 or M.shape[1:] != (N, 3, 3):
        raise CharacterError(f"rotations have shape {tuple(M.shape)}, expected (B, {N}, 3, 3)")
    head = torch.as_tensor(root_head, dtype=dtype).reshape(M.shape[0], 3)
    C = binding.to_model.to(dtype)
    D = C @ M @ binding.rest.transpose(-1, -2)  # rig_world_rotations' inverse (M = C^T D R0)
    return _body_from_world(binding, D, binding.unit_scale * head @ C.T)


def _body_from_world(binding: CharacterBinding, D: Tensor, root_head: Tensor) -> tuple[Tensor, Tensor]:
    """Body local axis-angles (B, J, 3) and transl (B, 3) from the bones' world rotation deltas D
    (B, N, 3, 3; the tips of the mapped chains are read) and the root bone's posed head (B, 3),
    model-space metres: G_j = D_tip A_j^T, joints without bones follow their parent."""
    plan = _plan(binding)
    B = D.shape[0]
    eye = torch.eye(3, dtype=D.dtype).expand(B, 3, 3)
    G: list[Tensor] = []
    for j, tip in enumerate(plan.tips.tolist()):
        p = binding.body_parents[j]
        if tip >= 0:
            G.append(D[:, tip] @ binding.align[j].transpose(-1, -2))
        else:
            G.append(G[p] if p >= 0 else eye)
    G_t = torch.stack(G, 1)
    parents = torch.tensor(binding.body_parents)
    G_p = torch.cat([G_t, eye.unsqueeze(1)], 1)[:, torch.where(parents >= 0, parents, len(G))]
    local = G_p.transpose(-1, -2) @ G_t
    pelvis = binding.body_names.index("pelvis")
    transl = root_head / binding.scale - binding.body_rest[pelvis]
    return matrix_to_axis_angle(local), transl


def limb_direction_errors(binding: CharacterBinding, body_joints: Tensor, heads: Tensor) -> dict[str, Tensor]:
    """Per mapped limb joint (LIMB_JOINTS whose direction child is mapped too): the angle in
    degrees (B,) between the body's bone (joint -> child, posed joints (B, J, 3)) and the
    character's (first bone heads of the two, posed heads (B, N, 3), model space)."""
    names = binding.body_names
    out = {}
    for name in LIMB_JOINTS:
        child = TARGET_DIRECTION_CHILD.get(name)
        if name not in names or child not in names:
            continue
        j, c = names.index(name), names.index(child)
        if not binding.joint_bones[j] or not binding.joint_bones[c]:
            continue
        a = body_joints[:, c] - body_joints[:, j]
        b = heads[:, binding.joint_bones[c][0]] - heads[:, binding.joint_bones[j][0]]
        cos = torch.nn.functional.cosine_similarity(a, b, dim=-1).clamp(-1, 1)
        out[name] = torch.rad2deg(torch.acos(cos))
    return out


def source_agreement(binding: CharacterBinding, setup: TransferSetup, source_world: Tensor, source_positions: Tensor,
                     heads: Tensor, D: Tensor) -> dict[str, dict[str, float]]:
    """How a character follows a mocap source, per frame and joint: `limb` the angle (degrees)
    between the source's limb (source joint -> the child's source joint) and the character's
    (first bone heads), for LIMB_JOINTS mapped in both; `end` the angle between the hands' and
    feet's world rotations from rest, the source's carried through both rest alignments
    (D_src A_src^T A_char: what a perfect transfer gives). Returns {"limb": {joint: mean deg},
    "end": {joint: mean deg}}. source_world (T, Js, 3, 3) and source_positions (T, Js, 3) in file
    axes (forward_kinematics); heads (T, N, 3) and D (T, N, 3, 3) from character_fk."""
    names = binding.body_names
    src_names = setup.target_names
    C = setup.axes.to(D.dtype)
    out: dict[str, dict[str, float]] = {"limb": {}, "end": {}}
    for name in LIMB_JOINTS:
        child = TARGET_DIRECTION_CHILD.get(name)
        if child not in names or name not in src_names or child not in src_names:
            continue
        j, c = names.index(name), names.index(child)
        sj, sc = setup.sources[src_names.index(name)], setup.sources[src_names.index(child)]
        if not (binding.joint_bones[j] and binding.joint_bones[c] and sj and sc):
            continue
        a = (source_positions[:, sc[0]] - source_positions[:, sj[0]]).to(D.dtype) @ C.T
        b = heads[:, binding.joint_bones[c][0]] - heads[:, binding.joint_bones[j][0]]
        cos = torch.nn.functional.cosine_similarity(a, b, dim=-1).clamp(-1, 1)
        out["limb"][name] = float(torch.rad2deg(torch.acos(cos)).mean())
    for name in END_JOINTS:
        if name not in names or name not in src_names:
            continue
        j, s = names.index(name), src_names.index(name)
        if not binding.joint_bones[j] or not setup.sources[s]:
            continue
        D_src = C @ source_world[:, setup.sources[s][-1]].to(D.dtype) @ C.T @ setup.rest_global[setup.sources[s][-1]].T
        expected = D_src @ setup.align[s].T.to(D.dtype) @ binding.align[j]
        turn = matrix_to_quaternion(expected.transpose(-1, -2) @ D[:, binding.joint_bones[j][-1]])
        out["end"][name] = float(torch.rad2deg(2 * torch.acos(turn[..., 0].abs().clamp(max=1))).mean())
    return out


def character_motion(skeleton: CharacterSkeleton, bone_map, model, poses, transl, betas=None, contacts="body",
                     fps: float = 30.0):
    """A solved body motion (poses (T, J, 3) or (T, 3 J) axis-angle, transl (T, 3), the body's betas)
    on a character bound to that body shape (its scale from the leg lengths): returns
    (binding, CharacterPose, heads (T, N, 3), D (T, N, 3, 3)) as character_fk gives them.
    contacts: the foot lock (core.foot_contact) keeps the character's feet still where these are
    planted: "body" detects them on the body motion itself (at `fps`), a FootContacts gives the
    source's (one row per frame), None turns the lock off (the root follows the body's, scaled)."""
    like = {"dtype": model.dtype, "device": model.device}
    with torch.no_grad():
        shape = None if betas is None else torch.as_tensor(betas).to(**like).reshape(1, -1)
        body_rest = model.rest_joints(shape)[0].detach().cpu().double()
    binding = bind_character(skeleton, bone_map, body_rest, model.parents.cpu(), list(model.joint_names))
    poses = torch.as_tensor(poses).detach().cpu().double()
    poses = poses.reshape(poses.shape[0], -1, 3)
    transl = torch.as_tensor(transl).detach().cpu().double()
    pose = body_to_character(binding, poses, transl)
    heads, D = character_fk(binding, pose.quaternions, pose.location)
    if contacts is not None:
        from .foot_contact import body_contacts, lock_character_feet  # it builds on this module

        if isinstance(contacts, str) and contacts == "body":
            contacts = body_contacts(binding, poses, transl, fps)
        lock = lock_character_feet(binding, poses, transl, heads, contacts, fps)
        pose, heads, D = lock.pose, lock.heads, lock.D
    return binding, pose, heads, D


def clip_agreement(binding: CharacterBinding, motion: BVHMotion, preset, frames, heads: Tensor,
                   D: Tensor) -> dict[str, dict[str, float]]:
    """`source_agreement` against a BVH clip read with a skeleton preset, at its frames `frames`
    (the rows of the character pose heads (T, N, 3) and D (T, N, 3, 3))."""
    preset = load_preset(preset)
    rest, rest_rotations = source_rest(motion, preset)
    setup = build_transfer(preset, motion.names, rest, binding.body_rest, binding.body_parents, binding.body_names,
                           source_rest_global=rest_rotations)
    world, positions = forward_kinematics(motion, frames=np.asarray(frames))
    return source_agreement(binding, setup, world, positions, heads, D)


def bvh_channels(binding: CharacterBinding, motion: BVHMotion, pose: CharacterPose) -> np.ndarray:
    """(T, C) channel values of a BVH character (`motion`: the file its skeleton came from) in a pose.
    When the root bone (the pelvis') is not the file's root and has no position channels, its
    location moves the file's root instead (the same rigid shift of the figure)."""
    heads, D = character_fk(binding, pose.quaternions, pose.location)
    r = binding.root_bone
    if motion.parents[r] >= 0 and not any(c.endswith("position") for c in motion.channels[r]):
        still, _ = character_fk(binding, pose.quaternions)
        heads = still + (heads[:, r] - still[:, r]).unsqueeze(1)
    rig_positions = heads @ binding.to_model.to(heads.dtype) / binding.unit_scale  # C^T p per row
    return motion_channels(motion, rig_world_rotations(binding, D), rig_positions)


def armature_bvh(binding: CharacterBinding) -> tuple[BVHMotion, list[int]]:
    """A BVH hierarchy for a character that has none (a Blender armature): the bones of the tree
    holding the root bone as joints, OFFSETs from the rest heads in model axes (Y up, facing +Z,
    as BVH files are) and rig units, the rest as the zero-rotation pose, End Sites at leaf bones'
    tails; position channels on the top joint and on the root bone (its location). Returns the
    (frameless) motion and the bone index of each joint."""
    parents = binding.skeleton.parents.tolist()
    top = binding.root_bone
    while parents[top] >= 0:
        top = parents[top]
    inside = set(_subtree(parents, top))
    keep = [b for b in depth_first_order(parents) if b in inside]  # the order the file will list them in
    index = {b: i for i, b in enumerate(keep)}
    heads = (binding.heads / binding.unit_scale).numpy()
    tails = (_model_tails(binding) / binding.unit_scale).numpy()
    offsets = np.stack([heads[b] - (heads[parents[b]] if parents[b] >= 0 else 0.0) for b in keep])
    kept_parents = [index[parents[b]] if parents[b] >= 0 else -1 for b in keep]
    children = {p for p in kept_parents if p >= 0}
    ends = {i: tuple(tails[b] - heads[b]) for i, b in enumerate(keep) if i not in children}
    moving = ("Xposition", "Yposition", "Zposition", "Zrotation", "Xrotation", "Yrotation")
    channels = [moving if i == 0 or b == binding.root_bone else ("Zrotation", "Xrotation", "Yrotation")
                for i, b in enumerate(keep)]  # the root bone carries the location
    text = format_bvh([binding.skeleton.names[b] for b in keep], kept_parents, offsets, channels,
                      np.zeros((0, sum(map(len, channels)))), 1 / 30, ends)
    return parse_bvh(text, binding.skeleton.source), keep


def _model_tails(binding: CharacterBinding) -> Tensor:
    tails = torch.as_tensor(binding.skeleton.tails, dtype=binding.heads.dtype)
    return binding.unit_scale * tails @ binding.to_model.T


def armature_bvh_channels(binding: CharacterBinding, motion: BVHMotion, keep: list[int],
                          pose: CharacterPose) -> np.ndarray:
    """(T, C) channel values of `armature_bvh`'s hierarchy in a character pose."""
    heads, D = character_fk(binding, pose.quaternions, pose.location)
    return motion_channels(motion, D[:, keep], heads[:, keep] / binding.unit_scale)


# ----------------------------------------------------------------------------------------------
# Fitting the body to the character


def fit_body(binding: CharacterBinding, model, iterations: int = 30, stay: float = 1.0,
             shape_prior: float = 1e-5) -> tuple[Tensor, float]:
    """The body's betas (num_betas,) and a uniform scale (character metres per body metre) that
    put the body's joints on the character's rest joints: the character's limb joints and head,
    scaled to the body's leg length, are keypoint targets of the shape fit that mocap clips use
    (core.retarget, one frame, started from the character's rest pose carried to the body); the
    scale is then the least-squares ratio of the two sets of joints about their means."""
    from .ik import IKState
    from .keypoints import KeypointSet
    from .retarget import ClipTargets, Retarget, RetargetOptions

    names = binding.body_names
    landmarks = [n for n in (binding.bone_map.landmark_joints()) if n in names and binding.joint_bones[names.index(n)]
                 and names.index(n) < 22]
    if len(landmarks) < 3:
        raise CharacterError(f"{binding.skeleton.source}: too few mapped landmark joints to fit the body")
    ids = [names.index(n) for n in landmarks]
    heads = binding.heads[[binding.joint_bones[j][0] for j in ids]]
    s0 = binding.scale
    like = {"dtype": model.dtype, "device": model.device}
    N = binding.skeleton.num_bones
    poses, transl = character_to_body(binding, torch.tensor([[1.0, 0, 0, 0]]).expand(1, N, 4))
    init = IKState(axis_angle_to_matrix(poses).to(**like), transl.to(**like))
    targets = ClipTargets(KeypointSet.from_joints(model, landmarks), (heads / s0).unsqueeze(0).to(**like), 1.0, init,
                          np.zeros(1, dtype=np.int64))
    # The pose is known (the character's rest carried to the body): held there, the shape does the fitting.
    options = RetargetOptions(shape_frames=1, calibrate=False, max_iterations=iterations, stay=stay,
                              shape_prior=shape_prior)
    run = Retarget(model, targets, None, options)
    for _ in run:
        pass
    result = run.result()
    with torch.no_grad():
        posed = model.forward_rotations(axis_angle_to_matrix(result.poses.reshape(1, -1, 3)),
                                        result.betas.unsqueeze(0), None, result.transl, return_vertices=False)
    body = posed.joints[0, ids].detach().to("cpu", heads.dtype)
    a = body - body.mean(0)
    b = heads - heads.mean(0)
    scale = float((a * b).sum() / (a * a).sum())
    return result.betas.detach().to("cpu", heads.dtype), scale
