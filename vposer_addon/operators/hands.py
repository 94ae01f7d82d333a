"""Set Hand Pose: one of core's named hand poses (flat, relaxed, fist, point) on the body's left,
right or both hands, optionally keyed at the current frame."""

from __future__ import annotations

import bpy
import numpy as np

from ...core.hand_poses import hand_poses
from ...core.model_files import LEFT_HAND_JOINTS, RIGHT_HAND_JOINTS
from ..properties import active_body
from ..reporting import reports_errors
from .io import poll_body

_POSE_ITEMS = [(name.upper(), name.title(), description) for name, (description, _) in hand_poses().items()]
_SIDES = {"LEFT": ("left",), "RIGHT": ("right",), "BOTH": ("left", "right")}


def has_finger_joints(rig: bpy.types.Object) -> bool:
    """Whether the body has SMPL-H's finger joints on both hands (SMPL-H, SMPL-X, the open bodies)."""
    return set(LEFT_HAND_JOINTS + RIGHT_HAND_JOINTS) <= set(rig.vposer_body.joint_names())


class VPOSER_OT_set_hand_pose(bpy.types.Operator):
    """Pose the fingers of the active body's hands: flat, relaxed, fist or point"""

    bl_idname = "vposer.set_hand_pose"
    bl_label = "Set Hand Pose"
    bl_options = {"REGISTER", "UNDO"}

    pose: bpy.props.EnumProperty(name="Pose", items=_POSE_ITEMS, default=_POSE_ITEMS[0][0])
    side: bpy.props.EnumProperty(
        name="Hands",
        items=[("LEFT", "Left", "The body's left hand"), ("RIGHT", "Right", "The body's right hand"),
               ("BOTH", "Both", "Both hands (the right one mirrors the left)")],
        default="BOTH",
    )
    insert_keyframe: bpy.props.BoolProperty(
        name="Insert Keyframe",
        description="Also key the finger rotations at the current frame (off: only pose them; "
        "an action that animates the fingers sets them back when the frame changes)",
        default=False,
    )

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        if not poll_body(cls, context, posing=True):
            return False
        rig = active_body(context)
        if not has_finger_joints(rig):
            cls.poll_message_set(f"{rig.name} has no finger joints: hand poses need an SMPL-H or SMPL-X "
                                 "layout (the open bodies have one)")
            return False
        return True

    @reports_errors("Cannot set the hand pose of {body}")
    def execute(self, context: bpy.types.Context) -> set[str]:
        import torch

        from ...core.hand_poses import hand_joint_names, hand_pose
        from ...core.rotations import axis_angle_to_quaternion

        rig = active_body(context)
        pose_bones = rig.pose.bones
        frame = context.scene.frame_current
        for side in _SIDES[self.side]:
            quaternions = axis_angle_to_quaternion(torch.from_numpy(hand_pose(self.pose.lower(), side))).numpy()
            for name, quaternion in zip(hand_joint_names(side), quaternions):
                pose_bone = pose_bones[name]
                pose_bone.rotation_quaternion = _same_hemisphere(quaternion, pose_bone.rotation_quaternion)
                if self.insert_keyframe:
                    pose_bone.keyframe_insert("rotation_quaternion", frame=frame, group=name)
        hands = {"LEFT": "left hand", "RIGHT": "right hand", "BOTH": "hands"}[self.side]
        keyed = f", keyed at frame {frame}" if self.insert_keyframe else ""
        self.report({"INFO"}, f"{rig.name}: {self.pose.lower()} {hands}{keyed}")
        return {"FINISHED"}


def _same_hemisphere(quaternion: np.ndarray, current: object) -> np.ndarray:
    """q or -q (the same rotation), whichever lies nearer the bone's current value, so keys
    interpolate the short way from the previous ones."""
    return quaternion if float(np.dot(quaternion, np.asarray(current))) >= 0 else -quaternion


CLASSES: tuple[type, ...] = (VPOSER_OT_set_hand_pose,)
