"""scripts/fit_2d.py --blend, in its own process (it starts Blender as a module itself): the saved
scene's camera sees the keyed body's joints where the fit put them in the picture, and the picture
(the image beside the keypoint file) is the camera's background."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.body_model import BodyModel
from core.cameras import Cameras
from core.pose_files import load_pose_file
from core.rotations import axis_angle_to_matrix

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "core"))
from test_fit_2d_cli import SIZE, _openpose_file  # noqa: E402

JOINTS = ("head", "left_wrist", "right_ankle")
CHECK = """
import bpy, json, sys
from bpy_extras.object_utils import world_to_camera_view
bpy.ops.wm.open_mainfile(filepath=sys.argv[1])
scene = bpy.context.scene
scene.frame_set(1)
rig, camera = bpy.data.objects["Body"], scene.camera
width, height = scene.render.resolution_x, scene.render.resolution_y
pixels = {}
for name in sys.argv[2:]:
    x, y, _ = world_to_camera_view(scene, camera, rig.matrix_world @ rig.pose.bones[name].head)
    pixels[name] = [x * width, (1 - y) * height]
backgrounds = [(b.source, bpy.path.abspath(b.image.filepath) if b.image else None)
               for b in camera.data.background_images]
print(json.dumps({"pixels": pixels, "size": [width, height], "backgrounds": backgrounds}))
"""


def test_the_blend_camera_sees_the_body_where_the_fit_put_it(tmp_path):
    source, blend, out = tmp_path / "frame.json", tmp_path / "scene.blend", tmp_path / "poses.npz"
    _openpose_file(source, heading=0.4)
    Image.new("RGB", SIZE, (90, 90, 90)).save(tmp_path / "frame.png")  # the picture beside the keypoints
    focal = 1100.0
    run = subprocess.run([sys.executable, "scripts/fit_2d.py", str(source), "--focal", str(focal), "--out", str(out),
                          "--blend", str(blend)], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["blend"] == str(blend)
    check = subprocess.run([sys.executable, "-c", CHECK, str(blend), *JOINTS], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    seen = json.loads(check.stdout.strip().splitlines()[-1])
    assert seen["size"] == list(SIZE)
    assert seen["backgrounds"] == [["IMAGE", str(tmp_path / "frame.png")]]
    # Where core's camera projects the fitted joints (the pose file's poses through the body model).
    model = BodyModel.open_default("adult")
    poses = load_pose_file(out)
    rotations = axis_angle_to_matrix(torch.as_tensor(poses.poses, dtype=model.dtype).view(1, -1, 3))
    joints = model.forward_rotations(rotations, None, None, torch.as_tensor(poses.trans, dtype=model.dtype),
                                     return_vertices=False).joints[0].double()
    camera = Cameras.for_image(*SIZE, focal=focal)
    for name in JOINTS:
        expected = camera.project(joints[[model.joint_names.index(name)]])[0].numpy()
        assert np.linalg.norm(np.asarray(seen["pixels"][name]) - expected) < 2.0, name
