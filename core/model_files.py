"""Reading and checking SMPL-family model files (.npz) without running any pickled code.

The official SMPL, SMPL-H, SMPL-X and MANO `.npz` releases and our open default body share one
set of keys; this module turns such a file into checked numpy arrays plus a `ModelKind` that
says how its pose vector is laid out. Nothing here knows about torch.
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import VPoserError


class BodyModelError(VPoserError):
    """A model file or a forward() argument is not what the body model expects."""


SMPL_BODY_JOINTS = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar",
    "right_collar", "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist",
)
SMPL_BODY_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19)
HAND_JOINTS = tuple(
    f"{finger}{i}" for finger in ("index", "middle", "pinky", "ring", "thumb") for i in (1, 2, 3)
)
LEFT_HAND_JOINTS = tuple(f"left_{name}" for name in HAND_JOINTS)
RIGHT_HAND_JOINTS = tuple(f"right_{name}" for name in HAND_JOINTS)


@dataclass(frozen=True)
class ModelKind:
    """How a family member lays out its pose: named parts, each covering some joints."""

    name: str
    pose_parts: tuple[tuple[str, int], ...]  # (forward() argument, number of joints), in joint order
    joint_names: tuple[str, ...]

    @property
    def num_joints(self) -> int:
        return sum(count for _, count in self.pose_parts)


KINDS = {
    "smpl": ModelKind(
        "smpl", (("global_orient", 1), ("body_pose", 23)),
        SMPL_BODY_JOINTS + ("left_hand", "right_hand"),
    ),
    "smplh": ModelKind(
        "smplh", (("global_orient", 1), ("body_pose", 21), ("left_hand_pose", 15), ("right_hand_pose", 15)),
        SMPL_BODY_JOINTS + LEFT_HAND_JOINTS + RIGHT_HAND_JOINTS,
    ),
    "smplx": ModelKind(
        "smplx",
        (("global_orient", 1), ("body_pose", 21), ("jaw_pose", 1), ("leye_pose", 1), ("reye_pose", 1),
         ("left_hand_pose", 15), ("right_hand_pose", 15)),
        SMPL_BODY_JOINTS + ("jaw", "left_eye", "right_eye") + LEFT_HAND_JOINTS + RIGHT_HAND_JOINTS,
    ),
    "mano": ModelKind("mano", (("global_orient", 1), ("hand_pose", 15)), ("wrist",) + HAND_JOINTS),
}
KINDS["openbody"] = ModelKind("openbody", KINDS["smplh"].pose_parts, KINDS["smplh"].joint_names)
_KIND_BY_JOINT_COUNT = {24: "smpl", 52: "smplh", 55: "smplx", 16: "mano"}

REQUIRED_KEYS = ("v_template", "f", "J_regressor", "weights", "kintree_table", "shapedirs")
PKL_HELP = (
    "{path}: .pkl model files are not opened directly, because unpickling can run arbitrary code and "
    "the official ones need the unmaintained 'chumpy' package. Convert it once to .npz with "
    "'python scripts/convert_model_pkl.py {path} OUT.npz' (a restricted unpickler that only rebuilds "
    "arrays), then load the .npz."
)


@dataclass
class ModelArrays:
    """The checked contents of one model file (float64 for exact precomputation)."""

    path: str
    kind: ModelKind
    v_template: np.ndarray  # (V, 3)
    faces: np.ndarray  # (F, 3) int64
    J_regressor: np.ndarray  # (J, V)
    weights: np.ndarray  # (V, J)
    parents: np.ndarray  # (J,) int64, -1 for the root
    shapedirs: np.ndarray  # (V, 3, K) shape components only
    exprdirs: np.ndarray  # (V, 3, E) SMPL-X expression components (E may be 0)
    posedirs: np.ndarray | None  # (V, 3, 9 * (J - 1)) or None for plain LBS
    hand_components: dict[str, np.ndarray]  # pose part -> (45, 45) PCA basis, rows are components
    hand_means: dict[str, np.ndarray]  # pose part -> (45,)
    joint_names: tuple[str, ...]


def load_model_arrays(path: str | Path) -> ModelArrays:
    """Read an SMPL-family `.npz` (or our open body) and check every array it will use."""
    path = Path(path)
    if path.suffix.lower() == ".pkl":
        raise BodyModelError(PKL_HELP.format(path=path))
    if not path.is_file():
        raise BodyModelError(f"{path}: no such model file")
    try:
        npz = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:  # ValueError: not zip, not .npy
        raise BodyModelError(f"{path}: not a readable .npz file ({error})") from error
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise BodyModelError(f"{path}: holds a single .npy array, expected an .npz archive of named arrays")
    try:
        with npz:
            available = set(npz.files)
            missing = [key for key in REQUIRED_KEYS if key not in available]
            if missing:
                raise BodyModelError(
                    f"{path}: missing key(s) {', '.join(missing)}; an SMPL-family model file needs "
                    f"{', '.join(REQUIRED_KEYS)}"
                )
            wanted = REQUIRED_KEYS + tuple(
                key for key in ("posedirs", "joint_names", "model_type", "hands_components",
                                "hands_mean", "hands_componentsl", "hands_componentsr",
                                "hands_meanl", "hands_meanr")
                if key in available
            )
            raw = {key: _read_array(npz, key, path) for key in wanted}
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as error:
        raise BodyModelError(f"{path}: not a readable .npz file ({error})") from error
    return _check_arrays(path, raw)


def _read_array(npz: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    try:
        return npz[key]
    except ValueError as error:  # object arrays need pickle, which we refuse
        raise BodyModelError(
            f"{path}: key '{key}' is stored as Python objects (pickled); expected a numeric array"
        ) from error


def _float_array(path: Path, key: str, array: np.ndarray, shape: tuple[int | None, ...]) -> np.ndarray:
    """Check dims against `shape` (None = any) and return a finite float64 copy."""
    if array.ndim != len(shape) or any(
        expected is not None and got != expected for got, expected in zip(array.shape, shape)
    ):
        wanted = "(" + ", ".join("*" if d is None else str(d) for d in shape) + ")"
        raise BodyModelError(f"{path}: key '{key}' has shape {array.shape}, expected {wanted}")
    if not np.issubdtype(array.dtype, np.number):
        raise BodyModelError(f"{path}: key '{key}' has dtype {array.dtype}, expected numbers")
    result = array.astype(np.float64)
    if not np.isfinite(result).all():
        raise BodyModelError(f"{path}: key '{key}' contains NaN or infinite values")
    return result


def _check_arrays(path: Path, raw: dict[str, np.ndarray]) -> ModelArrays:
    v_template = _float_array(path, "v_template", raw["v_template"], (None, 3))
    num_verts = v_template.shape[0]
    kintree = raw["kintree_table"]
    if kintree.ndim != 2 or kintree.shape[0] != 2:
        raise BodyModelError(f"{path}: key 'kintree_table' has shape {kintree.shape}, expected (2, J)")
    num_joints = kintree.shape[1]
    parents = _parents_from_kintree(path, kintree)
    kind = _detect_kind(path, raw, num_joints)

    faces = raw["f"]
    if faces.ndim != 2 or faces.shape[1] != 3 or not np.issubdtype(faces.dtype, np.integer):
        raise BodyModelError(f"{path}: key 'f' has shape {faces.shape} dtype {faces.dtype}, expected (F, 3) integers")
    if faces.size and (faces.min() < 0 or faces.max() >= num_verts):
        raise BodyModelError(f"{path}: key 'f' indexes vertices outside 0..{num_verts - 1}")

    J_regressor = _float_array(path, "J_regressor", raw["J_regressor"], (num_joints, num_verts))
    weights = _float_array(path, "weights", raw["weights"], (num_verts, num_joints))
    shapedirs_all = raw["shapedirs"]
    if shapedirs_all.ndim == 2:  # some files store a single component as (V, 3)
        shapedirs_all = shapedirs_all[:, :, None]
    shapedirs_all = _float_array(path, "shapedirs", shapedirs_all, (num_verts, 3, None))
    shapedirs, exprdirs = _split_expression(kind, shapedirs_all)

    posedirs = None
    if "posedirs" in raw:
        posedirs = _float_array(path, "posedirs", raw["posedirs"], (num_verts, 3, 9 * (num_joints - 1)))
        if not posedirs.any():
            posedirs = None

    hand_components, hand_means = _hand_pca(path, raw, kind)
    joint_names = kind.joint_names
    if "joint_names" in raw:
        joint_names = tuple(str(name) for name in raw["joint_names"])
        if len(joint_names) != num_joints:
            raise BodyModelError(f"{path}: 'joint_names' has {len(joint_names)} names for {num_joints} joints")
    return ModelArrays(
        path=str(path), kind=kind, v_template=v_template, faces=faces.astype(np.int64),
        J_regressor=J_regressor, weights=weights, parents=parents, shapedirs=shapedirs,
        exprdirs=exprdirs, posedirs=posedirs, hand_components=hand_components,
        hand_means=hand_means, joint_names=joint_names,
    )


def _parents_from_kintree(path: Path, kintree: np.ndarray) -> np.ndarray:
    """Row 0 of the kintree holds parents; the root's is -1 or 2**32-1 in official files."""
    parents = kintree[0].astype(np.int64)
    parents[0] = -1
    if (kintree[1] != np.arange(kintree.shape[1])).any():
        raise BodyModelError(f"{path}: 'kintree_table' row 1 must list joints 0..J-1 in order")
    later = [j for j in range(1, len(parents)) if not 0 <= parents[j] < j]
    if later:
        raise BodyModelError(
            f"{path}: 'kintree_table' gives joint(s) {later} a parent that is not an earlier joint"
        )
    return parents


