"""Rotation conversions against scipy's independent implementation, and at their edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from core import rotations as rot


@pytest.fixture
def axis_angles() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    random = torch.randn(500, 3, generator=generator, dtype=torch.float64) * 1.5
    edge = torch.tensor([[0.0, 0, 0], [1e-9, 0, 0], [np.pi - 1e-6, 0, 0], [0, 0, np.pi]], dtype=torch.float64)
    return torch.cat([random, edge])


def test_axis_angle_to_matrix_matches_scipy(axis_angles):
    expected = Rotation.from_rotvec(axis_angles.numpy()).as_matrix()
    assert np.abs(rot.axis_angle_to_matrix(axis_angles).numpy() - expected).max() < 1e-12


def test_round_trips_reproduce_the_rotation(axis_angles):
    matrices = rot.axis_angle_to_matrix(axis_angles)
    for there, back in [
        (rot.matrix_to_axis_angle, rot.axis_angle_to_matrix),
        (rot.matrix_to_quaternion, rot.quaternion_to_matrix),
        (rot.matrix_to_rotation_6d, rot.rotation_6d_to_matrix),
    ]:
        assert (back(there(matrices)) - matrices).abs().max() < 1e-9
    quaternions = rot.axis_angle_to_quaternion(axis_angles)
    assert (rot.quaternion_to_matrix(quaternions) - matrices).abs().max() < 1e-12
    assert (rot.axis_angle_to_matrix(rot.quaternion_to_axis_angle(quaternions)) - matrices).abs().max() < 1e-9


def test_quaternion_is_scalar_first_like_blender():
    quarter_turn_about_z = torch.tensor([0.0, 0.0, np.pi / 2], dtype=torch.float64)
    q = rot.axis_angle_to_quaternion(quarter_turn_about_z)
    assert torch.allclose(q, torch.tensor([np.cos(np.pi / 4), 0, 0, np.sin(np.pi / 4)], dtype=torch.float64))


def test_gradients_are_finite_at_the_identity():
    zero = torch.zeros(4, 3, dtype=torch.float64, requires_grad=True)
    (rot.axis_angle_to_matrix(zero).sum() + rot.axis_angle_to_quaternion(zero).sum()).backward()
    assert torch.isfinite(zero.grad).all()
    identity = torch.eye(3, dtype=torch.float64).repeat(2, 1, 1).requires_grad_()
    rot.matrix_to_axis_angle(identity).sum().backward()
    assert torch.isfinite(identity.grad).all()


def test_6d_decoding_orthonormalises_any_input():
    d6 = torch.randn(100, 6, dtype=torch.float64)
    matrices = rot.rotation_6d_to_matrix(d6)
    eye = torch.eye(3, dtype=torch.float64)
    assert (matrices.transpose(-1, -2) @ matrices - eye).abs().max() < 1e-12
    assert torch.allclose(torch.linalg.det(matrices), torch.ones(100, dtype=torch.float64))
    # Column 0 is the normalised first column of the row-major 3x2 input (VPoser's layout).
    first = d6.view(100, 3, 2)[..., 0]
    assert torch.allclose(matrices[..., 0], first / first.norm(dim=-1, keepdim=True))


@pytest.mark.parametrize("order", ["ZYX", "XYZ", "YXZ", "ZXY"])
def test_euler_matches_scipy_intrinsic(order):
    angles = torch.randn(50, 3, dtype=torch.float64)
    expected = Rotation.from_euler(order, angles.numpy()).as_matrix()  # upper case: intrinsic
    assert np.abs(rot.euler_to_matrix(angles, order).numpy() - expected).max() < 1e-12


def test_euler_rejects_bad_order():
    with pytest.raises(ValueError, match="permutation"):
        rot.euler_to_matrix(torch.zeros(1, 3), "XXY")


def test_geodesic_angle():
    a = rot.axis_angle_to_matrix(torch.tensor([[0.0, 0.3, 0.0]], dtype=torch.float64))
    b = rot.axis_angle_to_matrix(torch.tensor([[0.0, -0.2, 0.0]], dtype=torch.float64))
    assert torch.allclose(rot.geodesic_angle(a, b), torch.tensor([0.5], dtype=torch.float64))


def test_the_mean_of_rotations_symmetric_about_one_is_that_one():
    """Turns of +-a about any axes applied after R average to R; one rotation is its own mean; means
    along another dim; any mean is a rotation."""
    base = rot.axis_angle_to_matrix(torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64))
    axes = torch.tensor([[0.7, 0.1, 0.0], [0.0, 0.9, 0.2], [0.1, 0.0, -0.4]], dtype=torch.float64)
    turns = torch.cat([rot.axis_angle_to_matrix(axes), rot.axis_angle_to_matrix(-axes)]) @ base
    torch.testing.assert_close(rot.mean_rotation(turns), base)
    torch.testing.assert_close(rot.mean_rotation(base[None]), base)
    both = rot.mean_rotation(torch.stack([turns, turns.transpose(-1, -2)], 1), dim=0)  # (2, 3, 3): two means
    torch.testing.assert_close(both[1], base.T)
    spread = rot.axis_angle_to_matrix(torch.randn(50, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    mean = rot.mean_rotation(spread)
    torch.testing.assert_close(mean @ mean.T, torch.eye(3, dtype=torch.float64))
    assert float(torch.linalg.det(mean)) == pytest.approx(1.0)
