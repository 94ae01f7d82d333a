"""Analytic first derivatives for the IK's Gauss-Newton steps: body points and VPoser's decoder.

Generic automatic Jacobians (torch.func's vmap over jvp, or forward-mode AD on a batch copied once
per unknown) cost tens of milliseconds per single frame on CPU and seconds per thousand frames,
because the body's forward kinematics is a chain of tiny 3x3 products. Written by hand the Jacobian
is a few large batched products:

- A change of joint j's rotation is a world angular velocity w_j; every point moved by joint j's
  frame moves by w_j x (point - joint_j). Summing w_j over each joint's ancestors (one matrix
  product with the ancestor table) gives all joints at once; skinned vertices blend the same per
  joint motions with their skinning weights, plus the pose-corrective and shape terms.
- VPoser's decoder is an MLP followed by the 6D -> matrix map: its tangents are pushed forward
  through the layers (forward mode, one column per latent dimension, the cheapest order), then
  turned into body-frame angular velocities of each decoded joint rotation in closed form.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor, nn

from .body_model import BodyModel
from .rotations import rotation_6d_to_matrix, skew
from .vposer import VPoser


def decoder_jacobian(vposer: VPoser, z: Tensor) -> tuple[Tensor, Tensor]:
    """Decoded local rotations (B, 21, 3, 3) and their angular Jacobian (B, 21, 3, L): column l is
    the body-frame angular velocity w of each rotation (dR = R [w]x) per unit change of z[:, l]."""
    return six_d_angular(*decoder_features(vposer, z, tangents=True))


def decoder_features(vposer: VPoser, z: Tensor, tangents: bool) -> tuple[Tensor, Tensor | None]:
    """VPoser's decoder up to its 6D output (B, 126), and with tangents=True the output's
    Jacobian (B, L, 126) by forward mode, one row per latent dimension. The network is piecewise
    linear (Linear and LeakyReLU layers), so this Jacobian only changes where a unit switches."""
    if vposer.training:
        raise RuntimeError("decoder_jacobian needs VPoser in eval mode (dropout off): call .eval()")
    x = z
    tangent = None  # (B, L, features): d x / d z
    for layer in vposer.decoder_net:
        if isinstance(layer, nn.Linear):
            if tangents and tangent is None:
                tangent = layer.weight.T.contiguous().unsqueeze(0)  # (1, L, out), broadcast over the batch
            elif tangents:  # one (B * L, in) x (in, out) product; a 3-D operand could fall back to bmm
                tangent = (tangent.reshape(-1, tangent.shape[-1]) @ layer.weight.T).view(z.shape[0], -1, layer.out_features)
            x = layer(x)
        elif isinstance(layer, (nn.LeakyReLU, nn.ReLU)):
            if tangents:
                slope = getattr(layer, "negative_slope", 0.0)
                tangent = tangent * torch.where(x > 0, 1.0, slope).to(x.dtype).unsqueeze(1)
            x = layer(x)
        elif isinstance(layer, nn.Dropout):
            continue
        else:  # the 6D -> matrix stage and the final flatten
            break
    return x, tangent


def six_d_angular(six_d: Tensor, d_six_d: Tensor) -> tuple[Tensor, Tensor]:
    """Rotations (B, 21, 3, 3) from VPoser's 6D output (B, 126) and the body-frame angular
    velocities (B, 21, 3, L) for its tangents (B, L, 126) (see decoder_jacobian)."""
    rotations = rotation_6d_to_matrix(six_d.unflatten(-1, (-1, 6)))
    columns = six_d.unflatten(-1, (-1, 3, 2))  # (B, 21, 3, 2), VPoser's row-major 3x2 layout
    d_columns = d_six_d.unflatten(-1, (-1, 3, 2))  # (B, L, 21, 3, 2)
    a1, a2 = columns[..., 0], columns[..., 1]
    da1, da2 = d_columns[..., 0], d_columns[..., 1]
    b1, b2, b3 = rotations[..., 0], rotations[..., 1], rotations[..., 2]
    norm_a1 = a1.norm(dim=-1)
    norm_u2 = (a2 - (b1 * a2).sum(-1, keepdim=True) * b1).norm(dim=-1)

    def dot(column: Tensor, tangents: Tensor) -> Tensor:  # (B, J, 3) . (B, L, J, 3) -> (B, J, L)
        # elementwise, not einsum: that would run as a batched product of 1x3 by 3xL matrices
        return (column.unsqueeze(1) * tangents).sum(-1).transpose(1, 2)

    # Gram-Schmidt differentiated: w_x = b3.db2, w_y = b1.db3, w_z = b2.db1, in terms of da1, da2.
    b3_da1 = dot(b3, da1) / norm_a1.unsqueeze(-1)
    w_x = (dot(b3, da2) - (b1 * a2).sum(-1).unsqueeze(-1) * b3_da1) / norm_u2.unsqueeze(-1)
    w_z = dot(b2, da1) / norm_a1.unsqueeze(-1)
    return rotations, torch.stack([w_x, -b3_da1, w_z], dim=2)


def cross_columns(columns: Tensor, vector: Tensor) -> Tensor:
    """columns x vector for each column: (..., 3, N) x (..., 3) -> (..., 3, N); plain slicing is several
    times faster than torch.cross on the middle axis of such tensors."""
    x, y, z = columns.unbind(-2)
    a, b, c = (component.unsqueeze(-1) for component in vector.unbind(-1))
    return torch.stack([y * c - z * b, z * a - x * c, x * b - y * a], dim=-2)


@lru_cache(maxsize=16)
def _ancestor_table(parents: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(J, J): [i, j] = 1 when j is i or one of its ancestors."""
    table = torch.zeros(len(parents), len(parents), dtype=dtype)
    for joint in range(len(parents)):
        node = joint
        while node >= 0:
            table[joint, node] = 1
            node = parents[node]
    return table.to(device)


