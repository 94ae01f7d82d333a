"""scripts/detect_keypoints.py: without the optional extra it says how to install it; with it
(MediaPipe 0.10.21), an image with nobody in it gives an empty frame that core.keypoints2d reads."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "detect_keypoints.py"
HAS_MEDIAPIPE = importlib.util.find_spec("mediapipe") is not None


@pytest.mark.skipif(HAS_MEDIAPIPE, reason="the detector extra is installed")
def test_without_the_extra_the_script_says_how_to_install_it(tmp_path):
    run = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "photo.png"), "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert "pip install -e '.[detect]'" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "out").exists()


def test_an_empty_picture_gives_an_empty_frame(tmp_path):
    pytest.importorskip("mediapipe")
    cv2 = pytest.importorskip("cv2")
    from core.keypoints2d import KeypointFileError, read_keypoints

    cv2.imwrite(str(tmp_path / "wall.png"), np.full((240, 320, 3), 200, dtype=np.uint8))
    run = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "wall.png"), "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.strip().splitlines()[-1])["frames_with_person"] == 0
    record = json.loads((tmp_path / "out" / "wall_000000.json").read_text())
    assert record["image_size"] == [320, 240] and record["people"] == []
    with pytest.raises(KeypointFileError, match="nobody detected"):
        read_keypoints(tmp_path / "out" / "wall_000000.json")


EVAL_2D = SCRIPT.parent / "eval_2d.py"
WALK = SCRIPT.parents[1] / "examples" / "cmu_02_01_walk.bvh"


@pytest.mark.skipif(HAS_MEDIAPIPE, reason="the detector extra is installed")
def test_eval_2d_renders_without_the_extra_says_how_to_install_it():
    run = subprocess.run([sys.executable, str(EVAL_2D), str(WALK), "--subjects", "--renders", "2", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    assert "pip install -e '.[detect]'" in run.stderr and "Traceback" not in run.stderr


def test_eval_2d_renders_fits_the_detected_landmarks_of_rendered_poses(tmp_path):
    """Two poses of the shipped walk rendered by Blender from two cameras each, MediaPipe on the
    pictures, the fit scored against the poses: the eval keys, most pictures detected, errors of
    a fit (a broken camera conversion or crop mapping gives metres, not centimetres)."""
    pytest.importorskip("mediapipe")
    pytest.importorskip("bpy")
    run = subprocess.run([sys.executable, str(EVAL_2D), str(WALK), "--subjects", "--renders", "2",
                          "--renders-out", str(tmp_path), "--json"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    metrics = json.loads(run.stdout)
    assert {"frames", "mpjpe_mm", "pa_mpjpe_mm", "noprior_pa_mpjpe_mm", "reproj_px", "frames_per_s",
            "detected"} <= set(metrics)
    assert metrics["detected"] >= 0.5 and metrics["frames"] >= 1
    assert metrics["pa_mpjpe_mm"] < 150 and metrics["reproj_px"] < 30
    assert len(list((tmp_path / "images").glob("*.png"))) == 4
