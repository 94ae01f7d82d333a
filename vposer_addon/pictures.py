"""From Image / Video: the scene's settings, the camera that matches a picture (with the picture as
its background), keypoint files read for that camera, and the fit of a body to them as a job.

Frames. Core fits in the OpenCV camera of `vposer_addon.cameras.camera_from_object(camera, scene,
body)`, whose extrinsics are in the body's model space (the camera object's matrix_world and the
body object's, Blender's Z-up world between them): the fitted root rotation and translation are
the root pose bone's, so the body lands where the picture shows it, seen from that camera, wherever
the body object and the camera are. The camera is read once, at the current frame (an animated
camera is not followed through a video).

Pixels. A keypoint file's pixels are the picture's; the camera sees the render size (resolution x
percentage). When a file states its picture size and it differs from the render size by a uniform
scale, the pixels are scaled; another aspect ratio is refused (Set Up Camera makes them agree).

Shapes: T frames, K keypoints mapped onto the body (core.keypoints2d.KeypointMap); pixels (T, K, 2),
confidence (T, K).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import bpy
import numpy as np

from ..core.errors import VPoserError
from . import bridge
from .stepping import ProgressSteps

if TYPE_CHECKING:
    from ..core.body_model import BodyModel
    from ..core.keypoints2d import KeypointMap, Keypoints2D

FORMAT_ITEMS = [
    ("AUTO", "Auto", "Recognise the format from the file's content"),
    ("OPENPOSE", "OpenPose", "OpenPose BODY_25 JSON (pose_keypoints_2d), pixels"),
    ("COCO", "COCO", "COCO-17 keypoints (a list of objects with 'keypoints', or a COCO file), pixels"),
    ("MEDIAPIPE", "MediaPipe", "MediaPipe Pose 33 landmarks, normalised to the picture (Detect Keypoints writes them)"),
]
PERSON_ITEMS = [
    ("LARGEST", "Largest", "The person whose keypoints span the largest box"),
    ("INDEX", "Index", "The person at this index in each file's list"),
]
CAMERA_ITEMS = [
    ("SCENE", "Scene Camera", "Use the scene's camera (Set Up Camera gives it the picture's size and background)"),
    ("CREATE", "New Camera", "Create a camera matching the picture, in front of the body"),
]
DEFAULT_SMOOTHNESS = 1.0  # core.fit2d.Fit2DOptions.smoothness (core needs torch; registering must not)
FIT_BATCH = 25  # frames per step of a sequence fit: progress and Esc are checked between steps
FILL_HEIGHT = 0.8  # a created camera frames the body to this share of the picture's height
BODY_HEIGHT = 1.8  # metres: what a created camera frames without a body
CAMERA_NAME = "VPoser Camera"


class PictureError(VPoserError):
    """A picture, keypoint file or camera cannot be used as asked; the message names it and says why."""


class VPoserPictures(bpy.types.PropertyGroup):
    """The From Image / Video section's settings, on the scene."""

    media_path: bpy.props.StringProperty(
        name="Image / Video", subtype="FILE_PATH",
        description="The picture or video the body is fitted to (shown as the camera's background)",
    )
    keypoints_path: bpy.props.StringProperty(
        name="Keypoints", subtype="FILE_PATH",
        description="A keypoint JSON file (one picture) or a folder of them (a video, one file per frame, in "
        "file-name order); Detect Keypoints fills this in",
    )
    format: bpy.props.EnumProperty(name="Format", items=FORMAT_ITEMS, default="AUTO")
    person: bpy.props.EnumProperty(name="Person", items=PERSON_ITEMS, default="LARGEST",
                                   description="Which person to fit when a file holds several")
    person_index: bpy.props.IntProperty(name="Index", min=0, default=0, description="The person's index in each file")
    camera: bpy.props.EnumProperty(name="Camera", items=CAMERA_ITEMS, default="SCENE")
    focal: bpy.props.FloatProperty(
        name="Focal (px)", min=0.0, soft_max=20000.0, default=0.0,
        description="The picture's focal length in pixels; 0: keep the scene camera's lens, or the picture's "
        "longer side for a new camera (a ~53 degree view, between a phone's wide and a portrait lens)",
    )
    smoothness: bpy.props.FloatProperty(
        name="Smoothness", min=0.0, soft_max=10.0, default=DEFAULT_SMOOTHNESS, precision=3,
        description="How much a video's fit keeps joints from jerking between frames (0: each frame on its own)",
    )
    insert_keyframes: bpy.props.BoolProperty(
        name="Insert Keyframes", default=False,
        description="Key the fitted pose of a single picture at the current frame (it is keyed anyway when "
        "auto-keying is on); a video always becomes a new action",
    )


