"""The 2D data term: robust reprojection residuals of body keypoints, weighted by detector confidence.

A self-contained residual term, the shape the IK objective's terms take: `evaluate` gives the cost,
the residuals and their analytic Jacobian over (a) the 3D keypoints the body gives, so the solver
chains it with its keypoint Jacobian d points / d parameters (`chain`), and (b) the camera unknowns
(core.cameras: log focal, camera rotation and translation increments), when the fit has them.

Robustness follows core.ik's 3D term (iteratively reweighted least squares): with e the pixel error of
one keypoint, the cost is 0.5 * weight * confidence * rho(|e|^2) and the residuals are
sqrt(weight * confidence * rho'(|e|^2)) * e, whose Gauss-Newton gradient is the cost's. The default
Geman-McClure scale of 100 px is SMPLify's. A keypoint with a NaN pixel or a confidence <= 0 is
missing: zero residual, zero Jacobian.

Views: `pixels` (B, K, 2) is one view per frame, seen by `cameras` of batch shape () or (B,);
(B, C, K, 2) is C views per frame, seen by cameras of batch shape (C,) or (B, C). Residuals are
flattened per frame in (view, keypoint, x/y) order: R = C * K * 2 (C = 1 for one view).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .body_model import BodyModel
from .cameras import CAMERA_UNKNOWNS, Cameras, camera_columns
from .errors import VPoserError
from .ik_terms import ROBUST, At, Term, TermValue, keypoint_live_joints, robust_loss
from .keypoints import KeypointSet


class ReprojectionError(VPoserError):
    """2D keypoints that do not fit the term (shapes, values)."""


@dataclass
class ReprojectionEvaluation:
    """One evaluation for B frames. cost (B,) float64; residuals (B, R); pixels (B, C, K, 2) projected;
    error_px (B, C, K) the plain pixel distances (NaN where missing). With a Jacobian: d_points
    (B, C, K, 2, 3) the weighted residuals' derivative w.r.t. each keypoint's 3D position, and
    d_camera (B, C, K, 2, P) w.r.t. the camera unknowns (None without them)."""

    cost: Tensor
    residuals: Tensor
    pixels: Tensor
    error_px: Tensor
    d_points: Tensor | None = None
    d_camera: Tensor | None = None


class Reprojection:
    """Observed pixels (B, K, 2) or (B, C, K, 2) and confidences (same without the last axis; None:
    all 1) for B frames, K keypoints, C views; robust kind 'gm' (Geman-McClure), 'huber' or 'l2' with
    `scale` in pixels; `weight` scales the whole term; `camera_unknowns` some of CAMERA_UNKNOWNS."""

    def __init__(self, pixels: Tensor, confidence: Tensor | None = None, *, robust: str = "gm",
                 scale: float = 100.0, weight: float = 1.0, camera_unknowns: Sequence[str] = ()) -> None:
        if pixels.dim() not in (3, 4) or pixels.shape[-1] != 2:
            raise ReprojectionError(f"2D keypoints: expected pixels of shape (frames, keypoints, 2) or (frames, "
                                    f"views, keypoints, 2), got {tuple(pixels.shape)}")
        if confidence is None:
            confidence = torch.ones(pixels.shape[:-1], dtype=pixels.dtype, device=pixels.device)
        if tuple(confidence.shape) != tuple(pixels.shape[:-1]):
            raise ReprojectionError(f"2D keypoints: confidence of shape {tuple(confidence.shape)} does not match "
                                    f"pixels {tuple(pixels.shape)}")
        if robust not in ROBUST:
            raise ReprojectionError(f"2D keypoints: robust must be one of {ROBUST}, got {robust!r}")
        if not scale > 0 or not weight >= 0:
            raise ReprojectionError(f"2D keypoints: scale must be > 0 and weight >= 0, got {scale}, {weight}")
        self.single_view = pixels.dim() == 3
        views = pixels.unsqueeze(1) if self.single_view else pixels
        confidence = confidence.unsqueeze(1) if self.single_view else confidence
        seen = torch.isfinite(views).all(-1) & torch.isfinite(confidence) & (confidence > 0)
        self.pixels = torch.where(seen.unsqueeze(-1), views, torch.zeros_like(views))  # (B, C, K, 2)
        self.confidence = torch.where(seen, confidence, torch.zeros_like(confidence))  # (B, C, K)
        self.seen = seen
        self.robust, self.scale, self.weight = robust, float(scale), float(weight)
        self.camera_unknowns = tuple(camera_columns(camera_unknowns))
        self.num_camera_columns = sum(CAMERA_UNKNOWNS[name] for name in self.camera_unknowns)

    @property
    def num_residuals(self) -> int:
        """R, residuals per frame."""
        return self.pixels.shape[1] * self.pixels.shape[2] * 2

    def select(self, rows: Tensor) -> Reprojection:
        """The term for a subset of the frames (the LM drops converged frames)."""
        term = object.__new__(Reprojection)
        term.__dict__.update(self.__dict__)
        term.pixels, term.confidence, term.seen = self.pixels[rows], self.confidence[rows], self.seen[rows]
        return term

    def evaluate(self, cameras: Cameras, points: Tensor, jacobian: bool = False) -> ReprojectionEvaluation:
        """Cost, residuals and (with `jacobian`) derivatives for the body's keypoints `points` (B, K, 3)
        in model space, seen by `cameras` (batch () or (B,) for one view; (C,) or (B, C) for C views).
        Everything is computed in the points' dtype and device (the cameras and pixels follow them)."""
        batch, views, count = self.pixels.shape[:3]
        if tuple(points.shape) != (batch, count, 3):
            raise ReprojectionError(f"2D keypoints: expected body points of shape {(batch, count, 3)}, "
                                    f"got {tuple(points.shape)}")
        if cameras.rotation.dtype != points.dtype or cameras.rotation.device != points.device:
            cameras = cameras.to(points.dtype, points.device)
        observed, confidence = self.pixels.to(points.dtype), self.confidence.to(points.dtype)
        if self.single_view:
            cameras = cameras.reshape(*cameras.batch_shape, 1) if cameras.batch_shape == (batch,) else \
                cameras.reshape(1)
        views_points = points.unsqueeze(1)  # (B, 1, K, 3) broadcast over the views
        if jacobian:
            pixels, d_pixels, d_camera = cameras.projection_jacobians(views_points, self.camera_unknowns)
        else:
            pixels, d_pixels, d_camera = cameras.project(views_points), None, None
        pixels = pixels.expand(batch, views, count, 2)
        error = pixels - observed
        squared = (error * error).sum(-1)
        rho, irls = robust_loss(self.robust, self.scale, squared)
        confidence = self.weight * confidence
        cost = 0.5 * (confidence * rho).flatten(1).sum(-1).double()
        root = (confidence * irls).sqrt().unsqueeze(-1)  # (B, C, K, 1)
        residuals = (root * error).flatten(1)
        distance = torch.where(self.seen, squared.sqrt(), torch.full_like(squared, float("nan")))
        evaluation = ReprojectionEvaluation(cost, residuals, pixels, distance)
        if jacobian:
            evaluation.d_points = root.unsqueeze(-1) * d_pixels.expand(batch, views, count, 2, 3)
            if d_camera is not None:
                evaluation.d_camera = root.unsqueeze(-1) * d_camera.expand(batch, views, count, 2, -1)
        return evaluation

    @staticmethod
    def chain(d_residual_points: Tensor, d_points: Tensor) -> Tensor:
        """(B, R, N) d residuals / d body unknowns from the evaluation's d_points (B, C, K, 2, 3) and the
        body's keypoint Jacobian d points / d unknowns (B, K, 3, N) (KeypointSet.points_jacobian)."""
        return torch.einsum("bckij,bkjn->bckin", d_residual_points, d_points).flatten(1, 3)

    @staticmethod
    def camera_block(d_camera: Tensor) -> Tensor:
        """(B, R, C * P) d residuals / d camera unknowns with every view's P columns of its own (a block
        diagonal over views), from the evaluation's d_camera (B, C, K, 2, P)."""
        batch, views, count, _, size = d_camera.shape
        block = d_camera.new_zeros(batch, views, count, 2, views, size)
        index = torch.arange(views, device=d_camera.device)
        block[:, index, :, :, index] = d_camera.permute(1, 0, 2, 3, 4)
        return block.flatten(1, 3).flatten(2)


