"""Writing meshes for other tools to open."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_obj(path: str | Path, vertices: np.ndarray, faces: np.ndarray) -> None:
    """Wavefront OBJ with 1-based triangle indices; vertices in metres as given."""
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in np.asarray(vertices, dtype=np.float64)]
    lines += [f"f {a} {b} {c}" for a, b, c in np.asarray(faces, dtype=np.int64) + 1]
    Path(path).write_text("\n".join(lines) + "\n")
