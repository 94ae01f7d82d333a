"""From Image / Video in real Blender: Set Up Camera, Fit to keypoint files (one picture, a video's
folder), a bound character, refusals, the detector's greyed-out button.

Keypoints are made independently of the fit: a known pose's keypoints from core's forward pass,
taken into the scene through the body's world matrix and projected by Blender's own camera
projection (`world_to_camera_view`), written as an OpenPose file. The fitted body is read back as
Blender evaluates it (pose-bone heads) and projected the same way.
"""

from __future__ import annotations

import importlib
import json
import math

import bpy
import numpy as np
import pytest
import torch
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Matrix, Vector

from core.fit2d import Fit2DOptions, procrustes_errors
from core.keypoints2d import COUNTS, KeypointMap
from core.rotations import axis_angle_to_matrix
from core.vposer import load_default_vposer
from tests.addon.test_bind_character import FBX_LIKE, _bind, _limb_angles, bone_names, build_character

WIDTH, HEIGHT = 640, 480
PLACEMENT = Matrix.Translation((0.5, 1.0, 0.0)) @ Matrix.Rotation(math.radians(20), 4, "Z")


@pytest.fixture(scope="module")
def pictures_module(addon):
    return importlib.import_module(f"{addon.__name__}.vposer_addon.pictures")


@pytest.fixture
def photo(tmp_path):
    """A 640 x 480 PNG (its pixels do not matter: the keypoints come from a file)."""
    image = bpy.data.images.new("photo", WIDTH, HEIGHT)
    path = tmp_path / "photo.png"
    image.filepath_raw, image.file_format = str(path), "PNG"
    image.save()
    bpy.data.images.remove(image)
    return path


@pytest.fixture
def rig(addon, bridge, empty_scene):
    """A body away from the origin, turned (so the world <-> model conversion is exercised)."""
    assert bpy.ops.vposer.add_body() == {"FINISHED"}
    body = bpy.context.active_object
    body.matrix_world = PLACEMENT @ bridge.Y_UP_TO_Z_UP
    return body


@pytest.fixture
def camera(rig, photo):
    settings = bpy.context.scene.vposer_pictures
    settings.media_path, settings.camera = str(photo), "CREATE"
    assert bpy.ops.vposer.picture_camera() == {"FINISHED"}
    return bpy.context.scene.camera