class Reprojection2D(Term):
    """The 2D data term as an IK term (core.ik_terms): the body's keypoints (`keypoints`, K of them,
    at.points plus the frames' centres: world coordinates) seen by fixed `cameras` and compared with
    `reprojection`'s observed pixels. Cameras of batch shape () / (C,) serve every frame; (B,) /
    (B, C) (one per frame, for one / C views) follow the batch's frames. Residuals (b, C * K * 2),
    Jacobian (b, C * K * 2, N) through at.d_points. Give it to IKSolver.solve(..., terms=[...])."""

    name = "reprojection"
    needs = frozenset({"points"})

    def __init__(self, keypoints: KeypointSet, cameras: Cameras, reprojection: Reprojection) -> None:
        super().__init__()
        batch, _, count = reprojection.pixels.shape[:3]
        if count != len(keypoints):
            raise ReprojectionError(f"2D keypoints: {count} per frame, but the keypoint set has {len(keypoints)}")
        frame_dims = 1 if reprojection.single_view else 2
        self.per_frame = len(cameras.batch_shape) == frame_dims
        if self.per_frame and cameras.batch_shape[0] != batch:
            raise ReprojectionError(f"2D keypoints: cameras of batch shape {tuple(cameras.batch_shape)} for {batch} "
                                    "frames")
        dtype, device = keypoints.model.dtype, keypoints.model.device
        self.keypoints, self.cameras, self.reprojection = keypoints, cameras.to(dtype, device), reprojection

    def live_joints(self, model: BodyModel) -> Tensor | None:
        return keypoint_live_joints(model, self.keypoints)

    def evaluate(self, at: At, jacobian: bool) -> ReprojectionEvaluation:
        cameras = self.cameras[at.rows] if self.per_frame else self.cameras
        return self.reprojection.select(at.rows).evaluate(cameras, at.points + at.centre.unsqueeze(1), jacobian)

    def value(self, at: At) -> TermValue:
        evaluation = self.evaluate(at, at.jacobian)
        jacobian = self.reprojection.chain(evaluation.d_points, at.d_points) if at.jacobian else None
        return TermValue(evaluation.cost, evaluation.residuals, jacobian)
