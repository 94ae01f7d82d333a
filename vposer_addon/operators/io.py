"""AMASS-style pose files (.npz) in and out of a body's action."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import bpy
import numpy as np
from bpy_extras.io_utils import ExportHelper, ImportHelper

from .. import bridge
from ..dependencies import core_available, missing_message
from ..properties import MAX_BETAS, active_body
from ..reporting import reports_errors

if TYPE_CHECKING:
    from ...core.pose_files import PoseFileHeader


def poll_body(
    cls: type[bpy.types.Operator], context: bpy.types.Context, need_action: bool = False, posing: bool = False
) -> bool:
    """Operators on the active body need torch and a body (and, `posing`, Object or Pose Mode);
    the poll message says which is missing."""
    if not core_available():
        cls.poll_message_set(missing_message())
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

    @reports_errors("Cannot import poses onto {body}")
    def execute(self, context: bpy.types.Context) -> set[str]:
        import torch

        from ...core.pose_files import load_pose_file, read_pose_header
        from ...core.rotations import axis_angle_to_quaternion

        rig = active_body(context)
        body = rig.vposer_body
        model = body.body_model()
        _check_import_size(self.filepath, read_pose_header(self.filepath), context.scene.frame_current,
                           model.num_joints)
        sequence = load_pose_file(self.filepath)
        parts = sequence.parts_for(model.kind.pose_parts, source=self.filepath)
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

    @reports_errors("Cannot export {body}'s action")
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
        save_pose_file(self.filepath, sequence)
        self.report({"INFO"}, f"Exported {len(frames)} frames of {rig.name} to {self.filepath}")
        return {"FINISHED"}


# Memory per imported key: Blender's keyframe (a BezTriple, 72 bytes: measured 72.5 bytes per key
# for 4 million keys written as this import writes them) plus the float64 arrays the import holds
# on the way (axis-angle, quaternions, their sign-continuous copy, one curve's values).
KEY_BYTES = 72 + 32


def _check_import_size(path: str, header: PoseFileHeader, start: int, model_joints: int) -> None:
    """Refuse, before anything is read or allocated, a file whose frames would run past Blender's
    last frame or whose keys would not fit in the free memory (the size is what the file declares)."""
    from ...core.pose_files import PoseFileError
    from ...core.resources import check_memory

    last, max_frame = start + header.frames - 1, last_frame()
    if last > max_frame:
        raise PoseFileError(f"{path}: {header.frames:,} frames from frame {start:,} would end on frame {last:,}, "
                            f"past Blender's last frame {max_frame:,}: split the file (at most "
                            f"{max_frame - start + 1:,} frames fit from here)")
    curves = 4 * min(header.joints, model_joints) + 3  # a quaternion per joint, the root's location
    check_memory(header.nbytes + header.frames * curves * KEY_BYTES,
                 f"{path}: keying {header.frames:,} frames of {min(header.joints, model_joints)} joints")


def last_frame() -> int:
    """Blender's last frame (1,048,574 in Blender 4.2-5.0: the scene's frame_end cannot go beyond it)."""
    return bpy.types.Scene.bl_rna.properties["frame_end"].hard_max


CLASSES: tuple[type, ...] = (VPOSER_OT_import_poses, VPOSER_OT_export_poses)
