"""Linear blend skinning for the whole SMPL family (SMPL, SMPL-H, SMPL-X, MANO) and the open body.

One model class reads any family member's `.npz`; the pose layout comes from the file's kind.
Three paths share the same kinematics:
- the full mesh (`forward`), numerically the same as the `smplx` package on the same inputs;
- joints only (`return_vertices=False`): posed joints depend on the shaped rest joints alone, so
  the regressor is folded into the shape basis once and no vertex is touched (what IK calls);
- chosen vertices (`vertex_ids=...`): skinning restricted to a few vertices (markers).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .model_files import BodyModelError, ModelArrays, ModelKind, load_model_arrays
from .rotations import axis_angle_to_matrix

DATA_DIR = Path(__file__).resolve().parent / "data"
OPEN_BODY_VARIANTS = {"adult": "openbody_adult.npz", "all_ages": "openbody_allages.npz"}


@dataclass
class BodyOutput:
    """Posed joints (B, J, 3); vertices (B, V, 3), the chosen (B, len(ids), 3), or None;
    world rotations of the joints (B, J, 3, 3)."""

    joints: Tensor
    vertices: Tensor | None
    joint_rotations: Tensor


_JUMPING_MAX_TRANSFORMS = 256  # batch x joints up to which forward kinematics jumps pointers


@functools.lru_cache(maxsize=64)
def jumping_plan(parents: tuple[int, ...], device: torch.device) -> list[tuple[Tensor, Tensor]]:
    """The rounds of forward kinematics by pointer jumping over a tree given by `parents` (-1 for a
    root; any order): in each round every joint that still has an ancestor left composes its
    transform with that ancestor's, then points at the ancestor's ancestor, so a tree of depth d
    takes ceil(log2(d + 1)) rounds. Each round is (joints, their current ancestors) as index
    tensors on `device`. For `compose_by_jumping`."""
    ancestor, rounds = list(parents), []
    while any(a >= 0 for a in ancestor):
        ids = [j for j, a in enumerate(ancestor) if a >= 0]
        rounds.append((torch.tensor(ids, device=device), torch.tensor([ancestor[j] for j in ids], device=device)))
        ancestor = [ancestor[a] if a >= 0 else -1 for a in ancestor]
    return rounds


def compose_by_jumping(rotations: Tensor, offsets: Tensor, plan: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Forward kinematics by pointer jumping (`jumping_plan`'s rounds): local rotations (B, J, 3, 3)
    and offsets (B, J, 3), each joint's rest position relative to its parent's (a root's: its
    position) -> world rotations (B, J, 3, 3) and joint positions (B, J, 3). Each round composes
    every joint's transform with its current ancestor's, synchronously (the gathers read the
    round's inputs). The body model and core.mocap.transfer.skeleton_fk share it."""
    world_rotations, joints = rotations.clone(), offsets.clone()
    for joint_ids, ancestor_ids in plan:
        ancestor_rotations, ancestor_positions = world_rotations[:, ancestor_ids], joints[:, ancestor_ids]
        joints[:, joint_ids] = (ancestor_rotations @ joints[:, joint_ids].unsqueeze(-1)).squeeze(-1) + ancestor_positions
        world_rotations[:, joint_ids] = ancestor_rotations @ world_rotations[:, joint_ids]
    return world_rotations, joints


