"""2D keypoint files from pose detectors, and how each format's keypoints map onto our bodies.

Formats (one frame per file; a folder of such files is a sequence, in natural file-name order):
  openpose   OpenPose BODY_25 JSON: {"people": [{"pose_keypoints_2d": [x, y, c] * 25}, ...]}, pixels,
             (0, 0, 0) = missing.
  coco       COCO-17: a JSON list of objects with "keypoints": [x, y, v] * 17 (or a COCO file with an
             "annotations" list), pixels; v = 0 is missing, 1 and 2 (COCO's labels) count as seen, a
             detector's score is kept as the confidence. Objects with several "image_id"s are refused
             (write one file per frame).
  mediapipe  MediaPipe Pose 33 (what scripts/detect_keypoints.py writes): {"image_size": [W, H],
             "people": [{"landmarks": [{"x", "y", "z", "visibility"}] * 33, "world_landmarks": [...]}]}
             (or "landmarks" / "world_landmarks" at the top level for one person); x, y normalised to
             the image (0..1), so the image size is needed, from the file or the caller.
Every frame becomes (K, 3) rows of (x pixels, y pixels, confidence): missing points have confidence 0
and NaN coordinates. Several people in a file: `person` picks one by index or "largest" (the largest
bounding box of its seen points). A folder's frames with nobody in them stay all-missing.

Each format's keypoints map onto a body by a JSON map in core/data (keypoints2d_<format>.json): a
keypoint is a model joint ({"joint": name}), a surface point shared by all formats ({"surface":
name}: a vertex per body topology in keypoints2d_surface.json: nose, eyes, ears, toes, heels) or
unmapped (no target: ignored); "weight" (default 1) scales its confidence, low for detector points
that are not SMPL joints (OpenPose's neck and mid-hip, the detectors' hips).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .body_model import BodyModel
from .errors import VPoserError
from .keypoints import KeypointSet

DATA = Path(__file__).resolve().parent / "data"
FORMATS = {"openpose": "openpose_body25", "coco": "coco17", "mediapipe": "mediapipe33"}  # short -> map file
COUNTS = {"openpose": 25, "coco": 17, "mediapipe": 33}
TORSO = (("left_shoulder", "left_hip"), ("right_shoulder", "right_hip"))  # SMPLify's depth start: bends least


class KeypointFileError(VPoserError):
    """A 2D keypoint file (or folder, or map) is not what its format says; the message names it."""


@dataclass
class Keypoints2D:
    """Detected keypoints of one person over T frames.

    data (T, K, 3): x, y in pixels (top-left image corner = 0) and confidence (0 and NaN x, y where
    missing); image_size (W, H) when known; world (T, K, 3) MediaPipe's world landmarks (metres,
    origin between the hips, image-like axes: x right, y down) or None; files: one source per frame;
    empty: the frames where nobody was detected."""

    format: str
    names: tuple[str, ...]
    data: np.ndarray
    image_size: tuple[int, int] | None
    files: tuple[str, ...]
    world: np.ndarray | None = None
    empty: tuple[int, ...] = ()

    @property
    def pixels(self) -> np.ndarray:
        """(T, K, 2)"""
        return self.data[..., :2]

    @property
    def confidence(self) -> np.ndarray:
        """(T, K)"""
        return self.data[..., 2]


# --------------------------------------------------------------------------------------------- reading


def read_keypoints(path: str | Path, format: str | None = None, person: int | str = "largest",
                   image_size: Sequence[int] | None = None) -> Keypoints2D:
    """A keypoint file (one frame) or a folder of them (a sequence). `format`: 'openpose', 'coco' or
    'mediapipe' (None: recognised from the first file's content); `person`: an index or 'largest';
    `image_size` (W, H): needed for MediaPipe's normalised coordinates when a file does not say it."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.json"), key=_natural_key)
        if not files:
            raise KeypointFileError(f"{path}: no .json keypoint files in this folder")
    elif path.is_file():
        files = [path]
    else:
        raise KeypointFileError(f"{path}: no such file or folder")
    if format is None:
        format = detect_format(_load(files[0]), files[0])
    if format not in FORMATS:
        raise KeypointFileError(f"unknown keypoint format {format!r}; expected one of {sorted(FORMATS)}")
    if not (person == "largest" or (isinstance(person, int) and not isinstance(person, bool) and person >= 0)):
        raise KeypointFileError(f"person must be 'largest' or an index >= 0, got {person!r}")
    frames, worlds, sizes, empty = [], [], [], []
    for index, file in enumerate(files):
        people, world, size = _READERS[format](_load(file), file, image_size)
        sizes.append(size)
        if not people:
            if len(files) == 1:
                raise KeypointFileError(f"{file}: nobody detected in this frame (an empty 'people' list)")
            empty.append(index)
            frames.append(_missing(COUNTS[format]))
            worlds.append(None)
            continue
        chosen = _choose(people, person, file)
        frames.append(people[chosen])
        worlds.append(None if world is None else world[chosen])
    if len(empty) == len(files):
        raise KeypointFileError(f"{path}: nobody detected in any of its {len(files)} frames")
    known = {size for size in sizes if size is not None}
    if len(known) > 1:
        raise KeypointFileError(f"{path}: the frames give different image sizes {sorted(known)}")
    world = None
    if any(item is not None for item in worlds):
        world = np.stack([np.full((COUNTS[format], 3), np.nan) if item is None else item for item in worlds])
    return Keypoints2D(format, keypoint_names(format), np.stack(frames).astype(np.float64),
                       next(iter(known)) if known else _size(image_size, path), tuple(map(str, files)),
                       world, tuple(empty))


def detect_format(data: object, path: Path) -> str:
    """'openpose', 'coco' or 'mediapipe' from a parsed file's structure."""
    if isinstance(data, list) or (isinstance(data, dict) and "annotations" in data):
        return "coco"
    if isinstance(data, dict) and "landmarks" in data:
        return "mediapipe"
    if isinstance(data, dict) and isinstance(data.get("people"), list):
        people = [entry for entry in data["people"] if isinstance(entry, dict)]
        if any("pose_keypoints_2d" in entry for entry in people):
            return "openpose"
        if any("landmarks" in entry for entry in people) or (not people and "image_size" in data):
            return "mediapipe"
        if not people:
            return "openpose"
    raise KeypointFileError(f"{path}: not a keypoint file this add-on reads (expected OpenPose 'people' with "
                            f"'pose_keypoints_2d', a COCO list of 'keypoints', or MediaPipe 'landmarks')")


def keypoint_names(format: str) -> tuple[str, ...]:
    """The format's keypoint names in file order."""
    return tuple(entry["name"] for entry in _map_file(format)["keypoints"])


def _read_openpose(data: object, path: Path, image_size) -> tuple[list[np.ndarray], None, tuple | None]:
    if not isinstance(data, dict) or not isinstance(data.get("people"), list):
        raise KeypointFileError(f"{path}: expected an OpenPose object with a 'people' list")
    people = []
    for i, entry in enumerate(data["people"]):
        values = entry.get("pose_keypoints_2d") if isinstance(entry, dict) else None
        where = f"{path}: people[{i}].pose_keypoints_2d"
        rows = _rows(values, where, 25, hint={54: "an 18-keypoint (COCO model) OpenPose output; use BODY_25"})
        rows[rows[:, 2] <= 0] = (np.nan, np.nan, 0.0)
        _check_pixels(rows, where, image_size)
        people.append(rows)
    return people, None, _size(image_size, path)


def _read_coco(data: object, path: Path, image_size) -> tuple[list[np.ndarray], None, tuple | None]:
    entries = data.get("annotations") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise KeypointFileError(f"{path}: expected a COCO list of objects with 'keypoints' (or 'annotations')")
    images = {entry.get("image_id") for entry in entries if isinstance(entry, dict)}
    if len(images) > 1:
        raise KeypointFileError(f"{path}: objects of {len(images)} different image_ids; write one file per frame")
    people = []
    for i, entry in enumerate(entries):
        where = f"{path}: [{i}].keypoints"
        rows = _rows(entry.get("keypoints") if isinstance(entry, dict) else None, where, 17)
        rows[rows[:, 2] <= 0] = (np.nan, np.nan, 0.0)
        labels = rows[:, 2]
        if np.isin(labels, (0.0, 1.0, 2.0)).all():  # COCO ground truth: 1 (occluded) and 2 (visible) are seen
            rows[:, 2] = (labels > 0).astype(np.float64)
        _check_pixels(rows, where, image_size)
        people.append(rows)
    return people, None, _size(image_size, path)


# Normalised landmarks of a person cut off by the picture reach a few image sizes beyond it (a
# portrait's feet ~3 heights below, guessed, with visibility ~0 that weights them out of the fit);
# pixel coordinates of any real picture are far larger.
_NORMALISED_REACH = 10.0


def _read_mediapipe(data: object, path: Path, image_size) -> tuple[list[np.ndarray], list | None, tuple | None]:
    if not isinstance(data, dict):
        raise KeypointFileError(f"{path}: expected a MediaPipe object with 'people' or 'landmarks'")
    size = _size(data.get("image_size", image_size), path)
    if "people" in data:
        entries = data["people"]
        if not isinstance(entries, list):
            raise KeypointFileError(f"{path}: 'people' must be a list")
        where = [f"{path}: people[{i}]" for i in range(len(entries))]
    else:
        entries, where = [data], [str(path)]
    people, worlds = [], []
    for entry, place in zip(entries, where):
        if not isinstance(entry, dict) or "landmarks" not in entry:
            raise KeypointFileError(f"{place}: missing 'landmarks'")
        rows = _landmarks(entry["landmarks"], f"{place}.landmarks")
        seen = rows[:, 2] > 0
        if seen.any() and np.abs(rows[seen, :2]).max() > _NORMALISED_REACH:
            raise KeypointFileError(f"{place}.landmarks: x, y look like pixels (up to {np.abs(rows[seen, :2]).max():.0f})"
                                    f"; MediaPipe's are normalised to the image (0..1)")
        if size is None:
            raise KeypointFileError(f"{place}: MediaPipe coordinates are normalised: the image size is needed "
                                    f"('image_size': [W, H] in the file, or give it)")
        pixels = rows[:, :3] * (size[0], size[1], 1.0)
        pixels[~seen] = (np.nan, np.nan, 0.0)
        people.append(pixels)
        world = entry.get("world_landmarks")
        worlds.append(None if world is None else _landmarks(world, f"{place}.world_landmarks")[:, 3:])
    has_world = any(item is not None for item in worlds)
    worlds_out = [np.full((33, 3), np.nan) if item is None else item for item in worlds] if has_world else None
    return people, worlds_out, size


_READERS = {"openpose": _read_openpose, "coco": _read_coco, "mediapipe": _read_mediapipe}


def _landmarks(values: object, where: str) -> np.ndarray:
    """(33, 6): x, y, visibility (as confidence) then x, y, z."""
    if not isinstance(values, list) or len(values) != 33:
        count = len(values) if isinstance(values, list) else type(values).__name__
        raise KeypointFileError(f"{where}: expected 33 MediaPipe landmarks, got {count}")
    rows = np.empty((33, 6))
    for i, point in enumerate(values):
        if not isinstance(point, dict) or not {"x", "y"} <= set(point):
            raise KeypointFileError(f"{where}[{i}]: expected an object with 'x', 'y' (and 'z', 'visibility')")
        try:
            x, y, z = float(point["x"]), float(point["y"]), float(point.get("z", 0.0))
            visibility = float(point.get("visibility", 1.0))
        except (TypeError, ValueError):
            raise KeypointFileError(f"{where}[{i}]: x, y, z, visibility must be numbers, got {point!r}") from None
        rows[i] = (x, y, visibility if np.isfinite([x, y]).all() else 0.0, x, y, z)
    return rows


def _rows(values: object, where: str, count: int, hint: dict | None = None) -> np.ndarray:
    """(count, 3) from a flat [x, y, c] * count list."""
    if not isinstance(values, list):
        raise KeypointFileError(f"{where}: expected a list of {3 * count} numbers ([x, y, confidence] * {count})")
    if len(values) != 3 * count:
        extra = (hint or {}).get(len(values))
        raise KeypointFileError(f"{where}: expected {3 * count} numbers ([x, y, confidence] * {count}), got "
                                f"{len(values)}{f' ({extra})' if extra else ''}")
    try:
        rows = np.asarray(values, dtype=np.float64).reshape(count, 3)
    except (TypeError, ValueError):
        raise KeypointFileError(f"{where}: the values must be numbers") from None
    rows[~np.isfinite(rows).all(1)] = (np.nan, np.nan, 0.0)
    return rows


def _check_pixels(rows: np.ndarray, where: str, image_size) -> None:
    """Refuse normalised coordinates where pixels are expected."""
    seen = rows[:, 2] > 0
    if seen.sum() >= 2 and np.abs(rows[seen, :2]).max() <= 1.0 and (image_size is None or max(image_size) > 2):
        raise KeypointFileError(f"{where}: every coordinate is within 0..1: these look normalised, pixels were "
                                f"expected (OpenPose: run without --keypoint_scale)")


def _choose(people: list[np.ndarray], person: int | str, file: Path) -> int:
    if person == "largest":
        def area(rows: np.ndarray) -> float:
            seen = rows[rows[:, 2] > 0, :2]
            return 0.0 if len(seen) < 2 else float(np.prod(seen.max(0) - seen.min(0)))
        return int(np.argmax([area(rows) for rows in people]))
    if person >= len(people):
        raise KeypointFileError(f"{file}: person {person} asked for, but only {len(people)} detected")
    return int(person)


def _size(value, where) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        width, height = (float(v) for v in value)
    except (TypeError, ValueError):
        raise KeypointFileError(f"{where}: image size must be [width, height] in pixels, got {value!r}") from None
    if not (width >= 1 and height >= 1):
        raise KeypointFileError(f"{where}: image size must be positive pixels, got {value!r}")
    return int(round(width)), int(round(height))


def _missing(count: int) -> np.ndarray:
    """(count, 3) rows of a frame without the person: NaN pixels, confidence 0."""
    rows = np.full((count, 3), np.nan)
    rows[:, 2] = 0.0
    return rows


def _load(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise KeypointFileError(f"{path}: cannot read the keypoint file ({error})") from error


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


# --------------------------------------------------------------------------------------------- maps


@dataclass
class KeypointMap:
    """A format's keypoints on one body model: the mapped ones' `columns` (K',) in the format's
    order, their `keypoints` (a KeypointSet, same order: what the body evaluates) and `weights` (K',)."""

    format: str
    columns: np.ndarray
    keypoints: KeypointSet
    weights: np.ndarray

    @classmethod
    def load(cls, format: str, model: BodyModel) -> KeypointMap:
        """The shipped map of `format` ('openpose', 'coco', 'mediapipe') for `model`."""
        if format not in FORMATS:
            raise KeypointFileError(f"unknown keypoint format {format!r}; expected one of {sorted(FORMATS)}")
        data = _map_file(format)
        source = str(DATA / f"keypoints2d_{FORMATS[format]}.json")
        topology, surface = _topology(model)
        columns, markers, weights = [], {}, []
        for i, entry in enumerate(data["keypoints"]):
            if "joint" in entry and entry["joint"] in model.joint_names:
                markers[entry["name"]] = {"joint": entry["joint"]}
            elif "surface" in entry and topology is not None:
                markers[entry["name"]] = {"vertex": surface["points"][entry["surface"]][topology]}
            else:
                continue
            columns.append(i)
            weights.append(float(entry.get("weight", 1.0)))
        if not markers:
            raise KeypointFileError(f"{source}: none of its keypoints exist on a {model.kind.name} model")
        return cls(format, np.array(columns), KeypointSet.from_dict(model, markers, source=source), np.array(weights))

    @property
    def torso_pairs(self) -> list[tuple[int, int]]:
        """Shoulder-hip pairs as indices into `keypoints` (for core.cameras.initial_depth)."""
        names = self.keypoints.names
        return [(names.index(a), names.index(b)) for a, b in TORSO if a in names and b in names]

    def select(self, keypoints: Keypoints2D) -> tuple[np.ndarray, np.ndarray]:
        """Pixels (T, K', 2) and weighted confidences (T, K') of the mapped keypoints, ready for the
        2D data term (core.reprojection.Reprojection)."""
        if keypoints.format != self.format:
            raise KeypointFileError(f"keypoints in the {keypoints.format!r} format given to the {self.format!r} map")
        rows = keypoints.data[:, self.columns]
        return rows[..., :2], np.nan_to_num(rows[..., 2]) * self.weights


def _map_file(format: str) -> dict:
    return json.loads((DATA / f"keypoints2d_{FORMATS[format]}.json").read_text())


def _topology(model: BodyModel) -> tuple[str | None, dict]:
    """The model's mesh topology name in keypoints2d_surface.json (by vertex count), or None."""
    surface = json.loads((DATA / "keypoints2d_surface.json").read_text())
    names = [name for name, count in surface["topologies"].items() if count == model.num_vertices]
    return (names[0] if names else None), surface
