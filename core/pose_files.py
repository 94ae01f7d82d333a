"""AMASS-style pose files: `poses` (T, 3 * J) axis-angle, `trans` (T, 3), `betas`, `gender`,
`mocap_framerate` (AMASS also writes `mocap_frame_rate`; both are read)."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import VPoserError
from .resources import check_memory


class PoseFileError(VPoserError):
    """A pose file is missing a field or holds arrays of the wrong shape."""


@dataclass
class PoseSequence:
    poses: np.ndarray  # (T, 3 * J) axis-angle, joints in the body model's order
    trans: np.ndarray  # (T, 3) metres
    betas: np.ndarray = field(default_factory=lambda: np.zeros(0))
    gender: str = "neutral"
    framerate: float = 30.0

    @property
    def num_frames(self) -> int:
        return self.poses.shape[0]

    def parts_for(self, pose_parts: tuple[tuple[str, int], ...], source: str = "pose") -> dict[str, np.ndarray]:
        """Split `poses` into a body model's forward() arguments.

        A file may carry fewer joints than the model (e.g. SMPL-H body + hands against a model with
        the same first joints): the parts it covers completely are returned, the rest stay zero.
        """
        width = self.poses.shape[1]
        result, start = {}, 0
        for name, count in pose_parts:
            end = start + 3 * count
            if end <= width:
                result[name] = self.poses[:, start:end]
            start = end
        if width > start:
            raise PoseFileError(f"{source}: 'poses' has {width // 3} joints, more than the body model's {start // 3}")
        needed = [name for name, _ in pose_parts if name in ("global_orient", "body_pose")]
        if any(name not in result for name in needed):
            raise PoseFileError(f"{source}: 'poses' has {width // 3} joints, too few for the body model's body")
        return result


FIELDS = ("poses", "trans", "betas", "gender", "mocap_framerate", "mocap_frame_rate")  # what load_pose_file reads


@dataclass(frozen=True)
class PoseFileHeader:
    """What a pose file declares, read before any array is: frames and numbers per frame of
    'poses', and the bytes its fields take once loaded as stored."""

    frames: int
    width: int
    nbytes: int

    @property
    def joints(self) -> int:
        return self.width // 3


def read_pose_header(path: str | Path) -> PoseFileHeader:
    """The shapes a pose file declares, from the .npy headers inside the archive: nothing beyond
    them is decompressed, so a small compressed file that declares millions of frames costs
    nothing to inspect. Checks that 'poses' is (T, 3 * joints) with T > 0 and 'trans' (T, 3)."""
    path = Path(path)
    shapes: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            members = {name[: -len(".npy")]: name for name in archive.namelist() if name.endswith(".npy")}
            for key in FIELDS:
                if key in members:
                    with archive.open(members[key]) as member:
                        shapes[key] = _npy_header(member)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        raise PoseFileError(f"{path}: not a readable .npz file ({error})") from error
    if "poses" not in shapes:
        raise PoseFileError(f"{path}: missing key 'poses' (T, 3 * joints)")
    poses = shapes["poses"][0]
    if len(poses) != 2 or poses[1] % 3 or poses[0] == 0:
        raise PoseFileError(f"{path}: key 'poses' has shape {poses}, expected (T, 3 * joints) with T > 0")
    if "trans" in shapes and shapes["trans"][0] != (poses[0], 3):
        raise PoseFileError(f"{path}: key 'trans' has shape {shapes['trans'][0]}, expected ({poses[0]}, 3)")
    nbytes = sum(int(np.prod(shape)) * dtype.itemsize for shape, dtype in shapes.values())
    return PoseFileHeader(frames=poses[0], width=poses[1], nbytes=nbytes)


def _npy_header(member) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from the start of a .npy stream (format 1.0; 2.0 and 3.0 differ only in the
    size of the header length, and 3.0 in its text encoding, which is ASCII for our dtypes)."""
    version = np.lib.format.read_magic(member)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read(member)
    return tuple(int(size) for size in shape), dtype


def load_pose_file(path: str | Path) -> PoseSequence:
    """Read and check an AMASS-style `.npz` (no pickled objects are ever loaded). The declared
    shapes are checked first (read_pose_header), and a file whose arrays would not fit in the free
    memory is refused (InsufficientMemoryError) before anything is allocated."""
    path = Path(path)
    header = read_pose_header(path)
    # as stored, plus the float64 copies of poses and trans
    check_memory(header.nbytes + 8 * header.frames * (header.width + 3), f"reading {path} ({header.frames:,} frames)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "poses" not in npz.files:
                raise PoseFileError(f"{path}: missing key 'poses' (T, 3 * joints)")
            poses = np.asarray(npz["poses"], dtype=np.float64)
            if poses.ndim != 2 or poses.shape[1] % 3 or poses.shape[0] == 0:
                raise PoseFileError(f"{path}: key 'poses' has shape {poses.shape}, expected (T, 3 * joints) with T > 0")
            trans = np.asarray(npz["trans"], dtype=np.float64) if "trans" in npz.files else np.zeros((len(poses), 3))
            if trans.shape != (len(poses), 3):
                raise PoseFileError(f"{path}: key 'trans' has shape {trans.shape}, expected ({len(poses)}, 3)")
            betas = np.asarray(npz["betas"], dtype=np.float64).reshape(-1) if "betas" in npz.files else np.zeros(0)
            gender = str(npz["gender"]) if "gender" in npz.files else "neutral"
            rate_key = next((k for k in ("mocap_framerate", "mocap_frame_rate") if k in npz.files), None)
            framerate = float(npz[rate_key]) if rate_key else 30.0
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise PoseFileError(f"{path}: not a readable .npz file ({error})") from error
    except ValueError as error:
        if isinstance(error, PoseFileError):
            raise
        raise PoseFileError(f"{path}: a field is stored as Python objects or is not numeric ({error})") from error
    for name, array in (("poses", poses), ("trans", trans), ("betas", betas)):
        if not np.isfinite(array).all():
            raise PoseFileError(f"{path}: key '{name}' contains NaN or infinite values")
    if framerate <= 0:
        raise PoseFileError(f"{path}: frame rate {framerate} is not positive")
    return PoseSequence(poses=poses, trans=trans, betas=betas, gender=gender, framerate=framerate)


def pose_arrays(sequence: PoseSequence, **extra: np.ndarray | str | float) -> dict[str, np.ndarray]:
    """The arrays of an AMASS-style `.npz` (float32 motion, as AMASS stores it), in file order."""
    return {
        "poses": sequence.poses.astype(np.float32),
        "trans": sequence.trans.astype(np.float32),
        "betas": sequence.betas.astype(np.float32),
        "gender": np.array(sequence.gender),
        "mocap_framerate": np.array(sequence.framerate),
        **{key: np.asarray(value) for key, value in extra.items()},
    }


def save_pose_file(path: str | Path, sequence: PoseSequence, **extra: np.ndarray | str | float) -> None:
    """Write an AMASS-style `.npz` that AMASS tools and `load_pose_file` read back. `path` may also
    be an open binary file. numpy stamps every member with zip's fixed earliest time, not the clock,
    so the same arrays give the same bytes (resumed batch runs rely on it, tests/core/test_batch.py)."""
    np.savez_compressed(path, **pose_arrays(sequence, **extra))
