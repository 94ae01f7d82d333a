"""Rotation transfer from a mocap skeleton to an SMPL-family body (no IK, no bpy).

Both skeletons have world-aligned joint frames at rest, so a bone's *global* rotation carries over
once the two rest poses are aligned bone by bone:

1. Axes: source positions and rotations are brought into SMPL space (Y up, facing +Z, left at +X)
   by a signed axis permutation C: ``p' = s C p`` (s = metres per source unit), ``G' = C G C^T``.
2. Rest alignment: for each SMPL joint j that the preset gives a direction, ``A_j`` is the minimal
   rotation taking the source rest bone direction (source joint -> its direction child, see
   `core.mocap.skeletons`) to the target rest bone direction (SMPL joint -> its child). Minimal =
   no twist about the bone: both rest poses are T-pose-like with world-aligned frames, so the
   right alignment is "bend the bone over, don't roll it". A joint without a direction (or whose
   target has no child) inherits its parent's ``A`` -- the rest of a limb continues rigidly, e.g.
   CMU's feet share the 20-degree leg splay of its rest pose, which their own (forward-pointing)
   direction cannot reveal -- and the root has ``A = I``. Presets align only bones whose source
   rest direction is a convention (CMU's splayed legs, T-pose arms), not the subject's measured
   upright anatomy (spine, neck), which therefore keeps ``A = I``.
3. Target global rotation ``G_t[j] = G_s[j] G0_s[j]^T A_j^T`` where G0_s is the source's global
   rotation in its rest frame (identity for the zero-rotation rest, not for e.g. a T-pose frame 0).
   Several source bones mapped to one SMPL joint are averaged (quaternion mean of their
   ``G_s G0_s^T``). Unmapped SMPL joints (fingers, for a body-only source) follow their parent.
4. Local rotations ``R_j = G_t[parent]^T G_t[j]``; the root's is its global rotation.
5. Translation: SMPL's LBS rotates the root about the pelvis joint (pelvis_world = J_pelvis_rest +
   trans), so ``trans = s C hips - J_pelvis_rest`` puts the body's pelvis on the source root.

Everything is batched over frames; tensors are float64 unless given otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .bvh import BVHMotion, forward_kinematics, rest_positions
from .skeletons import (
    SMPL_BODY_JOINT_NAMES,
    TARGET_DIRECTION_CHILD,
    SkeletonPreset,
    default_target_names,
    load_preset,
)
from ..body_model import _JUMPING_MAX_TRANSFORMS, compose_by_jumping, jumping_plan
from ..rotations import axis_angle_to_matrix, matrix_to_axis_angle, matrix_to_quaternion, quaternion_to_matrix

__all__ = [
    "axes_matrix",
    "infer_axes",
    "minimal_rotation",
    "rotation_mean",
    "TransferSetup",
    "build_transfer",
    "transfer_rotations",
    "transfer_translation",
    "RetargetResult",
    "retarget_bvh",
    "source_rest",
    "skeleton_fk",
    "FLIP_PRONE_JOINTS",
    "twist_angles",
    "fix_twist_flips",
    "mirror_permutation",
    "mirror_rotations",
    "mirror_axis_angle",
    "mirror_translation",
]


# ----------------------------------------------------------------------------------------------
# Small geometric helpers


def axes_matrix(axes, dtype=torch.float64) -> Tensor:
    """(3, 3) C with p_smpl = C p_source, from e.g. ("+x", "+z", "-y") (SMPL X, Y, Z in source terms)."""
    C = torch.zeros(3, 3, dtype=dtype)
    for row, a in enumerate(axes):
        C[row, "xyz".index(a[1])] = 1.0 if a[0] == "+" else -1.0
    if abs(float(torch.det(C)) - 1) > 1e-9:
        raise ValueError(f"axes {axes!r} are a reflection, not a rotation")
    return C


def infer_axes(up, left) -> tuple[str, str, str]:
    """Snap a source's rest "up" and "left" vectors to signed axes -> axes tuple for `axes_matrix`.

    SMPL: up = +Y, left = +X, forward = left x up = +Z.
    """
    up = np.asarray(up, dtype=np.float64)
    left = np.asarray(left, dtype=np.float64)

    def snap(v):
        k = int(np.argmax(np.abs(v)))
        return ("+" if v[k] > 0 else "-") + "xyz"[k], k

    up_s, ku = snap(up)
    left_v = left.copy()
    left_v[ku] = 0.0  # ignore the component along the snapped up axis
    left_s, kl = snap(left_v)
    if kl == ku:
        raise ValueError("cannot infer axes: 'up' and 'left' point the same way")
    e = np.eye(3)
    fwd = np.cross(e[kl] * (1 if left_s[0] == "+" else -1), e[ku] * (1 if up_s[0] == "+" else -1))
    fwd_s, _ = snap(fwd)
    return (left_s, up_s, fwd_s)


def minimal_rotation(a: Tensor, b: Tensor) -> Tensor:
    """(..., 3, 3) rotation of least angle taking direction a to direction b (any lengths).

    For opposite directions the axis is any one perpendicular to a (a 180-degree turn).
    """
    a = torch.nn.functional.normalize(a, dim=-1)
    b = torch.nn.functional.normalize(b, dim=-1)
    w = 1.0 + (a * b).sum(-1, keepdim=True)
    xyz = torch.cross(a, b, dim=-1)
    opposite = w < 1e-10
    if bool(opposite.any()):
        # a perpendicular: cross with the axis a is least aligned with
        basis = torch.eye(3, dtype=a.dtype, device=a.device)[a.abs().argmin(-1)]
        perp = torch.nn.functional.normalize(torch.cross(a, basis, dim=-1), dim=-1)
        xyz = torch.where(opposite, perp, xyz)
        w = torch.where(opposite, torch.zeros_like(w), w)
    return quaternion_to_matrix(torch.cat([w, xyz], dim=-1))


def rotation_mean(rotations: Tensor) -> Tensor:
    """(..., K, 3, 3) -> (..., 3, 3): normalised sum of sign-aligned quaternions (chordal L2 mean;
    for two rotations exactly the half-way slerp)."""
    q = matrix_to_quaternion(rotations)
    ref = q[..., :1, :]
    q = torch.where((q * ref).sum(-1, keepdim=True) < 0, -q, q)
    return quaternion_to_matrix(q.sum(-2))


# ----------------------------------------------------------------------------------------------
# Setup


@dataclass
class TransferSetup:
    """Everything the per-frame transfer needs, built once per source skeleton and target body.

    target_names / target_parents (Jt,) / target_rest (Jt, 3): the body's joints at rest (metres).
    sources: per target joint, the source joint indices driving it (empty tuple = unmapped).
    align: (Jt, 3, 3) A_j (the parent's where the preset gives no direction; identity at the root).
    rest_global: (Js, 3, 3) source global rotations at the rest pose, in SMPL axes (G0').
    axes: (3, 3) C, source axes -> SMPL axes. scale: metres per source unit.
    root_source: source index of the joint mapped to the pelvis (its position gives trans).
    """

    target_names: list[str]
    target_parents: Tensor
    target_rest: Tensor
    sources: list[tuple[int, ...]]
    align: Tensor
    rest_global: Tensor
    axes: Tensor
    scale: float
    root_source: int

    def align_angles_deg(self) -> dict[str, float]:
        """Angle of each A_j in degrees, for the mapped target joints (a diagnostic)."""
        tr = self.align.diagonal(dim1=-2, dim2=-1).sum(-1)
        ang = torch.rad2deg(torch.acos(((tr - 1) / 2).clamp(-1, 1)))
        return {n: float(a) for n, a, s in zip(self.target_names, ang, self.sources) if s}


def build_transfer(
    preset: SkeletonPreset | str | dict,
    source_names: list[str],
    source_rest: Tensor | np.ndarray,
    target_rest: Tensor | np.ndarray,
    target_parents: Tensor | np.ndarray | list[int],
    target_names: list[str] | None = None,
    source_rest_global: Tensor | np.ndarray | None = None,
    unit_scale: float | None = None,
    axes: tuple[str, str, str] | None = None,
    dtype=torch.float64,
) -> TransferSetup:
    """Build the per-bone rest alignment.

    source_rest: (Js, 3) source joint positions in its rest pose (file units and axes), e.g.
        `bvh.rest_positions(motion)` for the zero-rotation rest or a frame's FK positions.
    source_rest_global: (Js, 3, 3) source global rotations in that rest pose (None = identity).
    target_rest: (Jt, 3) target joints at rest in SMPL space (metres); target_parents (Jt,).
    target_names: SMPL names of the target joints (default by count: 22, 24, 52, 55).
    unit_scale / axes: override the preset's (a preset without axes has them inferred from the
        rest skeleton: pelvis -> spine3/neck is up, right_hip -> left_hip is left).
    """
    preset = load_preset(preset)
    source_rest = torch.as_tensor(np.asarray(source_rest), dtype=dtype)
    target_rest = torch.as_tensor(np.asarray(target_rest), dtype=dtype)
    parents = torch.as_tensor(np.asarray(target_parents), dtype=torch.long)
    Jt = target_rest.shape[0]
    if target_names is None:
        target_names = default_target_names(Jt)
    if len(target_names) != Jt or parents.shape[0] != Jt:
        raise ValueError(f"target has {Jt} joints but {len(target_names)} names and {parents.shape[0]} parents")
    index = {n: i for i, n in enumerate(source_names)}

    def src(name: str) -> int:
        if name not in index:
            raise KeyError(f"preset {preset.name!r} needs source joint {name!r}, absent from the skeleton "
                           f"(joints: {source_names})")
        return index[name]

    scale = unit_scale if unit_scale is not None else preset.unit_scale
    if scale is None:
        raise ValueError(f"preset {preset.name!r} has no unit scale; pass unit_scale (metres per unit)")
    if axes is None:
        axes = preset.axes
    if axes is None:
        up = source_rest[src(preset.sources("neck")[0] if preset.sources("neck") else preset.sources("spine3")[0])]
        up = up - source_rest[src(preset.sources("pelvis")[0])]
        left = source_rest[src(preset.sources("left_hip")[0])] - source_rest[src(preset.sources("right_hip")[0])]
        axes = infer_axes(up.numpy(), left.numpy())
    C = axes_matrix(axes, dtype)

    Js = len(source_names)
    if source_rest_global is None:
        rest_global = torch.eye(3, dtype=dtype).expand(Js, 3, 3).clone()
    else:
        rest_global = C @ torch.as_tensor(np.asarray(source_rest_global), dtype=dtype) @ C.T
    rest_smpl = source_rest @ C.T  # directions only: no need to scale

    if "pelvis" not in preset.joints:
        raise ValueError(f"preset {preset.name!r} maps no pelvis")
    tindex = {n: i for i, n in enumerate(target_names)}
    # Body joints must find their sources; hand joints a skeleton lacks (no fingers) stay at rest.
    body = set(SMPL_BODY_JOINT_NAMES)
    sources: list[tuple[int, ...]] = [
        tuple(src(n) for n in preset.sources(name))
        if name in body or all(n in index for n in preset.sources(name)) else ()
        for name in target_names
    ]
    align = torch.eye(3, dtype=dtype).expand(Jt, 3, 3).clone()
    own = [False] * Jt
    plist = parents.tolist()
    for j in _topological(plist):
        name = target_names[j]
        names = preset.sources(name)
        child_s = preset.directions.get(name)
        child_t = TARGET_DIRECTION_CHILD.get(name)
        if sources[j] and child_s and child_t in tindex and (name in body or child_s in index):
            d_src = rest_smpl[src(child_s)] - rest_smpl[src(names[0])]
            d_tgt = target_rest[tindex[child_t]] - target_rest[j]
            if d_src.norm() > 1e-9 and d_tgt.norm() > 1e-9:
                align[j] = minimal_rotation(d_src, d_tgt)
                own[j] = True
        if not own[j] and plist[j] >= 0:
            align[j] = align[plist[j]]  # the limb continues rigidly
    root_j = tindex.get("pelvis", 0)
    if not sources[root_j]:
        raise ValueError("the target's pelvis is not mapped")
    return TransferSetup(
        target_names=list(target_names),
        target_parents=parents,
        target_rest=target_rest,
        sources=sources,
        align=align,
        rest_global=rest_global,
        axes=C,
        scale=float(scale),
        root_source=sources[root_j][0],
    )


# ----------------------------------------------------------------------------------------------
# Per-frame transfer


def transfer_rotations(setup: TransferSetup, source_global: Tensor) -> tuple[Tensor, Tensor]:
    """Source global rotations (T, Js, 3, 3) in source axes -> target (local, global), each (T, Jt, 3, 3)."""
    C = setup.axes.to(source_global.dtype)
    G = C @ source_global @ C.T
    G = G @ setup.rest_global.to(G.dtype).transpose(-1, -2)
    T = G.shape[0]
    Jt = len(setup.target_names)
    parents = setup.target_parents.tolist()
    align_t = setup.align.to(G.dtype).transpose(-1, -2)
    glob: list[Tensor | None] = [None] * Jt
    order = _topological(parents)
    for j in order:
        s = setup.sources[j]
        if s:
            g = G[:, s[0]] if len(s) == 1 else rotation_mean(G[:, list(s)])
            glob[j] = g @ align_t[j]
        elif parents[j] >= 0:
            glob[j] = glob[parents[j]]
        else:
            glob[j] = torch.eye(3, dtype=G.dtype).expand(T, 3, 3)
    glob_t = torch.stack(glob, 1)
    local = torch.empty_like(glob_t)
    for j in range(Jt):
        p = parents[j]
        local[:, j] = glob_t[:, j] if p < 0 else glob_t[:, p].transpose(-1, -2) @ glob_t[:, j]
    return local, glob_t


def transfer_translation(
    setup: TransferSetup,
    source_root_positions: Tensor,
    anchor: str = "root",
    source_positions: Tensor | None = None,
    target_root_rotation: Tensor | None = None,
) -> Tensor:
    """SMPL trans (T, 3) in metres from source positions in file units and axes.

    anchor "root" (default): the body's pelvis joint lands on the source root (source_root_positions
        (T, 3)): trans = s C root - J_pelvis_rest.
    anchor "hips": the midpoint of the body's hip joints lands on the midpoint of the source's
        (needs source_positions (T, Js, 3) and the body's root global rotation (T, 3, 3)). Use it
        when the two roots sit at different heights: CMU's root is ~10 cm above its hip joints
        while the open body's pelvis joint is level with its hips, so "root" lifts the feet ~11 cm.
    """
    names = setup.target_names
    root = setup.target_parents.tolist().index(-1)
    C = setup.axes.to(source_root_positions.dtype)
    pelvis_rest = setup.target_rest[root].to(C.dtype)
    if anchor == "root":
        return setup.scale * source_root_positions @ C.T - pelvis_rest
    if anchor != "hips":
        raise ValueError(f"anchor must be 'root' or 'hips', got {anchor!r}")
    if source_positions is None or target_root_rotation is None:
        raise ValueError("anchor='hips' needs source_positions and target_root_rotation")
    lh, rh = names.index("left_hip"), names.index("right_hip")
    if not setup.sources[lh] or not setup.sources[rh]:
        raise ValueError("anchor='hips' needs both hips mapped")
    src_mid = 0.5 * (source_positions[:, setup.sources[lh][0]] + source_positions[:, setup.sources[rh][0]])
    src_mid = setup.scale * src_mid @ C.T
    offset = 0.5 * (setup.target_rest[lh] + setup.target_rest[rh]).to(C.dtype) - pelvis_rest
    return src_mid - (target_root_rotation @ offset) - pelvis_rest


def _topological(parents: list[int]) -> list[int]:
    done: set[int] = set()
    order: list[int] = []
    while len(order) < len(parents):
        progressed = False
        for j, p in enumerate(parents):
            if j not in done and (p < 0 or p in done):
                order.append(j)
                done.add(j)
                progressed = True
        if not progressed:
            raise ValueError("target parents contain a cycle")
    return order


def source_rest(motion: BVHMotion, preset: SkeletonPreset) -> tuple[Tensor, Tensor | None]:
    """A clip's rest skeleton: joint positions (Js, 3) and world rotations (Js, 3, 3), None for
    identity: the zero-rotation (OFFSET) pose, or the preset's `rest_frame` (SkeletonPresetError
    when the clip has no such frame)."""
    frame = preset.rest_frame_index(motion.num_frames, motion.source)
    if frame is None:
        return rest_positions(motion), None
    rotations, positions = forward_kinematics(motion, frames=[frame])
    return positions[0], rotations[0]


@dataclass
class RetargetResult:
    poses: Tensor  # (T, Jt, 3) local axis-angle, SMPL joint order of the target
    trans: Tensor  # (T, 3) metres
    local: Tensor  # (T, Jt, 3, 3)
    setup: TransferSetup


def retarget_bvh(
    motion: BVHMotion,
    preset: SkeletonPreset | str | dict,
    target_rest,
    target_parents,
    target_names: list[str] | None = None,
    frames=None,
    setup: TransferSetup | None = None,
    anchor: str = "root",
    **build_kwargs,
) -> RetargetResult:
    """A parsed BVH -> SMPL poses and translations.

    The source's rest is its zero-rotation (OFFSET) pose, or the preset's `rest_frame` (e.g. 0 for
    cgspeed's DAZ files, whose first frame is a T-pose).
    frames: optional frame indices to convert (e.g. a subsampling).
    setup: reuse a TransferSetup built for the same skeleton and body.
    anchor: "root" puts the body's pelvis on the source root, "hips" the hip midpoints together
        (see transfer_translation).
    """
    if setup is None:
        preset = load_preset(preset)
        src_rest, src_rest_global = source_rest(motion, preset)
        setup = build_transfer(
            preset, motion.names, src_rest, target_rest, target_parents, target_names,
            source_rest_global=src_rest_global, **build_kwargs,
        )  # fmt: skip
    glob, pos = forward_kinematics(motion, frames=frames)
    local, glob_t = transfer_rotations(setup, glob)
    root = setup.target_parents.tolist().index(-1)
    trans = transfer_translation(setup, pos[:, setup.root_source], anchor, pos, glob_t[:, root])
    return RetargetResult(poses=matrix_to_axis_angle(local), trans=trans, local=local, setup=setup)


# ----------------------------------------------------------------------------------------------
# Target skeleton kinematics (for checks and near-duplicate detection without the body files)


def skeleton_fk(local: Tensor, rest_joints: Tensor, parents, trans: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Joint positions (T, J, 3) and global rotations (T, J, 3, 3) of an SMPL-style skeleton.

    local: (T, J, 3, 3) local rotations; rest_joints: (J, 3); the root rotates about its rest
    position and moves by trans (T, 3) (SMPL's LBS convention). Parents in any order (-1: a root).
    Few frames (a live update) compose by pointer jumping (core.body_model.compose_by_jumping: a few
    rounds over all joints, fewest tensor operations); many frames joint by joint (least arithmetic).
    """
    parents = [int(p) for p in (parents.tolist() if hasattr(parents, "tolist") else parents)]
    rest = torch.as_tensor(rest_joints, dtype=local.dtype, device=local.device)
    if local.shape[0] * len(parents) <= _JUMPING_MAX_TRANSFORMS:
        return _skeleton_fk_jumping(local, rest, parents, trans)
    J = rest.shape[0]
    glob: list[Tensor | None] = [None] * J
    pos: list[Tensor | None] = [None] * J
    for j in _topological(parents):
        p = parents[j]
        if p < 0:
            glob[j] = local[:, j]
            pos[j] = rest[j].expand(local.shape[0], 3)
            if trans is not None:
                pos[j] = pos[j] + trans
        else:
            glob[j] = glob[p] @ local[:, j]
            pos[j] = pos[p] + (glob[p] @ (rest[j] - rest[p]).unsqueeze(-1)).squeeze(-1)
    return torch.stack(pos, 1), torch.stack(glob, 1)


def _skeleton_fk_jumping(local: Tensor, rest: Tensor, parents: list[int], trans: Tensor | None) -> tuple[Tensor, Tensor]:
    """skeleton_fk by core.body_model.compose_by_jumping (its plan cached per parents and device)."""
    index = torch.tensor(parents, device=rest.device)
    roots = index < 0
    offsets = torch.where(roots[:, None], rest, rest - rest[index.clamp(min=0)]).expand(local.shape[0], -1, -1)
    if trans is not None:  # the roots move by trans
        offsets = offsets + trans[:, None] * roots[None, :, None].to(rest.dtype)
    glob, pos = compose_by_jumping(local, offsets, jumping_plan(tuple(parents), rest.device))
    return pos, glob


# ----------------------------------------------------------------------------------------------
# Twist flips (a data-cleaning step)

# Joints whose CMU data shows 180-degree flips about the bone: the ankle (subject 05, ~3% of the
# main set's frames: |twist| is either < 60 deg or 150-180 deg, nothing between) and the wrist
# (take 06_13: the left hand rolled ~160 deg for the whole take). The bone directions, which is
# all a mocap skeleton shows, are right; the roll hidden in the frame is not anatomical.
FLIP_PRONE_JOINTS = ("left_ankle", "right_ankle", "left_wrist", "right_wrist")


def _bone_axis(names: list[str], parents: list[int], rest: Tensor, j: int) -> Tensor:
    """Rest direction of joint j's bone: towards its direction child, else continuing its parent's."""
    child = TARGET_DIRECTION_CHILD.get(names[j])
    if child in names:
        return torch.nn.functional.normalize(rest[names.index(child)] - rest[j], dim=-1)
    return torch.nn.functional.normalize(rest[j] - rest[parents[j]], dim=-1)


def twist_angles(local: Tensor, axis: Tensor) -> Tensor:
    """Twist (radians, in (-pi, pi]) of rotations (..., 3, 3) about a unit axis in their own frame
    (swing-twist decomposition R = S T with T about `axis`)."""
    q = matrix_to_quaternion(local)
    p = (q[..., 1:] * axis.to(q.dtype)).sum(-1)
    twist = 2 * torch.atan2(p, q[..., 0])
    return torch.remainder(twist + torch.pi, 2 * torch.pi) - torch.pi


def fix_twist_flips(
    local: Tensor,
    names: list[str],
    parents,
    rest: Tensor,
    joints=FLIP_PRONE_JOINTS,
    max_twist_deg: float = 90.0,
) -> tuple[Tensor, int]:
    """Undo 180-degree flips about the bone: where a joint's local twist exceeds max_twist_deg,
    turn it by 180 degrees about its bone (R <- R T(-+pi)); the swing (the bone's direction) is
    kept, children keep their local rotations. Returns (fixed copy of local, joint-frames changed)."""
    parents = [int(p) for p in (parents.tolist() if hasattr(parents, "tolist") else parents)]
    rest = torch.as_tensor(rest, dtype=local.dtype)
    out = local.clone()
    changed = 0
    for name in joints:
        if name not in names:
            continue
        j = names.index(name)
        axis = _bone_axis(names, parents, rest, j)
        twist = twist_angles(local[:, j], axis)
        bad = twist.abs() > max_twist_deg * torch.pi / 180
        if bool(bad.any()):
            turn = axis_angle_to_matrix(-torch.sign(twist[bad]).unsqueeze(-1) * torch.pi * axis)
            out[bad, j] = local[bad, j] @ turn
            changed += int(bad.sum())
    return out, changed


# ----------------------------------------------------------------------------------------------
# Mirroring across SMPL's sagittal plane (x -> -x)


def mirror_permutation(names: list[str]) -> list[int]:
    """Index map swapping left_*/right_* joints (others map to themselves)."""
    index = {n: i for i, n in enumerate(names)}
    perm = []
    for n in names:
        if n.startswith("left_"):
            other = "right_" + n[5:]
        elif n.startswith("right_"):
            other = "left_" + n[6:]
        else:
            other = n
        if other not in index:
            raise KeyError(f"no mirror partner {other!r} for joint {n!r}")
        perm.append(index[other])
    return perm


def mirror_axis_angle(poses: Tensor | np.ndarray, names: list[str]):
    """(T, J, 3) or (T, 3J) local axis-angle -> the mirrored pose (x -> -x).

    M R M with M = diag(-1, 1, 1) is the rotation about (ax, -ay, -az); left and right swap.
    """
    flat = poses.ndim == 2
    J = len(names)
    p = poses.reshape(poses.shape[0], J, 3)
    out = p[:, mirror_permutation(names)]
    sign = np.array([1.0, -1.0, -1.0]) if isinstance(poses, np.ndarray) else torch.tensor(
        [1.0, -1.0, -1.0], dtype=poses.dtype, device=poses.device
    )
    out = out * sign
    return out.reshape(poses.shape[0], 3 * J) if flat else out


def mirror_rotations(rotations: Tensor, names: list[str]) -> Tensor:
    """(T, J, 3, 3) local rotations -> mirrored (M R M, left/right swapped)."""
    M = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=rotations.dtype, device=rotations.device))
    return M @ rotations[:, mirror_permutation(names)] @ M


def mirror_translation(trans, pelvis_rest=None):
    """(T, 3) trans -> mirrored. Exact for LBS: the mirrored pelvis lands at M (J_pelvis + trans),
    so trans' = M trans + (M - I) J_pelvis, i.e. x -> -x - 2 J_pelvis_x (just x -> -x for a
    pelvis on the mid-plane)."""
    out = trans.copy() if isinstance(trans, np.ndarray) else trans.clone()
    out[:, 0] = -out[:, 0]
    if pelvis_rest is not None:
        out[:, 0] = out[:, 0] - 2 * float(pelvis_rest[0])
    return out