class BodyModel(nn.Module):
    """An SMPL-family body: shape (betas, expression) and pose (axis-angle per joint) -> mesh."""

    def __init__(
        self,
        arrays: ModelArrays,
        *,
        num_betas: int | None = None,
        num_expression: int | None = None,
        use_pca: bool = False,
        num_pca_comps: int = 6,
        flat_hand_mean: bool = False,
        use_pose_correctives: bool = True,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        if dtype not in (torch.float32, torch.float64):
            raise BodyModelError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        self.path = arrays.path
        self.kind: ModelKind = arrays.kind
        self.joint_names: tuple[str, ...] = arrays.joint_names
        self.num_joints = len(arrays.parents)
        self.num_vertices = arrays.v_template.shape[0]
        self.num_betas = _count(arrays.shapedirs.shape[-1], num_betas, "num_betas", arrays.path)
        self.num_expression = _count(arrays.exprdirs.shape[-1], num_expression, "num_expression", arrays.path)
        self.use_pose_correctives = use_pose_correctives and arrays.posedirs is not None
        self.use_pca = use_pca
        if use_pca and not arrays.hand_components:
            raise BodyModelError(f"{arrays.path}: use_pca=True but the file has no hand PCA components")
        if use_pca and not 1 <= num_pca_comps <= 45:
            raise BodyModelError(f"num_pca_comps must be in 1..45, got {num_pca_comps}")
        available_comps = min((c.shape[0] for c in arrays.hand_components.values()), default=0)
        if use_pca and num_pca_comps > available_comps:
            raise BodyModelError(
                f"{arrays.path}: num_pca_comps={num_pca_comps}, but the file has {available_comps} hand components"
            )
        self.num_pca_comps = num_pca_comps

        def buffer(name: str, array: np.ndarray) -> None:
            self.register_buffer(name, torch.as_tensor(np.ascontiguousarray(array), dtype=dtype))

        basis = np.concatenate(
            [arrays.shapedirs[:, :, : self.num_betas], arrays.exprdirs[:, :, : self.num_expression]], axis=-1
        )
        # Everything that only depends on the model is precomputed in float64, then cast.
        buffer("v_template", arrays.v_template)
        buffer("shape_basis", basis.reshape(3 * self.num_vertices, basis.shape[-1]).T)  # (K, V*3); K may be 0
        buffer("J_regressor", arrays.J_regressor)
        buffer("rest_joints_template", arrays.J_regressor @ arrays.v_template)  # (J, 3)
        buffer("joint_shape_basis", np.einsum("jv,vck->kjc", arrays.J_regressor, basis).reshape(
            basis.shape[-1], 3 * self.num_joints))
        buffer("weights", arrays.weights)
        if self.use_pose_correctives:
            buffer("posedirs", arrays.posedirs.reshape(-1, arrays.posedirs.shape[-1]).T)  # (P, V*3)
        self.register_buffer("faces", torch.as_tensor(arrays.faces))
        self.register_buffer("parents", torch.as_tensor(arrays.parents))
        for part, components in arrays.hand_components.items():
            buffer(f"{part}_components", components[:num_pca_comps])
        for part, mean in arrays.hand_means.items():
            buffer(f"{part}_mean", np.zeros_like(mean) if flat_hand_mean else mean)
        self._levels = _depth_levels(arrays.parents)
        self._prefix_levels: dict[int, list[tuple[Tensor, Tensor]]] = {}
        self._jumps: dict[tuple[int, torch.device], list[tuple[Tensor, Tensor]]] = {}  # pointer-jumping rounds

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_file(cls, path: str | Path, **options) -> BodyModel:
        """Load an SMPL / SMPL-H / SMPL-X / MANO `.npz` or an open body file."""
        return cls(load_model_arrays(path), **options)

    @classmethod
    def open_default(cls, variant: str = "adult", **options) -> BodyModel:
        """The shipped open body: 'adult' (default) or 'all_ages' (newborn to 90)."""
        if variant not in OPEN_BODY_VARIANTS:
            raise BodyModelError(f"unknown open body variant {variant!r}; expected one of {sorted(OPEN_BODY_VARIANTS)}")
        return cls.from_file(DATA_DIR / OPEN_BODY_VARIANTS[variant], **options)

    @property
    def dtype(self) -> torch.dtype:
        return self.v_template.dtype

    @property
    def device(self) -> torch.device:
        return self.v_template.device

    # ----------------------------------------------------------------- public API
    def forward(
        self,
        betas: Tensor | None = None,
        global_orient: Tensor | None = None,
        body_pose: Tensor | None = None,
        left_hand_pose: Tensor | None = None,
        right_hand_pose: Tensor | None = None,
        jaw_pose: Tensor | None = None,
        leye_pose: Tensor | None = None,
        reye_pose: Tensor | None = None,
        hand_pose: Tensor | None = None,
        expression: Tensor | None = None,
        transl: Tensor | None = None,
        *,
        return_vertices: bool = True,
        vertex_ids: Tensor | None = None,
    ) -> BodyOutput:
        """Pose the body. Omitted parameters are zero; every given one has batch B (betas,
        expression and transl may also have batch 1). Pose parts are axis-angle (B, 3 * joints),
        hands (B, num_pca_comps) when the model uses hand PCA."""
        given = {
            "betas": betas, "global_orient": global_orient, "body_pose": body_pose,
            "left_hand_pose": left_hand_pose, "right_hand_pose": right_hand_pose, "jaw_pose": jaw_pose,
            "leye_pose": leye_pose, "reye_pose": reye_pose, "hand_pose": hand_pose,
            "expression": expression, "transl": transl,
        }
        params = self._check_params(given)
        batch = _batch_size(params)
        rotations = axis_angle_to_matrix(self.full_pose(params, batch).view(batch, self.num_joints, 3))
        return self.forward_rotations(
            rotations,
            betas=params.get("betas"),
            expression=params.get("expression"),
            transl=params.get("transl"),
            return_vertices=return_vertices,
            vertex_ids=vertex_ids,
        )

    def full_pose(self, params: dict[str, Tensor], batch: int) -> Tensor:
        """(B, 3 * J) axis-angle for all joints, with hand PCA expanded and hand means added."""
        pieces = []
        for part, count in self.kind.pose_parts:
            value = params.get(part)
            if value is not None and self.use_pca and hasattr(self, f"{part}_components"):
                value = value @ getattr(self, f"{part}_components")
            if value is None:
                value = self.v_template.new_zeros(batch, 3 * count)
            if hasattr(self, f"{part}_mean"):
                value = value + getattr(self, f"{part}_mean")
            pieces.append(value.expand(batch, -1))
        return torch.cat(pieces, dim=1)

    def forward_rotations(
        self,
        rotations: Tensor,
        betas: Tensor | None = None,
        expression: Tensor | None = None,
        transl: Tensor | None = None,
        *,
        return_vertices: bool = True,
        vertex_ids: Tensor | None = None,
    ) -> BodyOutput:
        """Pose from local rotation matrices (B, J, 3, 3), unchecked: the fast path for solvers.
        Without vertices, rotations may cover only the first J' joints (every parent among them,
        e.g. SMPL's 22 body joints): only those are posed."""
        batch, count = rotations.shape[:2]
        shape = self._shape_coefficients(betas, expression, batch)
        rest_joints = self.rest_joints_template.expand(batch, -1, -1)
        if shape is not None:
            rest_joints = rest_joints + (shape @ self.joint_shape_basis).view(batch, self.num_joints, 3)
        rest_joints = rest_joints[:, :count]
        world_rotations, joints = self._forward_kinematics(rotations, rest_joints)
        vertices = None
        if return_vertices or vertex_ids is not None:
            vertices = self._skin(rotations, world_rotations, joints, rest_joints, shape, vertex_ids)
        if transl is not None:
            joints = joints + transl.unsqueeze(1)
            vertices = None if vertices is None else vertices + transl.unsqueeze(1)
        return BodyOutput(joints=joints, vertices=vertices, joint_rotations=world_rotations)

    def rest_joints(self, betas: Tensor | None = None, expression: Tensor | None = None) -> Tensor:
        """Joint positions in the rest pose (B, J, 3) for a shape (B = 1 when betas is None)."""
        params = self._check_params({"betas": betas, "expression": expression})
        batch = _batch_size(params)
        return self.forward_rotations(
            self._identity(batch), params.get("betas"), params.get("expression"), return_vertices=False
        ).joints

    def shaped_vertices(self, betas: Tensor | None = None, expression: Tensor | None = None) -> Tensor:
        """The mesh in the rest pose for a shape (B, V, 3): the linear shape part alone, no skinning."""
        params = self._check_params({"betas": betas, "expression": expression})
        batch = _batch_size(params)
        flat = self.v_template.reshape(1, -1)
        shape = self._shape_coefficients(params.get("betas"), params.get("expression"), batch)
        if shape is not None:
            flat = torch.addmm(flat, shape, self.shape_basis)
        return flat.expand(batch, -1).reshape(batch, self.num_vertices, 3)

    # ----------------------------------------------------------------- internals
    def _identity(self, batch: int) -> Tensor:
        eye = torch.eye(3, dtype=self.dtype, device=self.device)
        return eye.expand(batch, self.num_joints, 3, 3)

    def _shape_coefficients(self, betas: Tensor | None, expression: Tensor | None, batch: int) -> Tensor | None:
        pieces = []
        if self.num_betas:
            pieces.append(self.v_template.new_zeros(1, self.num_betas) if betas is None else betas)
        if self.num_expression:
            pieces.append(self.v_template.new_zeros(1, self.num_expression) if expression is None else expression)
        if (betas is None and expression is None) or not pieces:
            return None
        return torch.cat([piece.expand(batch, -1) for piece in pieces], dim=1)

    def _forward_kinematics(self, rotations: Tensor, rest_joints: Tensor) -> tuple[Tensor, Tensor]:
        """World rotations and positions of the joints. Small batches compose transforms by pointer
        jumping (ceil(log2(depth + 1)) rounds, each over all joints: fewest operations, as a solver's
        single frame needs); large ones one tree depth at a time (least arithmetic). Measured on
        this project's CPU, 22 joints: batch 1 0.25 vs 0.45 ms, batch 1,000 11 vs 7.5 ms."""
        if rotations.shape[0] * rotations.shape[1] <= _JUMPING_MAX_TRANSFORMS:
            return self._forward_kinematics_jumping(rotations, rest_joints)
        world_rotations = torch.empty_like(rotations)
        joints = torch.empty_like(rest_joints)
        world_rotations[:, 0] = rotations[:, 0]
        joints[:, 0] = rest_joints[:, 0]
        for children, parents in self._levels_below(rotations.shape[1]):
            parent_rotations = world_rotations[:, parents]
            world_rotations[:, children] = parent_rotations @ rotations[:, children]
            offsets = (rest_joints[:, children] - rest_joints[:, parents]).unsqueeze(-1)
            joints[:, children] = (parent_rotations @ offsets).squeeze(-1) + joints[:, parents]
        return world_rotations, joints

    def _forward_kinematics_jumping(self, rotations: Tensor, rest_joints: Tensor) -> tuple[Tensor, Tensor]:
        """compose_by_jumping over the first `count` joints."""
        count = rotations.shape[1]
        offsets = rest_joints.clone()  # relative to the parent; the root's is its position
        offsets[:, 1:] -= rest_joints[:, self.parents[1:count]]
        return compose_by_jumping(rotations, offsets, self._jumps_below(count))

    def _jumps_below(self, count: int) -> list[tuple[Tensor, Tensor]]:
        """Pointer-jumping rounds for the first `count` joints: (joints, their current ancestor) each."""
        key = (count, self.parents.device)
        if key not in self._jumps:
            self._check_prefix(count)
            self._jumps[key] = jumping_plan(tuple(self.parents[:count].tolist()), key[1])
        return self._jumps[key]

    def _check_prefix(self, count: int) -> None:
        if any(int(p) >= count for p in self.parents[1:count]):
            raise BodyModelError(f"the first {count} joints do not contain all their parents")

    def _levels_below(self, count: int) -> list[tuple[Tensor, Tensor]]:
        """The depth levels restricted to the first `count` joints."""
        if count == self.num_joints:
            return self._levels
        if count not in self._prefix_levels:
            self._check_prefix(count)
            self._prefix_levels[count] = [(children[children < count], parents[children < count])
                                          for children, parents in self._levels if bool((children < count).any())]
        return self._prefix_levels[count]

    def _skin(
        self,
        rotations: Tensor,
        world_rotations: Tensor,
        joints: Tensor,
        rest_joints: Tensor,
        shape: Tensor | None,
        vertex_ids: Tensor | None,
    ) -> Tensor:
        batch = rotations.shape[0]
        if vertex_ids is None:
            template, basis, weights = self.v_template, self.shape_basis, self.weights
            posedirs = self.posedirs if self.use_pose_correctives else None
        else:
            ids = torch.as_tensor(vertex_ids, device=self.device, dtype=torch.long).reshape(-1)
            if ids.numel() and (ids.min() < 0 or ids.max() >= self.num_vertices):
                raise BodyModelError(f"vertex_ids must lie in 0..{self.num_vertices - 1}")
            coords = (ids.unsqueeze(1) * 3 + torch.arange(3, device=self.device)).reshape(-1)
            template, basis, weights = self.v_template[ids], self.shape_basis[:, coords], self.weights[ids]
            posedirs = self.posedirs[:, coords] if self.use_pose_correctives else None
        num_verts = template.shape[0]
        # Rest-pose vertices (B, V*3): template + shape offsets + pose correctives, accumulated by GEMMs.
        rest_vertices = template.reshape(1, -1)
        if shape is not None:
            rest_vertices = torch.addmm(rest_vertices, shape, basis)
        if posedirs is not None:
            eye = torch.eye(3, dtype=self.dtype, device=self.device)
            pose_feature = (rotations[:, 1:] - eye).reshape(batch, -1)
            rest_vertices = torch.addmm(rest_vertices, pose_feature, posedirs)
        rest_vertices = rest_vertices.expand(batch, -1).view(batch, num_verts, 3)
        # Per joint: x -> R x + (p - R j_rest); blended per vertex as a 3x4 affine map.
        translations = joints - (world_rotations @ rest_joints.unsqueeze(-1)).squeeze(-1)
        affine = torch.cat([world_rotations, translations.unsqueeze(-1)], dim=-1)  # (B, J, 3, 4)
        blended = (weights @ affine.reshape(batch, self.num_joints, 12)).view(batch, num_verts, 3, 4)
        # Apply the blended maps column by column (elementwise, no batched 3x3 matmul per vertex).
        x, y, z = rest_vertices.unsqueeze(-2).unbind(-1)  # (B, V, 1) each
        vertices = torch.addcmul(blended[..., 3], blended[..., 0], x)
        return vertices.addcmul_(blended[..., 1], y).addcmul_(blended[..., 2], z)

    def _check_params(self, given: dict[str, Tensor | None]) -> dict[str, Tensor]:
        """Turn arguments into tensors of the model's dtype with their expected widths, or say what is wrong."""
        widths = {part: 3 * count for part, count in self.kind.pose_parts}
        for part in widths:
            if self.use_pca and hasattr(self, f"{part}_components"):
                widths[part] = self.num_pca_comps
        widths.update(betas=self.num_betas, expression=self.num_expression, transl=3)
        params = {}
        for name, value in given.items():
            if value is None:
                continue
            if name not in widths:
                raise BodyModelError(f"'{name}' is not a parameter of a {self.kind.name} model")
            if isinstance(value, Tensor):
                if value.device != self.device:
                    raise BodyModelError(f"'{name}' is on {value.device}, but the model is on {self.device}")
                tensor = value.to(self.dtype)
            else:
                tensor = torch.as_tensor(np.asarray(value), dtype=self.dtype, device=self.device)
            if tensor.ndim == 3 and tensor.shape[-1] == 3 and name not in ("betas", "expression"):
                tensor = tensor.flatten(1)  # (B, joints, 3) is accepted for pose parts
            if tensor.ndim != 2 or tensor.shape[1] != widths[name]:
                raise BodyModelError(
                    f"'{name}' has shape {tuple(tensor.shape)}, expected (batch, {widths[name]}) "
                    f"for this {self.kind.name} model"
                )
            if not torch.isfinite(tensor).all():
                raise BodyModelError(f"'{name}' contains NaN or infinite values")
            params[name] = tensor
        return params


def _batch_size(params: dict[str, Tensor]) -> int:
    """The common batch size; betas, expression and transl may broadcast from 1."""
    sizes = {name: tensor.shape[0] for name, tensor in params.items()}
    batch = max(sizes.values(), default=1)
    wrong = {name: size for name, size in sizes.items() if size != batch and size != 1}
    pose_at_one = [name for name, size in sizes.items()
                   if size == 1 and batch > 1 and name not in ("betas", "expression", "transl")]
    if wrong or pose_at_one:
        listing = ", ".join(f"{name}={size}" for name, size in sizes.items())
        raise BodyModelError(f"batch sizes disagree ({listing}); pose parameters must all have batch {batch}")
    return batch


def _count(available: int, requested: int | None, name: str, path: str) -> int:
    if requested is None:
        return available
    if not 0 <= requested <= available:
        raise BodyModelError(f"{path}: {name}={requested}, but the file has {available} components")
    return requested


def _depth_levels(parents: np.ndarray) -> list[tuple[Tensor, Tensor]]:
    """Joints grouped by tree depth (root excluded): each group's parents are all known before it."""
    depth = np.zeros(len(parents), dtype=np.int64)
    for joint in range(1, len(parents)):
        depth[joint] = depth[parents[joint]] + 1
    levels = []
    for level in range(1, depth.max() + 1 if len(parents) > 1 else 1):
        children = np.flatnonzero(depth == level)
        levels.append((torch.as_tensor(children), torch.as_tensor(parents[children])))
    return levels
