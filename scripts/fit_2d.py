"""Fit the open body to 2D keypoints: JSON files, or pictures run through the detector.

    python scripts/fit_2d.py INPUT [INPUT2 ...] [--format openpose|coco|mediapipe] [--image-size W H]
        [--focal PX] [--cameras cameras.json] [--fps N] --out poses.npz [--image PICTURE]
        [--overlay overlay.png] [--blend scene.blend] [--keypoints-out DIR]

INPUT, one per view: a keypoint JSON file, a folder of per-frame JSON files (a video), or pictures:
an image (.png, .jpg, ...), a video (.mp4, .mov, .avi, ...) or a folder of images. Pictures go
through scripts/detect_keypoints.py (MediaPipe, the optional extra: pip install -e '.[detect]' on
Python 3.11 or 3.12); their JSON files go to a temporary folder, or --keypoints-out DIR.

Camera: with --cameras, one camera per input (same frame count). Without, one photo or video seen by
an upright camera at the origin (core.cameras.Cameras.for_image) with --focal pixels; without
--focal, the focal length is estimated (core.fit2d.estimate_focal: a search over 0.5x..2x the
image's longer side, judged on up to 30 frames; a single view shows the focal only weakly, so give it
when you know it). Frames where fewer than 3 keypoints are seen take the nearest fitted frame's pose.

Prints a JSON report (frames, fitted_frames, reproj_px: mean reprojection error in pixels, seconds,
frames_per_s, total_seconds, out, focal_px: the first camera's focal in pixels, focal_estimated, and
overlay / blend when written) and writes AMASS-style poses (`poses`, `trans`, `mocap_framerate`) in
the body's Y-up model space. --overlay draws the first fitted frame: the posed body's mesh projected
through the fitted camera as a translucent silhouette over the picture (the input image, --image, an
image next to the keypoint JSON with its name, or a grey canvas), the detected keypoints (red
crosses) and the fitted ones (blue dots). --blend saves a Blender scene (needs bpy): the camera, the
picture as its background (a video as a movie clip) and the body keyed with the fitted poses.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
for folder in (REPO, REPO / "scripts"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from core import detect2d  # noqa: E402
from core.body_model import BodyModel  # noqa: E402
from core.cameras import Cameras, read_cameras  # noqa: E402
from core.errors import VPoserError  # noqa: E402
from core.fit2d import Fit2DOptions, Fit2DResult, Fit2DRun, estimate_focal, fill_from_nearest, fit_2d  # noqa: E402
from core.ik import IKSolver  # noqa: E402
from core.keypoints2d import FORMATS, KeypointMap, Keypoints2D, read_keypoints  # noqa: E402
from core.pose_files import PoseSequence, save_pose_file  # noqa: E402
from core.vposer import default_vposer_path, load_vposer  # noqa: E402

IMAGES, VIDEOS = detect2d.IMAGE_SUFFIXES, detect2d.VIDEO_SUFFIXES
PROGRESS_FRAMES = 100  # frames fitted between updates of the progress bar


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="keypoint JSON file or folder, or an image, a video or a folder of images; one per view")
    parser.add_argument("--format", choices=sorted(FORMATS), default=None, help="default: recognised from the file")
    parser.add_argument("--image-size", nargs=2, type=int, metavar=("W", "H"), default=None)
    parser.add_argument("--focal", type=float, default=None, help="focal length in pixels (default: estimated)")
    parser.add_argument("--cameras", default=None, help="cameras JSON (core.cameras format), one per input")
    parser.add_argument("--fps", type=float, default=None,
                        help="frame rate written to the pose file (default: the video's, else 30)")
    parser.add_argument("--smoothness", type=float, default=Fit2DOptions.smoothness,
                        help="temporal term weight for a sequence (0: off)")
    parser.add_argument("--person", default="largest", help="'largest' or an index into each frame's people")
    parser.add_argument("--out", required=True, help="AMASS-style .npz to write")
    parser.add_argument("--image", default=None, help="the picture the (first) keypoint input was detected in")
    parser.add_argument("--overlay", default=None, help="PNG of the first fitted frame: the body over the picture")
    parser.add_argument("--blend", default=None, help="also save a Blender scene: camera, picture, keyed body (bpy)")
    parser.add_argument("--keypoints-out", default=None, help="keep the detected keypoint JSON files in this folder")
    return parser.parse_args(argv)


@dataclass
class Views:
    """The keypoint map, pixels (T, C, K, 2), confidence (T, C, K), cameras (C,), the first
    input's picture (an image, a video or a folder of images; None when unknown), the detector's
    per-frame picture names (its JSON's "source"; None elsewhere) and a video's frame rate (None: not
    a video)."""

    mapping: KeypointMap
    pixels: np.ndarray
    confidence: np.ndarray
    cameras: Cameras
    picture: Path | None
    sources: list | None
    fps: float | None


def is_pictures(path: Path) -> bool:
    """An image, a video, or a folder holding images and no keypoint JSON."""
    if path.is_dir():
        return not any(path.glob("*.json")) and any(p.suffix.lower() in IMAGES for p in path.iterdir())
    return path.suffix.lower() in IMAGES | VIDEOS


def detect_pictures(source: Path, out: Path) -> Path:
    """Run the detector (core.detect2d, as scripts/detect_keypoints.py does) over `source`, its JSON
    files into `out`."""
    try:
        detect2d.import_detector()
    except detect2d.DetectError as error:
        raise SystemExit(f"error: {error}; or give keypoint JSON files (any detector's) instead of pictures") \
            from None
    try:
        detect2d.detect(source, out)
    except detect2d.DetectError as error:
        raise SystemExit(f"error: {error}") from None
    return out


def read_input(path: Path, index: int, args: argparse.Namespace, scratch: Path) -> Keypoints2D:
    """One input's keypoints: a keypoint JSON file or folder as it is, pictures through the detector."""
    person = int(args.person) if str(args.person).isdigit() else args.person
    if is_pictures(path):
        folder = Path(args.keypoints_out) / f"view{index}" if args.keypoints_out and len(args.inputs) > 1 else \
            Path(args.keypoints_out) if args.keypoints_out else scratch / f"view{index}"
        return read_keypoints(detect_pictures(path, folder), "mediapipe", person, args.image_size)
    return read_keypoints(path, args.format, person, args.image_size)


def picture_of(args: argparse.Namespace) -> Path | None:
    """The first input's picture: the input itself, --image, or an image beside a keypoint file with its name."""
    source = Path(args.inputs[0])
    if is_pictures(source):
        return source
    if args.image:
        return Path(args.image)
    if source.is_file():
        beside = [source.with_suffix(suffix) for suffix in sorted(IMAGES)]
        return next((path for path in beside if path.is_file()), None)
    return None


def image_size_of(picture: Path) -> tuple[int, int]:
    """(W, H) of an image, or of a folder's first image (Pillow reads only the header)."""
    from PIL import Image

    if picture.is_dir():
        picture = sorted(p for p in picture.iterdir() if p.suffix.lower() in IMAGES)[0]
    with Image.open(picture) as image:
        return image.size


def detector_records(first: Keypoints2D) -> tuple[list | None, float | None]:
    """The picture name of every frame and a video's frame rate, as the detector wrote them (None, None
    for other keypoint files)."""
    records = [json.loads(Path(file).read_text()) for file in first.files]
    if first.format != "mediapipe" or not all(isinstance(r, dict) and "source" in r for r in records):
        return None, None
    fps = records[0].get("fps")
    return [record["source"] for record in records], float(fps) if fps else None


def load_views(args: argparse.Namespace, model: BodyModel, scratch: Path) -> Views:
    """Every input's keypoints, mapped onto the body, and the cameras (see the module docstring)."""
    files = [read_input(Path(path), i, args, scratch) for i, path in enumerate(args.inputs)]
    if len({item.format for item in files}) > 1:
        raise VPoserError(f"the inputs are in different formats: {[item.format for item in files]}")
    if len({len(item.data) for item in files}) > 1:
        raise VPoserError(f"the inputs have different frame counts: {[len(item.data) for item in files]}")
    mapping = KeypointMap.load(files[0].format, model)
    selected = [mapping.select(item) for item in files]
    pixels = np.stack([pixels for pixels, _ in selected], 1)
    confidence = np.stack([confidence for _, confidence in selected], 1)
    picture = picture_of(args)
    if args.cameras:
        cameras = read_cameras(args.cameras)
        if cameras.batch_shape != (len(files),):
            raise VPoserError(f"{args.cameras}: {cameras.batch_shape[0]} camera(s) for {len(files)} keypoint input(s)")
    else:
        if len(files) > 1:
            raise VPoserError("several keypoint inputs need --cameras (one camera per input)")
        size = files[0].image_size or (tuple(args.image_size) if args.image_size else None)
        if size is None and picture is not None and picture.suffix.lower() not in VIDEOS:
            size = image_size_of(picture)
        if size is None:
            raise VPoserError(f"{args.inputs[0]}: the image size is unknown: give --image-size W H, --image PICTURE "
                              "(or --cameras)")
        cameras = Cameras.for_image(*size, focal=args.focal).reshape(1)
    return Views(mapping, pixels, confidence, cameras, picture, *detector_records(files[0]))


def frame_picture(picture: Path | None, sources: list | None, frame: int, size: tuple[int, int]):
    """The RGB picture (a PIL image) of one frame, or None: an image, a folder's image whose name
    the detector wrote into the frame's JSON, or a video's frame (needs OpenCV, the detect extra)."""
    from PIL import Image

    if picture is None or not picture.exists():
        return None
    if picture.is_dir():
        source = sources[frame] if sources else None
        matches = [p for p in sorted(picture.iterdir()) if p.stem == source and p.suffix.lower() in IMAGES]
        picture = matches[0] if matches else None
    elif picture.suffix.lower() in VIDEOS:
        try:
            import cv2
        except ImportError:
            return None
        video = cv2.VideoCapture(str(picture))
        video.set(cv2.CAP_PROP_POS_FRAMES, frame)
        ok, image = video.read()
        video.release()
        return Image.fromarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB)) if ok else None
    if picture is None:
        return None
    image = Image.open(picture).convert("RGB")
    if image.size != tuple(size):
        raise SystemExit(f"error: {picture}: the picture is {image.size[0]} x {image.size[1]} pixels, the camera "
                         f"{size[0]} x {size[1]}")
    return image


