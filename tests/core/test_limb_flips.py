"""Limb depth twins (core.limb_flips): the geometry of a reflected bone, the choice among twins, and
the shipped prior's choice between a natural limb and its impossible twin."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from core.body_model import BodyModel
from core.cameras import Cameras
from core.limb_flips import LIMBS, LimbTwins, LimbTwinsError, keep_cheapest, likeliest_twins, limb_twins, reflect_bone
from core.vposer import default_vposer_path, load_vposer

EYE = (0.1, 0.3, 4.0)  # in front of the body (it faces +Z)


@pytest.fixture(scope="module")
def model():
    return BodyModel.open_default("adult")


@pytest.fixture(scope="module")
def prior():
    return load_vposer(default_vposer_path()).eval()


@pytest.fixture(scope="module")
def natural(model, prior):
    """The prior's mean pose (arms down, forearms folded forward, knees a little bent), upright at
    the origin: rotations (1, J, 3, 3), transl (1, 3)."""
    rotations = torch.eye(3, dtype=model.dtype).repeat(1, model.num_joints, 1, 1)
    with torch.no_grad():
        rotations[:, 1:22] = prior.decode_matrix(torch.zeros(1, prior.latent_dim, dtype=model.dtype))
    return rotations, torch.zeros(1, 3, dtype=model.dtype)


def _joints(model, rotations, transl):
    with torch.no_grad():
        return model.forward_rotations(rotations[:, :22], None, None, transl, return_vertices=False).joints


def _ray_points(eye, near, far):
    """Both points at |far - near| from `near` on the ray from `eye` through `far`: the quadratic
    |eye + s d - near|^2 = L^2 solved with numpy, roots sorted by distance."""
    eye, near, far = (np.asarray(v, dtype=np.float64) for v in (eye, near, far))
    d = (far - eye) / np.linalg.norm(far - eye)
    length = np.linalg.norm(far - near)
    b = 2 * d @ (eye - near)
    c = (eye - near) @ (eye - near) - length ** 2
    roots = np.sort(np.roots([1.0, b, c]).real)
    return [eye + s * d for s in roots]


def test_a_reflected_forearm_keeps_its_pixel_and_length_and_takes_the_ray_s_other_point(model, natural):
    rotations, transl = natural
    names = list(model.joint_names)
    elbow, wrist = names.index("left_elbow"), names.index("left_wrist")
    eye = torch.tensor(EYE, dtype=model.dtype)
    before = _joints(model, rotations, transl)[0]
    twin = reflect_bone(model, rotations, transl, eye, elbow, wrist)
    after = _joints(model, twin, transl)[0]
    points = _ray_points(EYE, before[elbow].numpy(), before[wrist].numpy())
    # the forearm folds forward, towards the camera: the wrist is the nearer point, its twin the farther
    assert np.allclose(points[0], before[wrist].numpy(), atol=1e-5)
    assert np.allclose(points[1], after[wrist].numpy(), atol=1e-5)
    assert float(after[wrist, 2]) < float(after[elbow, 2]) < float(before[wrist, 2])  # now folded backwards
    camera = Cameras.look_at(torch.tensor([EYE], dtype=torch.float64), torch.zeros(1, 3, dtype=torch.float64), 1500.0,
                             (1920, 1080))
    pixels = camera.project(torch.stack([before[wrist], after[wrist]]).double()[None])[0]
    assert torch.allclose(pixels[0], pixels[1], atol=1e-3)
    others = [i for i in range(22) if i != wrist]
    assert torch.allclose(after[others], before[others], atol=1e-6)  # nothing else moves
    changed = [i for i in range(model.num_joints) if not torch.equal(twin[0, i], rotations[0, i])]
    assert changed == [elbow]
    again = reflect_bone(model, twin, transl, eye, elbow, wrist)  # a reflection undoes itself
    assert torch.allclose(_joints(model, again, transl), before[None], atol=1e-5)


def test_an_upper_arm_s_twin_carries_the_forearm_along(model, natural):
    rotations, transl = natural
    names = list(model.joint_names)
    shoulder, elbow, wrist = (names.index(n) for n in LIMBS[0])
    eye = torch.tensor(EYE, dtype=model.dtype)
    before = _joints(model, rotations, transl)[0]
    after = _joints(model, reflect_bone(model, rotations, transl, eye, shoulder, elbow), transl)[0]
    expected = [p for p in _ray_points(EYE, before[shoulder].numpy(), before[elbow].numpy())
                if np.linalg.norm(p - before[elbow].numpy()) > 1e-6]
    if expected:  # the elbow's other point on its ray (none when the bone is square to the ray)
        assert np.allclose(after[elbow].numpy(), expected[0], atol=1e-5)
    assert math.isclose(float((after[wrist] - after[elbow]).norm()), float((before[wrist] - before[elbow]).norm()),
                        rel_tol=1e-5)


def test_a_twin_behind_the_camera_is_no_twin(model, natural):
    """With the eye between the elbow and the wrist's other point, the rotations stay as they were."""
    rotations, transl = natural
    names = list(model.joint_names)
    elbow, wrist = names.index("left_elbow"), names.index("left_wrist")
    before = _joints(model, rotations, transl)[0]
    eye = before[elbow] + 0.3 * (before[wrist] - before[elbow])  # right beside the forearm, the wrist ahead
    assert torch.equal(reflect_bone(model, rotations, transl, eye, elbow, wrist), rotations)


