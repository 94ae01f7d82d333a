"""Synthetic 2D evaluation data: known 3D points (posed bodies' joints) seen by random virtual cameras.

The 2D fit's benchmark (issue "pose from pictures") takes real mocap poses, projects 22 body joints
into random cameras - 1920 x 1080, focal 1000-2000 px, 3-6 m away, any heading around the body's
vertical (model Y) axis - adds 2 px Gaussian noise and drops 10 % of the points, then fits without
knowing the pose. A camera is drawn again (up to `tries` times) until every point lands inside the
image with a margin, so the whole body is in the picture. A sequence is one static camera per view
(a video); otherwise each frame has its own cameras (single photos). Extra views sit at fixed
heading offsets (two views 90 degrees apart by default), each with its own focal and distance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .cameras import Cameras
from .errors import VPoserError


@dataclass
class SyntheticViews:
    """cameras: batch (C,) for a sequence or (T, C) per frame; clean (T, C, K, 2) exact pixels;
    pixels (T, C, K, 2) noisy, NaN where dropped; confidence (T, C, K) 1 seen, 0 dropped."""

    cameras: Cameras
    clean: Tensor
    pixels: Tensor
    confidence: Tensor


def synthetic_views(
    points: Tensor,
    generator: torch.Generator,
    views: int = 1,
    separation: float = 90.0,
    sequence: bool = False,
    image_size: tuple[int, int] = (1920, 1080),
    focal: tuple[float, float] = (1000.0, 2000.0),
    distance: tuple[float, float] = (3.0, 6.0),
    height: tuple[float, float] = (-0.3, 0.6),
    noise_px: float = 2.0,
    drop: float = 0.1,
    margin: float = 0.05,
    tries: int = 100,
) -> SyntheticViews:
    """Random cameras around model-space points (T, K, 3) (metres, Y-up) and their noisy projections.

    Each camera looks at the points' centre (per frame; the clip's mean for a sequence) from a
    uniformly random heading (view c adds c * `separation` degrees), `distance` metres away
    horizontally, `height` metres above the centre, with a focal drawn uniformly from `focal`
    pixels. `margin`: the fraction of the image size kept free at each border."""
    if points.dim() != 3 or points.shape[-1] != 3:
        raise VPoserError(f"synthetic_views: expected points of shape (frames, points, 3), got {tuple(points.shape)}")
    if not 0 <= drop < 1 or noise_px < 0 or views < 1:
        raise VPoserError(f"synthetic_views: need 0 <= drop < 1, noise_px >= 0, views >= 1; got {drop}, {noise_px}, "
                          f"{views}")
    frames, dtype = points.shape[0], points.dtype
    centre = points.mean(1)  # (T, 3)
    if sequence:
        centre = centre.mean(0, keepdim=True)
    count = centre.shape[0]  # cameras drawn per view: 1 for a sequence, else one per frame
    heading = torch.rand(count, generator=generator, dtype=dtype) * 2 * math.pi
    cameras = [_fitting_cameras(points, centre, heading + math.radians(separation) * view, generator, sequence,
                                image_size, focal, distance, height, margin, tries) for view in range(views)]
    stacked = Cameras(*(torch.stack([getattr(c, name) for c in cameras], 1) for name in
                        ("focal", "principal", "image_size", "rotation", "translation")))
    if sequence:
        stacked = stacked[0]
    clean = stacked.project(points.unsqueeze(1))  # (T, C, K, 2)
    noisy = clean + noise_px * torch.randn(clean.shape, generator=generator, dtype=dtype)
    kept = torch.rand(clean.shape[:-1], generator=generator, dtype=dtype) >= drop
    pixels = torch.where(kept.unsqueeze(-1), noisy, torch.full_like(noisy, math.nan))
    return SyntheticViews(stacked, clean, pixels, kept.to(dtype))


def _fitting_cameras(points: Tensor, centre: Tensor, heading: Tensor, generator: torch.Generator, sequence: bool,
                     image_size: Sequence[int], focal: tuple[float, float], distance: tuple[float, float],
                     height: tuple[float, float], margin: float, tries: int) -> Cameras:
    """(N,) cameras at the given headings, each redrawn (focal, distance, height) until all its
    points project inside the image's margins."""
    dtype, count = points.dtype, centre.shape[0]
    size = torch.tensor(image_size, dtype=dtype)
    targets = points.reshape(1, -1, 3) if sequence else points  # a sequence's one camera sees every frame
    result: Cameras | None = None
    todo = torch.ones(count, dtype=torch.bool)
    for _ in range(tries):
        def uniform(bounds: tuple[float, float]) -> Tensor:
            return bounds[0] + (bounds[1] - bounds[0]) * torch.rand(count, generator=generator, dtype=dtype)

        away, up, f = uniform(distance), uniform(height), uniform(focal)
        eye = centre + torch.stack([away * torch.sin(heading), up, away * torch.cos(heading)], -1)
        candidate = Cameras.look_at(eye, centre, f, image_size)
        seen = candidate.project(targets)  # (N, K', 2)
        fits = ((seen >= margin * size) & (seen <= (1 - margin) * size)).all(-1).all(-1)
        if result is None:
            result = candidate
        take = todo & fits
        for name in ("focal", "principal", "rotation", "translation"):
            getattr(result, name)[take] = getattr(candidate, name)[take]
        todo &= ~fits
        if not todo.any():
            return result
    raise VPoserError(f"synthetic_views: no camera in {tries} draws kept all the points inside the image for "
                      f"{int(todo.sum())} of {count} frames; widen the focal or distance range")
