"""scripts/fit_2d.py end to end: an OpenPose file written from a known body seen by the default photo
camera is fitted (JSON report, AMASS-style poses that load back, overlay PNG), and bad input gives a
clear error."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from core.body_model import BodyModel
from core.cameras import Cameras
from core.keypoints2d import KeypointMap
from core.pose_files import load_pose_file
from core.rotations import axis_angle_to_matrix

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import fit_2d  # noqa: E402

SIZE = (1280, 720)


def _openpose_file(path: Path, heading: float) -> None:
    """One person: the open body's mean rest pose turned by `heading` about Y, 4 m in front of the
    default camera for a SIZE image, its mapped BODY_25 keypoints projected exactly."""
    model = BodyModel.open_default("adult")
    mapping = KeypointMap.load("openpose", model)
    rotations = axis_angle_to_matrix(model.full_pose({}, 1).view(1, -1, 3)).clone()
    rotations[:, 0] = axis_angle_to_matrix(torch.tensor([[0.0, heading, 0.0]], dtype=model.dtype))
    rotations[:, 18] = axis_angle_to_matrix(torch.tensor([[0.0, 0.0, -1.0]], dtype=model.dtype))  # left shoulder
    rotations[:, 19] = axis_angle_to_matrix(torch.tensor([[0.0, 0.0, 1.0]], dtype=model.dtype))
    transl = torch.tensor([[0.1, 0.0, -4.0]], dtype=model.dtype)
    points = mapping.keypoints.evaluate(rotations, None, transl)
    pixels = Cameras.for_image(*SIZE, dtype=model.dtype).project(points)[0].numpy()
    rows = np.zeros((25, 3))
    rows[mapping.columns, :2], rows[mapping.columns, 2] = pixels, 0.9
    path.write_text(json.dumps({"people": [{"pose_keypoints_2d": rows.ravel().tolist()}]}))


def test_fits_an_openpose_file(tmp_path, capsys):
    source, out, overlay = tmp_path / "frame.json", tmp_path / "poses.npz", tmp_path / "overlay.png"
    _openpose_file(source, heading=0.4)
    assert fit_2d.main([str(source), "--image-size", *map(str, SIZE), "--out", str(out),
                        "--overlay", str(overlay)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["frames"] == 1 and report["reproj_px"] < 2.0 and report["frames_per_s"] > 0
    poses = load_pose_file(out)
    assert poses.poses.shape[0] == 1 and abs(poses.trans[0, 2] + 4.0) < 0.3  # about 4 m in front
    assert overlay.stat().st_size > 1000


def test_needs_the_image_size(tmp_path):
    source = tmp_path / "frame.json"
    _openpose_file(source, heading=0.0)
    with pytest.raises(SystemExit, match="image size is unknown"):
        fit_2d.main([str(source), "--out", str(tmp_path / "poses.npz")])
