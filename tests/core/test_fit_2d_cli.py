"""scripts/fit_2d.py end to end: an OpenPose file written from a known body seen by the default photo
camera is fitted (JSON report, AMASS-style poses that load back, overlay PNG); without --focal the
focal length is estimated; pictures go through the detector (a fake one here: MediaPipe is an
optional extra) and the overlay draws the body over them; bad input gives a clear error."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from core.body_model import BodyModel
from core.cameras import Cameras
from core.fit2d import Fit2DOptions
from core.keypoints2d import KeypointMap
from core.pose_files import load_pose_file
from core.rotations import axis_angle_to_matrix

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import fit_2d  # noqa: E402

SIZE = (1280, 720)


def _body(heading: float, reach: bool = False, depth: float = 4.0):
    """The open body's mean rest pose turned by `heading` about Y with the arms lowered (`reach`: the
    arms forward and one knee up instead, a pose with depth), `depth` m in front of the default
    camera: its rotations (1, J, 3, 3) and translation (1, 3)."""
    model = BodyModel.open_default("adult")
    rotations = axis_angle_to_matrix(model.full_pose({}, 1).view(1, -1, 3)).clone()
    rotations[:, 0] = axis_angle_to_matrix(torch.tensor([[0.0, heading, 0.0]], dtype=model.dtype))
    turns = {16: [0.0, -1.2, 0.0], 17: [0.0, 1.2, 0.0], 18: [0.0, -0.5, 0.0], 4: [0.8, 0.0, 0.0],
             1: [-0.8, 0.0, 0.0]} if reach else {18: [0.0, 0.0, -1.0], 19: [0.0, 0.0, 1.0]}  # 18: left elbow
    for joint, turn in turns.items():
        rotations[:, joint] = axis_angle_to_matrix(torch.tensor([turn], dtype=model.dtype))
    return rotations, torch.tensor([[0.1, 0.0, -depth]], dtype=model.dtype)


def _projected(format: str, heading: float, size=SIZE, focal: float | None = None, reach: bool = False):
    """The mapped keypoints of `_body` in `format` seen by Cameras.for_image(size, focal): the map
    and the pixels (K', 2)."""
    model = BodyModel.open_default("adult")
    mapping = KeypointMap.load(format, model)
    rotations, transl = _body(heading, reach)
    points = mapping.keypoints.evaluate(rotations, None, transl)
    return mapping, Cameras.for_image(*size, focal=focal, dtype=model.dtype).project(points)[0].numpy()


def _openpose_file(path: Path, heading: float, size=SIZE, focal: float | None = None, reach: bool = False) -> None:
    """One person, `_body`'s mapped BODY_25 keypoints projected exactly (see `_projected`)."""
    mapping, pixels = _projected("openpose", heading, size, focal, reach)
    rows = np.zeros((25, 3))
    rows[mapping.columns, :2], rows[mapping.columns, 2] = pixels, 0.9
    path.write_text(json.dumps({"people": [{"pose_keypoints_2d": rows.ravel().tolist()}]}))


def test_an_estimated_focal_draws_the_overlay(tmp_path, capsys):
    """No --focal: the focal is searched, and the overlay drawn with the camera found."""
    source, out, overlay = tmp_path / "frame.json", tmp_path / "poses.npz", tmp_path / "overlay.png"
    _openpose_file(source, heading=0.4)
    assert fit_2d.main([str(source), "--image-size", *map(str, SIZE), "--out", str(out), "--overlay", str(overlay)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["focal_estimated"] is True and report["overlay"] == str(overlay)
    from PIL import Image

    assert Image.open(overlay).size == SIZE


def test_fits_an_openpose_file(tmp_path, capsys):
    source, out, overlay = tmp_path / "frame.json", tmp_path / "poses.npz", tmp_path / "overlay.png"
    _openpose_file(source, heading=0.4)
    assert fit_2d.main([str(source), "--image-size", *map(str, SIZE), "--focal", str(max(SIZE)), "--out", str(out),
                        "--overlay", str(overlay)]) == 0
    report = json.loads(capsys.readouterr().out)
    # exact keypoints of a reaching pose: a few pixels at most (one view's prior pulls towards likely poses)
    assert report["frames"] == 1 and report["reproj_px"] < 3.0 and report["frames_per_s"] > 0
    assert report["focal_px"] == max(SIZE) and report["focal_estimated"] is False
    poses = load_pose_file(out)
    assert poses.poses.shape[0] == 1 and abs(poses.trans[0, 2] + 4.0) < 0.3  # about 4 m in front
    assert overlay.stat().st_size > 1000


def test_needs_the_image_size(tmp_path):
    source = tmp_path / "frame.json"
    _openpose_file(source, heading=0.0)
    with pytest.raises(SystemExit, match="image size is unknown"):
        fit_2d.main([str(source), "--out", str(tmp_path / "poses.npz")])


def _joints(poses_path: Path) -> np.ndarray:
    """(T, 22, 3) body joints of a written pose file."""
    model = BodyModel.open_default("adult")
    poses = load_pose_file(poses_path)
    rotations = axis_angle_to_matrix(torch.as_tensor(poses.poses, dtype=model.dtype).view(len(poses.poses), -1, 3))
    output = model.forward_rotations(rotations, None, None, torch.as_tensor(poses.trans, dtype=model.dtype),
                                     return_vertices=False)
    return output.joints[:, :22].numpy()


def test_without_a_focal_length_it_is_estimated(tmp_path, capsys):
    """A photo of 1920 x 1080 taken with a 1500 px focal (not the default guess of 1920): the search
    finds it within 15 % (a single view shows the focal only through perspective) and the body's
    joints match the truth's after a similarity alignment, as closely as with the true focal given."""
    from core.fit2d import procrustes_errors

    size, focal = (1920, 1080), 1500.0
    source = tmp_path / "frame.json"
    _openpose_file(source, heading=0.5, size=size, focal=focal, reach=True)
    model = BodyModel.open_default("adult")
    rotations, transl = _body(0.5, reach=True)
    truth = model.forward_rotations(rotations, None, None, transl, return_vertices=False).joints[:, :22]
    errors = {}
    for name, extra in (("estimated", []), ("given", ["--focal", str(focal)])):
        out = tmp_path / f"{name}.npz"
        assert fit_2d.main([str(source), "--image-size", *map(str, size), "--out", str(out), *extra]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["focal_estimated"] is (name == "estimated") and report["reproj_px"] < 3.0
        errors[name] = float(procrustes_errors(torch.as_tensor(_joints(out)).double(), truth.double()).mean())
        if name == "estimated":
            assert abs(report["focal_px"] - focal) < 0.15 * focal, report["focal_px"]
        else:
            assert report["focal_px"] == focal
    assert errors["given"] < 0.05 and errors["estimated"] < 0.05, errors


def _fake_detector(monkeypatch, size, heading: float) -> list:
    """core.detect2d's MediaPipe replaced by a fake that writes, for every picture, `_body`'s mapped
    MediaPipe-33 landmarks (normalised) as the real one would; returns the sources it was given."""
    from core import detect2d

    mapping, pixels = _projected("mediapipe", heading, size, focal=1000.0)
    calls = []

    def detect(source: Path, out: Path) -> dict:
        calls.append(source)
        out.mkdir(parents=True, exist_ok=True)
        landmarks = [{"x": 0.0, "y": 0.0, "z": 0.0, "visibility": 0.0} for _ in range(33)]
        for column, (x, y) in zip(mapping.columns, pixels):
            landmarks[column] = {"x": float(x) / size[0], "y": float(y) / size[1], "z": 0.0, "visibility": 0.95}
        pictures = sorted(source.iterdir()) if source.is_dir() else [source]
        video = source.suffix == ".mp4"  # a video: four frames at 25 fps
        for picture, frame in [(source, i) for i in range(4)] if video else [(p, 0) for p in pictures]:
            record = {"format": "mediapipe33", "source": picture.stem, "frame": frame, "image_size": list(size),
                      "people": [{"landmarks": landmarks}], **({"fps": 25.0} if video else {})}
            (out / f"{picture.stem}_{frame:06d}.json").write_text(json.dumps(record))
        return {"frames": len(pictures), "frames_with_person": len(pictures), "out": str(out)}

    monkeypatch.setattr(detect2d, "import_detector", lambda: (None, None))
    monkeypatch.setattr(detect2d, "detect", detect)
    return calls


def test_a_photo_goes_through_the_detector_and_the_overlay_draws_the_body_on_it(tmp_path, capsys, monkeypatch):
    from PIL import Image

    size = (640, 480)
    photo = tmp_path / "photo.png"
    gradient = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    gradient[..., 0] = np.linspace(0, 255, size[0], dtype=np.uint8)[None, :]
    gradient[..., 1] = 128
    Image.fromarray(gradient).save(photo)
    calls = _fake_detector(monkeypatch, size, heading=0.3)
    out, overlay = tmp_path / "poses.npz", tmp_path / "overlay.png"
    assert fit_2d.main([str(photo), "--focal", "1000", "--out", str(out), "--overlay", str(overlay),
                        "--keypoints-out", str(tmp_path / "keypoints")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert calls == [photo] and report["frames"] == 1 and report["reproj_px"] < 3.0
    assert (tmp_path / "keypoints" / "photo_000000.json").is_file()
    drawn = np.asarray(Image.open(overlay).convert("RGB")).astype(int)
    assert drawn.shape == (size[1], size[0], 3)  # the picture's size, read from the picture
    # Inside the body: the pelvis and the spine, projected from the fitted joints.
    model = BodyModel.open_default("adult")
    camera = Cameras.for_image(*size, focal=1000.0, dtype=torch.float64)
    joints = torch.as_tensor(_joints(out), dtype=torch.float64)
    for joint in (0, 3, 6):
        x, y = camera.project(joints[0, joint:joint + 1])[0].round().long().tolist()
        assert np.abs(drawn[y, x] - gradient[y, x]).sum() > 60, model.joint_names[joint]
    for y, x in ((2, 2), (2, size[0] - 3), (size[1] - 3, 2), (size[1] - 3, size[0] - 3)):
        assert np.array_equal(drawn[y, x], gradient[y, x])


def test_a_folder_of_images_is_a_sequence_and_the_overlay_shows_its_first_frame(tmp_path, capsys, monkeypatch):
    from PIL import Image

    size, folder = (320, 240), tmp_path / "shots"
    folder.mkdir()
    for name, shade in (("b_second", 200), ("a_first", 40), ("c_third", 120)):
        Image.new("RGB", size, (shade, shade, shade)).save(folder / f"{name}.jpg")
    calls = _fake_detector(monkeypatch, size, heading=-0.2)
    out, overlay = tmp_path / "poses.npz", tmp_path / "overlay.png"
    assert fit_2d.main([str(folder), "--focal", "500", "--smoothness", "0", "--out", str(out),
                        "--overlay", str(overlay)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert calls == [folder] and report["frames"] == report["fitted_frames"] == 3
    poses = load_pose_file(out)
    assert poses.poses.shape[0] == 3 and poses.framerate == 30.0
    drawn = np.asarray(Image.open(overlay).convert("RGB")).astype(int)
    assert drawn.shape == (size[1], size[0], 3) and np.abs(drawn[1, 1] - 40).max() <= 3  # a_first.jpg behind


def test_a_video_gives_its_frame_rate_to_the_pose_file(tmp_path, capsys, monkeypatch):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not decoded: the detector is a fake")
    calls = _fake_detector(monkeypatch, (320, 240), heading=0.1)
    out = tmp_path / "poses.npz"
    assert fit_2d.main([str(video), "--focal", "500", "--smoothness", "0", "--out", str(out)]) == 0
    assert calls == [video] and json.loads(capsys.readouterr().out)["frames"] == 4
    assert load_pose_file(out).framerate == 25.0


def test_a_video_fit_shows_its_progress_through_the_temporal_stage(tmp_path, capsys, monkeypatch):
    """With smoothness, a one-view sequence shows a bar over its frames, then its temporal stage's steps."""
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not decoded: the detector is a fake")
    _fake_detector(monkeypatch, (320, 240), heading=0.1)
    assert fit_2d.main([str(video), "--focal", "500", "--out", str(tmp_path / "poses.npz")]) == 0
    captured = capsys.readouterr()
    total = 4 + Fit2DOptions().smooth_iterations  # 4 frames, then up to that many LM steps
    assert json.loads(captured.out)["frames"] == 4
    assert "fitting: 100%" in captured.err and f"{total}/{total}" in captured.err


def test_pictures_without_the_detector_extra_say_how_to_install_it(tmp_path):
    pytest.importorskip("PIL")
    if importlib.util.find_spec("mediapipe") is not None:
        pytest.skip("the detector extra is installed")
    from PIL import Image

    Image.new("RGB", (64, 48)).save(tmp_path / "photo.jpg")
    with pytest.raises(SystemExit, match=r"pip install -e '\.\[detect\]'.*keypoint JSON") as error:
        fit_2d.main([str(tmp_path / "photo.jpg"), "--out", str(tmp_path / "poses.npz")])
    assert "\n" not in str(error.value)
    assert not (tmp_path / "poses.npz").exists()


def test_blend_without_bpy_is_refused_before_the_fit(tmp_path, monkeypatch):
    source = tmp_path / "frame.json"
    _openpose_file(source, heading=0.0)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *rest: None if name == "bpy" else real(name, *rest))
    with pytest.raises(SystemExit, match=r"--blend needs Blender.*\.\[scene\]"):
        fit_2d.main([str(source), "--image-size", *map(str, SIZE), "--out", str(tmp_path / "poses.npz"),
                     "--blend", str(tmp_path / "scene.blend")])
    assert not (tmp_path / "poses.npz").exists()
