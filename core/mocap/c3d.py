"""C3D marker trajectories, without bpy.

C3D is the binary format optical mocap systems (Vicon, Qualisys, Motion Analysis, OptiTrack) export.
Parsing is left to the pure-Python `c3d` package (numpy only, small enough to bundle); this module
turns what it reads into one clean array and gives clear errors naming the file.

What `read_c3d` returns (`MarkerClip`):

* **labels**: POINT:LABELS (continued in LABELS2, LABELS3, ... for files with over 255 points),
  whitespace and NUL padding stripped. A subject prefix ("Subject:LFHD", as Vicon Nexus writes)
  is removed when all prefixed labels share the same one, so names match a marker layout;
  several subjects keep their prefixes. An empty label becomes "M<n>" (n = 1-based marker
  number in the file) and a repeated label gets "_2", "_3", ... in file order, so labels are unique.
* **positions**: (T, M, 3) float64 in **metres**, scaled by POINT:UNITS ("mm", "cm" or "m"; any
  other or a missing value is an error unless `units` overrides it), in the file's own lab frame.
* **missing samples are NaN**: a sample the file marks invalid (negative residual word), a
  non-finite one, and, by default, one at exactly (0, 0, 0): several exporters write gaps as zeros
  with a valid residual, while a real marker landing exactly on the lab origin to float precision
  does not happen (`zero_is_missing=False` keeps such samples).
* **frame_rate** (POINT:RATE, frames per second) and **first_frame** (the file's frame number of
  its first sample, usually 1).
* **notes**: what was tolerated on the way, each said once (also as a `C3DWarning`).

Analog data (force plates, EMG) is never needed here, so an analog section whose header and
parameters disagree does not stop the read: CMU's own takes say 1 analog sample per frame in the
header but ANALOG:RATE 600 at POINT:RATE 120, which the `c3d` package refuses outright. The points
are read with the analog block size that the file's length bears out (header's, parameters' or
none), and one warning says what was ignored. A point section that disagrees with itself (header
point count, scale or rate against POINT:USED, POINT:SCALE, POINT:RATE) is still an error: those
numbers decide where every coordinate lies.

Axes: C3D lab frames are usually Z-up (Vicon, Qualisys, Motion Analysis) and sometimes Y-up
(OptiTrack, some Vicon set-ups); the file does not say reliably. `lab_to_model_rotation(up)` is the
proper rotation (no mirroring) from the lab frame to the body's model space (SMPL's: Y up, metres):
for a Z-up lab, model (x, y, z) = lab (x, z, -y); a Y-up lab is already model space. Which way the
subject faces is a property of the recording, not of the file, and is left to the fitting.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import VPoserError

__all__ = ["UNIT_SCALES", "C3DError", "C3DWarning", "MarkerClip", "lab_to_model_rotation", "read_c3d",
           "to_model_space", "write_c3d"]

UNIT_SCALES = {"mm": 1e-3, "cm": 1e-2, "m": 1.0}  # metres per file unit
_MAGIC = 0x50  # the second byte of every C3D file
_HEADER_BYTES = 512

# Lab frame -> model space (Y up). Exact integer matrices, both proper rotations (det +1).
_LAB_TO_MODEL = {
    "z": np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]]),  # -90 degrees about X
    "y": np.eye(3),
}


class C3DError(VPoserError):
    """A C3D file that cannot be read as marker trajectories; the message names the file and why."""


class C3DWarning(UserWarning):
    """A C3D file was read, but part of it (never the points) was ignored; the message says what."""


@dataclass(frozen=True)
class MarkerClip:
    """Marker trajectories from one C3D file (see the module docstring for the conventions).

    positions: (T, M, 3) metres in the lab frame, NaN where a marker was not seen.
    """

    source: str
    labels: tuple[str, ...]
    positions: np.ndarray
    frame_rate: float
    first_frame: int
    notes: tuple[str, ...] = ()

    @property
    def num_frames(self) -> int:
        return int(self.positions.shape[0])

    @property
    def num_markers(self) -> int:
        return int(self.positions.shape[1])

    @property
    def visible(self) -> np.ndarray:
        """(T, M) True where the marker has a sample."""
        return ~np.isnan(self.positions).any(axis=-1)


def read_c3d(
    path: str | Path, units: str | None = None, zero_is_missing: bool = True, strip_subject: bool = True
) -> MarkerClip:
    """Read the 3D points of a C3D file; `units` ("mm", "cm", "m") overrides POINT:UNITS.

    Raises C3DError naming the file for a missing package, a file that is not C3D, a truncated
    file, an inconsistent point section, unknown units or an unusable frame rate. An inconsistent
    analog section is ignored with one C3DWarning (module docstring).
    """
    source = str(path)
    library = _c3d_library()
    _check_magic(Path(path))
    with open(path, "rb") as handle, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the package warns about absent analog data; a short read is checked below
        with _corrupt_file_errors(source):
            reader = _lenient_reader(library, source)(handle)
            notes = _settle_analog_block(reader, Path(path).stat().st_size)
            count, num_frames = int(reader.point_used), int(reader.frame_count)
            labels = _raw_labels(reader, count)
            unit_text = _parameter_string(reader, "POINT:UNITS")
            frame_rate, first_frame = float(reader.point_rate), int(reader.first_frame)
        if count == 0 or num_frames <= 0:
            raise C3DError(f"{source}: the file holds no 3D points (POINT:USED = {count}, {num_frames} frames)")
        if not np.isfinite(frame_rate) or frame_rate <= 0:
            raise C3DError(f"{source}: POINT:RATE is {frame_rate}, expected a positive number of frames per second")
        scale = _unit_scale(source, unit_text, units)  # before the long read: a wrong file fails fast
        with _corrupt_file_errors(source):
            raw = _read_points(reader, num_frames, count)
    if len(raw) < num_frames:
        raise C3DError(
            f"{source}: truncated, the header promises {num_frames} frames of points but {len(raw)} are there"
        )

    positions = raw * scale
    if zero_is_missing:
        positions[(raw == 0).all(axis=-1)] = np.nan
    for note in notes:
        warnings.warn(f"{source}: {note}", C3DWarning, stacklevel=2)
    return MarkerClip(source, _clean_labels(labels, strip_subject), positions, frame_rate, first_frame, notes)


def write_c3d(path: str | Path, labels: list[str], positions: np.ndarray, frame_rate: float, units: str = "mm",
              first_frame: int = 1, analog_rate: float = 0.0) -> Path:
    """Write marker trajectories (T, M, 3) metres in the lab frame, NaN where missing (written with
    a negative residual, as C3D marks an invalid sample), as a float C3D file in `units`.
    analog_rate: the ANALOG:RATE to declare (a multiple of frame_rate); no channels are written."""
    library = _c3d_library()
    if units not in UNIT_SCALES:
        raise C3DError(f"{path}: units {units!r} is not one of {sorted(UNIT_SCALES)}")
    positions = np.asarray(positions, dtype=np.float64)
    writer = library.Writer(point_rate=float(frame_rate), analog_rate=float(analog_rate), point_units=units)
    no_analog = np.zeros((0, int(round(analog_rate / frame_rate))))
    writer.set_point_labels(list(labels))
    writer.set_start_frame(int(first_frame))
    missing = ~np.isfinite(positions).all(-1)
    samples = np.zeros((len(labels), 5), np.float32)
    for frame, gone in zip(np.nan_to_num(positions) / UNIT_SCALES[units], missing):
        samples[:, :3] = frame
        samples[:, 3] = np.where(gone, -1.0, 0.0)
        writer.add_frames([(samples.copy(), no_analog)])
    with open(path, "wb") as handle, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the package warns that there are no analog channels
        writer.write(handle)
    return Path(path)


def lab_to_model_rotation(up: str = "z") -> np.ndarray:
    """(3, 3) proper rotation from a lab frame whose up axis is `up` ('z' or 'y') to model space (Y up)."""
    try:
        return _LAB_TO_MODEL[up.lower()].copy()
    except KeyError:
        raise ValueError(f"unknown lab up axis {up!r}; expected 'z' or 'y'") from None


def to_model_space(positions: np.ndarray, up: str = "z") -> np.ndarray:
    """Lab-frame points (..., 3) in model space (Y up); NaN (missing) samples stay NaN."""
    return np.asarray(positions, dtype=np.float64) @ lab_to_model_rotation(up).T


# --------------------------------------------------------------------------------------------


def _c3d_library() -> Any:
    """The `c3d` package, imported only when a file is read so core imports without it."""
    try:
        import c3d
    except ImportError as error:
        raise C3DError(
            "reading C3D files needs the 'c3d' package (pure Python): pip install c3d==0.6.0"
        ) from error
    return c3d


def _check_magic(path: Path) -> None:
    """Refuse early, with a clear message, what is not a C3D file at all."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(_HEADER_BYTES)
    except OSError as error:
        raise C3DError(f"{path}: cannot open ({error.strerror or error})") from error
    if len(header) < _HEADER_BYTES or header[1] != _MAGIC:
        raise C3DError(
            f"{path}: not a C3D file (expected a 512-byte header whose second byte is 0x50, "
            f"got {len(header)} bytes{f' starting {header[:2].hex()}' if header else ''})"
        )


