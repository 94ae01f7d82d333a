"""scripts/retarget.py and scripts/eval_ik.py on the shipped CMU walk (BVH), as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from core.pose_files import load_pose_file

REPO = Path(__file__).resolve().parents[2]
CLIP = REPO / "examples" / "cmu_02_01_walk.bvh"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO)


def test_retarget_writes_poses_and_reports_the_fit(tmp_path):
    out = tmp_path / "walk.npz"
    result = run("scripts/retarget.py", str(CLIP), "--skeleton", "cmu", "--fps", "30", "--out", str(out))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["frames"] == 86  # 343 frames at 120 fps, every 4th
    assert report["mpjpe_mm"] < 15 and report["fit_warning"] is None
    assert set(report["per_joint_mm"]) >= {"left_wrist", "right_ankle", "head"}
    assert report["frames_per_s"] > 0 and report["seconds"] > 0
    sequence = load_pose_file(out)
    assert sequence.poses.shape == (86, 52 * 3) and sequence.framerate == 30
    assert np.abs(sequence.betas).max() > 0  # a shape was fitted to the subject
    assert np.isfinite(sequence.poses).all() and np.isfinite(sequence.trans).all()


def test_retarget_refuses_unknown_inputs_clearly(tmp_path):
    wrong = tmp_path / "clip.fbx"
    wrong.write_text("x")
    result = run("scripts/retarget.py", str(wrong))
    assert result.returncode != 0 and "expected a .bvh or .c3d file" in result.stderr
    result = run("scripts/retarget.py", str(CLIP), "--skeleton", "mixamo", "--out", str(tmp_path / "x.npz"))
    assert result.returncode != 0 and "mixamorig:Hips" in result.stderr


def test_retarget_warns_of_a_mismapped_skeleton(tmp_path):
    from core.mocap.skeletons import get_preset

    preset = get_preset("cmu").to_dict()
    joints = preset["joints"]
    joints["left_shoulder"], joints["right_shoulder"] = joints["right_shoulder"], joints["left_shoulder"]
    (tmp_path / "swapped.json").write_text(json.dumps(preset))
    result = run("scripts/retarget.py", str(CLIP), "--skeleton", str(tmp_path / "swapped.json"), "--fps", "30",
                 "--out", str(tmp_path / "walk.npz"))
    assert result.returncode == 0, result.stderr  # the poses are written: the user decides
    report = json.loads(result.stdout)
    assert report["mpjpe_mm"] > 30
    assert report["fit_warning"].startswith(f"poor fit (mean error {report['mpjpe_mm']:.0f} mm, worst ")
    assert "'rest_frame'" in report["fit_warning"] and "'joints'" in report["fit_warning"]
    assert f"warning: {report['fit_warning']}" in result.stderr


def test_eval_ik_prints_the_stable_keys():
    result = run("scripts/eval_ik.py", str(CLIP), "--sparse-frames", "20", "--json")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    for key in ("full_mpjpe_mm", "full_frames_per_s", "sparse_mpjpe_mm", "sparse_noprior_mpjpe_mm", "interactive_ms"):
        assert np.isfinite(metrics[key]), key
    assert metrics["full_mpjpe_mm"] < 15
    assert metrics["sparse_mpjpe_mm"] < metrics["sparse_noprior_mpjpe_mm"]


def test_retarget_fits_a_c3d_trial_written_from_a_known_pose(tmp_path):
    import torch
    from test_c3d import write_c3d

    from core.body_model import BodyModel
    from core.keypoints import KeypointSet
    from core.mocap.c3d import lab_to_model_rotation
    from core.vposer import load_default_vposer

    body, prior = BodyModel.open_default("adult"), load_default_vposer()
    markers = KeypointSet.from_json(body, REPO / "core" / "data" / "markers_plugin_gait_open.json")
    rotations = torch.eye(3).expand(3, body.num_joints, 3, 3).clone()
    with torch.no_grad():
        rotations[:, 1:22] = prior.decode_matrix(0.6 * torch.randn(3, prior.latent_dim, generator=torch.Generator().manual_seed(2)))
        model_space = markers.evaluate(rotations, None, torch.tensor([[1.0, 0.9, 0.5]]).expand(3, 3)).numpy()
    lab_mm = 1000 * model_space @ lab_to_model_rotation("z")  # the inverse rotation, as row vectors
    invalid = np.zeros(lab_mm.shape[:2], bool)
    invalid[1, :4] = True  # four markers occluded on frame 1
    trial = write_c3d(tmp_path / "trial.c3d", list(markers.names), lab_mm, invalid=invalid, rate=100.0)
    out = tmp_path / "trial.npz"
    result = run("scripts/retarget.py", str(trial), "--out", str(out))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["frames"] == 3 and report["mpjpe_mm"] < 10
    assert load_pose_file(out).framerate == 100


def test_retarget_reads_a_cmu_like_c3d_lists_unknown_markers_and_reuses_a_calibration(tmp_path):
    """A take with CMU's inconsistent analog header and a marker no layout knows: the points are
    fitted, the stranger is listed, the calibration is saved and a second run reuses it as it is."""
    import torch
    from c3d_testing import write_cmu_like

    from core.body_model import BodyModel
    from core.keypoints import KeypointSet
    from core.mocap.c3d import lab_to_model_rotation
    from core.vposer import load_default_vposer

    body, prior = BodyModel.open_default("adult"), load_default_vposer()
    markers = KeypointSet.from_json(body, REPO / "core" / "data" / "markers_plugin_gait_open.json")
    frames = 6
    rotations = torch.eye(3).expand(frames, body.num_joints, 3, 3).clone()
    with torch.no_grad():
        latent = 0.6 * torch.randn(frames, prior.latent_dim, generator=torch.Generator().manual_seed(4))
        rotations[:, 1:22] = prior.decode_matrix(latent)
        model_space = markers.evaluate(rotations, None, torch.tensor([[0.2, 0.9, 0.1]]).expand(frames, 3)).numpy()
    lab_mm = 1000 * model_space @ lab_to_model_rotation("z")
    lab_mm = np.concatenate([lab_mm, np.full((frames, 1, 3), 500.0)], axis=1)
    trial = write_cmu_like(tmp_path / "07_01.c3d", [*markers.names, "LKNEE_MED"], lab_mm, channels=2)
    saved = tmp_path / "subject07.json"

    first = run("scripts/retarget.py", str(trial), "--out", str(tmp_path / "a.npz"), "--save-calibration", str(saved))
    assert first.returncode == 0, first.stderr
    assert first.stderr.count("inconsistent analog rate") == 1
    report = json.loads(first.stdout)
    assert report["unknown_markers"] == ["LKNEE_MED"] and report["mpjpe_mm"] < 10
    assert set(report["marker_calibration"]) == set(markers.names)
    document = json.loads(saved.read_text())
    assert set(document["markers"]) == set(markers.names) and len(document["betas"]) == body.num_betas

    second = run("scripts/retarget.py", str(trial), "--out", str(tmp_path / "b.npz"), "--calibration", str(saved))
    assert second.returncode == 0, second.stderr
    again = json.loads(second.stdout)
    np.testing.assert_allclose(again["betas"], np.round(document["betas"], 3), atol=1e-3)
    assert "marker_calibration" not in again and again["mpjpe_mm"] < report["mpjpe_mm"] + 2

    broken = tmp_path / "broken.json"
    broken.write_text('{"markers": {}, "betas": "tall"}')
    third = run("scripts/retarget.py", str(trial), "--calibration", str(broken))
    assert third.returncode != 0 and "broken.json: 'betas' must be a list of numbers" in third.stderr


def test_make_marker_layout_starts_a_layout_from_one_trial(tmp_path):
    """A take with the Plug-in Gait markers and four more at known surface points: the layout made
    from it puts the newcomers where they were (on the rest body), and keeps the known ones."""
    import torch

    from core.body_model import BodyModel
    from core.keypoints import KeypointSet, sample_surface
    from core.markers import rest_positions, surface_keypoints
    from core.mocap.c3d import lab_to_model_rotation, write_c3d
    from core.vposer import load_default_vposer

    body, prior = BodyModel.open_default("adult"), load_default_vposer()
    shipped = KeypointSet.from_json(body, REPO / "core" / "data" / "markers_plugin_gait_open.json")
    extra = sample_surface(body, 4, offset=0.01, seed=3)
    both = KeypointSet(body, [*shipped.keypoints, *extra.keypoints])
    frames = 30
    rotations = torch.eye(3).expand(frames, body.num_joints, 3, 3).clone()
    with torch.no_grad():
        latent = 0.7 * torch.randn(frames, prior.latent_dim, generator=torch.Generator().manual_seed(1))
        rotations[:, 1:22] = prior.decode_matrix(latent)
        points = both.evaluate(rotations, None, torch.zeros(frames, 3)).numpy()
    trial = write_c3d(tmp_path / "new_set.c3d", list(both.names), points @ lab_to_model_rotation("z"), 100.0)
    out = tmp_path / "new_set.json"

    result = run("scripts/make_marker_layout.py", "--trial", str(trial), "--out", str(out))

    assert result.returncode == 0, result.stderr
    made = KeypointSet.from_json(body, out)
    assert made.names == both.names
    zeros = torch.zeros(body.num_betas)
    placed = dict(zip(made.names, rest_positions(body, surface_keypoints(made), zeros)))
    truth = dict(zip(both.names, rest_positions(body, surface_keypoints(both), zeros)))
    for name in extra.names:
        assert np.linalg.norm(placed[name] - truth[name]) < 0.015, name
    refused = run("scripts/make_marker_layout.py", "--trial", str(trial))
    assert refused.returncode != 0 and "--trial needs --out" in refused.stderr


def test_eval_markers_reports_calibration_on_a_synthetic_take(tmp_path):
    """A few frames of the shipped walk as a marker take: calibration must lower the marker residual."""
    result = run("scripts/eval_markers.py", str(CLIP), "--frames", "40", "--keep-c3d", str(tmp_path))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    take = report["takes"][0]
    assert take["uncalibrated"]["c3d_warnings"] == 1  # the take carries CMU's analog header
    assert take["calibrated"]["marker_mm"] < take["uncalibrated"]["marker_mm"]
    assert take["calibrated"]["joint_mm"] < 60 and (tmp_path / "cmu_02_01_walk_markers.c3d").exists()
