"""Pose a character: targets, Solve Pose, pins. Live Posing itself is the handler in targets.py."""

from __future__ import annotations

import bpy
import numpy as np

from ..dependencies import core_available, missing_message
from ..reporting import reports_errors
from ..character import selected_joints, target_places
from ..targets import TargetError, driven_body, mapped_targets, solve

TARGET_SIZE = 0.05  # metres: an empty's display size, about a joint's width


def _poll_posing(cls: type[bpy.types.Operator], context: bpy.types.Context) -> bool:
    """A body to pose (the active one, or the one the active target drives) in Object or Pose Mode."""
    if not core_available():
        cls.poll_message_set(missing_message())
        return False
    if driven_body(context) is None:
        cls.poll_message_set("Select a VPoser body or one of its targets (or add a body with Add Body)")
        return False
    if context.mode not in {"OBJECT", "POSE"}:
        cls.poll_message_set("Switch to Object or Pose Mode")
        return False
    return True


class VPOSER_OT_add_targets(bpy.types.Operator):
    """Add empties at the body's joints that pull the pose when moved (Solve Pose, Live Posing)"""

    bl_idname = "vposer.add_targets"
    bl_label = "Add Targets"
    bl_options = {"REGISTER", "UNDO"}

    preset: bpy.props.EnumProperty(
        name="Joints",
        items=[
            ("EFFECTORS", "Effectors", "Pelvis, head, wrists and ankles"),
            ("BODY", "All Joints", "The 22 body joints"),
            ("SELECTED", "Selected Bones", "The bones selected in Pose Mode"),
        ],
        default="EFFECTORS",
    )

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return _poll_posing(cls, context)

    @reports_errors("Cannot add targets to {body}")
    def execute(self, context: bpy.types.Context) -> set[str]:
        rig = driven_body(context)
        _require_body_joints(rig)
        if self.preset == "SELECTED" and context.mode != "POSE":
            self.report({"ERROR"}, f"'Selected Bones' takes the bones selected in Pose Mode: enter Pose Mode on {rig.name}")
            return {"CANCELLED"}
        joints = self._joints(context, rig)
        if not joints:
            self.report({"ERROR"}, f"No bones of {rig.name} are selected: select some in Pose Mode")
            return {"CANCELLED"}
        taken = {obj.vposer_target.joint for obj in mapped_targets(context.scene, rig)}
        new = [joint for joint in joints if joint not in taken]
        skipped = [joint for joint in joints if joint in taken]
        if not new:
            self.report({"WARNING"}, f"{rig.name} already has a target on each of these joints: nothing added")
            return {"CANCELLED"}

        collection = _targets_collection(context.scene, rig)
        places, offsets = target_places(context, rig, new)
        for joint, place, offset in zip(new, places, offsets):
            empty = bpy.data.objects.new(f"{rig.name}_{joint}", None)
            empty.empty_display_type = "SPHERE"
            empty.empty_display_size = TARGET_SIZE
            empty.location = place
            empty.vposer_target.body = rig
            empty.vposer_target.joint = joint
            empty.vposer_target.joint_offset = offset
            collection.objects.link(empty)

        kept = f"; skipped {', '.join(skipped)}, which already have targets" if skipped else ""
        self.report({"INFO"}, f"Added {len(new)} targets for {rig.name} in '{collection.name}'{kept}")
        return {"FINISHED"}

    def _joints(self, context: bpy.types.Context, rig: bpy.types.Object) -> list[str]:
        """The preset's joints, in model order."""
        from ...core.keypoints import EFFECTORS, NUM_BODY_JOINTS

        names = rig.vposer_body.joint_names()
        if self.preset == "EFFECTORS":
            return [name for name in EFFECTORS if name in names]
        if self.preset == "BODY":
            return names[:NUM_BODY_JOINTS]
        return selected_joints(context, rig)


def _require_body_joints(rig: bpy.types.Object) -> None:
    """Targets pull a body's joints, which the solve poses through the prior: a model without them
    (a MANO hand) is refused, whichever joints were asked for."""
    from ...core.model_files import SMPL_BODY_JOINTS

    if not set(SMPL_BODY_JOINTS) <= set(rig.vposer_body.joint_names()):
        raise TargetError(f"{rig.name} is a hand model: it has no body joints to target (Solve Pose poses the "
                          f"{len(SMPL_BODY_JOINTS)} body joints of SMPL, SMPL-H, SMPL-X or the open body)")


