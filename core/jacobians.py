"""Analytic first derivatives for the IK's Gauss-Newton steps: body points and VPoser's decoder.

Generic automatic Jacobians (torch.func's vmap over jvp, or forward-mode AD on a batch copied once
per unknown) cost tens of milliseconds per single frame on CPU and seconds per thousand frames,
because the body's forward kinematics is a chain of tiny 3x3 products. Written by hand the Jacobian
is a few large batched products:

- A change of joint j's rotation is a world angular velocity w_j; every point moved by joint j's
  frame moves by w_j x (point - joint_j). Summing w_j over each joint's ancestors (one matrix
  product with the ancestor table) gives all joints at once. Points on the skin (vertices, surface
  markers) blend the same per joint motions with their corners' skinning weights and the point's
  own map from its corners, straight into the point (one small product per frame), plus the
  pose-corrective and shape terms.
- VPoser's decoder is an MLP followed by the 6D -> matrix map: its tangents are pushed forward
  through the layers (forward mode, one column per latent dimension, the cheapest order), then
  turned into body-frame angular velocities of each decoded joint rotation in closed form.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor, nn

from .body_model import BodyModel
from .rotations import rotation_6d_to_matrix, skew
from .vposer import VPoser


DECODER_CHUNK = 32  # frames per forward-mode pass on the CPU: the (frames * L, 512) tangents stay ~2 MB


def decoder_jacobian(vposer: VPoser, z: Tensor) -> tuple[Tensor, Tensor]:
    """Decoded local rotations (B, 21, 3, 3) and their angular Jacobian (B, 21, 3, L): column l is
    the body-frame angular velocity w of each rotation (dR = R [w]x) per unit change of z[:, l].
    On the CPU the forward-mode passes take a few frames at a time: whole 128-frame chunks made 8 MB
    temporaries whose fresh pages slowed a marker solve (docs/benchmarks.md, IK); elsewhere all at
    once (each call costs launches)."""
    chunk = DECODER_CHUNK if z.device.type == "cpu" else max(len(z), 1)
    parts = [decoder_features(vposer, part, tangents=True) for part in z.split(chunk)]
    if len(parts) == 1:
        return six_d_angular(*parts[0])
    return six_d_angular(torch.cat([six_d for six_d, _ in parts]), torch.cat([tangent for _, tangent in parts]))


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
                tangent = tangent * torch.where(x > 0, x.new_ones(()), x.new_full((), slope)).unsqueeze(1)
            x = layer(x)
        elif isinstance(layer, nn.Dropout):
            continue
        else:  # the 6D -> matrix stage and the final flatten
            break
    return x, tangent


DECODER_FLIPS = 32  # units per layer that may switch for an updated (not recomputed) decoder Jacobian


class KeptDecoderJacobians:
    """The decoder's 6D tangents of each frame of a solve, kept between its linearisations.

    VPoser's decoder W3 D2 W2 D1 W1 (D: the LeakyReLU slopes, 1 or the negative slope) is linear
    between unit switches, and a frame's latent flips few of its 1,024 units from one linearisation
    to the next (a 2D sequence's temporal stage: median 8, 90th percentile 33). With D' = D + Delta,
    exactly: J' = J + W3 D2' W2 Delta1 W1 + W3 Delta2 W2 D1 W1, whose terms only touch the switched
    units: ~4x fewer multiply-adds than recomputing J, which dominates an IK iteration. Frames with
    more than DECODER_FLIPS switches in a layer, or not seen before, get the full forward mode.
    frames: the solve's frame count (rows index 0..frames-1)."""

    def __init__(self, vposer: VPoser, frames: int) -> None:
        self.vposer, self.frames = vposer, frames
        self.layers = _mlp_layers(vposer)
        self.slopes: list[Tensor] | None = None  # per activation (frames, units)
        self.tangents: Tensor | None = None  # (frames, L, 126)
        self.known: Tensor | None = None  # (frames,) bool
        self._weights_t: tuple[Tensor, Tensor, Tensor] | None = None

    def angular(self, z: Tensor, rows: Tensor) -> Tensor:
        """(b, 21, 3, L) as decoder_jacobian(vposer, z)[1] for frames `rows` at latents z (b, L)."""
        if self.vposer.training:
            raise RuntimeError("decoder_jacobian needs VPoser in eval mode (dropout off): call .eval()")
        if self.layers is None:  # another decoder layout: no update rule, always the full forward mode
            return decoder_jacobian(self.vposer, z)[1]
        chunk = DECODER_CHUNK if z.device.type == "cpu" else max(len(z), 1)
        parts = [self._part(z[start:start + chunk], rows[start:start + chunk]) for start in range(0, len(z), chunk)]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def _part(self, z: Tensor, rows: Tensor) -> Tensor:
        (first, second, third), negative = self.layers
        hidden1 = first(z)
        slope1 = torch.where(hidden1 > 0, z.new_ones(()), z.new_full((), negative[0]))
        hidden2 = second(hidden1 * slope1)
        slope2 = torch.where(hidden2 > 0, z.new_ones(()), z.new_full((), negative[1]))
        six_d = third(hidden2 * slope2)
        if self.tangents is None:
            self.slopes = [z.new_zeros(self.frames, slope1.shape[1]), z.new_zeros(self.frames, slope2.shape[1])]
            self.tangents = z.new_zeros(self.frames, z.shape[1], six_d.shape[1])
            self.known = torch.zeros(self.frames, dtype=torch.bool, device=z.device)
        tangents = torch.empty(len(z), z.shape[1], six_d.shape[1], dtype=z.dtype, device=z.device)
        change1, change2 = slope1 - self.slopes[0][rows], slope2 - self.slopes[1][rows]
        count1, count2 = (change1 != 0).sum(1), (change2 != 0).sum(1)
        update = self.known[rows] & (count1 <= DECODER_FLIPS) & (count2 <= DECODER_FLIPS)
        if bool(update.any()):
            kept = self.tangents[rows[update]]
            tangents[update] = kept + self._change(change1[update], int(count1[update].max()), change2[update],
                                                   int(count2[update].max()), slope2[update],
                                                   self.slopes[0][rows[update]])
        fresh = ~update
        if bool(fresh.any()):
            tangents[fresh] = decoder_features(self.vposer, z[fresh], tangents=True)[1]
        self.slopes[0][rows], self.slopes[1][rows] = slope1, slope2
        self.tangents[rows], self.known[rows] = tangents, True
        return six_d_angular(six_d, tangents)[1]

    def _change(self, change1: Tensor, count1: int, change2: Tensor, count2: int, slope2: Tensor,
                old_slope1: Tensor) -> Tensor:
        """W3 D2' W2 Delta1 W1 + W3 Delta2 W2 D1 W1 as tangents (b, L, 126), over the switched units
        only (at most count1 / count2 per frame; padding picks units whose change is 0)."""
        (first, second, third), _ = self.layers
        w1, w2 = first.weight, second.weight  # (H, L), (H, H)
        w1t, w2t, w3t = self._transposed()  # gathering rows of a transposed view copies element by element
        out = change1.new_zeros(len(change1), w1.shape[1], w3t.shape[1])
        if count1:
            units = change1.abs().topk(count1, dim=1).indices  # (b, k)
            scaled = w1[units] * change1.gather(1, units).unsqueeze(-1)  # (b, k, L): Delta1 W1, switched rows
            through = (w2t[units] * slope2.unsqueeze(1)) @ w3t  # (b, k, 6D): W3 D2' W2, switched columns
            out = out + scaled.transpose(1, 2) @ through
        if count2:
            units = change2.abs().topk(count2, dim=1).indices
            rows = (w1t * old_slope1.unsqueeze(1)) @ w2[units].transpose(1, 2)  # (b, L, k): (W2 D1 W1) rows
            out = out + (rows * change2.gather(1, units).unsqueeze(1)) @ w3t[units]
        return out

    def _transposed(self) -> tuple[Tensor, Tensor, Tensor]:
        """W1^T, W2^T, W3^T as contiguous copies, made once per solve (the weights do not change
        during one)."""
        if self._weights_t is None:
            (first, second, third), _ = self.layers
            self._weights_t = tuple(layer.weight.T.contiguous() for layer in (first, second, third))
        return self._weights_t


def _mlp_layers(vposer: VPoser) -> tuple[tuple[nn.Linear, nn.Linear, nn.Linear], tuple[float, float]] | None:
    """The decoder's three Linear layers and its two activations' negative slopes, when its network
    is Linear, LeakyReLU/ReLU, (Dropout,) Linear, LeakyReLU/ReLU, (Dropout,) Linear before the 6D
    stage (VPoser v2's); else None."""
    linears, slopes = [], []
    for layer in vposer.decoder_net:
        if isinstance(layer, nn.Linear):
            linears.append(layer)
        elif isinstance(layer, (nn.LeakyReLU, nn.ReLU)):
            if len(slopes) != len(linears) - 1:
                return None
            slopes.append(float(getattr(layer, "negative_slope", 0.0)))
        elif isinstance(layer, nn.Dropout):
            continue
        else:
            break
    if len(linears) != 3 or len(slopes) != 2:
        return None
    return (linears[0], linears[1], linears[2]), (slopes[0], slopes[1])


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
    joint_points: Tensor | None = None,
    corner_ids: Tensor | None = None,
    corner_vertices: Tensor | None = None,
    corner_maps: Tensor | None = None,
    transl_columns: slice | None = None,
    betas_columns: slice | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Derivatives of posed joint keypoints and of points blended from skinned vertices w.r.t. N unknowns.

    rotations, world_rotations (B, J, 3, 3), joints (B, J, 3): the body's forward at the current
    point. moving (M,): the joints whose rotation depends on the unknowns; angular (B, M, 3, N):
    their world angular velocities per unknown. transl_columns / betas_columns: where translation
    (3) and betas (model.num_betas) sit among the N columns, if they are unknowns.
    joint_points (B, Kj, 3): where the keypoints of joint_ids are, when offset from the joints along
    their parent segments (see KeypointSet's `local`); default the joints themselves.
    corner_ids (Kv, C), corner_vertices (B, Kv, C, 3) and corner_maps (B, Kv, C, 3, 3): points that
    move as sum_a maps_a d v_a of the skinned vertices corner_ids, posed at corner_vertices (see
    KeypointSet.corner_maps).
    Returns d joints[:, joint_ids] (B, Kj, 3, N) and d points (B, Kv, 3, N) or None.
    """
    dtype, device = rotations.dtype, rotations.device
    count = joints.shape[1]  # the posed joints: all, or the first few (see BodyModel.forward_rotations)
    ancestors = _ancestor_table(tuple(model.parents.tolist()), dtype, device)[:count, :count]
    parent_ids = model.parents.to(device)[joint_ids]
    has_parent = (parent_ids >= 0).to(dtype)[None, :, None, None]
    safe_parent = parent_ids.clamp_min(0)
    influences = None
    if corner_ids is not None:
        influences = _influences(model.weights, tuple(model.parents.tolist()), corner_ids, tuple(moving.tolist()))
    # xi_i = sum of w_j over j in ancestors-or-self(i); psi_i = sum of w_j x p_j over the same joints;
    # needed at the keypoint joints' parents and at the joints whose skinning weights move the corners.
    rows = safe_parent if influences is None else torch.cat([influences.carriers, safe_parent])
    table = ancestors[rows][:, moving]  # (R, M); M and R may be 0 (explicit sizes below)
    batch = angular.shape[0]
    sums = (table @ torch.cat([angular, cross_columns(angular, joints[:, moving])], dim=-2).reshape(
        batch, len(moving), 6 * num_columns)).view(batch, len(rows), 2, 3, num_columns)  # (B, R, xi or psi, 3, N)
    at_parents = sums[:, len(rows) - len(safe_parent):]
    # A point carried by a joint's parent segment moves as that segment does: w x (point) - sum w_a x p_a.
    levers = joints[:, joint_ids] if joint_points is None else joint_points
    d_joints = (cross_columns(at_parents[:, :, 0], levers) - at_parents[:, :, 1]) * has_parent
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
    if influences is None:
        return d_joints, None
    d_points = _corner_points_jacobian(model, rotations, world_rotations, joints, betas, influences, corner_vertices,
                                       corner_maps, sums[:, : len(influences.carriers)])
    extra = _corner_extras(model, rotations, world_rotations, moving, angular, shape_positions, corner_ids,
                           num_columns, betas_columns)
    if extra is not None:  # per corner (B, Kv, C, 3, N), blended as the points are
        maps = corner_maps.transpose(2, 3).flatten(3)  # (B, Kv, 3, C * 3)
        d_points = d_points + maps @ extra.flatten(2, 3)
    if transl_columns is not None:  # the maps of a point add up to the identity
        d_points[..., transl_columns] += torch.eye(3, dtype=dtype, device=device)
    return d_joints, d_points


@dataclass(frozen=True)
class _Influences:
    """Which joints' skinning moves which blended points. A joint that does not move turns with its
    nearest moving ancestor (same xi and psi), its carrier; `carriers` (U,) lists those. Per group, a
    (point, corner, carrier) with non-zero skinning weight: `point`, `corner`, the summed `weight`,
    whether it is the corner's `whole` weight (then the corner moves rigidly with its carrier) and
    its (point, carrier) `pair`. Pairs are sorted by carrier: `spans` gives each carrier's range of
    pairs and `pair_rows` (P, 3) their point's rows. Per (corner, joint) of the groups that are not
    whole: its `group`, `joint`, `vertex` and `joint_weight`."""

    carriers: Tensor
    point: Tensor
    corner: Tensor
    weight: Tensor
    whole: Tensor
    pair: Tensor
    spans: tuple[tuple[int, int], ...]
    pair_rows: Tensor
    group: Tensor
    joint: Tensor
    vertex: Tensor
    joint_weight: Tensor


@lru_cache(maxsize=16)
def _influences(skinning: Tensor, parents: tuple[int, ...], corner_ids: Tensor, moving: tuple[int, ...]
                ) -> _Influences:
    """The influences of the corners corner_ids (Kv, C) with skinning weights (V, J) when the joints
    `moving` turn (cached: all are fixed for a solve; keyed by the tensors' identity)."""
    device, count, span = corner_ids.device, corner_ids.numel(), len(parents) + 1
    weights = skinning[corner_ids].view(count, -1)  # (Kv * C, J)
    corner_index, joint = torch.nonzero(weights).unbind(1)
    carried = torch.tensor(_carriers(parents, moving), device=device)[joint]  # -1: moved by no unknown
    # A corner whose joints all have the same carrier (none dropped) moves rigidly with it.
    carriers_per_corner = torch.bincount(torch.unique(corner_index * span + carried + 1) // span, minlength=count)
    keep = carried >= 0
    corner_index, joint, carried = corner_index[keep], joint[keep], carried[keep]
    carriers, row = torch.unique(carried, return_inverse=True)
    keys, group = torch.unique(corner_index * len(carriers) + row, return_inverse=True)  # (corner, carrier)
    group_corner, group_row = keys // len(carriers), keys % len(carriers)
    point, corner = group_corner // corner_ids.shape[1], group_corner % corner_ids.shape[1]
    weight = torch.zeros(len(keys), dtype=skinning.dtype, device=device).index_add_(
        0, group, weights[corner_index, joint])
    whole = carriers_per_corner[group_corner] == 1
    pair, spans, pair_rows = _pairs(point, group_row, len(carriers), corner_ids.shape[0])
    partial = ~whole[group]
    group, joint, corner_index = group[partial], joint[partial], corner_index[partial]
    return _Influences(carriers, point, corner, weight, whole, pair, spans, pair_rows, group, joint,
                       corner_ids.view(-1)[corner_index], weights[corner_index, joint])


def _pairs(point: Tensor, row: Tensor, used: int, points: int) -> tuple[Tensor, tuple[tuple[int, int], ...], Tensor]:
    """The (point, carrier) pairs of groups, sorted by carrier: each group's pair, each carrier's
    range of pairs, and each pair's point rows (P, 3)."""
    pairs, pair = torch.unique(row * points + point, return_inverse=True)
    ends = torch.cumsum(torch.bincount(pairs // points, minlength=used), 0).tolist()
    rows = (pairs % points).unsqueeze(1) * 3 + torch.arange(3, device=point.device)
    return pair, tuple(zip([0, *ends[:-1]], ends)), rows


def _carriers(parents: tuple[int, ...], moving: tuple[int, ...]) -> list[int]:
    """Each joint's nearest moving ancestor-or-self, -1 where none moves."""
    carrier = []
    for joint in range(len(parents)):
        while joint >= 0 and joint not in moving:
            joint = parents[joint]
        carrier.append(joint)
    return carrier


def _corner_points_jacobian(
    model: BodyModel,
    rotations: Tensor,
    world_rotations: Tensor,
    joints: Tensor,
    betas: Tensor | None,
    influences: _Influences,
    corner_vertices: Tensor,
    corner_maps: Tensor,
    sums: Tensor,
) -> Tensor:
    """The rigid part of LBS, v = sum_i w_i (G_i (v_rest - j_i) + p_i) moving as
    d v = sum_i w_i (xi_i x u_i - psi_i) with u_i = G_i (v_rest - j_i) + p_i, blended straight into the
    points: d point = sum_c E_c xi_c + F_c psi_c over carriers c, with E_c = sum_a [q_ac x T_a rows],
    q_ac = sum of w_ai u_ai over the corner's joints carried by c (the posed corner itself when c
    carries them all), and F_c = -sum_a (sum of those w_ai) T_a (T_a: the corner maps). Each point
    depends on few carriers, so E and F are built per (point, carrier) pair and applied carrier by
    carrier, (B, 3 pairs, 6) x (B, 6, N): no per-vertex Jacobian is ever formed.
    corner_vertices (B, Kv, C, 3): the posed corners; sums (B, U, 2, 3, N): xi and psi at the carriers."""
    batch, dtype, device = rotations.shape[0], rotations.dtype, rotations.device
    whole = influences.whole.view(1, -1, 1)
    levers = torch.where(whole, corner_vertices[:, influences.point, influences.corner], 0)  # q (B, G, 3)
    if len(influences.joint):
        joint = influences.joint
        rest = _rest_vertices(model, rotations, betas, influences.vertex)
        rest_joints = (model.rest_joints(betas) if betas is not None else model.rest_joints())[:, joint]
        carried = torch.einsum("...ij,...j->...i", world_rotations[:, joint], rest - rest_joints) + joints[:, joint]
        levers = levers.index_add(1, influences.group, influences.joint_weight.to(dtype).view(1, -1, 1) * carried)
    maps = corner_maps[:, influences.point, influences.corner]  # (B, G, 3, 3): rows of T_a
    # (B, G, 3 r, E or F, 3 c): E's rows are q x the rows of T_a, F = -(summed weight) T_a
    blocks = torch.cat([torch.linalg.cross(levers.unsqueeze(-2).expand_as(maps), maps, dim=-1),
                        -influences.weight.to(dtype).view(1, -1, 1, 1) * maps], dim=-1)
    blocks = blocks.new_zeros(batch, len(influences.pair_rows), 3, 6).index_add_(1, influences.pair, blocks)
    d_points = torch.zeros(batch, corner_maps.shape[1] * 3, sums.shape[-1], dtype=dtype, device=device)
    for row, (start, end) in enumerate(influences.spans):
        moved = blocks[:, start:end].reshape(batch, 3 * (end - start), 6) @ sums[:, row].reshape(batch, 6, -1)
        d_points.index_add_(1, influences.pair_rows[start:end].reshape(-1), moved)
    return d_points.view(batch, corner_maps.shape[1], 3, -1)


def _rest_vertices(model: BodyModel, rotations: Tensor, betas: Tensor | None, vertex_ids: Tensor) -> Tensor:
    """Rest positions (B or 1, V', 3) of the vertices vertex_ids: template, shape and pose correctives."""
    batch = rotations.shape[0]
    coords = (vertex_ids.unsqueeze(1) * 3 + torch.arange(3, device=vertex_ids.device)).reshape(-1)
    rest = model.v_template[vertex_ids].unsqueeze(0)
    if betas is not None and model.num_betas:
        rest = rest + (betas.expand(batch, -1) @ model.shape_basis[: model.num_betas, coords]).view(batch, -1, 3)
    if model.use_pose_correctives:
        eye = torch.eye(3, dtype=rotations.dtype, device=rotations.device)
        pose_feature = (rotations[:, 1:] - eye).reshape(batch, -1)
        rest = rest + (pose_feature @ model.posedirs[:, coords]).view(batch, -1, 3)
    return rest


def _corner_extras(
    model: BodyModel,
    rotations: Tensor,
    world_rotations: Tensor,
    moving: Tensor,
    angular: Tensor,
    shape_positions: Tensor | None,
    corner_ids: Tensor,
    num_columns: int,
    betas_columns: slice | None,
) -> Tensor | None:
    """What the corner vertices' Jacobian has beyond rigid skinning, (B, Kv, C, 3, N): pose correctives
    (their rest offsets turn with the joints' local rotations) and betas; None when there is neither."""
    posed_bodies = moving[moving > 0]
    correctives = model.use_pose_correctives and len(posed_bodies) > 0
    if not correctives and betas_columns is None:
        return None
    batch, dtype, device = rotations.shape[0], rotations.dtype, rotations.device
    vertex_ids = corner_ids.reshape(-1)
    num_verts = len(vertex_ids)
    weights = model.weights[vertex_ids]  # (V', J)
    used = torch.nonzero(weights.abs().sum(0) > 0).squeeze(1)  # joints that move these vertices
    weights = weights[:, used]
    coords = (vertex_ids.unsqueeze(1) * 3 + torch.arange(3, device=device)).reshape(-1)
    used_world = world_rotations[:, used]  # (B, U, 3, 3)
    blended = torch.einsum("vi,bicd->bvcd", weights, used_world)  # sum_i w_i G_i
    extra = torch.zeros(batch, num_verts, 3, num_columns, dtype=dtype, device=device)
    if correctives:
        rows = (posed_bodies.unsqueeze(1) - 1) * 9 + torch.arange(9, device=device)  # (M', 9)
        directions = model.posedirs[rows.reshape(-1)][:, coords].view(len(posed_bodies), 9, num_verts * 3)
        local_angular = world_rotations[:, posed_bodies].transpose(-1, -2) @ angular[:, moving > 0]  # (B, M', 3, N)
        tangents = rotation_tangents(rotations[:, posed_bodies]).permute(0, 1, 3, 4, 2).reshape(
            batch, len(posed_bodies), 9, 3)
        per_joint = torch.einsum("jpv,bjpc->bvjc", directions, tangents).reshape(
            batch, num_verts * 3, len(posed_bodies) * 3)
        d_rest = (per_joint @ local_angular.reshape(batch, len(posed_bodies) * 3, num_columns)).view(
            batch, num_verts, 3, num_columns)
        extra += blended @ d_rest
    if betas_columns is not None:
        basis = model.shape_basis[: model.num_betas, coords].view(-1, num_verts, 3).permute(1, 2, 0)  # (V', 3, K)
        rest_shift = model.joint_shape_basis[: model.num_betas].view(-1, model.num_joints, 3).permute(1, 2, 0)
        d_shape = blended @ basis - torch.einsum("vi,bicd,idn->bvcn", weights, used_world, rest_shift[used])
        extra[..., betas_columns] += d_shape + torch.einsum("vi,bicn->bvcn", weights, shape_positions[:, used])
    return extra.view(batch, *corner_ids.shape, 3, num_columns)
