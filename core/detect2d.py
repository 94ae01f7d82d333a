"""Detect 2D body keypoints in images or a video, offline, and write MediaPipe-33 JSON per frame
(scripts/detect_keypoints.py and the add-on's Detect Keypoints run this).

Needs the optional extra: pip install -e '.[detect]' (MediaPipe 0.10.21 with numpy<2, Python 3.11 or
3.12). That release ships its pose models inside the wheel; only those are used (the "full"
landmark model: model_complexity=1), so nothing is downloaded at run time. Later MediaPipe releases
fetch models from the internet and are refused.

Output: OUT/<name>_<frame>.json per image or video frame, read by core.keypoints2d (format
'mediapipe'): {"format": "mediapipe33", "source": ..., "frame": i, "image_size": [W, H],
["fps": video frame rate,] "people": [{"landmarks": [{"x", "y", "z", "visibility"}] * 33,
"world_landmarks": [...]}]} with x, y normalised to the image; "people" is empty where nobody was
found. MediaPipe's legacy pose solution finds at most one person per frame.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import VPoserError


class DetectError(VPoserError):
    """The detector cannot run on this input (or is not installed); the message says why."""


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v"}
INSTALL_HELP = ("the detector is an optional extra: pip install -e '.[detect]' "
                "(MediaPipe 0.10.21 and numpy<2, on Python 3.11 or 3.12)")
MODEL_COMPLEXITY = 1  # the landmark model shipped inside the 0.10.21 wheel; 0 and 2 would be downloaded


def detector_available() -> bool:
    """Whether the detector's modules can be imported (the add-on's Detect Keypoints polls this)."""
    return all(importlib.util.find_spec(name) is not None for name in ("mediapipe", "cv2"))


def import_detector():
    """(mediapipe, cv2), or DetectError with the install help."""
    try:
        import cv2
        import mediapipe
    except ImportError as error:
        raise DetectError(f"{error.name} is not installed; {INSTALL_HELP}") from None
    if mediapipe.__version__ != "0.10.21":
        raise DetectError(f"MediaPipe {mediapipe.__version__} is installed; the detector needs 0.10.21 (later "
                          f"releases download models at run time). {INSTALL_HELP}")
    return mediapipe, cv2


def frames(path: Path, cv2) -> Iterator[tuple[str, int, object, float | None]]:
    """(name, frame index, RGB image, fps or None) for an image, each image of a folder, or each video frame."""
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise DetectError(f"{path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder")
        for image in images:
            yield from frames(image, cv2)
        return
    if not path.is_file():
        raise DetectError(f"{path}: no such file or folder")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        image = cv2.imread(str(path))
        if image is None:
            raise DetectError(f"{path}: cannot read this image")
        yield path.stem, 0, cv2.cvtColor(image, cv2.COLOR_BGR2RGB), None
        return
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise DetectError(f"{path}: expected an image ({', '.join(sorted(IMAGE_SUFFIXES))}), a video "
                         f"({', '.join(sorted(VIDEO_SUFFIXES))}) or a folder of images")
    video = cv2.VideoCapture(str(path))
    if not video.isOpened():
        raise DetectError(f"{path}: cannot open this video")
    fps = video.get(cv2.CAP_PROP_FPS) or None
    index = 0
    try:
        while True:
            ok, image = video.read()
            if not ok:
                break
            yield path.stem, index, cv2.cvtColor(image, cv2.COLOR_BGR2RGB), fps
            index += 1
    finally:
        video.release()
    if index == 0:
        raise DetectError(f"{path}: the video has no readable frames")


def landmarks_json(result) -> list[dict]:
    """The 'people' list for one MediaPipe pose result (empty, or the one person it found)."""
    if not result.pose_landmarks:
        return []

    def points(landmarks) -> list[dict]:
        return [{"x": p.x, "y": p.y, "z": p.z, "visibility": p.visibility} for p in landmarks.landmark]

    person = {"landmarks": points(result.pose_landmarks)}
    if result.pose_world_landmarks:
        person["world_landmarks"] = points(result.pose_world_landmarks)
    return [person]


def detect(source: Path, out: Path, progress: Callable[[int], None] | None = None) -> dict:
    """Run the detector over `source`, write one JSON per frame under `out`; a summary. `progress`
    is called with the number of frames written so far after each frame."""
    mediapipe, cv2 = import_detector()
    out.mkdir(parents=True, exist_ok=True)
    video = source.is_file() and source.suffix.lower() in VIDEO_SUFFIXES
    written, found = 0, 0
    with mediapipe.solutions.pose.Pose(static_image_mode=not video, model_complexity=MODEL_COMPLEXITY,
                                       smooth_landmarks=video) as pose:
        for name, index, image, fps in frames(source, cv2):
            people = landmarks_json(pose.process(image))
            record = {"format": "mediapipe33", "source": name, "frame": index,
                      "image_size": [int(image.shape[1]), int(image.shape[0])], "people": people}
            if fps:
                record["fps"] = fps
            (out / f"{name}_{index:06d}.json").write_text(json.dumps(record))
            written, found = written + 1, found + bool(people)
            if progress is not None:
                progress(written)
    return {"frames": written, "frames_with_person": found, "out": str(out)}
