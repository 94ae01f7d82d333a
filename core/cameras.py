"""Pinhole cameras for 2D keypoints: projection, its Jacobian, Blender camera conversion, JSON files.

Convention (OpenCV): camera x right, y down, z forward; a point X in model space (SMPL's: metres,
Y-up, the body faces +Z) lands at pixel = K (R X + t) / depth with K = [[fx, 0, cx], [0, fy, cy],
[0, 0, 1]]. Pixel coordinates run from 0 at the image's left / top edge to width / height at its
right / bottom edge (MediaPipe's normalised coordinates times the image size, and Blender's
`world_to_camera_view` times the render size); OpenCV's integer-centre convention is 0.5 px off.

A `Cameras` holds any number of cameras as tensors with common leading (batch) dimensions, e.g.
(C,) views or (T,) frames of a moving camera; every operation broadcasts those dimensions against
the points' leading dimensions.

The camera unknowns a fit can have, in this column order (see `CAMERA_UNKNOWNS`):
  "focal"        1 column: the log of the focal length (fx and fy scaled together, their ratio -
                 the pixel aspect - kept), so a step is relative and well scaled at any focal;
  "rotation"     3 columns: a small rotation w of the camera about its own centre, applied in the
                 camera frame: R' = exp([w]x) R, t' = exp([w]x) t (a point's camera coordinates
                 turn by exp([w]x));
  "translation"  3 columns: a shift d of the camera coordinates, t' = t + d.
`Cameras.moved(step, unknowns)` applies such a step; `projection_jacobians` gives the derivatives.

Blender (see `BlenderCamera`): a camera looks down its local -Z with +Y up, so
R_cv = diag(1, -1, -1) R_world_to_camera. Blender's world is Z-up and the body object carries a
+90 degree X rotation (model Y-up -> scene Z-up): the body object's world matrix sits between the
scene and model space. The focal length in pixels is lens * viewfac / sensor, where the sensor
size is sensor_height for sensor_fit VERTICAL and sensor_width otherwise (AUTO included), and
viewfac is the width in pixels when the fit is horizontal (AUTO: width * pixel_aspect_x >=
height * pixel_aspect_y) or the height times pixel_aspect_y / pixel_aspect_x when vertical;
shift_x / shift_y move the principal point by shift * viewfac (pixels of x; y divided by the
aspect).

Cameras files are JSON, one camera or several:

    {"cameras": [{"name": "front", "image_size": [1920, 1080], "focal": [1500, 1500],
                  "principal_point": [960, 540],
                  "rotation": [[1, 0, 0], [0, -1, 0], [0, 0, -1]], "translation": [0, 1, 4]}]}

`focal` is one number (square pixels) or [fx, fy]; `principal_point` defaults to the image centre;
`rotation` is a 3x3 matrix or 3 axis-angle numbers (OpenCV's rvec); `rotation` and `translation`
(metres) map model space into the camera, default the identity and zero. A bare camera object
(without the "cameras" list) is also read.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .errors import VPoserError
from .rotations import axis_angle_to_matrix, skew

CAMERA_UNKNOWNS = {"focal": 1, "rotation": 3, "translation": 3}  # name -> number of columns, in this order
MIN_DEPTH = 1e-3  # metres: points closer to (or behind) the camera plane project as if at this depth
SENSOR_FITS = ("AUTO", "HORIZONTAL", "VERTICAL")
_CV_FROM_BLENDER = np.diag([1.0, -1.0, -1.0])  # OpenCV camera axes from Blender camera axes (and back)
BODY_MATRIX = np.array([[1.0, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]])  # +90 deg about X


class CameraError(VPoserError):
    """A camera, or a cameras file, is not usable; the message names the source and field."""


def camera_columns(unknowns: Sequence[str]) -> dict[str, slice]:
    """Column slices of the camera unknowns in `CAMERA_UNKNOWNS` order, e.g. ("rotation", "focal") ->
    {"focal": slice(0, 1), "rotation": slice(1, 4)}."""
    unknown = sorted(set(unknowns) - set(CAMERA_UNKNOWNS))
    if unknown:
        raise CameraError(f"unknown camera unknowns {unknown}; expected some of {list(CAMERA_UNKNOWNS)}")
    columns, start = {}, 0
    for name, size in CAMERA_UNKNOWNS.items():
        if name in unknowns:
            columns[name] = slice(start, start + size)
            start += size
    return columns


@dataclass
class Cameras:
    """Pinhole cameras with leading batch dimensions S (e.g. (C,) views, (T,) frames or ()).

    focal (*S, 2) fx, fy in pixels; principal (*S, 2) cx, cy in pixels; image_size (*S, 2) width,
    height in pixels; rotation (*S, 3, 3) and translation (*S, 3) from model space to the camera.
    """

    focal: Tensor
    principal: Tensor
    image_size: Tensor
    rotation: Tensor
    translation: Tensor
    names: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        shape = self.rotation.shape[:-2]
        for name, value, tail in (("focal", self.focal, (2,)), ("principal", self.principal, (2,)),
                                  ("image_size", self.image_size, (2,)), ("rotation", self.rotation, (3, 3)),
                                  ("translation", self.translation, (3,))):
            if tuple(value.shape) != tuple(shape) + tail:
                raise CameraError(f"Cameras.{name}: expected shape {tuple(shape) + tail}, got {tuple(value.shape)}")
        if not bool((self.focal > 0).all()):
            raise CameraError("Cameras.focal: focal lengths must be positive pixels")

    # ----------------------------------------------------------------- construction
    @classmethod
    def create(cls, focal, image_size, principal=None, rotation=None, translation=None,
               dtype: torch.dtype = torch.float64, names: Sequence[str] = ()) -> Cameras:
        """From numbers or arrays: focal (*S,) or (*S, 2), image_size (*S, 2) [or (2,)], principal
        (*S, 2) (default: the image centre), rotation (*S, 3, 3) or axis-angle (*S, 3) (default
        identity), translation (*S, 3) (default zero)."""
        real = {"dtype": dtype}
        focal = torch.as_tensor(np.asarray(focal, dtype=np.float64), **real)
        if focal.dim() == 0 or focal.shape[-1] != 2:
            focal = torch.stack([focal, focal], -1)
        size = torch.as_tensor(np.asarray(image_size, dtype=np.float64), **real)
        centre = size / 2 if principal is None else torch.as_tensor(np.asarray(principal, np.float64), **real)
        rotation = torch.eye(3, **real) if rotation is None else \
            torch.as_tensor(np.asarray(rotation, dtype=np.float64), **real)
        if rotation.shape[-2:] != (3, 3):
            rotation = axis_angle_to_matrix(rotation)
        translation = torch.zeros(3, **real) if translation is None else \
            torch.as_tensor(np.asarray(translation, dtype=np.float64), **real)
        shape = torch.broadcast_shapes(focal.shape[:-1], size.shape[:-1], centre.shape[:-1], rotation.shape[:-2],
                                       translation.shape[:-1])
        return cls(focal.expand(*shape, 2).clone(), centre.expand(*shape, 2).clone(), size.expand(*shape, 2).clone(),
                   rotation.expand(*shape, 3, 3).clone(), translation.expand(*shape, 3).clone(), tuple(names))

    @classmethod
    def for_image(cls, width: float, height: float, focal: float | None = None,
                  dtype: torch.dtype = torch.float64) -> Cameras:
        """A start camera (batch shape ()) for a photo with no calibration: `focal` pixels (default
        max(width, height), a ~53 degree field of view across the longer side, between a phone's wide
        and a portrait lens), the principal point at the centre, at the model origin looking along
        model -Z with image up = model +Y, so a body placed in front of it (negative Z) stands upright
        and, unrotated, faces it. The fit moves the body (or these extrinsics) from there."""
        return cls.create(max(width, height) if focal is None else focal, (width, height),
                          rotation=np.diag([1.0, -1.0, -1.0]), dtype=dtype)

    @classmethod
    def look_at(cls, eye, target, focal, image_size, up=(0.0, 1.0, 0.0), dtype: torch.dtype = torch.float64
                ) -> Cameras:
        """Cameras at `eye` (*S, 3) looking at `target` (*S, 3), image up along `up` (model Y by default)."""
        eye = torch.as_tensor(np.asarray(eye, np.float64), dtype=dtype)
        target = torch.as_tensor(np.asarray(target, np.float64), dtype=dtype).expand_as(eye)
        up = torch.as_tensor(np.asarray(up, np.float64), dtype=dtype).expand_as(eye)
        forward = torch.nn.functional.normalize(target - eye, dim=-1)
        right = torch.linalg.cross(forward, up)
        if bool((right.norm(dim=-1) < 1e-9).any()):
            raise CameraError("Cameras.look_at: the viewing direction is parallel to 'up'")
        right = torch.nn.functional.normalize(right, dim=-1)
        down = torch.linalg.cross(forward, right)
        rotation = torch.stack([right, down, forward], dim=-2)  # rows: the camera axes in model space
        translation = -(rotation @ eye.unsqueeze(-1)).squeeze(-1)
        return cls.create(focal, image_size, rotation=rotation, translation=translation, dtype=dtype)

    # ----------------------------------------------------------------- properties
    @property
    def batch_shape(self) -> torch.Size:
        return self.rotation.shape[:-2]

    @property
    def centre(self) -> Tensor:
        """(*S, 3) the camera centres in model space: -R^T t."""
        return -(self.rotation.transpose(-1, -2) @ self.translation.unsqueeze(-1)).squeeze(-1)

    def intrinsics(self) -> Tensor:
        """(*S, 3, 3) K."""
        k = torch.zeros(*self.batch_shape, 3, 3, dtype=self.focal.dtype, device=self.focal.device)
        k[..., 0, 0], k[..., 1, 1] = self.focal[..., 0], self.focal[..., 1]
        k[..., 0, 2], k[..., 1, 2], k[..., 2, 2] = self.principal[..., 0], self.principal[..., 1], 1.0
        return k

    def __getitem__(self, index) -> Cameras:
        """Cameras indexed along the leading batch dimension(s), as tensors are; names follow an int or a
        slice of a one-dimensional batch."""
        names: tuple[str, ...] = ()
        if self.names and len(self.batch_shape) == 1 and isinstance(index, (int, slice)):
            names = (self.names[index],) if isinstance(index, int) else tuple(self.names[index])
        return Cameras(self.focal[index], self.principal[index], self.image_size[index], self.rotation[index],
                       self.translation[index], names)

    def to(self, dtype: torch.dtype | None = None, device=None) -> Cameras:
        move = (lambda value: value.to(dtype=dtype, device=device))
        return Cameras(move(self.focal), move(self.principal), move(self.image_size), move(self.rotation),
                       move(self.translation), self.names)

    # ----------------------------------------------------------------- projection
    def to_camera(self, points: Tensor) -> Tensor:
        """(*S', K, 3) camera coordinates of model-space points (*S', K, 3); S' broadcasts with S."""
        return (self.rotation.unsqueeze(-3) @ points.unsqueeze(-1)).squeeze(-1) + self.translation.unsqueeze(-2)

    def project(self, points: Tensor) -> Tensor:
        """(*S', K, 2) pixels of model-space points (*S', K, 3); depths below MIN_DEPTH are clamped."""
        return self._pixels(self.to_camera(points))

    def _pixels(self, camera_points: Tensor) -> Tensor:
        depth = camera_points[..., 2:].clamp_min(MIN_DEPTH)
        return self.focal.unsqueeze(-2) * camera_points[..., :2] / depth + self.principal.unsqueeze(-2)

    def projection_jacobians(self, points: Tensor, unknowns: Sequence[str] = ()
                             ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Pixels (*S', K, 2), d pixels / d points (*S', K, 2, 3) and, when `unknowns` names camera
        unknowns (see the module docstring), d pixels / d those (*S', K, 2, P) (else None).

        With c = R X + t, u = fx c_x / c_z + cx: d u / d c = [[fx / z, 0, -fx x / z^2], [0, fy / z,
        -fy y / z^2]], d c / d X = R, d c / d w = -[c]x, d c / d d = I, d u / d log f = u - cx.
        Clamped depths (below MIN_DEPTH) give no depth derivative."""
        camera_points = self.to_camera(points)
        depth = camera_points[..., 2]
        clamped = depth < MIN_DEPTH
        depth = depth.clamp_min(MIN_DEPTH)
        focal = self.focal.unsqueeze(-2).expand(*camera_points.shape[:-1], 2)
        normalised = camera_points[..., :2] / depth.unsqueeze(-1)
        pixels = focal * normalised + self.principal.unsqueeze(-2)
        d_camera_point = torch.zeros(*camera_points.shape[:-1], 2, 3, dtype=points.dtype, device=points.device)
        d_camera_point[..., 0, 0] = focal[..., 0] / depth
        d_camera_point[..., 1, 1] = focal[..., 1] / depth
        d_depth = -focal * normalised / depth.unsqueeze(-1)
        d_camera_point[..., 2] = torch.where(clamped.unsqueeze(-1), torch.zeros_like(d_depth), d_depth)
        d_points = d_camera_point @ self.rotation.unsqueeze(-3)
        if not unknowns:
            return pixels, d_points, None
        parts = []
        for name in camera_columns(unknowns):
            if name == "focal":
                parts.append((focal * normalised).unsqueeze(-1))
            elif name == "rotation":
                parts.append(-d_camera_point @ skew(camera_points))
            else:
                parts.append(d_camera_point)
        return pixels, d_points, torch.cat(parts, dim=-1)

    def moved(self, step: Tensor, unknowns: Sequence[str]) -> Cameras:
        """The cameras after a step (*S, P) over `unknowns` (columns as `camera_columns` gives)."""
        columns = camera_columns(unknowns)
        if step.shape[-1] != sum(CAMERA_UNKNOWNS[name] for name in columns):
            raise CameraError(f"Cameras.moved: a step over {list(columns)} needs "
                              f"{sum(CAMERA_UNKNOWNS[n] for n in columns)} columns, got {step.shape[-1]}")
        focal, rotation, translation = self.focal, self.rotation, self.translation
        if "focal" in columns:
            focal = focal * step[..., columns["focal"]].exp()
        if "rotation" in columns:
            turn = axis_angle_to_matrix(step[..., columns["rotation"]])
            rotation = turn @ rotation
            translation = (turn @ translation.unsqueeze(-1)).squeeze(-1)
        if "translation" in columns:
            translation = translation + step[..., columns["translation"]]
        return Cameras(focal, self.principal, self.image_size, rotation, translation, self.names)

    # ----------------------------------------------------------------- files
    def to_dicts(self) -> list[dict]:
        """One JSON-ready dict per camera (the batch flattened), as `read_cameras` reads them."""
        flat = self.reshape(-1)
        out = []
        for i in range(flat.rotation.shape[0]):
            entry = {"image_size": flat.image_size[i].tolist(), "focal": flat.focal[i].tolist(),
                     "principal_point": flat.principal[i].tolist(), "rotation": flat.rotation[i].tolist(),
                     "translation": flat.translation[i].tolist()}
            if i < len(self.names):
                entry = {"name": self.names[i], **entry}
            out.append(entry)
        return out

    def reshape(self, *shape: int) -> Cameras:
        s = tuple(shape)
        return Cameras(self.focal.reshape(*s, 2), self.principal.reshape(*s, 2), self.image_size.reshape(*s, 2),
                       self.rotation.reshape(*s, 3, 3), self.translation.reshape(*s, 3), self.names)


# --------------------------------------------------------------------------------------------- JSON


def write_cameras(path: str | Path, cameras: Cameras) -> None:
    """Write a cameras file (schema in the module docstring); the batch is flattened."""
    Path(path).write_text(json.dumps({"cameras": cameras.to_dicts()}, indent=1))


def read_cameras(path: str | Path, dtype: torch.dtype = torch.float64) -> Cameras:
    """Cameras (C,) from a cameras file (schema in the module docstring), with clear errors."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CameraError(f"{path}: cannot read the cameras file ({error})") from error
    entries = data.get("cameras", [data]) if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise CameraError(f"{path}: expected a JSON object with a non-empty 'cameras' list (or one camera object)")
    parsed = [_parse_camera(entry, f"{path}: camera {i}") for i, entry in enumerate(entries)]
    names = [entry[5] for entry in parsed]
    return Cameras.create(*(np.stack([entry[k] for entry in parsed]) for k in range(5)), dtype=dtype,
                          names=names)


def _parse_camera(entry: object, where: str) -> tuple:
    if not isinstance(entry, Mapping):
        raise CameraError(f"{where}: expected an object, got {type(entry).__name__}")
    known = {"name", "image_size", "focal", "principal_point", "rotation", "translation"}
    extra = sorted(set(entry) - known)
    if extra:
        raise CameraError(f"{where}: unknown keys {extra}; expected some of {sorted(known)}")
    name = entry.get("name", "")
    where = f"{where}{f' ({name!r})' if name else ''}"
    for key in ("image_size", "focal"):
        if key not in entry:
            raise CameraError(f"{where}: missing {key!r}")
    size = _numbers(entry["image_size"], (2,), f"{where}: 'image_size' (width, height in pixels)")
    if (size < 1).any():
        raise CameraError(f"{where}: 'image_size' must be positive pixels, got {entry['image_size']!r}")
    focal = _numbers(entry["focal"], None, f"{where}: 'focal' (pixels: one number or [fx, fy])")
    if focal.shape not in ((), (1,), (2,)) or (focal <= 0).any():
        raise CameraError(f"{where}: 'focal' must be one positive number or [fx, fy] in pixels, got {entry['focal']!r}")
    focal = np.broadcast_to(focal.reshape(-1), (2,)).copy()
    principal = _numbers(entry.get("principal_point", (size / 2).tolist()), (2,), f"{where}: 'principal_point'")
    rotation = _numbers(entry.get("rotation", np.eye(3).tolist()), None, f"{where}: 'rotation'")
    if rotation.shape == (3,):
        rotation = axis_angle_to_matrix(torch.as_tensor(rotation)).numpy()
    elif rotation.shape != (3, 3):
        raise CameraError(f"{where}: 'rotation' must be a 3x3 matrix or 3 axis-angle numbers, got shape "
                          f"{rotation.shape}")
    if np.abs(rotation @ rotation.T - np.eye(3)).max() > 1e-4 or np.linalg.det(rotation) < 0:
        raise CameraError(f"{where}: 'rotation' is not a rotation matrix (orthonormal, determinant +1)")
    translation = _numbers(entry.get("translation", [0.0, 0.0, 0.0]), (3,), f"{where}: 'translation' (metres)")
    return focal, size, principal, rotation, translation, str(name)


def _numbers(value: object, shape: tuple | None, where: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise CameraError(f"{where}: expected numbers, got {value!r}") from None
    if shape is not None and array.shape != shape:
        raise CameraError(f"{where}: expected {shape[0]} numbers, got {value!r}")
    if not np.isfinite(array).all():
        raise CameraError(f"{where}: numbers must be finite, got {value!r}")
    return array


# --------------------------------------------------------------------------------------------- Blender


@dataclass
class BlenderCamera:
    """A Blender camera as plain numbers: the camera data's lens (mm), sensor_width / sensor_height
    (mm), sensor_fit, shift_x / shift_y; the scene's render resolution_x / resolution_y,
    resolution_percentage, pixel_aspect_x / pixel_aspect_y; and the camera object's matrix_world
    (4x4, rows, Blender's Z-up world). The add-on reads and writes exactly these properties."""

    lens: float
    sensor_width: float
    sensor_height: float
    sensor_fit: str
    shift_x: float
    shift_y: float
    resolution_x: int
    resolution_y: int
    matrix_world: tuple[tuple[float, ...], ...]
    resolution_percentage: int = 100
    pixel_aspect_x: float = 1.0
    pixel_aspect_y: float = 1.0


def from_blender(camera: BlenderCamera, body_matrix=BODY_MATRIX, dtype: torch.dtype = torch.float64) -> Cameras:
    """Our camera (batch shape ()) for a Blender camera, with extrinsics in the model space of a body object whose
    world matrix is `body_matrix` (4x4; default the +90 degree X rotation at the origin)."""
    if camera.sensor_fit not in SENSOR_FITS:
        raise CameraError(f"Blender camera: sensor_fit must be one of {SENSOR_FITS}, got {camera.sensor_fit!r}")
    for name in ("lens", "sensor_width", "sensor_height", "resolution_x", "resolution_y", "resolution_percentage",
                 "pixel_aspect_x", "pixel_aspect_y"):
        if not getattr(camera, name) > 0:
            raise CameraError(f"Blender camera: {name} must be positive, got {getattr(camera, name)!r}")
    width = camera.resolution_x * camera.resolution_percentage / 100
    height = camera.resolution_y * camera.resolution_percentage / 100
    ycor = camera.pixel_aspect_y / camera.pixel_aspect_x
    viewfac = _viewfac(camera.sensor_fit, width, height, camera.pixel_aspect_x, camera.pixel_aspect_y)
    sensor = camera.sensor_height if camera.sensor_fit == "VERTICAL" else camera.sensor_width
    fx = camera.lens * viewfac / sensor
    principal = (width / 2 - camera.shift_x * viewfac, height / 2 + camera.shift_y * viewfac / ycor)
    rotation, translation = _model_to_camera(camera.matrix_world, body_matrix)
    return Cameras.create((fx, fx / ycor), (width, height), principal, rotation, translation, dtype=dtype)


def to_blender(camera: Cameras, body_matrix=BODY_MATRIX, sensor: float = 36.0) -> BlenderCamera:
    """Blender camera settings for one camera (batch shape ()), seen from a body object whose world
    matrix is `body_matrix`: sensor_fit HORIZONTAL for a landscape picture (VERTICAL for a portrait
    one) with that `sensor` size in mm, the pixel aspect from fy / fx, shifts from the principal point."""
    if camera.batch_shape != ():
        raise CameraError(f"to_blender: one camera at a time, got a batch of shape {tuple(camera.batch_shape)}")
    width, height = (float(v) for v in camera.image_size)
    if abs(width - round(width)) > 1e-6 or abs(height - round(height)) > 1e-6:
        raise CameraError(f"to_blender: the image size must be whole pixels, got {width} x {height}")
    fx, fy = (float(v) for v in camera.focal)
    aspect_x, aspect_y = (fy / fx, 1.0) if fy >= fx else (1.0, fx / fy)
    ycor = aspect_y / aspect_x
    fit = "HORIZONTAL" if width * aspect_x >= height * aspect_y else "VERTICAL"
    viewfac = _viewfac(fit, width, height, aspect_x, aspect_y)
    cx, cy = (float(v) for v in camera.principal)
    body = _rigid(body_matrix, "body_matrix")
    to_camera = np.eye(4)
    to_camera[:3, :3], to_camera[:3, 3] = camera.rotation.detach().cpu().double().numpy(), \
        camera.translation.detach().cpu().double().numpy()
    world_to_blender_camera = np.diag([1.0, -1.0, -1.0, 1.0]) @ to_camera @ np.linalg.inv(body)
    matrix_world = np.linalg.inv(world_to_blender_camera)
    return BlenderCamera(lens=fx * sensor / viewfac, sensor_width=sensor, sensor_height=sensor, sensor_fit=fit,
                         shift_x=(width / 2 - cx) / viewfac, shift_y=(cy - height / 2) * ycor / viewfac,
                         resolution_x=round(width), resolution_y=round(height),
                         matrix_world=tuple(tuple(float(v) for v in row) for row in matrix_world),
                         pixel_aspect_x=aspect_x, pixel_aspect_y=aspect_y)


def _viewfac(fit: str, width: float, height: float, aspect_x: float, aspect_y: float) -> float:
    """Blender's view factor: the pixels (of x) the sensor size spans."""
    if fit == "AUTO":
        fit = "HORIZONTAL" if width * aspect_x >= height * aspect_y else "VERTICAL"
    return width if fit == "HORIZONTAL" else height * aspect_y / aspect_x


def _rigid(matrix, name: str) -> np.ndarray:
    array = np.asarray(matrix, dtype=np.float64)
    if array.shape != (4, 4) or not np.isfinite(array).all():
        raise CameraError(f"{name}: expected a finite 4x4 matrix, got shape {array.shape}")
    rotation = array[:3, :3]
    if np.abs(rotation @ rotation.T - np.eye(3)).max() > 1e-5 or np.linalg.det(rotation) < 0:
        raise CameraError(f"{name}: the object is scaled, sheared or mirrored; apply its scale (Ctrl+A) first")
    return array


def _model_to_camera(matrix_world, body_matrix) -> tuple[np.ndarray, np.ndarray]:
    """(R, t) from model space into the OpenCV camera for a Blender camera's matrix_world (its scale
    ignored, as Blender's projection does) and the body object's world matrix."""
    camera = np.asarray(matrix_world, dtype=np.float64)
    if camera.shape != (4, 4) or not np.isfinite(camera).all():
        raise CameraError(f"Blender camera: matrix_world must be a finite 4x4 matrix, got shape {camera.shape}")
    axes = camera[:3, :3] / np.linalg.norm(camera[:3, :3], axis=0, keepdims=True)
    world_to_camera = _CV_FROM_BLENDER @ axes.T
    body = _rigid(body_matrix, "body_matrix")
    rotation = world_to_camera @ body[:3, :3]
    translation = world_to_camera @ (body[:3, 3] - camera[:3, 3])
    return rotation, translation


# --------------------------------------------------------------------------------------------- start


def initial_depth(points: Tensor, pixels: Tensor, confidence: Tensor, focal: Tensor,
                  pairs: Sequence[tuple[int, int]]) -> Tensor:
    """SMPLify-style depth (*S,) of a body from bone lengths: focal * (mean 3D length of the `pairs`
    of keypoints in `points` (*S, K, 3), metres) / (mean pixel length in `pixels` (*S, K, 2)), over
    the pairs whose two ends have confidence (*S, K) > 0. `focal` (*S,) in pixels. NaN where no pair
    is seen. Torso pairs (shoulder-hip on each side) are the usual choice: they bend least."""
    first, second = (torch.tensor([pair[k] for pair in pairs], device=points.device) for k in (0, 1))
    seen = (confidence[..., first] > 0) & (confidence[..., second] > 0)
    metres = (points[..., first, :] - points[..., second, :]).norm(dim=-1)
    clean = torch.nan_to_num(pixels)
    image = (clean[..., first, :] - clean[..., second, :]).norm(dim=-1)
    count = seen.sum(-1)
    metres = torch.where(seen, metres, torch.zeros_like(metres)).sum(-1)
    image = torch.where(seen, image, torch.zeros_like(image)).sum(-1)
    depth = focal * metres / image.clamp_min(1e-9)
    return torch.where((count > 0) & (image > 1e-9), depth, torch.full_like(depth, math.nan))


def initial_translation(cameras: Cameras, points: Tensor, pixels: Tensor, confidence: Tensor,
                        pairs: Sequence[tuple[int, int]]) -> Tensor:
    """(*S, 3) a model-space shift for the body whose keypoints are `points` (*S, K, 3) so that, seen
    by `cameras` (*S), their weighted centroid sits at the `initial_depth` on the ray through the
    seen pixels' weighted centroid. Frames with no seen pair keep a zero shift."""
    focal = cameras.focal.mean(-1)
    depth = initial_depth(points, pixels, confidence, focal, pairs)
    weights = torch.where(torch.isfinite(pixels).all(-1), confidence, torch.zeros_like(confidence))
    weights = weights / weights.sum(-1, keepdim=True).clamp_min(1e-12)
    centroid_pixel = (weights.unsqueeze(-1) * torch.nan_to_num(pixels)).sum(-2)
    centroid_point = (weights.unsqueeze(-1) * points).sum(-2)
    ray = (centroid_pixel - cameras.principal) / cameras.focal
    wanted = torch.cat([ray, torch.ones_like(ray[..., :1])], -1) * depth.unsqueeze(-1)  # camera coordinates
    wanted_model = (cameras.rotation.transpose(-1, -2) @ (wanted - cameras.translation).unsqueeze(-1)).squeeze(-1)
    shift = wanted_model - centroid_point
    return torch.where(torch.isfinite(depth).unsqueeze(-1), shift, torch.zeros_like(shift))