def rotation_tangents(rotations: Tensor) -> Tensor:
    """(..., 3, 3) -> (..., 3, 3, 3): d R / d w_c = R [e_c]x for the body-frame angular velocity w."""
    basis = skew(torch.eye(3, dtype=rotations.dtype, device=rotations.device))  # (3, 3, 3)
    return rotations.unsqueeze(-3) @ basis


def body_jacobians(
    model: BodyModel,
    rotations: Tensor,
    world_rotations: Tensor,
    joints: Tensor,
    betas: Tensor | None,
    moving: Tensor,
    angular: Tensor,
    *,
    num_columns: int,
    joint_ids: Tensor,
    vertex_ids: Tensor | None,
    joint_points: Tensor | None = None,
    transl_columns: slice | None = None,
    betas_columns: slice | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Derivatives of posed joints and chosen vertices w.r.t. N unknowns.

    rotations, world_rotations (B, J, 3, 3), joints (B, J, 3): the body's forward at the current
    point. moving (M,): the joints whose rotation depends on the unknowns; angular (B, M, 3, N):
    their world angular velocities per unknown. transl_columns / betas_columns: where translation
    (3) and betas (model.num_betas) sit among the N columns, if they are unknowns.
    joint_points (B, Kj, 3): where the keypoints of joint_ids are, when offset from the joints along
    their parent segments (see KeypointSet's `local`); default the joints themselves.
    Returns d joints[:, joint_ids] (B, Kj, 3, N) and d vertices[:, vertex_ids] (B, V', 3, N) or None.
    """
    dtype, device = rotations.dtype, rotations.device
    count = joints.shape[1]  # the posed joints: all, or the first few (see BodyModel.forward_rotations)
    ancestors = _ancestor_table(tuple(model.parents.tolist()), dtype, device)[:count, :count]
    parent_ids = model.parents.to(device)[joint_ids]
    has_parent = (parent_ids >= 0).to(dtype)[None, :, None, None]
    safe_parent = parent_ids.clamp_min(0)
    # xi_i = sum of w_j over j in ancestors-or-self(i); psi_i = sum of w_j x p_j over the same joints;
    # needed at the keypoint joints' parents, and at every joint when vertices are skinned.
    rows = safe_parent if vertex_ids is None else torch.arange(count, device=device)
    table = ancestors[rows][:, moving]  # (R, M)
    batch = angular.shape[0]
    sums = table @ torch.cat([angular, cross_columns(angular, joints[:, moving])], dim=-1).reshape(batch, len(moving), -1)
    xi, psi = sums.view(batch, len(rows), 3, -1).chunk(2, dim=-1)
    at_parents = (xi, psi) if vertex_ids is None else (xi[:, safe_parent], psi[:, safe_parent])
    # A point carried by a joint's parent segment moves as that segment does: w x (point) - sum w_a x p_a.
    levers = joints[:, joint_ids] if joint_points is None else joint_points
    d_joints = (cross_columns(at_parents[0], levers) - at_parents[1]) * has_parent
    shape_positions = None
    if betas_columns is not None:
        rest_shift = model.joint_shape_basis[: model.num_betas].view(-1, model.num_joints, 3).permute(1, 2, 0)[:count]
        safe_parents = model.parents.to(device)[:count].clamp_min(0)
        local = torch.einsum("bicd,idn->bicn", world_rotations[:, safe_parents], rest_shift - rest_shift[safe_parents])
        local[:, 0] = rest_shift[0]  # (B, J, 3, K): each bone's change, rotated into the world
        shape_positions = torch.einsum("ij,bjcn->bicn", ancestors, local)
        d_joints[..., betas_columns] += shape_positions[:, joint_ids]
    if transl_columns is not None:
        d_joints[..., transl_columns] += torch.eye(3, dtype=dtype, device=device)
    if vertex_ids is None:
        return d_joints, None
    return d_joints, _vertex_jacobian(model, rotations, world_rotations, joints, betas, moving, angular, xi, psi,
                                      shape_positions, vertex_ids, num_columns, transl_columns, betas_columns)


def _vertex_jacobian(
    model: BodyModel,
    rotations: Tensor,
    world_rotations: Tensor,
    joints: Tensor,
    betas: Tensor | None,
    moving: Tensor,
    angular: Tensor,
    xi: Tensor,
    psi: Tensor,
    shape_positions: Tensor | None,
    vertex_ids: Tensor,
    num_columns: int,
    transl_columns: slice | None,
    betas_columns: slice | None,
) -> Tensor:
    """LBS vertices v = sum_i w_i (G_i (v_rest - j_i) + p_i), differentiated (see body_jacobians)."""
    batch, dtype, device = rotations.shape[0], rotations.dtype, rotations.device
    num_verts = len(vertex_ids)
    weights = model.weights[vertex_ids]  # (V', J)
    used = torch.nonzero(weights.abs().sum(0) > 0).squeeze(1)  # joints that move these vertices
    weights = weights[:, used]
    coords = (vertex_ids.unsqueeze(1) * 3 + torch.arange(3, device=device)).reshape(-1)
    rest = model.v_template[vertex_ids].expand(batch, -1, -1)
    if betas is not None and model.num_betas:
        rest = rest + (betas.expand(batch, -1) @ model.shape_basis[: model.num_betas, coords]).view(batch, num_verts, 3)
    rest_joints = model.rest_joints(betas) if betas is not None else model.rest_joints()
    rest_joints = rest_joints.expand(batch, -1, -1)
    if model.use_pose_correctives:
        eye = torch.eye(3, dtype=dtype, device=device)
        pose_feature = (rotations[:, 1:] - eye).reshape(batch, -1)
        rest = rest + (pose_feature @ model.posedirs[:, coords]).view(batch, num_verts, 3)
    used_world = world_rotations[:, used]  # (B, U, 3, 3)
    # u_vi = G_i v_rest + (p_i - G_i j_i): vertex v carried rigidly by joint i, as (B, U, 3, V').
    shift = joints[:, used] - (used_world @ rest_joints[:, used].unsqueeze(-1)).squeeze(-1)
    carried = (used_world.reshape(batch, -1, 3) @ rest.transpose(1, 2)).view(batch, len(used), 3, num_verts)
    carried = carried + shift.unsqueeze(-1)
    # sum_i w_vi (xi_i x u_vi - psi_i): per component c, the cross product is two matrix products over
    # the joints i ((xi x a)_x = xi_y a_z - xi_z a_y, ...), laid out so each operand is contiguous.
    lever = (carried * weights.T.unsqueeze(1)).permute(2, 0, 3, 1).contiguous()  # (3, B, V', U)
    turn = xi[:, used].permute(2, 0, 1, 3).contiguous()  # (3, B, U, N)
    offset = psi[:, used].permute(2, 0, 1, 3)  # (3, B, U, N)
    d_vertices = torch.stack([
        torch.baddbmm(lever[(c + 2) % 3] @ turn[(c + 1) % 3], lever[(c + 1) % 3], turn[(c + 2) % 3], alpha=-1)
        - weights @ offset[c] for c in range(3)], dim=2)
    blended = torch.einsum("vi,bicd->bvcd", weights, used_world)  # sum_i w_i G_i
    posed_bodies = moving[moving > 0]
    if model.use_pose_correctives and len(posed_bodies):
        rows = (posed_bodies.unsqueeze(1) - 1) * 9 + torch.arange(9, device=device)  # (M', 9)
        directions = model.posedirs[rows.reshape(-1)][:, coords].view(len(posed_bodies), 9, num_verts * 3)
        local_angular = world_rotations[:, posed_bodies].transpose(-1, -2) @ angular[:, moving > 0]  # (B, M', 3, N)
        tangents = rotation_tangents(rotations[:, posed_bodies]).permute(0, 1, 3, 4, 2).reshape(
            batch, len(posed_bodies), 9, 3)
        per_joint = torch.einsum("jpv,bjpc->bvjc", directions, tangents).reshape(
            batch, num_verts * 3, len(posed_bodies) * 3)
        d_rest = (per_joint @ local_angular.reshape(batch, len(posed_bodies) * 3, num_columns)).view(
            batch, num_verts, 3, num_columns)
        d_vertices = d_vertices + blended @ d_rest
    if betas_columns is not None:
        basis = model.shape_basis[: model.num_betas, coords].view(-1, num_verts, 3).permute(1, 2, 0)  # (V', 3, K)
        rest_shift = model.joint_shape_basis[: model.num_betas].view(-1, model.num_joints, 3).permute(1, 2, 0)
        d_shape = blended @ basis - torch.einsum("vi,bicd,idn->bvcn", weights, used_world, rest_shift[used])
        d_vertices[..., betas_columns] += d_shape + torch.einsum("vi,bicn->bvcn", weights, shape_positions[:, used])
    if transl_columns is not None:
        d_vertices[..., transl_columns] += torch.eye(3, dtype=dtype, device=device)
    return d_vertices

