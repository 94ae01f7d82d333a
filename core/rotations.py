"""Rotation conversions on batched tensors (any leading shape).

Conventions: matrices act on column vectors; quaternions are (w, x, y, z) as Blender stores
them; axis-angle is a 3-vector whose norm is the angle in radians. All functions are
differentiable, including at the identity (where a naive Rodrigues formula divides by zero).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

_SMALL_ANGLE = 1e-4


def skew(v: Tensor) -> Tensor:
    """(..., 3) -> (..., 3, 3) cross-product matrix, so that skew(a) @ b == a x b."""
    x, y, z = v.unbind(-1)
    zero = torch.zeros_like(x)
    return torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).unflatten(-1, (3, 3))


def axis_angle_to_matrix(axis_angle: Tensor) -> Tensor:
    """Rodrigues' formula; (..., 3) -> (..., 3, 3).

    The coefficients sin(t)/t and (1-cos(t))/t^2 switch to their Taylor series near zero so that
    the value and the gradient stay finite at the identity (IK starts there).
    """
    theta2 = (axis_angle * axis_angle).sum(-1, keepdim=True).unsqueeze(-1)
    small = theta2 < _SMALL_ANGLE**2
    safe_theta2 = torch.where(small, torch.ones_like(theta2), theta2)
    safe_theta = safe_theta2.sqrt()
    a = torch.where(small, 1 - theta2 / 6, torch.sin(safe_theta) / safe_theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(safe_theta)) / safe_theta2)
    k = skew(axis_angle)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device)
    return eye + a * k + b * (k @ k)


def matrix_to_axis_angle(matrix: Tensor) -> Tensor:
    """(..., 3, 3) -> (..., 3) with angles in [0, pi], via the quaternion (robust near pi)."""
    return quaternion_to_axis_angle(matrix_to_quaternion(matrix))


def quaternion_to_axis_angle(quaternion: Tensor) -> Tensor:
    """(..., 4) (w, x, y, z) -> (..., 3); picks the shorter of q and -q."""
    q = torch.where(quaternion[..., :1] < 0, -quaternion, quaternion)
    w, xyz = q[..., :1], q[..., 1:]
    sin_half = xyz.norm(dim=-1, keepdim=True)
    half = torch.atan2(sin_half, w)
    small = sin_half < _SMALL_ANGLE
    safe_sin = torch.where(small, torch.ones_like(sin_half), sin_half)
    # For small angles 2*half/sin(half) -> 2/w (w ~ 1), keeping the gradient finite.
    scale = torch.where(small, 2 / w.clamp_min(_SMALL_ANGLE), 2 * half / safe_sin)
    return xyz * scale


def axis_angle_to_quaternion(axis_angle: Tensor) -> Tensor:
    """(..., 3) -> (..., 4) unit quaternion (w, x, y, z) with w >= 0."""
    angle = axis_angle.norm(dim=-1, keepdim=True)
    small = angle < _SMALL_ANGLE
    safe_angle = torch.where(small, torch.ones_like(angle), angle)
    scale = torch.where(small, 0.5 - angle * angle / 48, torch.sin(safe_angle / 2) / safe_angle)
    return torch.cat([torch.cos(angle / 2), axis_angle * scale], dim=-1)


# A rotation matrix is linear in the outer product q q^T of its unit quaternion q = (w, x, y, z):
# R = I + 2 * (sum of the products below), entry by entry (row-major), written out.
_R_TERMS = (  # (matrix entry, {(i, j) of q q^T: coefficient})
    (0, {(2, 2): -2, (3, 3): -2}), (1, {(1, 2): 2, (0, 3): -2}), (2, {(1, 3): 2, (0, 2): 2}),
    (3, {(1, 2): 2, (0, 3): 2}), (4, {(1, 1): -2, (3, 3): -2}), (5, {(2, 3): 2, (0, 1): -2}),
    (6, {(1, 3): 2, (0, 2): -2}), (7, {(2, 3): 2, (0, 1): 2}), (8, {(1, 1): -2, (2, 2): -2}),
)
_CONSTANTS: dict[tuple[str, torch.dtype, torch.device], tuple[Tensor, ...]] = {}


def _constants(name: str, build: Callable[[], tuple[Tensor, ...]], dtype: torch.dtype,
               device: torch.device) -> tuple[Tensor, ...]:
    """`build()`'s float64 tensors in `dtype` on `device`, made once per name, dtype and device."""
    key = (name, dtype, device)
    if key not in _CONSTANTS:
        _CONSTANTS[key] = tuple(value.to(dtype=dtype, device=device) for value in build())
    return _CONSTANTS[key]