# ------------------------------------------------------------------------------------ pictures
def media_kind(path: str) -> str:
    """'IMAGE' or 'MOVIE' from the file's suffix."""
    from ..core.detect2d import IMAGE_SUFFIXES, VIDEO_SUFFIXES

    suffix = Path(path).suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "IMAGE"
    if suffix in VIDEO_SUFFIXES:
        return "MOVIE"
    raise PictureError(f"{path}: expected a picture ({', '.join(sorted(IMAGE_SUFFIXES))}) or a video "
                       f"({', '.join(sorted(VIDEO_SUFFIXES))})")


def load_media(path: str) -> tuple[bpy.types.Image | bpy.types.MovieClip, str, tuple[int, int]]:
    """The picture or video as a datablock (one already loaded from the file is reused), its kind
    and its size (width, height) in pixels."""
    path = bpy.path.abspath(path)
    kind = media_kind(path)
    if not Path(path).is_file():
        raise PictureError(f"{path}: no such file")
    try:
        if kind == "IMAGE":
            media = bpy.data.images.load(path, check_existing=True)
        else:
            media = bpy.data.movieclips.load(path, check_existing=True)
    except RuntimeError as error:  # Blender's "cannot read" / unsupported format
        raise PictureError(f"{path}: Blender cannot read it ({error})") from None
    width, height = (int(v) for v in media.size)
    if width < 1 or height < 1:
        raise PictureError(f"{path}: Blender reads no pixels from it (an empty or broken file)")
    return media, kind, (width, height)


def picture_size(settings: VPoserPictures) -> tuple[tuple[int, int], tuple | None]:
    """The picture's size, and the loaded media (datablock, kind) when there is one: from the
    picture or video, else from the keypoint file when it states the size (MediaPipe's do)."""
    if settings.media_path:
        media, kind, size = load_media(settings.media_path)
        return size, (media, kind)
    if settings.keypoints_path:
        keypoints = read_keypoint_file(settings, None)
        if keypoints.image_size is not None:
            return tuple(keypoints.image_size), None
    raise PictureError("the picture's size is unknown: choose the picture or video (or a keypoint file that states "
                       "its image size, as MediaPipe's do)")


def set_up_camera(context: bpy.types.Context, settings: VPoserPictures, body: bpy.types.Object | None
                  ) -> tuple[bpy.types.Object, bool, tuple[int, int]]:
    """Make the scene camera (or a new one, see `CAMERA_ITEMS`) match the picture: the render size,
    the focal when given, the picture or video as its background. Returns the camera, whether it
    was created, and the picture size. Everything that can fail is read before anything changes."""
    from ..core.cameras import Cameras
    from .cameras import camera_from_object, create_blender_camera, set_blender_camera

    scene = context.scene
    size, media = picture_size(settings)
    width, height = size
    camera = scene.camera if settings.camera == "SCENE" else None
    if camera is not None and (camera.type != "CAMERA" or camera.data.type != "PERSP"):
        raise PictureError(f"the scene camera {camera.name!r} is not a perspective camera: choose New Camera")
    render = scene.render
    render.resolution_x, render.resolution_y, render.resolution_percentage = width, height, 100
    render.pixel_aspect_x = render.pixel_aspect_y = 1.0
    created = camera is None
    if created:
        focal = settings.focal or float(max(width, height))
        middle, tall = _framing(body)
        distance = focal * tall / (FILL_HEIGHT * height)
        start = Cameras.look_at((0.0, middle, distance), (0.0, middle, 0.0), focal, size)
        camera = create_blender_camera(scene.collection, scene, start, CAMERA_NAME, body)
        scene.camera = camera
    elif settings.focal:
        ours = camera_from_object(camera, scene)
        ours = Cameras.create(settings.focal, size, rotation=ours.rotation, translation=ours.translation)
        set_blender_camera(camera, scene, ours)
    if media is not None:
        _show_background(camera, *media, scene.frame_start)
    return camera, created, size


