"""Standing a body on a floor: the lowest point of its posed feet, frame by frame, and the root
translations that put it on the floor.

The contact points are the mesh vertices the feet move (skin weight on the ankle and foot joints
above one half): the soles and toes themselves, where the foot joints lie several centimetres
above the ground. A pose whose hands or knees reach lower than its feet (a push-up, kneeling) is
still stood on its feet. Heights are measured in the scene: `matrix` (4, 4) maps model space
(SMPL's, Y up) to a world whose up axis is Z, as a body armature's object matrix does; the root's
translation lives in model space, so a vertical move in the world becomes the model-space shift
L^-1 (0, 0, dz) with L the matrix's linear part (which also covers a rotated or scaled body).
Importing this module needs no torch (the add-on's polls use has_feet); the posing does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .errors import VPoserError

if TYPE_CHECKING:
    from torch import Tensor

    from .body_model import BodyModel

FOOT_JOINTS = ("left_ankle", "left_foot", "right_ankle", "right_foot")
_FRAMES_PER_BATCH = 256  # frames skinned at once: bounds memory on long clips


class FloorError(VPoserError):
    """A body or a request that cannot be stood on a floor (no feet, no frames)."""


def has_feet(joint_names: tuple[str, ...] | list[str]) -> bool:
    """Whether a layout has the joints whose vertices stand on the floor (not a hand model)."""
    return set(FOOT_JOINTS) <= set(joint_names)


def foot_vertex_ids(model: BodyModel, threshold: float = 0.5) -> Tensor:
    """(N,) the vertices the ankle and foot joints move more than `threshold` of: the feet."""
    import torch

    if not has_feet(model.joint_names):
        raise FloorError(f"{model.path}: no feet to stand on (joints {', '.join(FOOT_JOINTS)} are needed)")
    columns = [list(model.joint_names).index(name) for name in FOOT_JOINTS]
    return torch.nonzero(model.weights[:, columns].sum(dim=1) > threshold).flatten()


def lowest_heights(points: Tensor | np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(..., N, 3) model-space points -> (...,) world height (z) of the lowest of each set."""
    matrix = np.asarray(matrix, dtype=np.float64)
    heights = np.asarray(points, dtype=np.float64) @ matrix[2, :3] + matrix[2, 3]
    return heights.min(axis=-1)


def lowest_foot_heights(
    model: BodyModel,
    rotations: Tensor,
    translations: Tensor,
    matrix: np.ndarray,
    betas: Tensor | None = None,
) -> np.ndarray:
    """(T,) world height of the lowest foot vertex per frame, for local joint rotations (T, J, 3, 3)
    and root translations (T, 3) in the model's dtype; betas (1, K) or None for the mean shape."""
    import torch

    if not len(rotations):
        raise FloorError("no frames to stand on the floor")
    ids = foot_vertex_ids(model)
    lowest = []
    with torch.no_grad():
        for start in range(0, len(rotations), _FRAMES_PER_BATCH):
            chunk = slice(start, start + _FRAMES_PER_BATCH)
            output = model.forward_rotations(rotations[chunk], betas=betas, transl=translations[chunk], vertex_ids=ids)
            lowest.append(lowest_heights(output.vertices.cpu().numpy(), matrix))
    return np.concatenate(lowest)


def floor_offsets(lowest: np.ndarray, floor: float, whole_clip: bool) -> np.ndarray:
    """(T,) vertical moves that stand each frame's lowest point on the floor. `whole_clip`: one
    move for all frames (the lowest frame's), so the clip keeps its relative heights (jumps,
    steps) and nothing slides; otherwise every frame is moved on its own."""
    lowest = np.asarray(lowest, dtype=np.float64)
    if whole_clip:
        return np.full(lowest.shape, floor - lowest.min())
    return floor - lowest


def root_shifts(offsets: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(T,) world vertical moves -> (T, 3) model-space root translation changes making them: only
    vertical, whatever the body object's rotation and scale. Components below 1e-6 of the largest
    are rounding (Blender's matrices are float32: its +90 degrees about X has cos = -4e-8) and are
    dropped, so an upright body's shift touches its Y alone."""
    up = np.linalg.solve(np.asarray(matrix, dtype=np.float64)[:3, :3], np.array([0.0, 0.0, 1.0]))
    up[np.abs(up) < 1e-6 * np.abs(up).max()] = 0.0
    return np.outer(offsets, up)
