"""Pose files that declare more than they hold, for the tests of the size checks (core and add-on)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np


def _member(archive: zipfile.ZipFile, name: str, shape: tuple[int, ...], rows: int) -> None:
    """A float32 .npy member whose header declares `shape` but which holds only `rows` rows."""
    buffer = io.BytesIO()
    header = {"descr": "<f4", "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    buffer.write(np.zeros((rows, *shape[1:]), dtype="<f4").tobytes())
    archive.writestr(f"{name}.npy", buffer.getvalue())


def write_declared_pose_file(path: Path, frames: int, joints: int = 52, rows: int = 10) -> Path:
    """A small compressed AMASS-style .npz whose 'poses' and 'trans' declare `frames` frames: reading
    it whole would allocate that much (2,000,000 frames of 52 joints: 1.3 GB as stored, several
    GB once converted), so a reader must look at the declared size first."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        _member(archive, "poses", (frames, 3 * joints), rows)
        _member(archive, "trans", (frames, 3), rows)
        buffer = io.BytesIO()
        np.save(buffer, np.array(30.0))
        archive.writestr("mocap_framerate.npy", buffer.getvalue())
    return path
