"""2D keypoint files: each format's reader against files written here (and their bad-input errors),
sequences from folders, and the maps onto our bodies (surface points where they belong, weights,
a posed body projected, written, read back and scored by the 2D term at ~0)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.body_model import BodyModel
from core.cameras import Cameras, initial_depth
from core.keypoints2d import COUNTS, KeypointFileError, KeypointMap, keypoint_names, read_keypoints
from core.reprojection import Reprojection
from core.rotations import axis_angle_to_matrix
from core.synthetic_models import write_model


@pytest.fixture(scope="module")
def open_body():
    return BodyModel.open_default("adult", dtype=torch.float64)


def _person(count, centre=(500.0, 400.0), spread=100.0, seed=0):
    rng = np.random.default_rng(seed)
    rows = np.column_stack([rng.uniform(-1, 1, (count, 2)) * spread + centre, rng.uniform(0.3, 1.0, count)])
    return rows


def _openpose(path, people, **extra):
    path.write_text(json.dumps({"version": 1.3, "people": [{"pose_keypoints_2d": p.ravel().tolist()} for p in people],
                                **extra}))
    return path


def _mediapipe_entry(rows_normalised):
    return [{"x": x, "y": y, "z": 0.0, "visibility": c} for x, y, c in rows_normalised]


def test_openpose_picks_the_largest_or_the_indexed_person(tmp_path):
    small, large = _person(25, spread=30.0, seed=1), _person(25, spread=200.0, seed=2)
    large[3] = 0.0  # OpenPose's missing point
    path = _openpose(tmp_path / "f.json", [small, large])
    read = read_keypoints(path)
    assert read.format == "openpose" and read.data.shape == (1, 25, 3)
    assert np.allclose(read.data[0, :3], large[:3]) and np.isnan(read.pixels[0, 3]).all()
    assert read.confidence[0, 3] == 0
    assert np.allclose(read_keypoints(path, person=0).data[0], small)
    assert read.names[:3] == ("nose", "neck", "right_shoulder") and len(read.names) == 25
    with pytest.raises(KeypointFileError, match="person 2 asked for, but only 2 detected"):
        read_keypoints(path, person=2)


@pytest.mark.parametrize("people, message", [
    ([np.zeros((18, 3)) + 5], "expected 75 numbers .* got 54 \\(an 18-keypoint"),
    ([_person(25, centre=(0.5, 0.5), spread=0.3)], "look normalised"),
    ([], "nobody detected"),
])
def test_openpose_errors(tmp_path, people, message):
    with pytest.raises(KeypointFileError, match=message) as caught:
        read_keypoints(_openpose(tmp_path / "bad.json", people), format="openpose")
    assert "bad.json" in str(caught.value)


def test_folder_is_a_sequence_in_natural_order_with_empty_frames(tmp_path):
    frames = [_person(25, seed=i) for i in range(3)]
    _openpose(tmp_path / "clip_2_keypoints.json", [frames[1]])
    _openpose(tmp_path / "clip_10_keypoints.json", [frames[2]])
    _openpose(tmp_path / "clip_1_keypoints.json", [frames[0]])
    _openpose(tmp_path / "clip_11_keypoints.json", [])
    read = read_keypoints(tmp_path)
    assert read.data.shape == (4, 25, 3) and read.empty == (3,)
    assert np.allclose(read.data[:3], np.stack(frames))
    assert (read.confidence[3] == 0).all() and np.isnan(read.pixels[3]).all()


def test_folder_errors(tmp_path):
    with pytest.raises(KeypointFileError, match="no .json keypoint files"):
        read_keypoints(tmp_path)
    _openpose(tmp_path / "a.json", [])
    with pytest.raises(KeypointFileError, match="nobody detected in any of its 1 frames|nobody detected"):
        read_keypoints(tmp_path)
    with pytest.raises(KeypointFileError, match="no such file"):
        read_keypoints(tmp_path / "missing.json")


def test_coco_list_labels_and_scores(tmp_path):
    labelled = _person(17)
    labelled[:, 2] = 2.0
    labelled[4, 2], labelled[5, 2] = 0.0, 1.0
    path = tmp_path / "coco.json"
    path.write_text(json.dumps([{"image_id": 7, "keypoints": labelled.ravel().tolist()}]))
    read = read_keypoints(path)
    assert read.format == "coco" and read.names[0] == "nose" and read.names[-1] == "right_ankle"
    assert read.confidence[0, 4] == 0 and read.confidence[0, 5] == 1 and read.confidence[0, 0] == 1
    scored = _person(17, seed=3)
    path.write_text(json.dumps({"annotations": [{"keypoints": scored.ravel().tolist(), "image_id": 1}]}))
    assert np.allclose(read_keypoints(path).data[0], scored)  # a detector's scores are kept


def test_mediapipe_normalised_to_pixels_with_world_landmarks(tmp_path):
    normalised = _person(33, centre=(0.5, 0.5), spread=0.4, seed=4)
    world = np.random.default_rng(5).normal(size=(33, 3)) * 0.3
    path = tmp_path / "mp.json"
    path.write_text(json.dumps({"image_size": [1280, 720], "people": [{
        "landmarks": _mediapipe_entry(normalised),
        "world_landmarks": [{"x": x, "y": y, "z": z, "visibility": 1.0} for x, y, z in world]}]}))
    read = read_keypoints(path)
    assert read.format == "mediapipe" and read.image_size == (1280, 720)
    assert np.allclose(read.pixels[0], normalised[:, :2] * [1280, 720])
    assert np.allclose(read.confidence[0], normalised[:, 2]) and np.allclose(read.world[0], world)
    assert read.names[31] == "left_foot_index"
    # a single person at the top level, the image size given by the caller
    path.write_text(json.dumps({"landmarks": _mediapipe_entry(normalised)}))
    assert np.allclose(read_keypoints(path, image_size=(100, 200)).pixels[0], normalised[:, :2] * [100, 200])


def test_mediapipe_landmarks_guessed_outside_the_picture_are_read_with_their_visibility(tmp_path):
    """A portrait: MediaPipe guesses the cut-off legs below the picture (y up to ~3, visibility near
    0). They are normalised coordinates all the same (not pixels: no error), and their visibility
    is their confidence, so they barely weigh in the fit."""
    normalised = _person(33, centre=(0.5, 0.4), spread=0.2, seed=5)
    normalised[:, 2] = 0.9
    normalised[23:, 1], normalised[23:, 2] = np.linspace(1.2, 3.0, 10), 0.01  # hips down: below the picture
    path = tmp_path / "portrait.json"
    path.write_text(json.dumps({"image_size": [600, 800], "landmarks": _mediapipe_entry(normalised)}))
    read = read_keypoints(path)
    assert np.allclose(read.pixels[0], normalised[:, :2] * [600, 800])
    assert np.allclose(read.confidence[0], normalised[:, 2])


@pytest.mark.parametrize("format, content, message", [
    ("coco", [{"image_id": 1, "keypoints": [1.0] * 50}], "expected 51 numbers"),
    ("coco", [{"image_id": 1, "keypoints": _person(17).ravel().tolist()},
              {"image_id": 2, "keypoints": _person(17).ravel().tolist()}], "2 different image_ids"),
    ("coco", [{"image_id": 1, "keypoints": ["a"] * 51}], "must be numbers"),
    ("coco", [{"image_id": 1}], "expected a list of 51 numbers"),
    ("mediapipe", {"landmarks": _mediapipe_entry(_person(33, centre=(0.5, 0.5), spread=0.3))}, "image size is needed"),
    ("mediapipe", {"image_size": [640, 480], "landmarks": _mediapipe_entry(_person(33))}, "look like pixels"),
    ("mediapipe", {"image_size": [640, 480], "landmarks": _mediapipe_entry(_person(32, (0.5, 0.5), 0.3))},
     "expected 33 MediaPipe"),
    ("mediapipe", {"image_size": [640, 480], "landmarks": [{"x": 0.5}] * 33}, "expected an object with 'x', 'y'"),
    ("mediapipe", {"image_size": [640, 480], "people": [{"world_landmarks": []}]}, "missing 'landmarks'"),
    ("mediapipe", {"image_size": [640, -2], "landmarks": []}, "image size must be positive"),
])
def test_coco_and_mediapipe_errors(tmp_path, format, content, message):
    path = tmp_path / "keypoints.json"
    path.write_text(json.dumps(content))
    with pytest.raises(KeypointFileError, match=message) as caught:
        read_keypoints(path, format=format)
    assert "keypoints.json" in str(caught.value)


def test_unrecognised_and_unreadable_files(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"frames": []}))
    with pytest.raises(KeypointFileError, match="not a keypoint file"):
        read_keypoints(path)
    path.write_text("{")
    with pytest.raises(KeypointFileError, match="cannot read"):
        read_keypoints(path)
    with pytest.raises(KeypointFileError, match="unknown keypoint format"):
        read_keypoints(path, format="alphapose")


@pytest.mark.parametrize("format", ["openpose", "coco", "mediapipe"])
def test_maps_put_surface_points_where_they_belong(open_body, format):
    mapping = KeypointMap.load(format, open_body)
    names = [keypoint_names(format)[c] for c in mapping.columns]
    assert list(mapping.keypoints.names) == names
    rest = mapping.keypoints.evaluate(torch.eye(3, dtype=torch.float64).expand(1, open_body.num_joints, 3, 3))[0]
    at = {name: rest[i].numpy() for i, name in enumerate(names)}
    joints = {name: open_body.rest_joints(None)[0, open_body.joint_names.index(name)].numpy()
              for name in ("head", "left_ankle", "right_ankle", "neck")}
    assert at["nose"][2] > joints["head"][2] + 0.08 and abs(at["nose"][0]) < 0.01  # in front, on the midline
    assert at["left_eye"][0] > 0.02 > -0.02 > at["right_eye"][0] and at["left_eye"][1] > at["nose"][1]
    assert at["left_ear"][0] > at["left_eye"][0] and at["right_ear"][0] < at["right_eye"][0]
    assert at["left_ear"][1] > joints["neck"][1]
    if format != "coco":
        for side in ("left", "right"):
            ankle = joints[f"{side}_ankle"]
            assert at[f"{side}_heel"][2] < ankle[2] - 0.03 and at[f"{side}_heel"][1] < ankle[1]
            toe = at[f"{side}_big_toe" if format == "openpose" else f"{side}_foot_index"]
            assert toe[2] > ankle[2] + 0.12
    assert len(mapping.columns) == {"openpose": 25, "coco": 17, "mediapipe": 21}[format]  # MediaPipe: 12 unmapped
    assert set(mapping.weights) <= {1.0, 0.5, 0.25}


def test_maps_on_other_topologies(tmp_path):
    smplx = BodyModel.from_file(write_model(tmp_path / "smplx.npz", "smplx"))
    mapping = KeypointMap.load("openpose", smplx)
    # Licence-gated topologies have no shipped surface vertices: joints only (OpenPose's 14 of them).
    assert len(mapping.columns) == 14 and mapping.keypoints.vertex_ids is None
    assert "nose" not in mapping.keypoints.names and "mid_hip" in mapping.keypoints.names
    mano = BodyModel.from_file(write_model(tmp_path / "mano.npz", "mano"))
    with pytest.raises(KeypointFileError, match="none of its keypoints exist"):
        KeypointMap.load("coco", mano)


def test_projected_body_written_and_read_back_scores_zero(open_body, tmp_path):
    mapping = KeypointMap.load("openpose", open_body)
    pose = torch.zeros(1, open_body.num_joints, 3, dtype=torch.float64)
    pose[0, 18] = torch.tensor([0.0, -0.8, 0.3])  # an elbow bent
    transl = torch.tensor([[0.1, 0.0, 0.0]], dtype=torch.float64)
    points = mapping.keypoints.evaluate(axis_angle_to_matrix(pose), transl=transl)
    camera = Cameras.look_at((0.8, 0.3, 3.5), (0.0, 0.0, 0.0), 1400.0, (1920, 1080))
    pixels = camera.project(points)[0].numpy()
    rows = np.zeros((25, 3))
    rows[mapping.columns] = np.column_stack([pixels, np.ones(len(pixels))])
    read = read_keypoints(_openpose(tmp_path / "f.json", [rows]), image_size=(1920, 1080))
    observed, confidence = mapping.select(read)
    assert observed.shape == (1, 25, 2) and np.allclose(confidence[0], mapping.weights)
    term = Reprojection(torch.as_tensor(observed), torch.as_tensor(confidence))
    assert float(term.evaluate(camera, points).cost[0]) < 1e-12
    assert float(term.evaluate(camera, points + torch.tensor([0.0, 0.01, 0.0])).cost[0]) > 1.0
    # the SMPLify-style start from the torso finds the body's depth (~3.5 m; the torso is nearly flat)
    depth = initial_depth(points, torch.as_tensor(observed), torch.as_tensor(confidence), camera.focal.mean(),
                          mapping.torso_pairs)
    true_depth = camera.to_camera(points)[0, [mapping.keypoints.names.index(n) for n in ("left_hip", "right_hip")],
                                          2].mean()
    assert len(mapping.torso_pairs) == 2 and abs(float(depth[0] - true_depth)) < 0.15


def test_counts_match_the_maps():
    for format, count in COUNTS.items():
        assert len(keypoint_names(format)) == count
