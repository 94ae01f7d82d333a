"""From Image / Video: Set Up Camera, Detect Keypoints, Fit (a picture, or a video as a new action).

The settings live on the scene (vposer_addon.pictures.VPoserPictures); the work in
vposer_addon.pictures (cameras, keypoint files, the fit job) and core (keypoints2d, fit2d,
detect2d). Fit runs as Retarget does: execute fits every frame at once with the window manager's
progress; invoke (the UI) fits one batch of frames per timer event so Blender stays responsive and
Esc cancels. Nothing in the scene changes before the last batch is fitted.
"""

from __future__ import annotations

from pathlib import Path

import bpy

from ..dependencies import core_available, missing_message
from ..pictures import PictureError, PictureFit, set_up_camera
from ..properties import active_body
from ..reporting import reports_errors
from .io import poll_body
from ..stepping import end_modal, modal_step, run_all, start_modal

DETECT_HELP = ("Install the detector extra (pip install -e '.[detect]': MediaPipe 0.10.21) into Blender's Python, "
               "or import keypoints from a JSON file")


def _poll_core(cls: type[bpy.types.Operator]) -> bool:
    if not core_available():
        cls.poll_message_set(missing_message())
        return False
    return True


class VPOSER_OT_picture_camera(bpy.types.Operator):
    """Make the scene camera (or a new one) match the picture: its size as the render size, its focal when given,
    the picture or video as the camera's background"""

    bl_idname = "vposer.picture_camera"
    bl_label = "Set Up Camera"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return _poll_core(cls)

    @reports_errors("Cannot set up the camera")
    def execute(self, context: bpy.types.Context) -> set[str]:
        camera, created, (width, height) = set_up_camera(context, context.scene.vposer_pictures, active_body(context))
        verb = "Created" if created else "Set up"
        self.report({"INFO"}, f"{verb} camera '{camera.name}' for a {width} x {height} picture (focal "
                              f"{camera.data.lens:.1f} mm on a {camera.data.sensor_width:g} mm sensor)")
        return {"FINISHED"}


class VPOSER_OT_detect_keypoints(bpy.types.Operator):
    """Detect body keypoints in the picture or video (MediaPipe, offline) and write them as JSON files beside it,
    one per frame; the Keypoints field then points at them"""

    bl_idname = "vposer.detect_keypoints"
    bl_label = "Detect Keypoints"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        if not _poll_core(cls):
            return False
        from ...core.detect2d import detector_available

        if not detector_available():
            cls.poll_message_set(DETECT_HELP)
            return False
        return True

    @reports_errors("Cannot detect keypoints")
    def execute(self, context: bpy.types.Context) -> set[str]:
        from ...core.detect2d import VIDEO_SUFFIXES, detect

        settings = context.scene.vposer_pictures
        if not settings.media_path:
            raise PictureError("choose the picture or video to detect keypoints in")
        source = Path(bpy.path.abspath(settings.media_path))
        out = source.parent / f"{source.stem}_keypoints"
        window_manager = context.window_manager
        window_manager.progress_begin(0, 1)
        try:
            summary = detect(source, out, progress=window_manager.progress_update)
        finally:
            window_manager.progress_end()
        video = source.suffix.lower() in VIDEO_SUFFIXES
        settings.keypoints_path = str(out if video else out / f"{source.stem}_000000.json")
        settings.format = "MEDIAPIPE"
        self.report({"INFO"}, f"Detected a person in {summary['frames_with_person']} of {summary['frames']} frames; "
                              f"keypoints written to {out}")
        return {"FINISHED"}


FAILURE = "Cannot fit {body} to the picture"


class VPOSER_OT_fit_picture(bpy.types.Operator):
    """Pose the body (or its bound character) so that, seen from the scene camera, it overlays the keypoints:
    a picture poses the current frame, a video (a folder of keypoint files) becomes a new action. Esc cancels"""

    bl_idname = "vposer.fit_picture"
    bl_label = "Fit"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return poll_body(cls, context, posing=True)

    @reports_errors(FAILURE)
    def execute(self, context: bpy.types.Context) -> set[str]:
        job = PictureFit(context, active_body(context), context.scene.vposer_pictures)
        run_all(context, job)
        return self._finish(context, job)

    @reports_errors(FAILURE)
    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        job = PictureFit(context, active_body(context), context.scene.vposer_pictures)
        if job.total == 1:  # one picture: a single step, no modal run
            job.step()
            return self._finish(context, job)
        return start_modal(self, context, job)

    @reports_errors(FAILURE)
    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        """One batch of frames per timer event; Esc stops before anything was written."""
        return modal_step(self, context, event, lambda: self._finish(context, self._job),
                          "Fit cancelled: the scene is unchanged")

    def cancel(self, context: bpy.types.Context) -> None:
        """Blender calls this when it ends the modal run itself (e.g. a file is loaded)."""
        end_modal(self, context)

    def _finish(self, context: bpy.types.Context, job: PictureFit) -> set[str]:
        settings = context.scene.vposer_pictures
        key = settings.insert_keyframes or context.scene.tool_settings.use_keyframe_insert_auto
        self.report({"INFO"}, job.write(key))
        return {"FINISHED"}


CLASSES: tuple[type, ...] = (VPOSER_OT_picture_camera, VPOSER_OT_detect_keypoints, VPOSER_OT_fit_picture)
