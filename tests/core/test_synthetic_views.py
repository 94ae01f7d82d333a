"""Synthetic 2D evaluation data: cameras within the asked ranges and around the body from every
heading, the body inside the picture, the asked noise and drop rate, two views 90 degrees apart,
one static camera for a sequence."""

from __future__ import annotations

import math

import pytest
import torch

from core.body_model import BodyModel
from core.errors import VPoserError
from core.keypoints import NUM_BODY_JOINTS
from core.rotations import axis_angle_to_matrix
from core.synthetic_views import synthetic_views


@pytest.fixture(scope="module")
def joints():
    """(200, 22, 3) body joints of the open body in random moderate poses, walking about."""
    model = BodyModel.open_default("adult", dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    pose = torch.randn(200, model.num_joints, 3, generator=generator, dtype=torch.float64) * 0.25
    transl = torch.randn(200, 3, generator=generator, dtype=torch.float64) * torch.tensor([1.0, 0.05, 1.0])
    output = model.forward_rotations(axis_angle_to_matrix(pose), transl=transl, return_vertices=False)
    return output.joints[:, :NUM_BODY_JOINTS]


def test_single_views_follow_the_protocol(joints):
    data = synthetic_views(joints, torch.Generator().manual_seed(1))
    cameras = data.cameras
    assert cameras.batch_shape == (200, 1) and data.pixels.shape == (200, 1, 22, 2)
    assert ((cameras.focal >= 1000) & (cameras.focal <= 2000)).all()
    assert torch.equal(cameras.image_size[0, 0], torch.tensor([1920.0, 1080.0], dtype=torch.float64))
    offset = cameras.centre[:, 0] - joints.mean(1)
    horizontal = offset[:, [0, 2]].norm(dim=-1)
    assert ((horizontal >= 3) & (horizontal <= 6)).all()
    heading = torch.atan2(offset[:, 0], offset[:, 2])
    counts = torch.histc(heading, bins=4, min=-math.pi, max=math.pi)
    assert (counts > 25).all()  # any heading: all four quadrants well covered
    inside = (data.clean >= 0.05 * torch.tensor([1920, 1080])) & (data.clean <= 0.95 * torch.tensor([1920, 1080]))
    assert inside.all()
    assert torch.allclose(data.clean, cameras.project(joints.unsqueeze(1)))
    seen = data.confidence > 0
    assert abs(1 - float(seen.double().mean()) - 0.1) < 0.02
    assert torch.isnan(data.pixels[~seen]).all() and torch.isfinite(data.pixels[seen]).all()
    noise = (data.pixels - data.clean)[seen]
    assert abs(float(noise.std()) - 2.0) < 0.1 and abs(float(noise.mean())) < 0.1


def test_two_views_are_ninety_degrees_apart(joints):
    data = synthetic_views(joints[:50], torch.Generator().manual_seed(2), views=2)
    offset = data.cameras.centre - joints[:50].mean(1, keepdim=True)  # (50, 2, 3)
    heading = torch.atan2(offset[..., 0], offset[..., 2])
    apart = torch.remainder(heading[:, 1] - heading[:, 0], 2 * math.pi)
    assert torch.allclose(apart, torch.full_like(apart, math.pi / 2), atol=1e-9)


def test_a_sequence_has_one_static_camera_that_sees_every_frame(joints):
    clip = joints[:60] * torch.tensor([0.3, 1.0, 0.3], dtype=torch.float64)  # a clip that stays in one place
    data = synthetic_views(clip, torch.Generator().manual_seed(3), sequence=True)
    assert data.cameras.batch_shape == (1,) and data.pixels.shape == (60, 1, 22, 2)
    assert (data.clean >= 0).all() and (data.clean[..., 0] <= 1920).all() and (data.clean[..., 1] <= 1080).all()


def test_same_seed_same_data_and_bad_input(joints):
    first = synthetic_views(joints[:5], torch.Generator().manual_seed(4))
    again = synthetic_views(joints[:5], torch.Generator().manual_seed(4))
    assert torch.equal(first.clean, again.clean)
    with pytest.raises(VPoserError, match="expected points of shape"):
        synthetic_views(joints[0], torch.Generator())
    with pytest.raises(VPoserError, match="kept all the points inside"):
        synthetic_views(joints[:3] * 20, torch.Generator().manual_seed(0), tries=3)  # giants never fit
