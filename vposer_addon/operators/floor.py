"""Snap to Floor: stand a posed or animated body on the floor by its lowest foot point, at the
current frame, frame by frame, or for the whole clip with one vertical offset (no sliding).

The operator reads the pose (or the action at its keyed frames), core.floor finds each frame's
lowest foot vertex and the root shifts, and the bridge moves only the root bone's location on the
axes that point up (the body's Y for an upright body), in place.
"""

from __future__ import annotations

import bpy
import numpy as np

from ...core.floor import FOOT_JOINTS, has_feet
from .. import bridge
from ..properties import active_body
from ..reporting import reports_errors
from .io import poll_body


class VPOSER_OT_snap_to_floor(bpy.types.Operator):
    """Stand the active body on the floor: its lowest foot point (sole or toes) at the floor's
    height, by moving the body's root straight up or down"""

    bl_idname = "vposer.snap_to_floor"
    bl_label = "Snap to Floor"
    bl_options = {"REGISTER", "UNDO"}

    mode: bpy.props.EnumProperty(
        name="Frames",
        items=[
            ("CURRENT", "Current Frame",
             "The pose at the current frame (keyed there when the root's height is animated)"),
            ("FRAMES", "Every Frame", "Each keyed frame of the action on its own: the feet touch the floor on every "
             "frame (jumps are flattened)"),
            ("CLIP", "Whole Clip", "One vertical offset for the whole action: its lowest frame touches the floor, "
             "the others keep their heights above it (no sliding)"),
        ],
        default="CURRENT",
    )
    floor: bpy.props.EnumProperty(
        name="Floor",
        items=[("GROUND", "Ground", "The scene's ground plane, Z = 0"),
               ("CURSOR", "3D Cursor", "A floor at the height of the 3D cursor")],
        default="GROUND",
    )

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        if not poll_body(cls, context, posing=True):
            return False
        rig = active_body(context)
        if not has_feet(rig.vposer_body.joint_names()):
            cls.poll_message_set(f"{rig.name} has no feet to stand on (a hand model): Snap to Floor needs the "
                                 f"{', '.join(FOOT_JOINTS)} joints")
            return False
        return True

    @reports_errors("Cannot snap {body} to the floor")
    def execute(self, context: bpy.types.Context) -> set[str]:
        import torch

        from ...core.floor import floor_offsets, lowest_foot_heights, root_shifts
        from ...core.rotations import quaternion_to_matrix

        rig = active_body(context)
        body = rig.vposer_body
        names = body.joint_names()
        frames = self._frames(context, rig, names)
        if frames is None:
            return {"CANCELLED"}
        if self.mode == "CURRENT":
            quaternions, location = bridge.get_pose(rig, names)
            quaternions, locations = quaternions[None], location[None]
        else:
            quaternions, locations = bridge.read_action(rig, names, frames)
        model = body.body_model()
        matrix = np.array(rig.matrix_world)
        quaternions = quaternions / np.linalg.norm(quaternions, axis=-1, keepdims=True)  # curves may be hand-edited
        lowest = lowest_foot_heights(
            model,
            quaternion_to_matrix(torch.from_numpy(quaternions)).to(model.dtype),
            torch.from_numpy(locations).to(model.dtype),
            matrix,
            betas=torch.from_numpy(body.betas_array()[None]).to(model.dtype) if body.num_betas else None,
        )
        if not np.isfinite(lowest).all():
            self.report({"ERROR"}, f"{rig.name}'s pose is not finite on frame {frames[~np.isfinite(lowest)][0]:g} "
                                   "(a zero or broken rotation key): nothing was moved")
            return {"CANCELLED"}
        height = context.scene.cursor.location.z if self.floor == "CURSOR" else 0.0
        offsets = floor_offsets(lowest, height, whole_clip=self.mode == "CLIP")
        axes, moved, added = bridge.shift_location(
            rig, names[0], frames, root_shifts(offsets, matrix), whole_clip=self.mode == "CLIP"
        )
        self.report({"INFO"}, _summary(rig.name, names[0], height, offsets, axes, moved, added))
        return {"FINISHED"}

    def _frames(self, context: bpy.types.Context, rig: bpy.types.Object, names: list[str]) -> np.ndarray | None:
        """The frames to stand on the floor (the current one, or the action's keyed frames), or None
        once the operator has said why there are none."""
        if self.mode == "CURRENT":
            return np.array([float(context.scene.frame_current)])
        frames = bridge.keyed_frames(rig, names).astype(np.float64)
        if not frames.size:
            self.report({"ERROR"}, f"{rig.name} has no keyed pose: Every Frame and Whole Clip stand its action "
                                   "on the floor (use Current Frame for the pose as it is)")
            return None
        return frames


def _summary(name: str, bone: str, height: float, offsets: np.ndarray, axes: list[int], moved: int,
             added: int) -> str:
    """What moved, and which keys changed, for the status bar."""
    if len(offsets) == 1 or np.ptp(offsets) < 1e-9:
        how = f"moved {1000 * offsets[0]:+.1f} mm"
    else:
        how = f"moved {1000 * offsets.min():+.1f} to {1000 * offsets.max():+.1f} mm over {len(offsets)} frames"
    channels = "/".join("XYZ"[axis] for axis in axes) or "no"
    keys = f"; {moved} {bone} {channels} location keys changed in place, {added} added" if moved or added else ""
    return f"{name} stands on the floor at Z = {height:.3f} m: {how}{keys} (no other channel changed)"


CLASSES: tuple[type, ...] = (VPOSER_OT_snap_to_floor,)
