"""A real detector on real pixels: the open body rendered by Blender (Workbench) from a camera set
from core's numbers, MediaPipe run on the picture by scripts/detect_keypoints.py, and the detected
landmarks compared with the body's mapped keypoints projected by core's camera. Runs only where the
detector extra is installed next to bpy; skips cleanly otherwise."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import bpy
import numpy as np
import pytest
import torch

from core.cameras import Cameras
from core.keypoints2d import KeypointMap, read_keypoints
from core.rotations import axis_angle_to_matrix, axis_angle_to_quaternion

pytest.importorskip("mediapipe")
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "detect_keypoints.py"


def test_detected_landmarks_match_the_projected_body(extension_package, bridge, adult, empty_scene, tmp_path):
    cameras_module = importlib.import_module(f"{extension_package.__name__}.vposer_addon.cameras")
    arrays = bridge.BodyArrays(list(adult.joint_names), adult.parents.numpy(), adult.rest_joints(None)[0].numpy(),
                               adult.v_template.numpy(), adult.faces.numpy(), adult.weights.numpy())
    rig, _ = bridge.create_body(empty_scene.collection, "Body", arrays)
    pose = torch.zeros(adult.num_joints, 3, dtype=torch.float64)
    pose[16, 2], pose[17, 2], pose[18, 1] = -1.0, 1.0, -0.6  # arms down, one elbow bent
    bridge.set_pose(rig, list(adult.joint_names), axis_angle_to_quaternion(pose).numpy(), np.zeros(3))
    camera = Cameras.look_at((-1.8, 0.4, 2.6), (0.0, 0.0, 0.0), 1100.0, (960, 1280))
    empty_scene.camera = cameras_module.create_blender_camera(empty_scene.collection, empty_scene, camera, body=rig)
    empty_scene.render.engine = "BLENDER_WORKBENCH"
    empty_scene.world = bpy.data.worlds.new("Grey")
    empty_scene.world.color = (0.8, 0.8, 0.8)
    empty_scene.render.filepath = str(tmp_path / "body.png")
    bpy.ops.render.render(write_still=True)

    run = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "body.png"), "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    detected = read_keypoints(tmp_path / "out" / "body_000000.json")
    mapping = KeypointMap.load("mediapipe", adult)
    pixels, confidence = mapping.select(detected)
    expected = camera.project(mapping.keypoints.evaluate(axis_angle_to_matrix(pose)[None]))[0].numpy()
    error = np.linalg.norm(pixels[0] - expected, axis=-1)
    assert (confidence[0] > 0).all()
    assert np.median(error) < 12 and error.max() < 40  # pixels; the body is ~600 px tall
