"""Marker layouts fitted to a subject, as MoSh++ does: where each marker sits on this body.

A layout (core.keypoints) says where a marker set's markers sit on the body: a triangle,
barycentric coordinates and a distance off the skin along the normal. A shipped layout is a guess:
on a real subject each marker was stuck a few centimetres elsewhere and stands further from or
nearer the skin (clothing, soft tissue, marker base). Left as it is, those constant differences
show as error in every frame and bend the poses (CMU take 01_01 fits with a ~30 mm mean marker
residual under the shipped Plug-in Gait layout).

Calibration (driven by core.retarget on a spread subset of frames) alternates two steps, as a
coordinate descent on MoSh's joint objective over shape, marker places and poses:

1. solve the frames' poses and one body shape with the markers where they are;
2. move every marker to where the frames put it: each frame's target position is carried back
   into the rest pose by the body's own skinning at the marker (the blend of its triangle's
   corner transforms, `unposed_targets`), the frames' robust mean is the marker's place on the
   rest body, pulled towards the layout's guess along the skin by a prior worth `prior_frames`
   frames and kept within `max_slide` of it, then projected onto the shaped rest mesh:
   nearest triangle, barycentrics, and the distance off the skin (kept within `offset_range`).

A marker's place is relative to its triangle, so a calibration holds for any shape and can be
saved with the subject's shape and reused for another take (`calibration_document`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .body_model import BodyModel
from .keypoints import Keypoint, KeypointSet

SEARCH_RADIUS = 0.12  # metres: triangles this near a marker's rest place are candidates for its new one


@dataclass(frozen=True)
class CalibrationOptions:
    """prior_frames: how many frames' worth of evidence the layout's guess counts for along the
    skin; max_slide: how far (metres, on the rest body) a marker may move from the guess;
    offset_range: its distance off the skin, metres (a marker never sits inside the skin)."""

    rounds: int = 3
    prior_frames: float = 4.0
    max_slide: float = 0.06
    offset_range: tuple[float, float] = (0.002, 0.05)


@dataclass(frozen=True)
class MarkerPlacement:
    """One marker after calibration: its keypoint and how far it moved from the layout's guess on
    the subject's rest body (slide along the skin, metres) and its new distance off the skin."""

    keypoint: Keypoint
    slide: float
    offset: float


