"""The 2D reprojection term: its cost by hand, its residuals' Gauss-Newton gradient against finite
differences of the cost (w.r.t. points and camera unknowns, one and several views), missing points,
the chain with a body's keypoint Jacobian, and bad input."""

from __future__ import annotations

import pytest
import torch

from core.body_model import BodyModel
from core.cameras import Cameras
from core.keypoints import KeypointSet
from core.reprojection import Reprojection, ReprojectionError
from core.rotations import axis_angle_to_matrix

ALL = ("focal", "rotation", "translation")


def _setup(views: int | None, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    batch, count = 3, 6
    points = torch.randn(batch, count, 3, generator=generator, dtype=torch.float64) * 0.4
    eyes = torch.tensor([[0.5, 0.3, 4.0], [3.5, 0.5, 0.5], [-3.0, 1.0, 2.0]], dtype=torch.float64)
    shape = () if views is None else (views,)
    cameras = Cameras.look_at(eyes[: views or 1].reshape(*shape, 3), torch.zeros(3, dtype=torch.float64),
                              (1400.0, 1500.0), (1920, 1080))
    clean = cameras.project(points if views is None else points.unsqueeze(1))
    pixels = clean + 30 * torch.randn(clean.shape, generator=generator, dtype=torch.float64)
    pixels[0, ..., 0, :] += 400  # an outlier, in the Geman-McClure tail
    confidence = torch.rand(pixels.shape[:-1], generator=generator, dtype=torch.float64) + 0.2
    confidence[1, ..., 2] = 0.0  # missing by confidence
    pixels[2, ..., 3, 0] = float("nan")  # missing by NaN
    return cameras, points, pixels, confidence


def _gradient_check(term: Reprojection, cameras: Cameras, points: torch.Tensor):
    evaluation = term.evaluate(cameras, points, jacobian=True)
    eps = 1e-6
    # Gauss-Newton gradient J^T r of the IRLS residuals equals the robust cost's gradient
    gradient_points = torch.einsum("bckij,bcki->bkj", evaluation.d_points,
                                   evaluation.residuals.view(*evaluation.d_points.shape[:4]))
    for axis in range(3):
        for k in range(points.shape[1]):  # one point at a time: a frame's cost depends on all its points
            one = torch.zeros_like(points)
            one[:, k, axis] = eps
            numeric = (term.evaluate(cameras, points + one).cost - term.evaluate(cameras, points - one).cost) / (2 * eps)
            assert torch.allclose(gradient_points[:, k, axis], numeric.to(points.dtype), rtol=1e-5, atol=1e-5)
    if evaluation.d_camera is not None:
        gradient_camera = torch.einsum("bckip,bcki->bcp", evaluation.d_camera,
                                       evaluation.residuals.view(*evaluation.d_camera.shape[:4]))
        for column in range(gradient_camera.shape[-1]):
            step = torch.zeros(*cameras.batch_shape, gradient_camera.shape[-1], dtype=torch.float64)
            step[..., column] = eps
            plus = term.evaluate(cameras.moved(step, term.camera_unknowns), points).cost
            minus = term.evaluate(cameras.moved(-step, term.camera_unknowns), points).cost
            expected = gradient_camera[..., column].sum(1)  # cameras shared by the frames: per-frame sums
            assert torch.allclose(expected, ((plus - minus) / (2 * eps)).to(expected.dtype), rtol=1e-5, atol=1e-4)
    return evaluation


@pytest.mark.parametrize("robust", ["gm", "huber", "l2"])
def test_single_view_gradient_matches_finite_differences(robust):
    cameras, points, pixels, confidence = _setup(None)
    term = Reprojection(pixels, confidence, robust=robust, scale=50.0, weight=0.7, camera_unknowns=ALL)
    evaluation = _gradient_check(term, cameras, points)
    assert evaluation.residuals.shape == (3, 6 * 2) and evaluation.d_camera.shape == (3, 1, 6, 2, 7)


def test_several_views_gradient_matches_finite_differences():
    cameras, points, pixels, confidence = _setup(3)
    term = Reprojection(pixels, confidence, camera_unknowns=("focal", "translation"))
    evaluation = _gradient_check(term, cameras, points)
    assert evaluation.residuals.shape == (3, 3 * 6 * 2) and evaluation.d_points.shape == (3, 3, 6, 2, 3)
    block = Reprojection.camera_block(evaluation.d_camera)
    assert block.shape == (3, 3 * 6 * 2, 3 * 4)
    assert torch.equal(block[:, 6 * 2: 12 * 2, 4:8], evaluation.d_camera[:, 1].flatten(1, 2))
    assert block[:, :12, 4:].abs().sum() == 0  # view 0's residuals do not move view 1 or 2's camera


def test_cost_by_hand_and_missing_points():
    camera = Cameras.create(1000.0, (1000, 1000), translation=(0.0, 0.0, 5.0))
    points = torch.zeros(1, 3, 3, dtype=torch.float64)  # all project to (500, 500)
    pixels = torch.tensor([[[503.0, 504.0], [500.0, float("nan")], [600.0, 500.0]]], dtype=torch.float64)
    confidence = torch.tensor([[2.0, 1.0, 0.0]], dtype=torch.float64)
    l2 = Reprojection(pixels, confidence, robust="l2", weight=0.5).evaluate(camera, points, jacobian=True)
    assert torch.allclose(l2.cost, torch.tensor([0.5 * 0.5 * 2.0 * 25.0], dtype=torch.float64))
    assert torch.allclose(l2.residuals, torch.tensor([[-3.0, -4.0, 0, 0, 0, 0]], dtype=torch.float64))
    assert l2.d_points[0, 0, 1:].abs().sum() == 0
    assert torch.isnan(l2.error_px[0, 0, 1:]).all() and float(l2.error_px[0, 0, 0]) == 5.0
    gm = Reprojection(pixels, confidence, robust="gm", scale=10.0).evaluate(camera, points)
    assert torch.allclose(gm.cost, torch.tensor([0.5 * 2.0 * 100 * 25 / (100 + 25)], dtype=torch.float64))


def test_chain_with_the_body_keypoint_jacobian():
    model = BodyModel.open_default("adult", dtype=torch.float64)
    keypoints = KeypointSet.from_dict(model, {"nose": {"vertex": 100}, "knee": {"joint": "left_knee"},
                                              "wrist": {"joint": "right_wrist"}})
    generator = torch.Generator().manual_seed(3)
    pose = torch.randn(2, model.num_joints, 3, generator=generator, dtype=torch.float64) * 0.2
    transl = torch.tensor([[0.0, -1.0, 0.0]], dtype=torch.float64).expand(2, 3)
    camera = Cameras.look_at((0.5, 0.2, 3.5), (0.0, 0.0, 0.0), 1200.0, (1920, 1080))

    def points_of(translation):
        return keypoints.evaluate(axis_angle_to_matrix(pose), transl=translation)

    pixels = camera.project(points_of(transl)) + 5.0
    term = Reprojection(pixels)
    # the keypoints' Jacobian w.r.t. translation is the identity; chain it and compare with moving the body
    d_points = torch.eye(3, dtype=torch.float64).expand(2, 3, 3, 3)
    evaluation = term.evaluate(camera, points_of(transl), jacobian=True)
    chained = Reprojection.chain(evaluation.d_points, d_points)
    gradient = torch.einsum("brn,br->bn", chained, evaluation.residuals)
    eps = 1e-6
    for axis in range(3):
        step = torch.zeros(3, dtype=torch.float64)
        step[axis] = eps
        numeric = (term.evaluate(camera, points_of(transl + step)).cost
                   - term.evaluate(camera, points_of(transl - step)).cost) / (2 * eps)
        assert torch.allclose(gradient[:, axis], numeric, rtol=1e-5, atol=1e-4)


def test_select_keeps_rows():
    cameras, points, pixels, confidence = _setup(None)
    term = Reprojection(pixels, confidence)
    rows = torch.tensor([2, 0])
    assert torch.allclose(term.select(rows).evaluate(cameras, points[rows]).cost,
                          term.evaluate(cameras, points).cost[rows])


@pytest.mark.parametrize("arguments, message", [
    ((torch.zeros(2, 5, 3),), "expected pixels of shape"),
    ((torch.zeros(2, 5, 2), torch.ones(2, 4)), "confidence of shape"),
    ((torch.zeros(2, 5, 2), None, "cauchy"), "robust must be one of"),
])
def test_bad_input(arguments, message):
    pixels, *rest = arguments
    confidence = rest[0] if rest else None
    options = {"robust": rest[1]} if len(rest) > 1 else {}
    with pytest.raises(ReprojectionError, match=message):
        Reprojection(pixels, confidence, **options)


def test_wrong_point_count_is_refused():
    cameras, points, pixels, confidence = _setup(None)
    with pytest.raises(ReprojectionError, match="body points of shape"):
        Reprojection(pixels, confidence).evaluate(cameras, points[:, :4])


def test_float32_body_with_float64_cameras_and_pixels():
    cameras, points, pixels, confidence = _setup(None)
    term = Reprojection(pixels, confidence, camera_unknowns=ALL)
    single = term.evaluate(cameras, points.float(), jacobian=True)
    double = term.evaluate(cameras, points, jacobian=True)
    assert single.residuals.dtype == single.d_points.dtype == single.d_camera.dtype == torch.float32
    assert torch.allclose(single.residuals.double(), double.residuals, rtol=1e-3, atol=1e-2)