def draw_overlay(path: str, camera: Cameras, vertices: np.ndarray, faces: np.ndarray, detected: np.ndarray,
                 fitted: np.ndarray, background=None) -> None:
    """The fitted body over the picture, at the picture's size: the mesh's triangles (vertices (V, 3)
    in model space, faces (F, 3)) projected through `camera` (batch ()) as a translucent blue
    silhouette with a darker outline, the detected keypoints (K, 2) as red crosses and the fitted
    ones (K, 2) as blue dots. `background`: a PIL RGB image (None: a grey canvas)."""
    from PIL import Image, ImageDraw, ImageFilter

    width, height = (int(round(v)) for v in camera.image_size.tolist())
    base = background if background is not None else Image.new("RGB", (width, height), (230, 230, 230))
    points = torch.as_tensor(vertices, dtype=camera.focal.dtype)
    depth = camera.to_camera(points)[:, 2].numpy()
    pixels = camera.project(points).numpy()
    front = faces[(depth[faces] > 0.01).all(1)]
    mask = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask)
    for triangle in pixels[front]:
        draw.polygon([tuple(p) for p in triangle], fill=255)
    tint = Image.blend(base, Image.new("RGB", base.size, (40, 110, 230)), 0.5)
    out = Image.composite(tint, base, mask)
    out.paste((20, 50, 140), mask=mask.filter(ImageFilter.FIND_EDGES))
    draw = ImageDraw.Draw(out)
    radius = max(2, round(max(width, height) / 300))
    for x, y in fitted:
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=(30, 60, 220), outline=(255, 255, 255))
    for x, y in detected[np.isfinite(detected).all(1)]:
        draw.line([(x - 2 * radius, y - 2 * radius), (x + 2 * radius, y + 2 * radius)], fill=(220, 30, 30), width=2)
        draw.line([(x - 2 * radius, y + 2 * radius), (x + 2 * radius, y - 2 * radius)], fill=(220, 30, 30), width=2)
    out.save(path)


