"""C3D files as other writers make them, for core and add-on tests."""

from __future__ import annotations

import struct
import warnings
from pathlib import Path

import numpy as np


def write_cmu_like(path: Path, labels, points_mm: np.ndarray, channels: int, header_per_frame: int = 1,
                   analog_rate: float = 600.0, rate: float = 120.0) -> Path:
    """A file as CMU's own takes are: ANALOG:RATE 600 at POINT:RATE 120 (5 analog samples per frame
    stored when there are channels), but the header saying `header_per_frame` samples per frame.
    Written by the `c3d` package, then the header's word 10 (analog samples per frame, bytes 18-19)
    patched."""
    per_frame = int(analog_rate / rate)
    import c3d

    writer = c3d.Writer(point_rate=rate, analog_rate=analog_rate, point_units="mm")
    writer.set_point_labels(labels)
    if channels:
        writer.set_analog_labels([f"F{k}" for k in range(channels)])
    for index, frame in enumerate(points_mm):
        points = np.zeros((len(labels), 5), np.float32)
        points[:, :3] = frame
        analog = np.full((channels, per_frame), float(index + 1))
        writer.add_frames([(points, analog)])
    with open(path, "wb") as handle, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        writer.write(handle)
    data = bytearray(path.read_bytes())
    data[18:20] = struct.pack("<H", header_per_frame)
    path.write_bytes(bytes(data))
    return path
