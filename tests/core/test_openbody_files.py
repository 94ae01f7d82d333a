"""The shipped open bodies (core/data/openbody_*.npz): format, consistency and T-pose facts.

These read the files with numpy alone (no anny, no torch), so they guard what users load:
the arrays the loader expects, the SMPL-H skeleton, and a rest pose in SMPL's conventions
(Y up, facing +Z, the body's left at +X, arms out along X, flat hands, palms down).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parents[2] / "core" / "data"
FILES = {"adult": DATA / "openbody_adult.npz", "all_ages": DATA / "openbody_allages.npz"}
N_VERTICES, N_FACES, N_JOINTS, N_BETAS = 13_718, 27_420, 52, 16

BODY_JOINTS = [
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar",
    "right_collar", "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist",
]
FINGERS = ["index", "middle", "pinky", "ring", "thumb"]
JOINT_NAMES = BODY_JOINTS + [f"{s}_{f}{k}" for s in ("left", "right") for f in FINGERS for k in (1, 2, 3)]
BODY_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19]
SMPLH_PARENTS = BODY_PARENTS + [
    wrist if k == 0 else 22 + 15 * hand + 3 * finger + k - 1
    for hand, wrist in enumerate((20, 21))
    for finger in range(5)
    for k in range(3)
]
EXPECTED = {
    "v_template": ((N_VERTICES, 3), np.float32),
    "f": ((N_FACES, 3), np.int32),
    "J_regressor": ((N_JOINTS, N_VERTICES), np.float32),
    "weights": ((N_VERTICES, N_JOINTS), np.float32),
    "kintree_table": ((2, N_JOINTS), np.int64),
    "shapedirs": ((N_VERTICES, 3, N_BETAS), np.float32),
    "joint_names": ((N_JOINTS,), None),
    "model_type": ((), None),
    "variant": ((), None),
    "source": ((), None),
}


@pytest.fixture(scope="module", params=list(FILES))
def body(request: pytest.FixtureRequest) -> dict[str, np.ndarray]:
    with np.load(FILES[request.param], allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    arrays["name"] = np.array(request.param)
    return arrays


def joints(body: dict[str, np.ndarray], betas: np.ndarray | None = None) -> dict[str, np.ndarray]:
    vertices = body["v_template"].astype(np.float64)
    if betas is not None:
        vertices = vertices + body["shapedirs"] @ betas
    positions = body["J_regressor"].astype(np.float64) @ vertices
    return dict(zip(JOINT_NAMES, positions))


def angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip(a @ b / np.linalg.norm(a) / np.linalg.norm(b), -1, 1))))


def test_keys_shapes_dtypes(body: dict[str, np.ndarray]) -> None:
    keys = set(body) - {"name"}
    assert keys == set(EXPECTED), "the open body has exactly the documented keys (no posedirs)"
    for key, (shape, dtype) in EXPECTED.items():
        assert body[key].shape == shape, key
        assert body[key].dtype != object, key
        if dtype is not None:
            assert body[key].dtype == dtype, key
    for key in ("joint_names", "model_type", "variant", "source"):
        assert body[key].dtype.kind == "U", f"{key} must be a unicode array, not objects"
    assert str(body["model_type"]) == "openbody"
    assert str(body["variant"]) == str(body["name"])
    assert "anny" in str(body["source"])
    assert body["joint_names"].tolist() == JOINT_NAMES


def test_arrays_are_consistent(body: dict[str, np.ndarray]) -> None:
    assert np.isfinite(body["v_template"]).all() and np.isfinite(body["shapedirs"]).all()
    assert body["f"].min() == 0 and body["f"].max() == N_VERTICES - 1
    np.testing.assert_allclose(body["J_regressor"].sum(axis=1), 1.0, atol=1e-4)
    assert (body["weights"] >= 0).all()
    np.testing.assert_allclose(body["weights"].sum(axis=1), 1.0, atol=1e-5)
    assert body["kintree_table"][0].tolist() == SMPLH_PARENTS
    assert body["kintree_table"][1].tolist() == list(range(N_JOINTS))
    # PCA directions come sorted by decreasing variance.
    norms = np.linalg.norm(body["shapedirs"].reshape(-1, N_BETAS), axis=0)
    assert (np.diff(norms) <= 1e-6).all()


def test_rest_pose_is_smpl_t_pose(body: dict[str, np.ndarray]) -> None:
    j = joints(body)
    x, y, _ = np.eye(3)
    assert j["head"][1] > j["pelvis"][1] > j["left_ankle"][1], "Y is up"
    for side, sign in (("left", 1.0), ("right", -1.0)):
        assert sign * j[f"{side}_shoulder"][0] > 0 and sign * j[f"{side}_hip"][0] > 0, "left side at +X"
        for a, b in ((f"{side}_shoulder", f"{side}_elbow"), (f"{side}_elbow", f"{side}_wrist"),
                     (f"{side}_wrist", f"{side}_middle1")):
            assert angle_deg(j[b] - j[a], sign * x) < 3.0, f"{a}->{b} points out along X"
        for a, b in ((f"{side}_hip", f"{side}_knee"), (f"{side}_knee", f"{side}_ankle")):
            assert angle_deg(j[b] - j[a], -y) < 8.0, f"{a}->{b} hangs down"
        assert j[f"{side}_foot"][2] > j[f"{side}_ankle"][2] + 0.05, "toes in front of the ankle: faces +Z"
        assert j[f"{side}_thumb3"][2] > j[f"{side}_wrist"][2] + 0.03, "palm down puts the thumb in front"
        fingers = np.array([j[f"{side}_{f}{k}"] for f in FINGERS for k in (1, 2, 3)])
        assert np.abs(fingers[:, 1] - j[f"{side}_wrist"][1]).max() < 0.015, "flat hand, level with the wrist"


def test_left_right_symmetry(body: dict[str, np.ndarray]) -> None:
    j = joints(body)
    for name in JOINT_NAMES:
        if name.startswith("left_"):
            mirrored = j[name.replace("left_", "right_")] * np.array([-1.0, 1.0, 1.0])
            assert np.linalg.norm(j[name] - mirrored) < 0.005, name


def test_height_and_beta0(body: dict[str, np.ndarray]) -> None:
    height = np.ptp(body["v_template"][:, 1])
    if str(body["name"]) == "adult":
        assert 1.5 < height < 1.9
    else:
        assert 1.2 < height < 1.8  # the mean over newborns to 90-year-olds is mostly adult
    heights = {}
    for b0 in (-2.0, 2.0):
        betas = np.zeros(N_BETAS)
        betas[0] = b0
        vertices = body["v_template"] + body["shapedirs"] @ betas
        heights[b0] = np.ptp(vertices[:, 1])
        assert np.abs(vertices - body["v_template"]).max() > 0.05, "beta 0 changes the body"
    assert heights[2.0] > heights[-2.0] + 0.2, "+beta 0 is taller"