def fit_views(solver: IKSolver, cameras: Cameras, pixels: np.ndarray, confidence: np.ndarray,
              options: Fit2DOptions) -> Fit2DResult:
    """fit_2d over the frames (a sequence when more than one); one view's sequence in steps, with a
    progress bar on stderr over its frames and then its temporal stage (the same result)."""
    if len(pixels) == 1 or cameras.batch_shape != ():
        return fit_2d(solver, cameras, pixels, confidence, sequence=len(pixels) > 1, options=options)
    run = Fit2DRun(solver, cameras, pixels, confidence, options, batch_size=PROGRESS_FRAMES)
    with tqdm(total=run.total, unit="step", file=sys.stderr, desc="fitting") as bar:
        for done, _ in run:
            bar.update(done - bar.n)
    return run.result()


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    start = time.perf_counter()
    if args.blend and importlib.util.find_spec("bpy") is None:
        raise SystemExit("error: --blend needs Blender as a module: pip install -e '.[scene]' (bpy 5.0.1 on Python "
                         "3.11 or 5.2.3 on Python 3.13); the fit itself runs without it")
    model = BodyModel.open_default("adult")
    prior = load_vposer(default_vposer_path()).eval()
    with tempfile.TemporaryDirectory(prefix="vposer-keypoints-") as scratch:
        try:
            views = load_views(args, model, Path(scratch))
        except VPoserError as error:
            raise SystemExit(f"error: {error}") from None
    pixels, confidence, cameras = views.pixels, views.confidence, views.cameras
    seen = (np.isfinite(pixels).all(-1) & (confidence > 0)).reshape(len(pixels), -1).sum(1)
    usable = seen >= 3
    if not usable.any():
        raise SystemExit(f"error: {args.inputs[0]}: no frame shows 3 or more mapped keypoints")
    solver = IKSolver(model, views.mapping.keypoints, prior)
    options = Fit2DOptions(smoothness=args.smoothness)
    single = cameras.batch_shape[0] == 1  # (T, K, 2) for one view, (T, C, K, 2) for several
    view_pixels, view_confidence = (pixels[usable, 0], confidence[usable, 0]) if single else \
        (pixels[usable], confidence[usable])
    fit_start = time.perf_counter()
    estimated = single and args.focal is None and args.cameras is None
    if estimated:
        found = estimate_focal(solver, cameras[0], view_pixels, view_confidence, options=options).camera
        cameras = found.reshape(1).to(torch.float64)  # the search runs in the body's dtype; the views are float64
    fit = fit_views(solver, cameras[0] if single else cameras, view_pixels, view_confidence, options)
    seconds = time.perf_counter() - fit_start
    poses = fill_from_nearest(fit.poses.numpy(), usable) if not usable.all() else fit.poses.numpy()
    transl = fill_from_nearest(fit.transl.numpy(), usable) if not usable.all() else fit.transl.numpy()
    fps = args.fps or views.fps or 30.0
    save_pose_file(args.out, PoseSequence(poses, transl, np.zeros(model.num_betas), framerate=fps))
    report = {"frames": int(len(pixels)), "fitted_frames": int(usable.sum()),
              "reproj_px": round(float(fit.reproj_px.mean()), 3), "seconds": round(seconds, 3),
              "frames_per_s": round(float(usable.sum()) / seconds, 1), "out": args.out,
              "focal_px": round(float(cameras.focal[0, 0]), 2), "focal_estimated": estimated}
    if args.overlay:
        first = int(np.flatnonzero(usable)[0])
        with torch.no_grad():
            betas = None if fit.result.betas is None else fit.result.betas[:1]
            vertices = model.forward_rotations(fit.result.rotations[:1], betas, None, fit.result.transl[:1]).vertices[0]
        size = tuple(int(v) for v in cameras.image_size[0].tolist())
        draw_overlay(args.overlay, cameras[0], vertices.double().numpy(), model.faces.numpy(), pixels[first, 0],
                     cameras[0].project(fit.result.points[0].double()).numpy(),
                     frame_picture(views.picture, views.sources, first, size))
        report["overlay"] = args.overlay
    if args.blend:
        from blender_scene import save_fit_scene

        report["blend"] = save_fit_scene(Path(args.out), Path(args.blend), cameras, views.picture, len(pixels))
    report["total_seconds"] = round(time.perf_counter() - start, 2)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
