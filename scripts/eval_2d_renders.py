"""`scripts/eval_2d.py --renders N`: the 2D fit with a real detector on real pixels.

The open body is posed in N held-out mocap poses and rendered with Blender's Workbench engine from
two known random cameras per pose (core.synthetic_views: 1920 x 1080, focal 1000-2000 px, 3-6 m,
any heading, the second view 90 degrees from the first); MediaPipe Pose (the `detect` extra) finds
its 33 landmarks in every picture; each picture is fitted as a single photo (no temporal term) with
the camera known, and each pose's two pictures together. The errors are over the body's 22 joints,
as in the synthetic evaluation, so the same keys come out. The renders show a grey untextured body
on a plain background: an easy picture for the detector, but its landmarks (nose, eyes, ears,
shoulders, hips, heels, toes) are its own idea of where those are on a person, not our joints, so
what the fit loses to the detector's and the map's disagreement with the body shows here.

Needs bpy (Blender as a module) and the `detect` extra in the same environment: on Python 3.11,
`pip install -e ".[dev,detect]"`.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from core.body_model import BodyModel
from core.cameras import Cameras, to_blender
from core.detect2d import MODEL_COMPLEXITY, import_detector, landmarks_json
from core.fit2d import Fit2DOptions, fit_2d, procrustes_errors
from core.ik import IKSolver
from core.keypoints import NUM_BODY_JOINTS
from core.keypoints2d import KeypointFileError, KeypointMap, read_keypoints
from core.rotations import axis_angle_to_matrix
from core.synthetic_views import synthetic_views

RENDER_SEPARATION = 90.0  # degrees between a pose's two cameras


def spread(count: int, frames: int) -> torch.Tensor:
    """(frames,) indices spread evenly over `count` poses."""
    return torch.linspace(0, count - 1, frames).round().long().unique()


def body_joints(model: BodyModel, poses: torch.Tensor, transl: torch.Tensor) -> torch.Tensor:
    """(T, 22, 3) the body joints of AMASS-style poses (T, 3J) and translations (T, 3)."""
    rotations = axis_angle_to_matrix(poses.view(len(poses), -1, 3))[:, :NUM_BODY_JOINTS]
    with torch.no_grad():
        return model.forward_rotations(rotations, None, None, transl, return_vertices=False).joints


class Renderer:
    """One mesh object (the body in model coordinates: the scene's world is model space here, so
    core's cameras convert with an identity body matrix) and one camera, rendered with Workbench."""

    def __init__(self, bpy, model: BodyModel) -> None:  # noqa: ANN001 - the bpy module
        self.bpy = bpy
        bpy.ops.wm.read_homefile(use_empty=True)
        scene = bpy.context.scene
        faces = model.faces.numpy()
        mesh = bpy.data.meshes.new("Body")
        mesh.from_pydata(np.zeros((model.num_vertices, 3)).tolist(), [], faces.tolist())
        self.mesh = mesh
        scene.collection.objects.link(bpy.data.objects.new("Body", mesh))
        self.camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
        scene.collection.objects.link(self.camera)
        scene.camera = self.camera
        scene.render.engine = "BLENDER_WORKBENCH"
        scene.world = bpy.data.worlds.new("Grey")  # a plain light background
        scene.world.color = (0.8, 0.8, 0.8)
        scene.render.film_transparent = False
        scene.render.image_settings.file_format = "PNG"
        self.scene = scene

    def render(self, vertices: np.ndarray, camera: Cameras, path: Path) -> None:
        self.mesh.vertices.foreach_set("co", vertices.astype(np.float32).ravel())
        self.mesh.update()
        settings = to_blender(camera, body_matrix=np.eye(4))
        data = self.camera.data
        data.lens, data.sensor_width, data.sensor_height = settings.lens, settings.sensor_width, settings.sensor_height
        data.sensor_fit, data.shift_x, data.shift_y = settings.sensor_fit, settings.shift_x, settings.shift_y
        data.clip_start, data.clip_end = 0.05, 100.0
        render = self.scene.render
        render.resolution_x, render.resolution_y = settings.resolution_x, settings.resolution_y
        render.resolution_percentage = 100
        render.pixel_aspect_x, render.pixel_aspect_y = settings.pixel_aspect_x, settings.pixel_aspect_y
        from mathutils import Matrix

        self.camera.matrix_world = Matrix(settings.matrix_world)
        render.filepath = str(path)
        self.bpy.ops.render.render(write_still=True)


def render_and_detect(model: BodyModel, rotations: torch.Tensor, translations: torch.Tensor, cameras: Cameras,
                      boxes: np.ndarray, folder: Path) -> list[list[Path]]:
    """Render every pose (T) from its views (T, C), run the detector on each picture's crop
    `boxes` (T, C, 4: x0, y0, x1, y1 pixels); the JSON files [t][c] (MediaPipe-33, whole-picture
    coordinates)."""
    from blender_scene import blender_output_to_stderr

    import bpy

    with torch.no_grad():
        vertices = model.forward_rotations(rotations, None, None, translations).vertices.numpy()
    images, keypoints = folder / "images", folder / "keypoints"
    images.mkdir(exist_ok=True)
    keypoints.mkdir(exist_ok=True)
    files = [[(images / f"pose{t:04d}_view{c}.png", keypoints / f"pose{t:04d}_view{c}.json")
              for c in range(cameras.batch_shape[1])] for t in range(len(rotations))]
    with blender_output_to_stderr():
        renderer = Renderer(bpy, model)
        for t, row in enumerate(files):
            for c, (image, _) in enumerate(row):
                renderer.render(vertices[t], cameras[t, c], image)
    detect_crops([pair for row in files for pair in row], boxes.reshape(-1, 4))
    return [[json_path for _, json_path in row] for row in files]


def person_boxes(pixels: torch.Tensor, image_size: torch.Tensor, margin: float = 0.25) -> np.ndarray:
    """(..., 4) square crops (x0, y0, x1, y1) around each view's projected joints (..., K, 2),
    `margin` of the larger side added on every side, kept inside the image (..., 2): what a person
    detector gives the landmark model in a full pipeline (here from the known body)."""
    low, high = pixels.amin(-2), pixels.amax(-2)
    centre, side = (low + high) / 2, (high - low).amax(-1, keepdim=True) * (1 + 2 * margin)
    side = torch.minimum(side, image_size.amin(-1, keepdim=True))
    start = torch.minimum(torch.clamp(centre - side / 2, min=0), image_size - side)
    return torch.cat([start, start + side], -1).round().numpy()


def detect_crops(pictures: list[tuple[Path, Path]], boxes: np.ndarray) -> None:
    """MediaPipe Pose on each (image, json) picture's crop box; landmarks written in the whole
    picture's normalised coordinates (the format of scripts/detect_keypoints.py)."""

    mediapipe, cv2 = import_detector()
    with mediapipe.solutions.pose.Pose(static_image_mode=True, model_complexity=MODEL_COMPLEXITY) as pose:
        for (image_path, json_path), (x0, y0, x1, y1) in zip(pictures, boxes.astype(int)):
            image = cv2.cvtColor(cv2.imread(str(image_path)), cv2.COLOR_BGR2RGB)
            height, width = image.shape[:2]
            people = landmarks_json(pose.process(np.ascontiguousarray(image[y0:y1, x0:x1])))
            for person in people:
                for point in person["landmarks"]:
                    point["x"] = (x0 + point["x"] * (x1 - x0)) / width
                    point["y"] = (y0 + point["y"] * (y1 - y0)) / height
            json_path.write_text(json.dumps({"format": "mediapipe33", "source": image_path.stem, "frame": 0,
                                             "image_size": [width, height], "people": people}))


def evaluate_renders(model: BodyModel, prior, rotations: torch.Tensor, translations: torch.Tensor, count: int,
                     options: Fit2DOptions, seed: int, keep: str | Path | None = None) -> dict:
    """The eval_2d keys for `count` poses spread over the held-out frames, rendered and detected;
    plus `detected` (the pictures where the detector found the person). keep: a folder for the
    pictures and the detector's files (default: a temporary one)."""
    pick = spread(len(rotations), count)
    rotations, translations = rotations[pick], translations[pick]
    with torch.no_grad():
        truth = model.forward_rotations(rotations, None, None, translations, return_vertices=False).joints
    truth = truth[:, :NUM_BODY_JOINTS]
    generator = torch.Generator().manual_seed(seed)
    views = synthetic_views(truth.double(), generator, views=2, separation=RENDER_SEPARATION)
    mapping = KeypointMap.load("mediapipe", model)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(keep or scratch)
        folder.mkdir(parents=True, exist_ok=True)
        boxes = person_boxes(views.clean, views.cameras.image_size)
        files = render_and_detect(model, rotations, translations, views.cameras, boxes, folder)
        pixels, confidence, found = [], [], []
        for row in files:
            selected = [_detected(mapping, path) for path in row]
            pixels.append(np.stack([p for p, _ in selected]))
            confidence.append(np.stack([c for _, c in selected]))
            found.append([bool(np.any(c > 0)) for _, c in selected])
    pixels, confidence, found = np.stack(pixels), np.stack(confidence), np.array(found)  # (T, 2, K, 2) ...
    single, both = torch.as_tensor(found[:, 0]), torch.as_tensor(found.all(1))
    if not single.any():
        return {"frames": 0, "detected": 0.0}
    solvers = {"prior": IKSolver(model, mapping.keypoints, prior), "noprior": IKSolver(model, mapping.keypoints, None)}
    cameras = views.cameras
    began = time.perf_counter()
    fit = fit_2d(solvers["prior"], cameras[single][:, 0], pixels[single, 0], confidence[single, 0], options=options)
    seconds = time.perf_counter() - began
    bare = fit_2d(solvers["noprior"], cameras[single][:, 0], pixels[single, 0], confidence[single, 0],
                  options=dataclasses.replace(options, pose_iterations=40))
    fitted, unprimed = body_joints(model, fit.poses, fit.transl), body_joints(model, bare.poses, bare.transl)
    result = {"frames": int(single.sum()), "detected": round(float(found.mean()), 3),
              "mpjpe_mm": _mm(_pelvis(fitted, truth[single])), "pa_mpjpe_mm": _mm(procrustes_errors(fitted, truth[single])),
              "noprior_pa_mpjpe_mm": _mm(procrustes_errors(unprimed, truth[single])),
              "reproj_px": round(float(fit.reproj_px.mean()), 2), "frames_per_s": round(int(single.sum()) / seconds, 1)}
    if both.any():
        two = fit_2d(solvers["prior"], cameras[both], pixels[both], confidence[both], options=options)
        result["two_view_mpjpe_mm"] = _mm(_pelvis(body_joints(model, two.poses, two.transl), truth[both]))
        result["two_view_frames"] = int(both.sum())
    return result


def _detected(mapping: KeypointMap, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(K, 2) pixels and (K,) confidence of one picture's detection; all missing where the
    detector found nobody."""
    try:
        pixels, confidence = mapping.select(read_keypoints(path, "mediapipe"))
    except KeypointFileError:  # nobody detected: the picture counts as missed
        count = len(mapping.keypoints.names)
        return np.full((count, 2), np.nan), np.zeros(count)
    return pixels[0], confidence[0]


def _pelvis(predicted: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    return ((predicted - predicted[:, :1]) - (truth - truth[:, :1])).norm(dim=-1)


def _mm(errors: torch.Tensor) -> float:
    return round(1000 * float(errors.double().mean()), 1)
