"""Synthetic SMPL-family model files in the official `.npz` layout.

Real SMPL-X / SMPL-H / MANO files need a licence, so tests and benchmarks build stand-ins with
the official keys, shapes and joint trees: a random skeleton with random but plausible skinning
weights (smooth in the distance to joints), random shape, expression and pose-corrective bases,
and orthonormal hand PCA. Numbers are made up; layout and sizes are the real ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .model_files import SMPL_BODY_PARENTS


# Sizes of the official releases: vertices and faces per kind.
OFFICIAL_SIZES = {"smpl": (6890, 13776), "smplh": (6890, 13776), "smplx": (10475, 20908), "mano": (778, 1538)}


def official_parents(kind: str) -> np.ndarray:
    """Parent of each joint in the official joint order of `kind`."""
    hand = [p for finger in range(5) for p in (-2, 3 * finger, 3 * finger + 1)]  # -2: the wrist

    def hand_parents(wrist: int, first: int) -> list[int]:
        return [wrist if p == -2 else first + p for p in hand]

    body = list(SMPL_BODY_PARENTS)
    if kind == "smpl":
        return np.array(body + [20, 21])
    if kind in ("smplh", "openbody"):
        return np.array(body + hand_parents(20, 22) + hand_parents(21, 37))
    if kind == "smplx":
        return np.array(body + [15, 15, 15] + hand_parents(20, 25) + hand_parents(21, 40))
    if kind == "mano":
        return np.array([-1] + [0 if p == -2 else 1 + p for p in hand])
    raise ValueError(f"unknown kind {kind!r}")


def make_model_arrays(
    kind: str,
    num_vertices: int | None = None,
    num_faces: int | None = None,
    num_shape: int = 10,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Arrays of a made-up `kind` model with the official keys (as a user's file would hold)."""
    rng = np.random.default_rng(seed)
    default_vertices, default_faces = OFFICIAL_SIZES.get(kind, (500, 900))
    num_vertices = num_vertices or default_vertices
    num_faces = num_faces or default_faces
    parents = official_parents(kind)
    num_joints = len(parents)
    joints = np.zeros((num_joints, 3))
    for j in range(1, num_joints):
        joints[j] = joints[parents[j]] + rng.normal(0, 0.08, 3)
    # Vertices scattered around the joints; weights fall off with the distance to each joint.
    owner = rng.integers(0, num_joints, num_vertices)
    v_template = joints[owner] + rng.normal(0, 0.03, (num_vertices, 3))
    distance = np.linalg.norm(v_template[:, None] - joints[None], axis=-1)
    weights = np.exp(-((distance / 0.05) ** 2))
    nearest = np.argsort(distance, axis=1)[:, 4:]  # keep the 4 nearest joints, as official files do
    np.put_along_axis(weights, nearest, 0.0, axis=1)
    weights /= weights.sum(1, keepdims=True)
    J_regressor = np.zeros((num_joints, num_vertices))
    for j in range(num_joints):
        near = np.argsort(distance[:, j])[:8]
        J_regressor[j, near] = rng.uniform(0.5, 1.0, 8)
    J_regressor /= J_regressor.sum(1, keepdims=True)
    num_components = num_shape
    if kind == "smplx":
        num_components = 400 if num_shape >= 300 else 20  # v1.1 (300 + 100) or v1.0 (10 + 10) layout
    arrays = {
        "v_template": v_template,
        "f": rng.integers(0, num_vertices, (num_faces, 3)).astype(np.int32),
        "J_regressor": J_regressor,
        "weights": weights,
        "kintree_table": np.stack([np.where(parents < 0, 2**32 - 1, parents), np.arange(num_joints)]).astype(np.int64),
        "shapedirs": rng.normal(0, 0.01, (num_vertices, 3, num_components)),
        "posedirs": rng.normal(0, 0.01, (num_vertices, 3, 9 * (num_joints - 1))),
    }
    if kind == "smplx":  # facial landmarks as barycentric points on faces, as in official files
        arrays["lmk_faces_idx"] = rng.integers(0, num_faces, 51).astype(np.int64)
        arrays["lmk_bary_coords"] = rng.dirichlet(np.ones(3), 51)
        arrays["dynamic_lmk_faces_idx"] = rng.integers(0, num_faces, (79, 17)).astype(np.int64)
        arrays["dynamic_lmk_bary_coords"] = rng.dirichlet(np.ones(3), (79, 17))
    if kind == "mano":
        arrays["hands_components"] = _orthonormal(rng)
        arrays["hands_mean"] = rng.normal(0, 0.2, 45)
    elif kind in ("smplh", "smplx"):
        for side in "lr":
            arrays[f"hands_components{side}"] = _orthonormal(rng)
            arrays[f"hands_mean{side}"] = rng.normal(0, 0.2, 45)
    return {key: (value.astype(np.float32) if value.dtype == np.float64 else value) for key, value in arrays.items()}


def write_model(path: str | Path, kind: str, **options) -> Path:
    """Write a made-up `kind` model as an official-layout `.npz`; returns the path."""
    path = Path(path)
    np.savez(path, **make_model_arrays(kind, **options))
    return path


def _orthonormal(rng: np.random.Generator) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(45, 45)))
    return q

