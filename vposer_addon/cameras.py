"""Blender cameras <-> core cameras: read a camera object into core's pinhole model, create or set one from it.

All the optics live in core.cameras (`from_blender` / `to_blender` on plain numbers); this module only
reads and writes the properties: the camera data (lens, sensor, fit, shift), the scene's render size
and pixel aspect, and the camera object's world matrix. The body object's world matrix (its +90
degree X rotation, and wherever the user moved it) places the camera in the body's model space.
Importing this module needs PyTorch (core.cameras); the add-on imports it only for 2D jobs.
"""

from __future__ import annotations

import bpy
import numpy as np
from mathutils import Matrix

from ..core.cameras import BODY_MATRIX, BlenderCamera, CameraError, Cameras, from_blender, to_blender


def read_blender_camera(camera: bpy.types.Object, scene: bpy.types.Scene) -> BlenderCamera:
    """The numbers core needs from a camera object and the scene's render settings."""
    if camera is None or camera.type != "CAMERA":
        raise CameraError(f"{getattr(camera, 'name', 'None')!r} is not a camera object")
    data, render = camera.data, scene.render
    if data.type != "PERSP":
        raise CameraError(f"camera {camera.name!r}: only perspective cameras are supported (it is {data.type})")
    return BlenderCamera(
        lens=data.lens, sensor_width=data.sensor_width, sensor_height=data.sensor_height,
        sensor_fit=data.sensor_fit, shift_x=data.shift_x, shift_y=data.shift_y,
        resolution_x=render.resolution_x, resolution_y=render.resolution_y,
        resolution_percentage=render.resolution_percentage,
        pixel_aspect_x=render.pixel_aspect_x, pixel_aspect_y=render.pixel_aspect_y,
        matrix_world=tuple(tuple(row) for row in camera.matrix_world))


def camera_from_object(camera: bpy.types.Object, scene: bpy.types.Scene,
                       body: bpy.types.Object | None = None) -> Cameras:
    """Core's camera (batch shape ()) for a camera object, its extrinsics in the model space of
    `body` (an object whose world matrix carries the model -> scene transform; None: the default
    +90 degree X rotation at the origin).

    A uniformly scaled body (one bound to a character is parented with the character's size) is
    seen through its rigid part with the translation divided by the scale s: a model point X sits
    at s R X + t' in the camera, which projects where R X + t' / s does. Other scales are refused."""
    if body is None:
        return from_blender(read_blender_camera(camera, scene), BODY_MATRIX)
    matrix = np.array(body.matrix_world, dtype=np.float64)
    scales = np.linalg.norm(matrix[:3, :3], axis=0)
    scale = float(scales.mean())
    if scale > 0 and np.abs(scales / scale - 1).max() < 1e-5:
        matrix[:3, :3] /= scale
    ours = from_blender(read_blender_camera(camera, scene), matrix)
    return Cameras(ours.focal, ours.principal, ours.image_size, ours.rotation, ours.translation / scale, ours.names)


def set_blender_camera(camera: bpy.types.Object, scene: bpy.types.Scene, cameras: Cameras,
                       body: bpy.types.Object | None = None, sensor: float = 36.0) -> None:
    """Make a camera object (and the scene's render size and pixel aspect) show what `cameras`
    (batch shape ()) sees of `body`'s model space."""
    settings = to_blender(cameras, BODY_MATRIX if body is None else [list(r) for r in body.matrix_world], sensor)
    data, render = camera.data, scene.render
    data.type = "PERSP"
    data.sensor_fit = settings.sensor_fit
    data.sensor_width, data.sensor_height = settings.sensor_width, settings.sensor_height
    data.lens = settings.lens
    data.shift_x, data.shift_y = settings.shift_x, settings.shift_y
    render.resolution_x, render.resolution_y = settings.resolution_x, settings.resolution_y
    render.resolution_percentage = settings.resolution_percentage
    render.pixel_aspect_x, render.pixel_aspect_y = settings.pixel_aspect_x, settings.pixel_aspect_y
    camera.matrix_world = Matrix(settings.matrix_world)


def create_blender_camera(collection: bpy.types.Collection, scene: bpy.types.Scene, cameras: Cameras,
                          name: str = "Camera", body: bpy.types.Object | None = None) -> bpy.types.Object:
    """A new camera object in `collection`, set from `cameras` (see `set_blender_camera`)."""
    camera = bpy.data.objects.new(name, bpy.data.cameras.new(name))
    collection.objects.link(camera)
    set_blender_camera(camera, scene, cameras, body)
    return camera