def _targets_collection(scene: bpy.types.Scene, rig: bpy.types.Object) -> bpy.types.Collection:
    """The collection "<body> Targets", made (and linked to the scene) on first use."""
    name = f"{rig.name} Targets"
    collection = bpy.data.collections.get(name) or bpy.data.collections.new(name)
    if collection not in tuple(scene.collection.children_recursive):
        scene.collection.children.link(collection)
    return collection


class VPOSER_OT_solve_pose(bpy.types.Operator):
    """Pose the body so its joints reach their targets, with the pose prior keeping the pose natural"""

    bl_idname = "vposer.solve_pose"
    bl_label = "Solve Pose"
    bl_options = {"REGISTER", "UNDO"}

    insert_keyframes: bpy.props.BoolProperty(
        name="Insert Keyframes",
        description="Key the solved bones at the current frame (on the body's action, or a new one)",
        default=False,
    )

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return _poll_posing(cls, context)

    @reports_errors("Cannot solve {body}")
    def execute(self, context: bpy.types.Context) -> set[str]:
        rig = driven_body(context)
        errors_mm = 1000.0 * solve(context, rig, mapped_targets(context.scene, rig))
        used = np.count_nonzero(~np.isnan(errors_mm))
        message = (f"Solved {rig.name} to {used} targets: mean error {np.nanmean(errors_mm):.1f} mm, "
                   f"max {np.nanmax(errors_mm):.1f} mm")
        frame = context.scene.frame_current
        if self.insert_keyframes:
            _key_body(rig, frame)
            message += f"; keyed at frame {frame}"
        elif rig.animation_data and rig.animation_data.action:
            message += "; not keyed, so the body's action will override it when the frame changes"
        self.report({"INFO"}, message)
        return {"FINISHED"}


def _key_body(rig: bpy.types.Object, frame: int) -> None:
    """Key the rotations of the body joints a solve writes and the root's location; keyframe_insert
    adds to the rig's action (creating one if it has none), as the user asked for keys on this frame."""
    from ...core.keypoints import NUM_BODY_JOINTS

    names = rig.vposer_body.joint_names()
    for name in names[:NUM_BODY_JOINTS]:
        rig.pose.bones[name].keyframe_insert("rotation_quaternion", frame=frame, group=name)
    rig.pose.bones[names[0]].keyframe_insert("location", frame=frame, group=names[0])


class VPOSER_OT_pin_bones(bpy.types.Operator):
    """Pin or unpin the selected bones: solving keeps a pinned joint's rotation"""

    bl_idname = "vposer.pin_bones"
    bl_label = "Pin Bones"
    bl_options = {"REGISTER", "UNDO"}

    pin: bpy.props.BoolProperty(name="Pin", description="Pin the bones, or unpin them when off", default=True)

    @classmethod
    def description(cls, _context: bpy.types.Context, properties: bpy.types.OperatorProperties) -> str:
        return ("Pin the selected bones: solving keeps their rotation" if properties.pin
                else "Unpin the selected bones: solving may turn them again")

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        if context.mode != "POSE" or driven_body(context) is None:
            cls.poll_message_set("Select bones of a VPoser body in Pose Mode")
            return False
        if not context.selected_pose_bones:
            cls.poll_message_set("Select the bones to pin or unpin")
            return False
        return True

    @reports_errors("Cannot pin bones of {body}")
    def execute(self, context: bpy.types.Context) -> set[str]:
        rig = driven_body(context)
        joints = selected_joints(context, rig)
        if not joints:
            self.report({"ERROR"}, f"None of the selected bones is a joint of {rig.name} or a bone its character maps")
            return {"CANCELLED"}
        for joint in joints:
            rig.pose.bones[joint].vposer_pinned = self.pin
        verb = "Pinned" if self.pin else "Unpinned"
        self.report({"INFO"}, f"{verb} {len(joints)} joints of {rig.name}: {', '.join(joints)}")
        return {"FINISHED"}


CLASSES: tuple[type, ...] = (VPOSER_OT_add_targets, VPOSER_OT_solve_pose, VPOSER_OT_pin_bones)