def _framing(body: bpy.types.Object | None) -> tuple[float, float]:
    """The model-space height (Y) of a body's middle and the body's height (metres), from its bones'
    rest heads (ankles to the top of the head); a 1.8 m body standing on Y = 0 without a body."""
    if body is None or not body.vposer_body.is_body:
        return BODY_HEIGHT / 2, BODY_HEIGHT
    heights = np.array([bone.head_local[1] for bone in body.data.bones])
    low, high = float(heights.min()), float(heights.max())
    return (low + high) / 2, 1.15 * (high - low)  # the head joint sits below the top of the head


def _show_background(camera: bpy.types.Object, media: bpy.types.Image | bpy.types.MovieClip, kind: str,
                     frame_start: int) -> None:
    """The picture (or the video, from the scene's first frame) behind the camera's view."""
    data = camera.data
    data.show_background_images = True
    entry = next((item for item in data.background_images if (item.image if kind == "IMAGE" else item.clip) == media),
                 None) or data.background_images.new()
    if kind == "IMAGE":
        entry.source, entry.image = "IMAGE", media
    else:
        entry.source, entry.clip = "MOVIE_CLIP", media
        entry.use_camera_clip = False
        media.frame_start = frame_start
    entry.alpha = 1.0
    entry.display_depth = "BACK"
    entry.frame_method = "FIT"  # the picture spans the camera frame, as its pixels do


# ------------------------------------------------------------------------------------ keypoints
def read_keypoint_file(settings: VPoserPictures, image_size: tuple[int, int] | None) -> Keypoints2D:
    """The keypoint file or folder the settings name (core.keypoints2d.read_keypoints)."""
    from ..core.keypoints2d import read_keypoints

    if not settings.keypoints_path:
        raise PictureError("no keypoints: choose a keypoint JSON file or folder (or Detect Keypoints in the picture)")
    path = bpy.path.abspath(settings.keypoints_path)
    person = "largest" if settings.person == "LARGEST" else settings.person_index
    return read_keypoints(path, None if settings.format == "AUTO" else settings.format.lower(), person, image_size)


def keypoint_pixels(keypoints: Keypoints2D, model: BodyModel, render_size: tuple[float, float]
                    ) -> tuple[np.ndarray, np.ndarray, KeypointMap]:
    """Pixels (T, K, 2) in the render's size and weighted confidences (T, K) of the keypoints the
    body maps, and the map (its `keypoints` are what the body evaluates, in that order)."""
    from ..core.keypoints2d import KeypointMap

    mapping = KeypointMap.load(keypoints.format, model)
    pixels, confidence = mapping.select(keypoints)
    if keypoints.image_size is not None:
        scale = np.asarray(render_size, dtype=np.float64) / np.asarray(keypoints.image_size, dtype=np.float64)
        if abs(scale[0] / scale[1] - 1.0) > 0.01:
            raise PictureError(f"{keypoints.files[0]}: its picture is {keypoints.image_size[0]} x "
                               f"{keypoints.image_size[1]}, the render {render_size[0]:g} x {render_size[1]:g}: "
                               "another shape (Set Up Camera sets the render size to the picture's)")
        pixels = pixels * scale
    return pixels, confidence, mapping