def nearest_surface_points(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray,
                           near: np.ndarray | None = None, radius: float = SEARCH_RADIUS
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For points (K, 3), the nearest point on a mesh (V, 3) / (F, 3): triangle (K,), barycentric
    coordinates (K, 3) and signed distance along the triangle's outward normal (K,).

    near (K, 3): where to look (default: the points themselves); only triangles with a corner within
    `radius` of it are searched (the whole mesh when none is)."""
    near = points if near is None else near
    triangles, weights, signed = [], [], []
    corners_all = vertices[faces]
    for point, centre in zip(points, near):
        close = np.flatnonzero((np.linalg.norm(vertices - centre, axis=1) < radius)[faces].any(axis=1))
        candidates = close if len(close) else np.arange(len(faces))
        corners = corners_all[candidates]
        bary = closest_barycentric(point, corners)
        on_surface = np.einsum("fc,fcd->fd", bary, corners)
        best = int(np.argmin(np.linalg.norm(on_surface - point, axis=1)))
        normal = np.cross(corners[best, 1] - corners[best, 0], corners[best, 2] - corners[best, 0])
        normal /= np.linalg.norm(normal)
        triangles.append(int(candidates[best]))
        weights.append(bary[best])
        signed.append(float((point - on_surface[best]) @ normal))
    return np.array(triangles, dtype=np.int64), np.array(weights).reshape(-1, 3), np.array(signed)


def closest_barycentric(point: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """Barycentric coordinates (F, 3) of the point of each triangle (F, 3 corners, 3) nearest `point`
    (3,): the projection onto the plane, clamped onto the triangle's edges where it falls outside."""
    a, b, c = corners[:, 0], corners[:, 1], corners[:, 2]
    ab, ac, ap = b - a, c - a, point - a
    d00, d01, d11 = (ab * ab).sum(1), (ab * ac).sum(1), (ac * ac).sum(1)
    d20, d21 = (ap * ab).sum(1), (ap * ac).sum(1)
    denominator = np.where(np.abs(d00 * d11 - d01 * d01) > 1e-30, d00 * d11 - d01 * d01, 1e-30)
    v = (d11 * d20 - d01 * d21) / denominator
    w = (d00 * d21 - d01 * d20) / denominator
    bary = np.stack([1 - v - w, v, w], axis=1)
    outside = (bary < 0).any(axis=1)
    if outside.any():  # the nearest point of the three edges
        best = np.full(len(corners), np.inf)
        clamped = bary.copy()
        for i, j in ((0, 1), (1, 2), (2, 0)):
            start, end = corners[:, i], corners[:, j]
            edge = end - start
            t = np.clip(((point - start) * edge).sum(1) / np.maximum((edge * edge).sum(1), 1e-30), 0, 1)
            distance = np.linalg.norm(start + t[:, None] * edge - point, axis=1)
            better = outside & (distance < best)
            best = np.where(better, distance, best)
            row = np.zeros((len(corners), 3))
            row[:, i], row[:, j] = 1 - t, t
            clamped[better] = row[better]
        bary = np.where(outside[:, None], clamped, bary)
    return bary


def surface_keypoints(keypoints: KeypointSet) -> list[Keypoint]:
    """The keypoints a calibration can move: surface points (joints and vertices stay)."""
    return [point for point in keypoints.keypoints if point.kind == "surface"]


def rest_positions(model: BodyModel, keypoints: Sequence[Keypoint], betas: Tensor) -> np.ndarray:
    """(K, 3) the surface keypoints on the shaped rest body (model space, metres)."""
    vertices = model.shaped_vertices(betas.reshape(1, -1))[0].detach().double().cpu().numpy()
    faces = model.faces.cpu().numpy()
    corners = vertices[faces[[point.index for point in keypoints]]]
    normal = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    bary = np.array([point.barycentric for point in keypoints])
    offsets = np.array([point.offset for point in keypoints])
    return np.einsum("kc,kcd->kd", bary, corners) + offsets[:, None] * normal


def unposed_targets(model: BodyModel, keypoints: Sequence[Keypoint], rotations: Tensor, betas: Tensor,
                    transl: Tensor, targets: Tensor, rest_betas: Tensor | None = None) -> np.ndarray:
    """Targets (t, K, 3) carried back onto the shaped rest body (t, K, 3): each target, in the frame
    of its marker's posed triangle (an edge, the normal, their cross product) and relative to the
    marker's skin point there, put at the same place relative to the rest triangle. Exact where
    the marker is; nearby, the skin is taken to move rigidly with the triangle. NaN stays NaN.
    rotations (t, J, 3, 3) local, betas (num_betas,) or per frame (t, num_betas), transl (t, 3);
    rest_betas (num_betas,): the rest body's shape (default `betas`, which must then be one)."""
    with torch.no_grad():
        batch = rotations.shape[0]
        faces = model.faces[[point.index for point in keypoints]]  # (K, 3)
        output = model.forward_rotations(rotations, betas.expand(batch, -1), None, transl, return_vertices=False,
                                         vertex_ids=faces.reshape(-1))
        posed = output.vertices.reshape(batch, len(keypoints), 3, 3).double()
        rest_betas = betas if rest_betas is None else rest_betas
        rest = model.shaped_vertices(rest_betas.reshape(1, -1))[0][faces].double()  # (K, 3 corners, 3)
        bary = torch.tensor([point.barycentric for point in keypoints], dtype=torch.float64,
                            device=model.device).unsqueeze(-1)
        posed_frame, rest_frame = _triangle_frame(posed), _triangle_frame(rest)
        local = (posed_frame.transpose(-1, -2) @ (targets.double() - (bary * posed).sum(-2)).unsqueeze(-1))
        moved = (bary * rest).sum(-2) + (rest_frame @ local).squeeze(-1)
    return moved.cpu().numpy()


def _triangle_frame(corners: Tensor) -> Tensor:
    """(..., 3, 3) orthonormal frames (columns: first edge, normal x edge, normal) of triangles (..., 3, 3)."""
    edge = corners[..., 1, :] - corners[..., 0, :]
    normal = torch.linalg.cross(edge, corners[..., 2, :] - corners[..., 0, :])
    normal = normal / normal.norm(dim=-1, keepdim=True)
    edge = edge / edge.norm(dim=-1, keepdim=True)
    return torch.stack([edge, torch.linalg.cross(normal, edge), normal], dim=-1)


def robust_mean(samples: np.ndarray) -> np.ndarray:
    """(K, 3) per-marker mean of samples (t, K, 3) within 3 median absolute distances of their
    median (NaN samples ignored): a mislabelled or swapped frame does not drag a marker away."""
    median = np.nanmedian(samples, axis=0)
    distance = np.linalg.norm(samples - median, axis=-1)
    spread = np.nanmedian(distance, axis=0)
    keep = distance <= 3 * np.maximum(spread, 0.005)
    kept = np.where(keep[..., None], samples, np.nan)
    return np.nanmean(kept, axis=0)


def place_markers(model: BodyModel, keypoints: Sequence[Keypoint], guesses: Sequence[Keypoint], betas: Tensor,
                  unposed: np.ndarray, options: CalibrationOptions = CalibrationOptions()) -> list[MarkerPlacement]:
    """New places for surface keypoints from their unposed targets (t, K, 3) on spread frames:
    robust mean, pulled towards the layout's guess (`guesses`, same order) along the skin, within
    max_slide of it, onto the shaped rest mesh (module docstring). A marker no frame shows keeps
    its current place."""
    vertices = model.shaped_vertices(betas.reshape(1, -1))[0].detach().double().cpu().numpy()
    faces = model.faces.cpu().numpy()
    guess = rest_positions(model, guesses, betas)
    seen = np.isfinite(unposed).all(-1).sum(0)  # (K,)
    mean = robust_mean(unposed)
    count = seen[:, None].astype(np.float64)
    pulled = np.where(count > 0, (count * np.nan_to_num(mean) + options.prior_frames * guess)
                      / (count + options.prior_frames), guess)
    shift = pulled - guess
    length = np.linalg.norm(shift, axis=1, keepdims=True)
    pulled = guess + shift * np.minimum(1.0, options.max_slide / np.maximum(length, 1e-12))
    guess_triangles = np.array([point.index for point in guesses])
    triangles, bary, signed = nearest_surface_points(vertices, faces, pulled, near=guess)
    low, high = options.offset_range
    placements = []
    for k, (current, original) in enumerate(zip(keypoints, guesses)):
        if seen[k] == 0:
            placements.append(MarkerPlacement(current, 0.0, current.offset))
            continue
        offset = float(np.clip(signed[k], low, high))
        point = Keypoint(current.name, "surface", int(triangles[k]), tuple(float(w) for w in bary[k]), offset)
        on_skin = bary[k] @ vertices[faces[triangles[k]]]
        guess_on_skin = np.asarray(original.barycentric) @ vertices[faces[guess_triangles[k]]]
        placements.append(MarkerPlacement(point, float(np.linalg.norm(on_skin - guess_on_skin)), offset))
    return placements


def with_placements(keypoints: KeypointSet, placements: Sequence[MarkerPlacement]) -> KeypointSet:
    """The keypoint set with its surface points replaced by calibrated ones (same names, same order)."""
    moved = {placement.keypoint.name: placement.keypoint for placement in placements}
    return KeypointSet(keypoints.model, [moved.get(point.name, point) for point in keypoints.keypoints],
                       source="calibrated markers")


def calibration_document(keypoints: KeypointSet, betas: Tensor, placements: Sequence[MarkerPlacement],
                         description: str = "") -> dict:
    """A calibrated layout as JSON: a marker layout file (`markers`, readable by
    KeypointSet.from_json) with the subject's shape (`betas`) and per marker how far it moved from
    the layout's guess and its distance off the skin (`calibration`, millimetres)."""
    return {
        "description": description or "marker layout calibrated to one subject (core.markers)",
        "betas": [round(float(value), 6) for value in betas.reshape(-1)],
        "markers": keypoints.to_dict(),
        "calibration": {placement.keypoint.name: {"slide_mm": round(1000 * placement.slide, 1),
                                                  "offset_mm": round(1000 * placement.offset, 1)}
                        for placement in placements},
    }


def read_calibration(document: Mapping, source: str = "calibration", num_betas: int | None = None) -> np.ndarray:
    """The subject's shape (num_betas,) from a calibration document; ValueError naming the field.
    With `num_betas`, the shape cut or zero-padded to that many (a body with another count)."""
    betas = document.get("betas")
    try:
        values = np.asarray(betas, dtype=np.float64) if isinstance(betas, (list, tuple)) else np.zeros((0, 0))
    except (TypeError, ValueError):
        values = np.zeros((0, 0))
    if values.ndim != 1 or not np.isfinite(values).all():
        raise ValueError(f"{source}: 'betas' must be a list of numbers (the subject's shape), got {betas!r}")
    if num_betas is None:
        return values
    fitted = np.zeros(num_betas)
    count = min(len(values), num_betas)
    fitted[:count] = values[:count]
    return fitted


def displaced_layout(keypoints: KeypointSet, seed: int, slide: tuple[float, float] = (0.01, 0.03),
                     offset: tuple[float, float] = (0.005, 0.015)) -> KeypointSet:
    """A stand-in subject for evaluations: each surface marker slid a uniform `slide` distance
    (metres) in a random direction along the rest skin (to the nearest surface point there) and
    put a uniform `offset` off it, as markers on a real subject sit away from a layout's guess."""
    model = keypoints.model
    rng = np.random.default_rng(seed)
    vertices, faces = model.v_template.detach().double().cpu().numpy(), model.faces.cpu().numpy()
    moved, points = [], surface_keypoints(keypoints)
    for point in points:
        corners = vertices[faces[point.index]]
        normal = np.cross(corners[1] - corners[0], corners[2] - corners[0])
        normal /= np.linalg.norm(normal)
        direction = rng.normal(size=3)
        direction -= (direction @ normal) * normal
        moved.append(np.asarray(point.barycentric) @ corners
                     + rng.uniform(*slide) * direction / np.linalg.norm(direction))
    triangles, bary, _ = nearest_surface_points(vertices, faces, np.array(moved),
                                                near=rest_positions(model, points, torch.zeros(model.num_betas)))
    placed = {point.name: Keypoint(point.name, "surface", int(t), tuple(float(w) for w in b),
                                   float(rng.uniform(*offset)))
              for point, t, b in zip(points, triangles, bary)}
    return KeypointSet(model, [placed.get(point.name, point) for point in keypoints.keypoints],
                       source=f"displaced layout (seed {seed})")


def markers_from_poses(model: BodyModel, labels: Sequence[str], positions: np.ndarray, rotations: Tensor,
                       betas: Tensor, transl: Tensor, options: CalibrationOptions = CalibrationOptions()
                       ) -> dict[str, dict]:
    """Layout entries for markers no layout knows yet, from frames whose body is already fitted
    (e.g. by the markers a layout does know): in each frame the marker's nearest point on the
    posed mesh, carried to the rest body through that triangle (as `unposed_targets`), the
    frames' robust mean, then its nearest surface point on the shaped rest mesh and distance off
    the skin (within options.offset_range). positions (t, M, 3) model space metres, NaN where
    unseen; rotations (t, J, 3, 3), betas (num_betas,), transl (t, 3). Markers never seen are
    left out."""
    faces = model.faces.cpu().numpy()
    with torch.no_grad():
        posed = model.forward_rotations(rotations, betas.expand(len(rotations), -1), None, transl).vertices
    posed = posed.double().cpu().numpy()
    rest = model.shaped_vertices(betas.reshape(1, -1))[0].detach().double().cpu().numpy()
    samples = np.full(positions.shape, np.nan)
    for frame in range(len(positions)):
        seen = np.flatnonzero(np.isfinite(positions[frame]).all(-1))
        if not len(seen):
            continue
        triangles, bary, signed = nearest_surface_points(posed[frame], faces, positions[frame, seen])
        corners = torch.as_tensor(rest[faces[triangles]])
        normal = _triangle_frame(corners)[..., 2].numpy()
        samples[frame, seen] = np.einsum("kc,kcd->kd", bary, rest[faces[triangles]]) + signed[:, None] * normal
    seen = np.isfinite(samples).all(-1).any(0)
    mean = robust_mean(samples[:, seen])
    triangles, bary, signed = nearest_surface_points(rest, faces, mean)
    low, high = options.offset_range
    names = [label for label, shown in zip(labels, seen) if shown]
    return {name: {"triangle": int(t), "barycentric": [round(float(w), 6) for w in b],
                   "offset": round(float(np.clip(d, low, high)), 5)}
            for name, t, b, d in zip(names, triangles, bary, signed)}