def _detect_kind(path: Path, raw: dict[str, np.ndarray], num_joints: int) -> ModelKind:
    if "model_type" in raw:
        name = str(raw["model_type"])
        if name not in KINDS:
            raise BodyModelError(f"{path}: 'model_type' is {name!r}, expected one of {sorted(KINDS)}")
        kind = KINDS[name]
    elif num_joints in _KIND_BY_JOINT_COUNT:
        kind = KINDS[_KIND_BY_JOINT_COUNT[num_joints]]
    else:
        raise BodyModelError(
            f"{path}: {num_joints} joints in 'kintree_table' matches no known model "
            "(SMPL 24, SMPL-H 52, SMPL-X 55, MANO 16)"
        )
    if kind.num_joints != num_joints:
        raise BodyModelError(
            f"{path}: a {kind.name} model has {kind.num_joints} joints, but 'kintree_table' has {num_joints}"
        )
    return kind


def _split_expression(kind: ModelKind, shapedirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SMPL-X files store shape then expression components in one array, as the smplx package reads them:
    300 + 100 in v1.1 files, 10 + 10 in v1.0 files."""
    if kind.name != "smplx":
        return shapedirs, shapedirs[:, :, :0]
    total = shapedirs.shape[-1]
    if total >= 400:
        return shapedirs[:, :, :300], shapedirs[:, :, 300:400]
    return shapedirs[:, :, :10], shapedirs[:, :, 10:20]


def _hand_pca(
    path: Path, raw: dict[str, np.ndarray], kind: ModelKind
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    keys = {"hand_pose": ("hands_components", "hands_mean")} if kind.name == "mano" else {
        "left_hand_pose": ("hands_componentsl", "hands_meanl"),
        "right_hand_pose": ("hands_componentsr", "hands_meanr"),
    }
    components, means = {}, {}
    if kind.name in ("smpl", "openbody"):
        return components, means
    for part, (components_key, mean_key) in keys.items():
        if components_key in raw:
            components[part] = _float_array(path, components_key, raw[components_key], (None, 45))
        if mean_key in raw:
            means[part] = _float_array(path, mean_key, raw[mean_key].reshape(-1), (45,))
    return components, means