class PictureFit(ProgressSteps):
    """A prepared fit of a body to a keypoint file (one frame) or folder (a sequence), seen by the
    scene camera: steps (`step`), then the result written onto the body (`write`). Nothing in the
    scene changes before `write`, so a refused or cancelled fit leaves it as it was."""

    def __init__(self, context: bpy.types.Context, rig: bpy.types.Object, settings: VPoserPictures) -> None:
        from ..core.fit2d import Fit2DOptions, Fit2DRun
        from ..core.ik import IKSolver
        from .cameras import camera_from_object
        from .prior import load_prior

        scene = context.scene
        if scene.camera is None:
            raise PictureError("the scene has no camera: Set Up Camera makes one that matches the picture")
        self.started = time.perf_counter()
        self.rig, self.scene = rig, scene
        body = rig.vposer_body
        model = body.body_model()
        camera = camera_from_object(scene.camera, scene, rig)  # in the body's model space
        render_size = tuple(float(v) for v in camera.image_size)
        keypoints = read_keypoint_file(settings, (round(render_size[0]), round(render_size[1])))
        pixels, confidence, mapping = keypoint_pixels(keypoints, model, render_size)
        seen = (np.isfinite(pixels).all(-1) & (confidence > 0)).sum(1)
        self.usable = seen >= 3
        if not self.usable.any():
            raise PictureError(f"{bpy.path.abspath(settings.keypoints_path)}: no frame shows 3 or more keypoints "
                               "the body maps")
        self.source = Path(bpy.path.abspath(settings.keypoints_path)).stem or "keypoints"
        self.frames = len(pixels)
        solver = IKSolver(model, mapping.keypoints, load_prior(context, like=model))
        options = Fit2DOptions(smoothness=settings.smoothness)
        self.run = Fit2DRun(solver, camera, pixels[self.usable], confidence[self.usable], options,
                            betas=body.betas_array(), batch_size=FIT_BATCH)
        super().__init__(self.run, self.run.total)  # step(): the next frames, or a step of the temporal stage

    def poses(self) -> tuple[np.ndarray, np.ndarray, float]:
        """(T, J, 4) quaternions and (T, 3) root translations of every frame (frames with too few
        keypoints take the nearest fitted one's), and the mean reprojection error in pixels."""
        import torch

        from ..core.fit2d import fill_from_nearest
        from ..core.rotations import axis_angle_to_quaternion

        fit = self.run.result()
        poses = fit.poses.detach().cpu().double()
        quaternions = axis_angle_to_quaternion(poses.view(len(poses), -1, 3)).numpy()
        transl = fit.transl.detach().cpu().double().numpy()
        if not self.usable.all():
            quaternions, transl = fill_from_nearest(quaternions, self.usable), fill_from_nearest(transl, self.usable)
        return quaternions, transl, float(torch.as_tensor(fit.reproj_px).mean())

    def write(self, key: bool) -> str:
        """One frame: pose the body's body joints at the current frame (keyed when `key`). A sequence:
        a new action from the scene's first frame, one key per frame (the previous action kept).
        Returns the report."""
        from ..core.keypoints import NUM_BODY_JOINTS

        quaternions, transl, error = self.poses()
        rig, names = self.rig, self.rig.vposer_body.joint_names()
        seconds = time.perf_counter() - self.started
        skipped = self.frames - int(self.usable.sum())
        left = f" ({skipped} frame{'s' * (skipped > 1)} with fewer than 3 keypoints took a neighbour's pose)" \
            if skipped else ""
        if self.frames == 1:
            current, _ = bridge.get_pose(rig, names)
            solved = bridge.continuous_quaternions(np.stack([current[:NUM_BODY_JOINTS],
                                                             quaternions[0, :NUM_BODY_JOINTS]]))[1]
            bridge.set_pose(rig, names[:NUM_BODY_JOINTS], solved, transl[0])
            message = f"Fitted {rig.name} to {self.source}: mean reprojection error {error:.1f} px"
            if key:
                from .operators.pose import _key_body

                _key_body(rig, self.scene.frame_current)
                message += f"; keyed at frame {self.scene.frame_current}"
            elif rig.animation_data and rig.animation_data.action:
                message += "; not keyed, so the body's action will override it when the frame changes"
            return message
        previous = bridge.keep_current_action(rig)
        frames = self.scene.frame_start + np.arange(self.frames)
        action = bridge.write_action(rig, names, quaternions, transl, int(frames[0]), f"{self.source} on {rig.name}")
        kept = f"; the previous action '{previous.name}' is kept with a fake user" if previous else ""
        return (f"Fitted {self.frames} frames of {self.source} onto {rig.name}{left} in {seconds:.1f} s as action "
                f"'{action.name}' (frames {frames[0]}-{frames[-1]}): mean reprojection error {error:.1f} px{kept}")


def attach() -> None:
    bpy.types.Scene.vposer_pictures = bpy.props.PointerProperty(type=VPoserPictures)


def detach() -> None:
    del bpy.types.Scene.vposer_pictures


CLASSES: tuple[type, ...] = (VPoserPictures,)