def _r_linear() -> tuple[Tensor, Tensor]:
    """(16, 9) coefficients on q q^T (row-major) and the (9,) identity."""
    coefficients = torch.zeros(16, 9, dtype=torch.float64)
    for entry, products in _R_TERMS:
        for (i, j), value in products.items():
            coefficients[4 * i + j, entry] = value
    return coefficients, torch.eye(3, dtype=torch.float64).flatten()


def quaternion_to_matrix(quaternion: Tensor) -> Tensor:
    """(..., 4) (w, x, y, z), normalised here -> (..., 3, 3).

    One product of q q^T with a constant matrix (see _R_TERMS): a handful of tensor operations
    whatever the batch, as interactive solves call this many times per update on a few joints.
    """
    coefficients, eye = _constants("R", _r_linear, quaternion.dtype, quaternion.device)
    q = torch.nn.functional.normalize(quaternion, dim=-1)
    outer = (q.unsqueeze(-1) * q.unsqueeze(-2)).flatten(-2)
    return (outer @ coefficients + eye).unflatten(-1, (3, 3))


# K = 4 q q^T of a rotation's quaternion q = (w, x, y, z) is linear in the matrix's entries (Shepperd):
# K = offset + coefficients @ (m00, m01, m02, m10, m11, m12, m20, m21, m22), written out row by row.
_K_TERMS = (  # (entry of K, constant, {matrix entry: coefficient})
    ((0, 0), 1, {0: 1, 4: 1, 8: 1}), ((1, 1), 1, {0: 1, 4: -1, 8: -1}),
    ((2, 2), 1, {0: -1, 4: 1, 8: -1}), ((3, 3), 1, {0: -1, 4: -1, 8: 1}),
    ((0, 1), 0, {7: 1, 5: -1}), ((0, 2), 0, {2: 1, 6: -1}), ((0, 3), 0, {3: 1, 1: -1}),
    ((1, 2), 0, {1: 1, 3: 1}), ((1, 3), 0, {2: 1, 6: 1}), ((2, 3), 0, {5: 1, 7: 1}),
)
def _k_linear() -> tuple[Tensor, Tensor]:
    """(9, 16) coefficients and (16,) offset of K's entries (row-major 4x4)."""
    coefficients, offset = torch.zeros(9, 16, dtype=torch.float64), torch.zeros(16, dtype=torch.float64)
    for (i, j), constant, entries in _K_TERMS:
        for cell in {4 * i + j, 4 * j + i}:
            offset[cell] = constant
            for entry, value in entries.items():
                coefficients[entry, cell] = value
    return coefficients, offset


def matrix_to_quaternion(matrix: Tensor) -> Tensor:
    """(..., 3, 3) -> (..., 4) (w, x, y, z) with w >= 0.

    Shepperd's method, stable for every angle: K = 4 q q^T is linear in the matrix, and its row with
    the largest diagonal entry (4 q_i^2 >= 1, as the diagonal sums to 4) is q scaled by 4 q_i, so
    normalising that row gives q up to sign. Written as one matrix product and a gather, a few
    operations whatever the batch: interactive solves convert a handful of rotations many times per
    update, where the count of tensor operations, not their size, sets the cost.
    """
    coefficients, offset = _constants("K", _k_linear, matrix.dtype, matrix.device)
    k = (matrix.flatten(-2) @ coefficients + offset).unflatten(-1, (4, 4))
    best = k.diagonal(dim1=-2, dim2=-1).argmax(dim=-1, keepdim=True)
    row = torch.gather(k, -2, best.unsqueeze(-1).expand(*best.shape[:-1], 1, 4)).squeeze(-2)
    q = torch.nn.functional.normalize(row, dim=-1)
    return torch.where(q[..., :1] < 0, -q, q)