def _lenient_reader(library: Any, source: str) -> type:
    """The package's Reader, except that an inconsistent analog section is noted, not refused.

    The package checks its metadata with asserts, point section first: any other failed check
    (a point count, scale or rate that disagrees) stays an error, named as such."""

    class LenientReader(library.Reader):  # type: ignore[misc, name-defined]
        analog_problem: str | None = None
        analog_block: int | None = None  # analog samples per frame actually stored, once settled

        def _check_metadata(self) -> None:
            try:
                super()._check_metadata()
            except AssertionError as error:
                message = str(error).strip()
                if not message.startswith("inconsistent analog"):
                    raise C3DError(f"{source}: the point section is inconsistent ({message}); "
                                   "the 3D points cannot be located reliably") from None
                self.analog_problem = message

        @property
        def analog_per_frame(self) -> int:
            if self.analog_block is not None:
                return self.analog_block
            return super().analog_per_frame

    return LenientReader


def _settle_analog_block(reader: Any, file_size: int) -> tuple[str, ...]:
    """After an inconsistent analog section: pick the analog samples per frame (the header's, the
    parameters' or none) whose frame size fits the file's length, so the points are read where
    they lie. Returns the note to give the user (empty when the file was consistent)."""
    if reader.analog_problem is None:
        return ()
    header = reader.header
    analog_used = int(reader.analog_used)
    note = f"{reader.analog_problem}; the analog section is ignored, only the 3D points are read"
    if analog_used == 0:
        reader.analog_block = 0
        return (note,)
    word = 4 if reader.point_scale < 0 else 2
    point_bytes = 4 * int(reader.point_used) * word
    available = file_size - (int(header.data_block) - 1) * 512
    frames = int(reader.frame_count)
    try:
        from_parameters = int(reader.analog_rate / reader.point_rate)
    except (ZeroDivisionError, ValueError, OverflowError):
        from_parameters = 0
    candidates = sorted({int(header.analog_per_frame), from_parameters, 0})
    leftovers = {count: available - frames * (point_bytes + analog_used * count * word) for count in candidates}
    # The block that leaves least of the file unread (data is padded to 512-byte blocks); when none
    # fits, the largest, so that a truncated file is reported as such.
    fitting = [count for count, left in leftovers.items() if left >= 0]
    reader.analog_block = min(fitting, key=leftovers.get) if fitting else candidates[-1]
    return (f"{note} (analog blocks of {reader.analog_block} sample(s) per frame, as the file's length shows)",)