def _known_pose(turn: float = 0.4, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(J, 3) axis-angle of a natural pose drawn from the prior (hands at rest), turned by `turn`
    about the body's up, and its root translation (model space)."""
    pose = np.zeros((52, 3))
    pose[0] = (0.0, turn, 0.0)
    pose[1:22] = load_default_vposer().sample(1, seed=seed, temperature=0.7).view(21, 3).double().numpy()
    return pose, np.array([0.1, 0.05, -0.2])


def _model_keypoints(model, mapping, pose: np.ndarray, transl: np.ndarray, betas=None) -> np.ndarray:
    """(K, 3) the map's keypoints of a pose (and shape: betas (num_betas,), default the mean), model space."""
    rotations = axis_angle_to_matrix(torch.as_tensor(pose[: model.num_joints], dtype=model.dtype))[None]
    shape = None if betas is None else torch.as_tensor(betas, dtype=model.dtype)[None]
    with torch.no_grad():
        return mapping.keypoints.evaluate(rotations, shape, torch.as_tensor(transl, dtype=model.dtype)[None])[0].numpy()


def _blender_pixels(scene, camera, world_points: np.ndarray) -> np.ndarray:
    """Pixels (top-left origin) by Blender's own projection."""
    bpy.context.view_layer.update()
    views = [world_to_camera_view(scene, camera, Vector(point)) for point in world_points]
    return np.array([(view.x * WIDTH, (1 - view.y) * HEIGHT) for view in views])


def _to_world(obj, points: np.ndarray) -> np.ndarray:
    matrix = np.array(obj.matrix_world)
    return points @ matrix[:3, :3].T + matrix[:3, 3]


def _write_openpose(path, mapping, pixels: np.ndarray) -> None:
    rows = np.zeros((COUNTS["openpose"], 3))
    rows[mapping.columns, :2], rows[mapping.columns, 2] = pixels, 1.0
    path.write_text(json.dumps({"version": 1.3, "people": [{"pose_keypoints_2d": rows.ravel().tolist()}]}))


def _picture_of(rig, camera, model, mapping, pose, transl, path, betas=None) -> np.ndarray:
    """Write the OpenPose file of a known pose of `rig` seen by `camera`; its pixels (K, 2)."""
    points = _model_keypoints(model, mapping, pose, transl, betas)
    pixels = _blender_pixels(bpy.context.scene, camera, _to_world(rig, points))
    assert (pixels > 0).all() and (pixels[:, 0] < WIDTH).all() and (pixels[:, 1] < HEIGHT).all()  # in the picture
    _write_openpose(path, mapping, pixels)
    return pixels


def _joint_rows(mapping, names: list[str]) -> tuple[list[int], list[str]]:
    """The map's keypoints that are joints: their rows and joint names."""
    rows = [i for i, name in enumerate(mapping.keypoints.names) if name in names]
    return rows, [mapping.keypoints.names[i] for i in rows]


def _evaluated_joints(rig, joints: list[str]) -> np.ndarray:
    """(K, 3) world positions of joints as Blender evaluates the body (pose-bone heads)."""
    bpy.context.view_layer.update()
    return np.array([rig.matrix_world @ rig.pose.bones[joint].head for joint in joints], dtype=np.float64)


def _pose_snapshot(rig) -> np.ndarray:
    return np.array([tuple(bone.rotation_quaternion) + tuple(bone.location) for bone in rig.pose.bones])


def test_set_up_camera_matches_the_picture(camera, photo, rig):
    scene = bpy.context.scene
    assert camera.name == "VPoser Camera" and camera.type == "CAMERA"
    assert (scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage) == \
        (WIDTH, HEIGHT, 100)
    # focal max(W, H) = 640 px across a landscape picture's 640 px width: lens = sensor width
    assert camera.data.sensor_fit == "HORIZONTAL" and camera.data.lens == pytest.approx(camera.data.sensor_width)
    background = camera.data.background_images[0]
    assert camera.data.show_background_images and bpy.path.abspath(background.image.filepath) == str(photo)
    # in front of the body: its pelvis projects near the picture's middle, its front faces the camera
    pelvis = _blender_pixels(scene, camera, _evaluated_joints(rig, ["pelvis"]))[0]
    assert abs(pelvis[0] - WIDTH / 2) < 5 and 0 < pelvis[1] < HEIGHT
    facing = np.array(rig.matrix_world.to_3x3() @ Vector((0.0, 0.0, 1.0)))  # the body's front (model +Z)
    to_camera = np.array(camera.matrix_world.translation) - np.array(rig.matrix_world.translation)
    assert facing @ to_camera > 0.9 * np.linalg.norm(to_camera)

    settings = scene.vposer_pictures  # the scene camera, adjusted: a given focal
    settings.camera, settings.focal = "SCENE", 1280.0
    assert bpy.ops.vposer.picture_camera() == {"FINISHED"}
    assert scene.camera == camera and len(bpy.data.cameras) == 1
    assert camera.data.lens == pytest.approx(2 * camera.data.sensor_width)
    assert len(camera.data.background_images) == 1  # the same picture is not added twice


def test_fit_overlays_a_picture_and_recovers_the_pose(camera, rig, adult, tmp_path):
    mapping = KeypointMap.load("openpose", adult)
    pose, transl = _known_pose()
    pixels = _picture_of(rig, camera, adult, mapping, pose, transl, tmp_path / "pose.json")
    settings = bpy.context.scene.vposer_pictures
    settings.keypoints_path = str(tmp_path / "pose.json")
    assert bpy.ops.vposer.fit_picture() == {"FINISHED"}

    rows, joints = _joint_rows(mapping, rig.vposer_body.joint_names())
    fitted = _evaluated_joints(rig, joints)
    error = np.linalg.norm(_blender_pixels(bpy.context.scene, camera, fitted) - pixels[rows], axis=1)
    assert error.max() < 4.0, error  # pixels: the body overlays the picture
    truth = _to_world(rig, _model_keypoints(adult, mapping, pose, transl)[rows])
    shape_error = procrustes_errors(torch.as_tensor(fitted)[None], torch.as_tensor(truth)[None])[0]
    assert float(shape_error.mean()) < 0.04, shape_error  # metres: the pose itself, up to depth and scale
    assert rig.animation_data is None  # a picture poses, keys only when asked


def test_a_video_folder_becomes_one_new_action(camera, rig, adult, tmp_path):
    scene = bpy.context.scene
    scene.frame_start = 5
    rig.pose.bones["pelvis"].keyframe_insert("location", frame=1)
    old = rig.animation_data.action
    mapping = KeypointMap.load("openpose", adult)
    folder = tmp_path / "clip"
    folder.mkdir()
    frames = 4
    expected = []
    for index in range(frames):
        pose, transl = _known_pose(turn=0.3 + 0.05 * index)
        transl = transl + [0.03 * index, 0.0, 0.0]
        expected.append(_picture_of(rig, camera, adult, mapping, pose, transl, folder / f"clip_{index:06d}.json"))
    settings = scene.vposer_pictures
    settings.keypoints_path = str(folder)
    assert bpy.ops.vposer.fit_picture() == {"FINISHED"}

    action = rig.animation_data.action
    assert action is not None and action != old and old.name in bpy.data.actions and old.use_fake_user
    curves = [curve for layer in action.layers for strip in layer.strips for bag in strip.channelbags
              for curve in bag.fcurves]
    assert len(curves) == 4 * len(rig.vposer_body.joint_names()) + 3
    for curve in curves:
        keys = np.array([point.co[0] for point in curve.keyframe_points])
        np.testing.assert_array_equal(keys, np.arange(5, 5 + frames))
    rows, joints = _joint_rows(mapping, rig.vposer_body.joint_names())
    for index in (0, frames - 1):
        scene.frame_set(5 + index)
        error = np.linalg.norm(_blender_pixels(scene, camera, _evaluated_joints(rig, joints)) - expected[index][rows],
                               axis=1)
        assert error.max() < 6.0, (index, error)


def test_a_cancelled_fit_leaves_the_scene_as_it_was(camera, rig, adult, tmp_path, pictures_module):
    """Esc drops the job between steps, in the temporal stage too: the steps themselves change nothing."""
    mapping = KeypointMap.load("openpose", adult)
    folder = tmp_path / "clip"
    folder.mkdir()
    for index in range(3):
        _picture_of(rig, camera, adult, mapping, *_known_pose(turn=0.3 + 0.1 * index), folder / f"f{index}.json")
    settings = bpy.context.scene.vposer_pictures
    settings.keypoints_path = str(folder)
    before = _pose_snapshot(rig)
    job = pictures_module.PictureFit(bpy.context, rig, settings)
    assert job.step() and job.done == 3  # every frame's own fit
    assert job.step() and 3 < job.done < job.total  # a step of the temporal stage, after which Esc can stop it
    np.testing.assert_array_equal(_pose_snapshot(rig), before)
    assert rig.animation_data is None and len(bpy.data.actions) == 0


def test_bad_keypoints_are_reported_and_change_nothing(camera, rig, tmp_path):
    from tests.addon.test_refusals import refused

    settings = bpy.context.scene.vposer_pictures
    before = _pose_snapshot(rig)
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    settings.keypoints_path = str(bad)
    refused(bpy.ops.vposer.fit_picture, r"Cannot fit Body to the picture: .*broken\.json")
    settings.keypoints_path = str(tmp_path / "missing.json")
    refused(bpy.ops.vposer.fit_picture, r"Cannot fit Body to the picture: .*missing\.json: no such file")
    bad.write_text(json.dumps({"people": [{"pose_keypoints_2d": [1.0, 2.0, 1.0]}]}))
    settings.keypoints_path = str(bad)
    refused(bpy.ops.vposer.fit_picture, r"Cannot fit Body to the picture: .*broken\.json")
    bpy.context.scene.camera = None
    refused(bpy.ops.vposer.fit_picture, "the scene has no camera: Set Up Camera")
    np.testing.assert_array_equal(_pose_snapshot(rig), before)
    assert rig.animation_data is None


def test_a_picture_that_blender_cannot_read_is_reported(rig, tmp_path):
    from tests.addon.test_refusals import refused

    settings = bpy.context.scene.vposer_pictures
    (tmp_path / "photo.png").write_bytes(b"not a png")
    settings.media_path, settings.camera = str(tmp_path / "photo.png"), "CREATE"
    refused(bpy.ops.vposer.picture_camera, r"Cannot set up the camera: .*photo\.png")
    settings.media_path = str(tmp_path / "notes.txt")
    refused(bpy.ops.vposer.picture_camera, r"notes\.txt: expected a picture")
    assert len(bpy.data.cameras) == 0 and bpy.context.scene.camera is None


@pytest.mark.skipif(importlib.util.find_spec("mediapipe") is not None, reason="the detector extra is installed")
def test_detect_is_greyed_out_without_the_extra_and_says_how_to_install_it(addon, empty_scene):
    assert not bpy.ops.vposer.detect_keypoints.poll()
    with pytest.raises(RuntimeError, match=r"pip install -e '\.\[detect\]'"):
        bpy.ops.vposer.detect_keypoints()


def test_the_panel_default_smoothness_is_core_s(addon, empty_scene):
    assert bpy.context.scene.vposer_pictures.smoothness == pytest.approx(Fit2DOptions.smoothness)


def test_fit_poses_a_bound_character(addon, empty_scene, adult, photo, tmp_path):
    character = build_character("Hero", adult.rest_joints()[0].numpy(), list(adult.joint_names), a_pose_deg=40,
                                roll_seed=7, units=100.0, world=Matrix.Translation((1.0, 2.0, 0.0)) @ FBX_LIKE)
    assert _bind(character) == {"FINISHED"}
    body = character.vposer_character.body
    settings = bpy.context.scene.vposer_pictures
    settings.media_path, settings.camera = str(photo), "CREATE"
    assert bpy.ops.vposer.picture_camera() == {"FINISHED"}
    camera = bpy.context.scene.camera
    model = body.vposer_body.body_model()
    mapping = KeypointMap.load("openpose", model)
    pose, transl = _known_pose()
    before = _pose_snapshot(body)
    pixels = _picture_of(body, camera, model, mapping, pose, transl, tmp_path / "pose.json",
                         body.vposer_body.betas_array())
    settings.keypoints_path = str(tmp_path / "pose.json")
    bpy.context.view_layer.objects.active = character
    assert bpy.ops.vposer.fit_picture() == {"FINISHED"}

    rows, joints = _joint_rows(mapping, body.vposer_body.joint_names())
    error = np.linalg.norm(_blender_pixels(bpy.context.scene, camera, _evaluated_joints(body, joints)) - pixels[rows],
                           axis=1)
    assert error.max() < 6.0, error
    assert not np.allclose(_pose_snapshot(body), before, atol=1e-3)
    angles = _limb_angles(body, character, bone_names("mixamo"))
    assert max(angles.values()) < 3.0, angles  # the character's limbs where the body's are


@pytest.mark.parametrize("how", ["insert_keyframes", "auto_keying"])
def test_a_picture_is_keyed_when_asked_or_auto_keying(camera, rig, adult, tmp_path, how):
    scene = bpy.context.scene
    scene.frame_set(12)
    mapping = KeypointMap.load("openpose", adult)
    _picture_of(rig, camera, adult, mapping, *_known_pose(), tmp_path / "pose.json")
    settings = scene.vposer_pictures
    settings.keypoints_path = str(tmp_path / "pose.json")
    if how == "insert_keyframes":
        settings.insert_keyframes = True
    else:
        scene.tool_settings.use_keyframe_insert_auto = True
    try:
        assert bpy.ops.vposer.fit_picture() == {"FINISHED"}
    finally:
        scene.tool_settings.use_keyframe_insert_auto = False
    action = rig.animation_data.action
    curves = [curve for layer in action.layers for strip in layer.strips for bag in strip.channelbags
              for curve in bag.fcurves]
    assert curves and all([point.co[0] for point in curve.keyframe_points] == [12.0] for curve in curves)
    fitted = np.array(rig.pose.bones["left_elbow"].rotation_quaternion)
    elbow = sorted((c for c in curves if c.data_path == 'pose.bones["left_elbow"].rotation_quaternion'),
                   key=lambda c: c.array_index)
    np.testing.assert_allclose([curve.evaluate(12) for curve in elbow], fitted, atol=1e-6)


def _write_mediapipe(path, mapping, pixels: np.ndarray, size: tuple[int, int]) -> None:
    """MediaPipe-33 landmarks normalised to a picture of `size` (W, H)."""
    landmarks = [{"x": 0.0, "y": 0.0, "z": 0.0, "visibility": 0.0} for _ in range(COUNTS["mediapipe"])]
    for column, (x, y) in zip(mapping.columns, pixels):
        landmarks[column] = {"x": x / WIDTH, "y": y / HEIGHT, "z": 0.0, "visibility": 0.9}
    path.write_text(json.dumps({"image_size": list(size), "people": [{"landmarks": landmarks}]}))


def test_keypoints_of_a_larger_picture_are_scaled_and_another_shape_is_refused(camera, rig, adult, tmp_path):
    """MediaPipe files say their picture's size: one twice the render's is scaled down to it; one of
    another aspect ratio is refused (Set Up Camera makes the render the picture's size)."""
    from tests.addon.test_refusals import refused

    mapping = KeypointMap.load("mediapipe", adult)
    pose, transl = _known_pose(seed=5)
    points = _to_world(rig, _model_keypoints(adult, mapping, pose, transl))
    pixels = _blender_pixels(bpy.context.scene, camera, points)
    settings = bpy.context.scene.vposer_pictures
    settings.keypoints_path = str(tmp_path / "wide.json")
    _write_mediapipe(tmp_path / "wide.json", mapping, pixels, (2 * WIDTH, 2 * HEIGHT + 100))
    before = _pose_snapshot(rig)
    refused(bpy.ops.vposer.fit_picture, r"wide\.json: its picture is 1280 x 1060, the render 640 x 480: another shape")
    np.testing.assert_array_equal(_pose_snapshot(rig), before)

    settings.keypoints_path = str(tmp_path / "large.json")
    _write_mediapipe(tmp_path / "large.json", mapping, pixels, (2 * WIDTH, 2 * HEIGHT))
    assert bpy.ops.vposer.fit_picture() == {"FINISHED"}
    rows, joints = _joint_rows(mapping, rig.vposer_body.joint_names())
    error = np.linalg.norm(_blender_pixels(bpy.context.scene, camera, _evaluated_joints(rig, joints)) - pixels[rows],
                           axis=1)
    assert error.max() < 6.0, error