def test_bones_and_limbs_the_body_lacks_are_refused(model, natural):
    rotations, transl = natural
    names = list(model.joint_names)
    eye = torch.tensor(EYE, dtype=model.dtype)
    with pytest.raises(LimbTwinsError, match="not a child"):
        reflect_bone(model, rotations, transl, eye, names.index("left_shoulder"), names.index("left_wrist"))
    with pytest.raises(LimbTwinsError, match="no joint.*left_tail"):
        limb_twins(model, rotations, transl, eye, [("left_hip", "left_knee", "left_tail")])


def test_each_limb_has_three_twins_that_change_its_two_joints_only(model, natural):
    rotations, transl = natural
    twins = limb_twins(model, rotations.repeat(2, 1, 1, 1), transl.repeat(2, 1), torch.tensor(EYE, dtype=model.dtype))
    assert twins.candidates.shape == (1 + 3 * len(LIMBS), 2) + rotations.shape[1:]
    assert torch.equal(twins.candidates[0], rotations.repeat(2, 1, 1, 1))
    assert twins.rows == [(1 + 3 * i, 2 + 3 * i, 3 + 3 * i) for i in range(len(LIMBS))]
    names = list(model.joint_names)
    for limb, joints, rows in zip(LIMBS, twins.joints, twins.rows):
        assert joints == (names.index(limb[0]), names.index(limb[1]))
        for row in rows:
            differs = (twins.candidates[row] != twins.candidates[0]).flatten(2).any(-1).any(0)
            assert set(torch.nonzero(differs).flatten().tolist()) <= set(joints)


def test_the_cheapest_twin_is_kept_per_frame_and_limb():
    """Two limbs over joints (1, 2) and (3, 4), three frames: each candidate's rotations are marked
    by its index, so the kept rotations show which candidate each frame's limb took."""
    count, frames = 7, 3
    candidates = torch.arange(count, dtype=torch.float64).view(count, 1, 1, 1, 1).expand(count, frames, 5, 3, 3).clone()
    twins = LimbTwins(candidates, joints=[(1, 2), (3, 4)], rows=[(1, 2, 3), (4, 5, 6)])
    costs = torch.tensor([[1.0, 1.0, 1.0],  # as given
                          [0.5, 2.0, 2.0], [2.0, 2.0, 0.2], [2.0, 0.9, 2.0],  # first limb's twins
                          [2.0, 2.0, 2.0], [2.0, 0.1, 2.0], [0.3, 2.0, 2.0]], dtype=torch.float64)
    kept = keep_cheapest(twins, costs)[..., 0, 0]  # (frames, joints): the candidate index taken
    assert kept[:, 0].tolist() == [0, 0, 0]  # the root stays
    assert kept[:, 1].tolist() == kept[:, 2].tolist() == [1, 3, 2]
    assert kept[:, 3].tolist() == kept[:, 4].tolist() == [6, 5, 0]


def test_the_prior_turns_an_impossible_limb_back_and_leaves_a_natural_one(model, prior, natural):
    """The mean pose's forearm folded backwards through the elbow (its twin: same pixels) is
    turned back by the shipped prior; the natural pose keeps every limb as it is. (Beside the broken
    forearm, the right upper arm, square to its ray, may take its near-identical twin: limbs are
    judged one at a time.)"""
    rotations, transl = natural
    names = list(model.joint_names)
    eye = torch.tensor(EYE, dtype=model.dtype)
    elbow, wrist = names.index("left_elbow"), names.index("left_wrist")
    broken = reflect_bone(model, rotations, transl, eye, elbow, wrist)
    mended = likeliest_twins(model, prior, torch.cat([broken, rotations]), transl.repeat(2, 1), eye)
    joints, truth = _joints(model, mended, transl.repeat(2, 1)), _joints(model, rotations, transl)[0]
    assert float((joints[0, wrist] - truth[wrist]).norm()) < 1e-5
    assert float((joints[0] - truth).norm(dim=-1).max()) < 0.02
    assert float((_joints(model, broken, transl)[0, wrist] - truth[wrist]).norm()) > 0.2  # it was broken
    assert torch.equal(mended[1], rotations[0])