def rotation_6d_to_matrix(d6: Tensor) -> Tensor:
    """(..., 6) -> (..., 3, 3), the continuous 6D representation as VPoser's decoder reads it.

    The 6 numbers are a row-major 3x2 matrix whose two columns are Gram-Schmidt
    orthonormalised; the third column is their cross product. This layout (not two
    concatenated 3-vectors) is what official VPoser checkpoints were trained with.
    """
    cols = d6.unflatten(-1, (3, 2))
    b1 = torch.nn.functional.normalize(cols[..., 0], dim=-1)
    a2 = cols[..., 1]
    b2 = torch.nn.functional.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def matrix_to_rotation_6d(matrix: Tensor) -> Tensor:
    """(..., 3, 3) -> (..., 6), the inverse of rotation_6d_to_matrix for proper rotations."""
    return matrix[..., :, :2].flatten(-2)


def euler_to_matrix(angles: Tensor, order: str) -> Tensor:
    """Intrinsic Euler angles in radians -> matrices.

    `order` names the axes in the order the channels are listed in a BVH file (e.g. "ZYX"):
    the result is R = R_first @ R_second @ R_third, BVH's convention for local rotations.
    """
    if sorted(order.upper()) != ["X", "Y", "Z"]:
        raise ValueError(f"Euler order must be a permutation of 'XYZ', got {order!r}")
    result = None
    for i, axis in enumerate(order.upper()):
        vector = torch.zeros(*angles.shape[:-1], 3, dtype=angles.dtype, device=angles.device)
        vector[..., "XYZ".index(axis)] = angles[..., i]
        rotation = axis_angle_to_matrix(vector)
        result = rotation if result is None else result @ rotation
    return result


def geodesic_angle(a: Tensor, b: Tensor) -> Tensor:
    """Angle in radians between rotation matrices a and b, (..., 3, 3) -> (...)."""
    cos = ((a.transpose(-1, -2) @ b).diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    return torch.acos(cos.clamp(-1 + 1e-7, 1 - 1e-7))


def mean_rotation(matrices: Tensor, dim: int = 0) -> Tensor:
    """The chordal mean of rotations (..., 3, 3) along `dim`: the rotation nearest (Frobenius) to
    their arithmetic mean, its reflection removed (SVD). Rotations spread over less than a half turn
    average as one expects; an empty or symmetric set has no meaningful mean."""
    u, _, vh = torch.linalg.svd(matrices.mean(dim))
    flip = torch.ones_like(u[..., 0, :])
    flip[..., -1] = torch.sign(torch.linalg.det(u @ vh))
    return (u * flip.unsqueeze(-2)) @ vh


def matrix_to_euler(matrix: Tensor, order: str) -> Tensor:
    """(..., 3, 3) -> intrinsic Euler angles (..., 3) in radians, the inverse of `euler_to_matrix`
    (R = R_first @ R_second @ R_third); the middle angle lies in [-pi/2, pi/2].

    An order that is an odd permutation of XYZ is read as the even one after a reflection of the
    axes (which negates every angle), so one formula (XYZ's) serves all six."""
    order = order.upper()
    if sorted(order) != ["X", "Y", "Z"]:
        raise ValueError(f"Euler order must be a permutation of 'XYZ', got {order!r}")
    idx = ["XYZ".index(a) for a in order]
    P = torch.zeros(3, 3, dtype=matrix.dtype, device=matrix.device)
    for row, axis in enumerate(idx):
        P[row, axis] = 1.0
    sign = 1.0 if order in ("XYZ", "YZX", "ZXY") else -1.0
    m = P @ matrix @ P.transpose(-1, -2)  # now R = Rx(a) Ry(b) Rz(c), angles times sign
    b = torch.asin(m[..., 0, 2].clamp(-1.0, 1.0))
    a = torch.atan2(-m[..., 1, 2], m[..., 2, 2])
    c = torch.atan2(-m[..., 0, 1], m[..., 0, 0])
    gimbal = m[..., 0, 2].abs() > 1 - 1e-9  # b = +-90 deg: a and c turn about one axis; put it all in a
    a = torch.where(gimbal, torch.atan2(m[..., 2, 1], m[..., 1, 1]), a)
    c = torch.where(gimbal, torch.zeros_like(c), c)
    return sign * torch.stack([a, b, c], dim=-1)
