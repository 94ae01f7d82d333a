"""Pinhole cameras: projection against hand-computed pixels, Jacobians against finite differences,
steps, Blender conversions round trip, cameras files and their errors, the SMPLify-style depth."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from core.cameras import (
    BODY_MATRIX,
    BlenderCamera,
    CameraError,
    Cameras,
    camera_columns,
    from_blender,
    initial_depth,
    initial_translation,
    read_cameras,
    to_blender,
    write_cameras,
)
from core.rotations import axis_angle_to_matrix

ALL = ("focal", "rotation", "translation")


def _random_cameras(shape=(3,), seed=0) -> Cameras:
    generator = torch.Generator().manual_seed(seed)
    rotation = axis_angle_to_matrix(torch.randn(*shape, 3, generator=generator, dtype=torch.float64) * 0.3)
    translation = torch.randn(*shape, 3, generator=generator, dtype=torch.float64) * 0.2 + torch.tensor(
        [0.0, 0.0, 4.0], dtype=torch.float64)
    focal = 1000 + 500 * torch.rand(*shape, 2, generator=generator, dtype=torch.float64)
    return Cameras(focal, torch.tensor([960.0, 540.0], dtype=torch.float64).expand(*shape, 2).clone(),
                   torch.tensor([1920.0, 1080.0], dtype=torch.float64).expand(*shape, 2).clone(), rotation,
                   translation)


def _points(shape=(3,), count=7, seed=1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, count, 3, generator=generator, dtype=torch.float64) * 0.5


def test_projection_by_hand():
    camera = Cameras.create((1000.0, 1200.0), (1920, 1080), (950.0, 530.0), translation=(0.1, -0.2, 3.0))
    pixels = camera.project(torch.tensor([[0.5, 0.4, 1.0]], dtype=torch.float64))
    # camera point (0.6, 0.2, 4.0): u = 1000 * 0.15 + 950, v = 1200 * 0.05 + 530
    assert torch.allclose(pixels, torch.tensor([[1100.0, 590.0]], dtype=torch.float64))


def test_look_at_puts_the_target_at_the_centre_and_up_upwards():
    camera = Cameras.look_at((3.0, 1.5, 3.0), (0.0, 1.0, 0.0), 1500.0, (1920, 1080))
    pixels = camera.project(torch.tensor([[0.0, 1.0, 0.0], [0.0, 2.0, 0.0]], dtype=torch.float64))
    assert torch.allclose(pixels[0], torch.tensor([960.0, 540.0], dtype=torch.float64))
    assert pixels[1, 1] < 540 - 100  # model +Y is image up
    assert torch.allclose(camera.centre, torch.tensor([3.0, 1.5, 3.0], dtype=torch.float64))
    assert torch.allclose(camera.rotation @ camera.rotation.T, torch.eye(3, dtype=torch.float64))


def test_projection_broadcasts_cameras_over_frames():
    cameras, points = _random_cameras((2,)), _points((4, 1), 5)
    pixels = cameras.project(points)  # (4, 2, 5, 2): 4 frames seen by 2 cameras
    assert pixels.shape == (4, 2, 5, 2)
    assert torch.allclose(pixels[3, 1], cameras[1].project(points[3, 0]))


def test_jacobians_match_finite_differences():
    cameras, points = _random_cameras(), _points()
    pixels, d_points, d_camera = cameras.projection_jacobians(points, ALL)
    assert torch.allclose(pixels, cameras.project(points))
    eps = 1e-6
    for axis in range(3):
        step = torch.zeros(3, dtype=torch.float64)
        step[axis] = eps
        numeric = (cameras.project(points + step) - cameras.project(points - step)) / (2 * eps)
        assert torch.allclose(d_points[..., axis], numeric, atol=1e-5, rtol=1e-6)
    for column in range(7):
        step = torch.zeros(3, 7, dtype=torch.float64)
        step[:, column] = eps
        numeric = (cameras.moved(step, ALL).project(points) - cameras.moved(-step, ALL).project(points)) / (2 * eps)
        assert torch.allclose(d_camera[..., column], numeric, atol=1e-4, rtol=1e-6), column


def test_jacobian_columns_follow_the_chosen_unknowns():
    cameras, points = _random_cameras(), _points()
    _, _, full = cameras.projection_jacobians(points, ALL)
    _, _, some = cameras.projection_jacobians(points, ("translation", "focal"))
    assert camera_columns(("translation", "focal")) == {"focal": slice(0, 1), "translation": slice(1, 4)}
    assert torch.equal(some, torch.cat([full[..., :1], full[..., 4:]], -1))
    with pytest.raises(CameraError, match="unknown camera unknowns"):
        camera_columns(("zoom",))


def test_moved_rotation_turns_the_camera_about_its_centre():
    cameras = _random_cameras()
    turned = cameras.moved(torch.tensor([[0.0, 0.1, -0.2, 0.05, 0.0, 0.0, 0.0]] * 3, dtype=torch.float64), ALL)
    assert torch.allclose(turned.centre, cameras.centre)
    assert torch.allclose(turned.focal, cameras.focal)


def test_points_behind_the_camera_stay_finite():
    camera = Cameras.create(1000.0, (640, 480))
    pixels, d_points, _ = camera.projection_jacobians(torch.tensor([[0.1, 0.1, -1.0]], dtype=torch.float64))
    assert torch.isfinite(pixels).all() and torch.isfinite(d_points).all()


def _blender(**changes) -> BlenderCamera:
    matrix = np.eye(4)
    matrix[:3, 3] = (0.0, -5.0, 1.0)
    matrix[:3, :3] = axis_angle_to_matrix(torch.tensor([math.pi / 2, 0.0, 0.0])).numpy()  # looking along +Y
    settings = dict(lens=50.0, sensor_width=36.0, sensor_height=24.0, sensor_fit="AUTO", shift_x=0.0, shift_y=0.0,
                    resolution_x=1920, resolution_y=1080, matrix_world=matrix.tolist())
    settings.update(changes)
    return BlenderCamera(**settings)


def test_blender_focal_and_principal_point_by_hand():
    # AUTO, landscape: f = 50 mm * 1920 px / 36 mm; shift 0.1 moves the centre by 192 px to the left.
    camera = from_blender(_blender(shift_x=0.1, shift_y=0.05))
    assert torch.allclose(camera.focal, torch.tensor([50 * 1920 / 36] * 2, dtype=torch.float64))
    assert torch.allclose(camera.principal, torch.tensor([960 - 192, 540 + 96], dtype=torch.float64))
    # AUTO, portrait: the sensor width spans the image height; VERTICAL uses the sensor height.
    portrait = from_blender(_blender(resolution_x=1080, resolution_y=1920))
    assert math.isclose(float(portrait.focal[0]), 50 * 1920 / 36)
    vertical = from_blender(_blender(sensor_fit="VERTICAL"))
    assert math.isclose(float(vertical.focal[0]), 50 * 1080 / 24)


def test_blender_extrinsics_see_the_body_upright():
    # The camera stands 5 m in front of the body (scene -Y, the body faces it) looking along +Y;
    # model +Y (the body's up) is scene +Z: the head projects above the feet, the pelvis at the centre row.
    camera = from_blender(_blender())
    pixels = camera.project(torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.7, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64))
    assert math.isclose(float(pixels[0, 1]), 540.0, abs_tol=1e-9)
    assert pixels[1, 1] < pixels[0, 1] < pixels[2, 1]
    # The body faces the camera, so its left (model +X, scene +X) is the image's right
    left = camera.project(torch.tensor([[0.3, 1.0, 0.0]], dtype=torch.float64))
    assert left[0, 0] > 960


@pytest.mark.parametrize("focal, size, principal", [((1500.0, 1500.0), (1920, 1080), (900.0, 600.0)),
                                                     ((1000.0, 1400.0), (1080, 1920), (500.0, 1000.0)),
                                                     ((1800.0, 1200.0), (1000, 1000), (520.0, 480.0))])
def test_blender_round_trip(focal, size, principal):
    ours = Cameras.look_at((1.0, 1.5, 3.5), (0.0, 1.0, 0.0), focal, size)
    ours = Cameras(ours.focal, torch.tensor(principal, dtype=torch.float64), ours.image_size, ours.rotation,
                   ours.translation)
    body = BODY_MATRIX.copy()
    body[:3, 3] = (0.5, -0.2, 0.1)
    settings = to_blender(ours, body)
    assert settings.pixel_aspect_x >= 1 and settings.pixel_aspect_y >= 1
    back = from_blender(settings, body)
    points = _points((), 9)
    assert torch.allclose(back.project(points), ours.project(points), atol=1e-8)


def test_blender_refusals():
    with pytest.raises(CameraError, match="sensor_fit"):
        from_blender(_blender(sensor_fit="SIDEWAYS"))
    with pytest.raises(CameraError, match="lens must be positive"):
        from_blender(_blender(lens=0.0))
    with pytest.raises(CameraError, match="scaled"):
        from_blender(_blender(), body_matrix=np.diag([2.0, 2.0, 2.0, 1.0]))
    with pytest.raises(CameraError, match="one camera at a time"):
        to_blender(_random_cameras())


def test_cameras_file_round_trip(tmp_path):
    cameras = _random_cameras()
    cameras.names = ("a", "b", "c")
    write_cameras(tmp_path / "cams.json", cameras)
    back = read_cameras(tmp_path / "cams.json")
    assert back.names == ("a", "b", "c")
    points = _points()
    assert torch.allclose(back.project(points), cameras.project(points))


def test_cameras_file_single_object_with_defaults_and_rvec(tmp_path):
    path = tmp_path / "one.json"
    path.write_text(json.dumps({"image_size": [640, 480], "focal": 500, "rotation": [0.0, math.pi, 0.0],
                                "translation": [0, 0, 3]}))
    camera = read_cameras(path)
    assert camera.batch_shape == (1,)
    assert torch.allclose(camera.principal, torch.tensor([[320.0, 240.0]], dtype=torch.float64))
    # turned half a turn about Y: a point at model -Z 1 m is 4 m ahead, +X lands left of centre
    pixel = camera.project(torch.tensor([[[0.4, 0.0, -1.0]]], dtype=torch.float64))
    assert torch.allclose(pixel, torch.tensor([[[320 - 500 * 0.1, 240.0]]], dtype=torch.float64))


@pytest.mark.parametrize("content, message", [
    ("[1, 2", "cannot read"),
    ({"cameras": []}, "non-empty 'cameras'"),
    ({"cameras": [{"focal": 100}]}, "camera 0: missing 'image_size'"),
    ({"image_size": [640, 480], "focal": -5}, "'focal' must be one positive"),
    ({"image_size": [640], "focal": 5}, "'image_size'"),
    ({"image_size": [640, 480], "focal": 5, "rotation": [[1, 0, 0], [0, 2, 0], [0, 0, 1]]}, "not a rotation"),
    ({"image_size": [640, 480], "focal": 5, "rotation": [1, 2]}, "3x3 matrix or 3 axis-angle"),
    ({"image_size": [640, 480], "focal": 5, "translation": [0, "a", 1]}, "'translation'"),
    ({"image_size": [640, 480], "focal": 5, "lens": 50}, "unknown keys \\['lens'\\]"),
])
def test_cameras_file_errors(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(CameraError, match=message) as caught:
        read_cameras(path)
    assert str(path) in str(caught.value)


def test_initial_depth_and_translation_place_a_known_body():
    # A 'torso' of 4 points (shoulders and hips) 0.5 m tall seen 4 m away by a 1000 px camera.
    torso = torch.tensor([[0.2, 1.4, 0.0], [-0.2, 1.4, 0.0], [0.15, 0.9, 0.0], [-0.15, 0.9, 0.0]],
                         dtype=torch.float64)
    camera = Cameras.look_at((0.0, 1.0, 4.0), (0.0, 1.0, 0.0), 1000.0, (1000, 1000))
    true_shift = torch.tensor([0.3, -0.1, 0.2], dtype=torch.float64)
    pixels = camera.project(torso + true_shift)
    confidence = torch.ones(4, dtype=torch.float64)
    pairs = [(0, 2), (1, 3)]
    depth = initial_depth(torso, pixels, confidence, camera.focal[0], pairs)
    assert abs(float(depth) - (4.0 - 0.2)) < 0.05  # a flat torso facing the camera: its depth exactly
    shift = initial_translation(camera, torso, pixels, confidence, pairs)
    assert torch.allclose(shift, true_shift, atol=0.05)
    nothing = initial_depth(torso, pixels, torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64),
                            camera.focal[0], pairs)
    assert torch.isnan(nothing)


def test_photo_start_camera_sees_an_upright_body_facing_it():
    camera = Cameras.for_image(1080, 1920)
    assert torch.allclose(camera.focal, torch.tensor([1920.0, 1920.0], dtype=torch.float64))
    body = torch.tensor([[0.0, 1.7, -4.0], [0.0, 0.0, -4.0], [0.3, 1.0, -4.0], [0.0, 1.0, -3.9]], dtype=torch.float64)
    pixels = camera.project(body)
    assert pixels[0, 1] < pixels[1, 1]  # head above feet
    assert pixels[2, 0] > 540  # the body's left (model +X) on the image's right: it faces the camera
    assert camera.to_camera(body)[3, 2] < camera.to_camera(body)[1, 2]  # its front (+Z) is nearer


def test_indexing_keeps_names():
    cameras = _random_cameras()
    cameras.names = ("a", "b", "c")
    assert cameras[1].names == ("b",) and cameras[1:].names == ("b", "c")
    assert cameras[1].batch_shape == () and torch.equal(cameras[1:].focal, cameras.focal[1:])
