"""AMASS-style pose files (.npz) in and out of a body's action."""

from __future__ import annotations

from pathlib import Path

import bpy
import numpy as np
from bpy_extras.io_utils import ExportHelper, ImportHelper

from .. import bridge
from ..dependencies import torch_available
from ..properties import MAX_BETAS, active_body


def poll_body(
    cls: type[bpy.types.Operator], context: bpy.types.Context, need_action: bool = False, posing: bool = False
) -> bool:
    """Operators on the active body need torch and a body (and, `posing`, Object or Pose Mode);
    the poll message says which is missing."""
    if not torch_available():
        cls.poll_message_set("PyTorch is missing: the VPoser tab says how to install it")
        return False
    rig = active_body(context)
    if rig is None:
        cls.poll_message_set("Select a VPoser body (or add one with Add Body)")
        return False
    if need_action and not (rig.animation_data and rig.animation_data.action):
        cls.poll_message_set("The body has no action to export")
        return False
    if posing and context.mode not in {"OBJECT", "POSE"}:
        cls.poll_message_set("Switch to Object or Pose Mode")
        return False
    return True


class VPOSER_OT_import_poses(bpy.types.Operator, ImportHelper):
    """Key an AMASS-style pose file onto the active body as a new action, from the current frame on"""

    bl_idname = "vposer.import_poses"
    bl_label = "Import Poses"
    bl_options = {"REGISTER", "UNDO"}

    filename_ext = ".npz"
    filter_glob: bpy.props.StringProperty(default="*.npz", options={"HIDDEN"})
    set_scene_fps: bpy.props.BoolProperty(
        name="Set Scene Frame Rate",
        description="Set the scene's frame rate to the file's, so the clip plays at its recorded speed",
        default=True,
    )
    use_betas: bpy.props.BoolProperty(
        name="Use File Shape",
        description="Also set the body's shape from the file's betas (meaningful only for the file's own model)",
        default=False,
    )

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return poll_body(cls, context)

    def execute(self, context: bpy.types.Context) -> set[str]:
        import torch

        from ...core.model_files import BodyModelError
        from ...core.pose_files import PoseFileError, load_pose_file
        from ...core.rotations import axis_angle_to_quaternion

        rig = active_body(context)
        body = rig.vposer_body
        try:
            sequence = load_pose_file(self.filepath)
            parts = sequence.parts_for(body.body_model().kind.pose_parts, source=self.filepath)
        except (PoseFileError, BodyModelError) as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        # The parts a file covers are a prefix of the model's joints (e.g. SMPL-H body without hands).
        num_joints = sum(part.shape[1] for part in parts.values()) // 3
        joint_names = body.joint_names()[:num_joints]
        axis_angles = torch.from_numpy(sequence.poses[:, : 3 * num_joints].reshape(sequence.num_frames, num_joints, 3))
        quaternions = axis_angle_to_quaternion(axis_angles).numpy()

        previous = bridge.keep_current_action(rig)
        action = bridge.write_action(
            rig, joint_names, quaternions, sequence.trans, context.scene.frame_current, Path(self.filepath).stem
        )
        if self.use_betas and sequence.betas.size:
            betas = np.zeros(MAX_BETAS)
            count = min(body.num_betas, sequence.betas.size)
            betas[:count] = sequence.betas[:count]
            body.betas = betas  # one assignment, one reshape
        if self.set_scene_fps:
            bridge.set_scene_frame_rate(context.scene, sequence.framerate)

        kept = f"; the previous action '{previous.name}' is kept with a fake user" if previous else ""
        self.report(
            {"INFO"},
            f"Imported {sequence.num_frames} frames ({sequence.framerate:g} fps) of {num_joints} joints "
            f"as action '{action.name}'{kept}",
        )
        return {"FINISHED"}


class VPOSER_OT_export_poses(bpy.types.Operator, ExportHelper):
    """Write the active body's action to an AMASS-style pose file (axis-angle per joint, root translation)"""

    bl_idname = "vposer.export_poses"
    bl_label = "Export Poses"

    filename_ext = ".npz"
    filter_glob: bpy.props.StringProperty(default="*.npz", options={"HIDDEN"})

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return poll_body(cls, context, need_action=True)

    def execute(self, context: bpy.types.Context) -> set[str]:
        import torch

        from ...core.pose_files import PoseSequence, save_pose_file
        from ...core.rotations import quaternion_to_axis_angle

        rig = active_body(context)
        body = rig.vposer_body
        start, end = rig.animation_data.action.frame_range
        frames = np.arange(round(start), round(end) + 1)
        quaternions, translations = bridge.read_action(rig, body.joint_names(), frames)
        quaternions /= np.linalg.norm(quaternions, axis=-1, keepdims=True)  # curves may be hand-edited
        poses = quaternion_to_axis_angle(torch.from_numpy(quaternions)).reshape(len(frames), -1).numpy()
        sequence = PoseSequence(poses=poses, trans=translations, betas=body.betas_array(),
                                framerate=bridge.scene_frame_rate(context.scene))
        try:
            save_pose_file(self.filepath, sequence)
        except OSError as error:
            self.report({"ERROR"}, f"Cannot write {self.filepath}: {error}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"Exported {len(frames)} frames of {rig.name} to {self.filepath}")
        return {"FINISHED"}


CLASSES: tuple[type, ...] = (VPOSER_OT_import_poses, VPOSER_OT_export_poses)