@contextmanager
def _corrupt_file_errors(source: str) -> Iterator[None]:
    """The parser meets arbitrary bytes, so any failure inside it means a corrupt file: say which."""
    try:
        yield
    except C3DError:
        raise
    except Exception as error:
        raise C3DError(f"{source}: corrupt or unsupported C3D file ({error})") from error


def _read_points(reader: Any, num_frames: int, count: int) -> np.ndarray:
    """(frames read, count, 3) file-unit points, NaN where the residual word marks a sample invalid."""
    raw = np.full((num_frames, count, 3), np.nan)
    read = 0
    for index, (_, points, _) in enumerate(reader.read_frames(copy=False)):
        raw[index] = np.where(points[:, 3:4] < 0, np.nan, points[:, :3])
        read = index + 1
    return raw[:read]


def _parameter_string(reader: Any, key: str) -> str | None:
    parameter = reader.get(key)
    return None if parameter is None else parameter.string_value


def _raw_labels(reader: Any, count: int) -> list[str]:
    """POINT:LABELS, then LABELS2, LABELS3, ... (255 labels each at most), padded to `count`."""
    labels: list[str] = []
    keys = ["POINT:LABELS"] + [f"POINT:LABELS{n}" for n in range(2, 2 + count // 255 + 1)]
    for key in keys:
        parameter = reader.get(key)
        if parameter is None or len(labels) >= count:
            break
        labels.extend(str(label) for label in np.atleast_1d(parameter.string_array).ravel())
    return (labels + [""] * count)[:count]


def _clean_labels(raw: list[str], strip_subject: bool) -> tuple[str, ...]:
    """Stripped, a single subject prefix removed, empty -> "M<n>", made unique (module docstring)."""
    labels = [label.replace("\x00", " ").strip() for label in raw]
    prefixes = {label.rpartition(":")[0] for label in labels if ":" in label}
    if strip_subject and len(prefixes) == 1:
        labels = [label.rpartition(":")[2].strip() for label in labels]
    return _unique([label or f"M{index + 1}" for index, label in enumerate(labels)])


def _unique(labels: list[str]) -> tuple[str, ...]:
    """A repeated label gets "_2", "_3", ... in file order, skipping names another label already has."""
    taken = set(labels)
    counts: dict[str, int] = {}
    unique = []
    for label in labels:
        number = counts.get(label, 0) + 1
        if number == 1:
            unique.append(label)
        else:
            while f"{label}_{number}" in taken:
                number += 1
            unique.append(f"{label}_{number}")
            taken.add(unique[-1])
        counts[label] = number
    return tuple(unique)


def _unit_scale(source: str, unit_text: str | None, override: str | None) -> float:
    """Metres per file unit from the override or POINT:UNITS."""
    if override is not None:
        if override not in UNIT_SCALES:
            raise C3DError(f"{source}: units override {override!r} is not one of {sorted(UNIT_SCALES)}")
        return UNIT_SCALES[override]
    unit = (unit_text or "").replace("\x00", " ").strip().lower()
    if unit not in UNIT_SCALES:
        found = "missing" if unit_text is None else repr(unit_text.strip())
        raise C3DError(
            f"{source}: POINT:UNITS is {found}, expected one of {sorted(UNIT_SCALES)}; "
            "pass the units explicitly if you know them"
        )
    return UNIT_SCALES[unit]
