"""A Blender camera and core's camera put a point at the same pixel (Blender's own projection,
`world_to_camera_view`, as the reference), for every sensor fit, shifts and pixel aspects; and a
camera written from core's numbers reads back the same."""

from __future__ import annotations

import importlib
import math

import bpy
import numpy as np
import pytest
import torch
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Euler, Matrix, Vector

from core.cameras import Cameras

CASES = [  # sensor_fit, sensor (w, h), lens, shift, resolution, percentage, pixel aspect
    ("AUTO", (36.0, 24.0), 50.0, (0.0, 0.0), (1920, 1080), 100, (1.0, 1.0)),
    ("AUTO", (36.0, 24.0), 35.0, (0.1, -0.05), (1080, 1920), 50, (1.0, 1.0)),
    ("HORIZONTAL", (23.5, 15.6), 28.0, (-0.2, 0.15), (1280, 720), 100, (2.0, 1.0)),
    ("VERTICAL", (36.0, 20.0), 85.0, (0.05, 0.3), (800, 1200), 100, (1.0, 1.5)),
    ("VERTICAL", (30.0, 24.0), 40.0, (0.0, -0.1), (1600, 900), 75, (1.0, 1.0)),
    ("AUTO", (36.0, 24.0), 60.0, (0.12, 0.08), (900, 1000), 100, (1.3, 1.0)),
]


@pytest.fixture(scope="module")
def cameras_module(extension_package):
    return importlib.import_module(f"{extension_package.__name__}.vposer_addon.cameras")


def _scene_camera(scene, case):
    fit, sensor, lens, shift, resolution, percentage, aspect = case
    camera = bpy.data.objects.new("Cam", bpy.data.cameras.new("Cam"))
    scene.collection.objects.link(camera)
    camera.data.sensor_fit, (camera.data.sensor_width, camera.data.sensor_height) = fit, sensor
    camera.data.lens, (camera.data.shift_x, camera.data.shift_y) = lens, shift
    render = scene.render
    render.resolution_x, render.resolution_y = resolution
    render.resolution_percentage = percentage
    render.pixel_aspect_x, render.pixel_aspect_y = aspect
    camera.location = (4.0, -5.0, 2.5)
    camera.rotation_euler = Euler((math.radians(70), math.radians(5), math.radians(40)), "XYZ")
    scene.camera = camera
    return camera


def _blender_pixels(scene, camera, world_points):
    """Pixels (top-left origin) from Blender's own normalised camera-view coordinates."""
    bpy.context.view_layer.update()
    width = scene.render.resolution_x * scene.render.resolution_percentage / 100
    height = scene.render.resolution_y * scene.render.resolution_percentage / 100
    out = []
    for point in world_points:
        view = world_to_camera_view(scene, camera, Vector(point))
        out.append((view.x * width, (1 - view.y) * height))
    return np.array(out)


def _body(scene, location=(0.3, 0.2, -0.1), turn=0.4, scale=1.0):
    """An object carrying the model -> scene transform: +90 degrees about X, then a turn about Z and a move."""
    body = bpy.data.objects.new("Body", None)
    scene.collection.objects.link(body)
    body.matrix_world = Matrix.Translation(location) @ Matrix.Rotation(turn, 4, "Z") @ \
        Matrix.Rotation(math.pi / 2, 4, "X") @ Matrix.Scale(scale, 4)
    bpy.context.view_layer.update()
    return body


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{c[4][0]}x{c[4][1]}-aspect{c[6][0]}" for c in CASES])
def test_blender_and_core_project_to_the_same_pixel(cameras_module, empty_scene, case):
    camera = _scene_camera(empty_scene, case)
    body = _body(empty_scene)
    rng = np.random.default_rng(0)
    model_points = rng.uniform(-0.8, 0.8, (12, 3)) + [0.0, 0.9, 0.0]  # a body-sized cloud in model space
    world_points = [body.matrix_world @ Vector(p) for p in model_points]
    expected = _blender_pixels(empty_scene, camera, world_points)

    ours = cameras_module.camera_from_object(camera, empty_scene, body)
    pixels = ours.project(torch.as_tensor(model_points)).numpy()
    assert np.abs(pixels - expected).max() < 1e-3  # pixels


@pytest.mark.parametrize("scale", [1.3, 0.01])
def test_a_uniformly_scaled_body_projects_as_blender_does(cameras_module, empty_scene, scale):
    """A body bound to a character is parented with the character's size."""
    camera = _scene_camera(empty_scene, CASES[2])
    body = _body(empty_scene, scale=scale)
    model_points = np.random.default_rng(2).uniform(-0.8, 0.8, (12, 3)) + [0.0, 0.9, 0.0]
    expected = _blender_pixels(empty_scene, camera, [body.matrix_world @ Vector(p) for p in model_points])
    ours = cameras_module.camera_from_object(camera, empty_scene, body)
    assert np.abs(ours.project(torch.as_tensor(model_points)).numpy() - expected).max() < 1e-3


def test_default_body_matrix_is_the_plus_90_x_rotation(cameras_module, empty_scene):
    camera = _scene_camera(empty_scene, CASES[0])
    model_points = np.array([[0.0, 1.7, 0.1], [0.2, 0.0, -0.1]])
    world_points = [Matrix.Rotation(math.pi / 2, 4, "X") @ Vector(p) for p in model_points]
    expected = _blender_pixels(empty_scene, camera, world_points)
    pixels = cameras_module.camera_from_object(camera, empty_scene).project(torch.as_tensor(model_points))
    assert np.abs(pixels.numpy() - expected).max() < 1e-3


@pytest.mark.parametrize("focal, size, principal", [
    ((1500.0, 1500.0), (1920, 1080), (1000.0, 500.0)),
    ((1200.0, 1800.0), (720, 1280), (330.0, 700.0)),
    ((2000.0, 1000.0), (1000, 1000), (500.0, 520.0)),
])
def test_camera_set_from_core_projects_like_core(cameras_module, empty_scene, focal, size, principal):
    body = _body(empty_scene, location=(-0.5, 1.0, 0.0), turn=-1.1)
    ours = Cameras.look_at((0.5, 1.2, 4.0), (0.0, 0.9, 0.0), focal, size)
    ours = Cameras(ours.focal, torch.tensor(principal, dtype=torch.float64), ours.image_size, ours.rotation,
                   ours.translation)
    camera = cameras_module.create_blender_camera(empty_scene.collection, empty_scene, ours, body=body)
    model_points = np.random.default_rng(1).uniform(-0.6, 0.6, (10, 3)) + [0.0, 0.9, 0.0]
    expected = ours.project(torch.as_tensor(model_points)).numpy()
    world_points = [body.matrix_world @ Vector(p) for p in model_points]
    assert np.abs(_blender_pixels(empty_scene, camera, world_points) - expected).max() < 1e-3
    back = cameras_module.camera_from_object(camera, empty_scene, body)
    assert torch.allclose(back.focal, ours.focal, atol=1e-3) and torch.allclose(back.principal, ours.principal,
                                                                                atol=1e-3)


def test_non_camera_is_refused(cameras_module, empty_scene):
    empty = bpy.data.objects.new("Empty", None)
    with pytest.raises(ValueError, match="not a camera"):
        cameras_module.read_blender_camera(empty, empty_scene)
