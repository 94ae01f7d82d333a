"""Standing a body on the floor (core.floor): foot vertices, lowest points against the whole
mesh, offsets and root shifts against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from core import floor
from core.body_model import BodyModel
from core.floor import FloorError, floor_offsets, foot_vertex_ids, lowest_foot_heights, lowest_heights, root_shifts
from core.rotations import axis_angle_to_matrix
from core.synthetic_models import write_model

Y_UP_TO_Z_UP = np.array([[1.0, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]])  # +90 degrees about X


@pytest.fixture(scope="module")
def adult():
    return BodyModel.open_default("adult", dtype=torch.float64)


def _standing_poses(model, count, seed=0):
    """Small random joint rotations (nothing reaches below the feet), a slight root tilt, a walk."""
    generator = torch.Generator().manual_seed(seed)
    axis_angles = 0.15 * torch.randn(count, model.num_joints, 3, generator=generator, dtype=torch.float64)
    translations = torch.randn(count, 3, generator=generator, dtype=torch.float64) * torch.tensor([1.0, 0.2, 1.0])
    return axis_angle_to_matrix(axis_angles), translations


def test_foot_vertices_are_the_feet(adult):
    ids = foot_vertex_ids(adult).numpy()
    rest = adult.v_template.numpy()
    names = list(adult.joint_names)
    knees = adult.rest_joints()[0, [names.index("left_knee"), names.index("right_knee")]].numpy()
    assert 500 < len(ids) < 3000
    assert rest[ids, 1].max() < knees[:, 1].min()  # all below the knees
    assert rest[ids, 1].min() == rest[:, 1].min()  # and they include the soles, the mesh's lowest point
    assert (rest[ids, 0] > 0).any() and (rest[ids, 0] < 0).any()  # both feet


def test_a_hand_model_has_no_feet(tmp_path):
    hand = BodyModel.from_file(write_model(tmp_path / "mano.npz", "mano"))
    with pytest.raises(FloorError, match="mano.npz: no feet to stand on"):
        foot_vertex_ids(hand)
    assert not floor.has_feet(hand.joint_names) and floor.has_feet(BodyModel.open_default().joint_names)


def test_lowest_heights_by_hand():
    points = np.array([[[0.0, 1.0, 0.0], [0.0, -0.5, 2.0], [3.0, 0.2, 0.0]]])
    # Model Y is the world's Z once the body stands up; the object sits 0.25 m up.
    matrix = Y_UP_TO_Z_UP.copy()
    matrix[2, 3] = 0.25
    np.testing.assert_allclose(lowest_heights(points, matrix), [-0.25])
    np.testing.assert_allclose(lowest_heights(points, np.eye(4)), [0.0])  # model Z as up


def test_lowest_foot_heights_match_the_whole_standing_mesh(adult, monkeypatch):
    rotations, translations = _standing_poses(adult, 5)
    betas = torch.linspace(-1, 1, adult.num_betas, dtype=torch.float64)[None]
    matrix = Y_UP_TO_Z_UP.copy()
    matrix[:3, 3] = (1.0, 2.0, 0.3)

    monkeypatch.setattr(floor, "_FRAMES_PER_BATCH", 2)  # chunks of 2, 2 and 1 frames
    lowest = lowest_foot_heights(adult, rotations, translations, matrix, betas)

    vertices = adult.forward_rotations(rotations, betas=betas, transl=translations).vertices.numpy()
    np.testing.assert_allclose(lowest, vertices[..., 1].min(axis=1) + 0.3, atol=1e-12)


def test_offsets_per_frame_and_for_the_clip():
    lowest = np.array([0.1, -0.2, 0.3])
    np.testing.assert_allclose(floor_offsets(lowest, 0.0, whole_clip=False), [-0.1, 0.2, -0.3])
    np.testing.assert_allclose(floor_offsets(lowest, 0.5, whole_clip=False), [0.4, 0.7, 0.2])
    np.testing.assert_allclose(floor_offsets(lowest, 0.0, whole_clip=True), [0.2, 0.2, 0.2])


def test_root_shifts_move_straight_up_in_the_world():
    # An upright body: up is the model's +Y.
    np.testing.assert_allclose(root_shifts(np.array([0.5, -1.0]), Y_UP_TO_Z_UP), [[0, 0.5, 0], [0, -1.0, 0]],
                               atol=1e-15)
    # Scaled by 2 and turned 30 degrees about the world's Z: still only model Y, half as far.
    turn = math.radians(30)
    matrix = np.diag([2.0, 2.0, 2.0, 1.0])
    matrix[:2, :2] *= np.array([[math.cos(turn), -math.sin(turn)], [math.sin(turn), math.cos(turn)]])
    matrix = matrix @ Y_UP_TO_Z_UP
    np.testing.assert_allclose(root_shifts(np.array([0.5]), matrix), [[0, 0.25, 0]], atol=1e-15)
    # Lying on its back (no +90 degrees): world up is the model's +Z, and the shift is made there.
    shift = root_shifts(np.array([0.3]), np.eye(4))
    np.testing.assert_allclose(shift, [[0, 0, 0.3]])
