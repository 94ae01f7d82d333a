"""AMASS-style pose files and the README's main job (scripts/pose_body.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from core.body_model import BodyModel
from core.pose_files import PoseFileError, PoseSequence, load_pose_file, save_pose_file

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "cmu_02_01_walk.npz"


def test_round_trip_keeps_every_field(tmp_path):
    rng = np.random.default_rng(0)
    sequence = PoseSequence(rng.normal(size=(5, 156)), rng.normal(size=(5, 3)), rng.normal(size=16), "female", 60.0)
    save_pose_file(tmp_path / "p.npz", sequence)
    loaded = load_pose_file(tmp_path / "p.npz")
    np.testing.assert_allclose(loaded.poses, sequence.poses, atol=1e-6)
    np.testing.assert_allclose(loaded.trans, sequence.trans, atol=1e-6)
    np.testing.assert_allclose(loaded.betas, sequence.betas, atol=1e-6)
    assert (loaded.gender, loaded.framerate) == ("female", 60.0)


def test_amass_frame_rate_spelling_is_read(tmp_path):
    np.savez(tmp_path / "a.npz", poses=np.zeros((2, 66)), trans=np.zeros((2, 3)), mocap_frame_rate=np.array(120.0))
    assert load_pose_file(tmp_path / "a.npz").framerate == 120.0


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"trans": np.zeros((2, 3))}, "missing key 'poses'"),
        ({"poses": np.zeros((2, 65))}, "expected (T, 3 * joints)"),
        ({"poses": np.zeros((2, 66)), "trans": np.zeros((3, 3))}, "'trans' has shape (3, 3), expected (2, 3)"),
        ({"poses": np.full((2, 66), np.nan)}, "'poses' contains NaN"),
        ({"poses": np.zeros((2, 66)), "gender": np.array([{"a": 1}], dtype=object)}, "stored as Python objects"),
    ],
)
def test_bad_pose_files_name_the_field(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(PoseFileError, match=str(path).replace(".", r"\.")) as error:
        load_pose_file(path)
    assert message in str(error.value)


def test_parts_split_poses_in_the_models_joint_order():
    poses = np.arange(2 * 156, dtype=np.float64).reshape(2, 156)
    parts = PoseSequence(poses, np.zeros((2, 3))).parts_for(BodyModel.open_default().kind.pose_parts)
    np.testing.assert_array_equal(parts["global_orient"], poses[:, :3])
    np.testing.assert_array_equal(parts["body_pose"], poses[:, 3:66])
    np.testing.assert_array_equal(parts["right_hand_pose"], poses[:, 111:156])
    body_only = PoseSequence(poses[:, :66], np.zeros((2, 3))).parts_for(BodyModel.open_default().kind.pose_parts)
    assert set(body_only) == {"global_orient", "body_pose"}
    with pytest.raises(PoseFileError, match="more than the body model's"):
        PoseSequence(np.zeros((1, 171)), np.zeros((1, 3))).parts_for(BodyModel.open_default().kind.pose_parts)


def test_main_job_prints_the_posed_joints_and_writes_the_mesh(tmp_path):
    obj = tmp_path / "walk.obj"
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "pose_body.py"), str(EXAMPLE), "--frame", "20", "--obj", str(obj), "--json"],
        capture_output=True, text=True, check=True,
    )
    joints = json.loads(result.stdout)
    body = BodyModel.open_default(dtype=torch.float64)
    sequence = load_pose_file(EXAMPLE)
    expected = body(
        global_orient=sequence.poses[20:21, :3], body_pose=sequence.poses[20:21, 3:66],
        transl=sequence.trans[20:21], return_vertices=False,
    ).joints[0]
    assert list(joints) == list(body.joint_names)
    np.testing.assert_allclose(np.array(list(joints.values())), expected.numpy(), atol=1e-4)
    lines = obj.read_text().splitlines()
    assert sum(line.startswith("v ") for line in lines) == body.num_vertices
    assert sum(line.startswith("f ") for line in lines) == body.faces.shape[0]


def test_main_job_reports_a_bad_frame_clearly():
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "pose_body.py"), str(EXAMPLE), "--frame", "999"],
        capture_output=True, text=True,
    )
    assert result.returncode != 0 and "outside 0..85" in result.stderr


# --------------------------------------------------------------------------------------------
# Sizes declared by the file, checked before anything is allocated


def test_the_declared_size_is_read_without_loading_the_arrays(tmp_path):
    from pose_file_testing import write_declared_pose_file

    from core.pose_files import read_pose_header

    path = write_declared_pose_file(tmp_path / "huge.npz", 2_000_000)
    assert path.stat().st_size < 10_000  # the data is not there: only the headers can be read
    header = read_pose_header(path)
    assert (header.frames, header.width, header.joints) == (2_000_000, 156, 52)
    assert header.nbytes == 2_000_000 * (156 + 3) * 4 + 8  # float32 poses and trans, the float64 rate
    example = read_pose_header(EXAMPLE)
    assert (example.frames, example.width) == load_pose_file(EXAMPLE).poses.shape


def test_a_file_bigger_than_the_free_memory_is_refused_before_loading(tmp_path, monkeypatch):
    import core.resources
    from core.errors import InsufficientMemoryError
    from pose_file_testing import write_declared_pose_file

    path = write_declared_pose_file(tmp_path / "huge.npz", 2_000_000)
    monkeypatch.setattr(core.resources, "available_memory", lambda: 2 * 10**9)
    with pytest.raises(InsufficientMemoryError, match=r"huge\.npz \(2,000,000 frames\) needs about 3\.8 GB of "
                                                      r"memory, but only 2\.0 GB is free"):
        load_pose_file(path)
    assert load_pose_file(EXAMPLE).num_frames == 86  # a normal file fits


@pytest.mark.parametrize("content", ["npy", "text"])
def test_a_file_that_is_not_an_npz_archive_is_named(tmp_path, content):
    path = tmp_path / "poses.npz"
    if content == "npy":
        with open(path, "wb") as file:  # np.save would add .npy to the name
            np.save(file, np.zeros((2, 66)))
    else:
        path.write_text("poses")
    with pytest.raises(PoseFileError, match=r"poses\.npz: not a readable \.npz file"):
        load_pose_file(path)
