"""The 3D View sidebar tab "VPoser"."""

from __future__ import annotations

import bpy

from .dependencies import MISSING_HELP, core_available, missing_phrase
from .properties import SOURCE_ITEMS, active_body
from .targets import driven_body, mapped_targets, pinned_joints

_SOURCE_NAMES = {identifier: name for identifier, name, _ in SOURCE_ITEMS}


class VPOSER_PT_main(bpy.types.Panel):
    bl_label = "VPoser"
    bl_idname = "VPOSER_PT_main"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "VPoser"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        if not core_available():
            box = layout.box()
            box.label(text=missing_phrase(), icon="ERROR")
            for line in MISSING_HELP:
                box.label(text=line)


class _VPoserSubPanel:
    """A section of the VPoser tab; hidden without PyTorch (the main panel says how to get it)."""

    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "VPoser"
    bl_parent_id = "VPOSER_PT_main"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return core_available()


class VPOSER_PT_body(_VPoserSubPanel, bpy.types.Panel):
    bl_label = "Body"
    bl_idname = "VPOSER_PT_body"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        layout.operator("vposer.add_body", icon="OUTLINER_OB_ARMATURE")
        rig = active_body(context)
        if rig is None:
            layout.label(text="Select a body to shape or animate it")
            return
        body = rig.vposer_body
        source = bpy.path.basename(body.model_path) if body.source == "FILE" else _SOURCE_NAMES[body.source]
        layout.label(text=f"{rig.name}: {source}", icon="ARMATURE_DATA")
        if body.model_file_missing():
            layout.label(text=f"Model file not found: {body.model_path}", icon="ERROR")
        elif body.num_betas:
            column = layout.column(align=True)
            column.enabled = context.mode in {"OBJECT", "POSE"}
            for index in range(body.num_betas):
                column.prop(body, "betas", index=index, text=f"Shape {index + 1}")
            if not column.enabled:
                layout.label(text="Shape sliders work in Object or Pose Mode", icon="INFO")
        _draw_snap_to_floor(layout, context)
        row = layout.row(align=True)
        row.operator("vposer.import_poses", icon="IMPORT")
        row.operator("vposer.export_poses", icon="EXPORT")


class VPOSER_PT_pose(_VPoserSubPanel, bpy.types.Panel):
    bl_label = "Pose"
    bl_idname = "VPOSER_PT_pose"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        layout.operator_menu_enum("vposer.add_targets", "preset", text="Add Targets", icon="EMPTY_AXIS")
        row = layout.row(align=True)
        row.operator("vposer.solve_pose", icon="ARMATURE_DATA")
        row.operator("vposer.solve_pose", text="Solve & Key", icon="KEY_HLT").insert_keyframes = True
        layout.prop(context.scene, "vposer_live", toggle=True, icon="PLAY")
        rig = driven_body(context)
        if rig is None:
            layout.label(text="Select a body or one of its targets")
        else:
            count, pins = len(mapped_targets(context.scene, rig)), len(pinned_joints(rig))
            layout.label(text=f"{rig.name}: {count} targets, {pins} pinned joints", icon="ARMATURE_DATA")
        if context.mode == "POSE":
            row = layout.row(align=True)
            row.operator("vposer.pin_bones", text="Pin", icon="PINNED").pin = True
            row.operator("vposer.pin_bones", text="Unpin", icon="UNPINNED").pin = False
        _draw_hands(layout, context)
        obj = context.active_object
        if obj is not None and (obj.type == "EMPTY" or obj.vposer_target.body):
            target = obj.vposer_target
            box = layout.box()
            box.label(text=f"Target: {obj.name}", icon="EMPTY_AXIS")
            box.prop(target, "body")
            row = box.row()
            row.enabled = target.body is not None
            row.prop(target, "joint")
            box.prop(target, "weight")


def _draw_snap_to_floor(layout: bpy.types.UILayout, context: bpy.types.Context) -> None:
    """Snap to Floor with its last-used frames and floor (the button runs with what is shown)."""
    snap = context.window_manager.operator_properties_last("vposer.snap_to_floor")
    row = layout.row(align=True)
    row.prop(snap, "mode", text="")
    row.prop(snap, "floor", text="")
    button = layout.operator("vposer.snap_to_floor", icon="SNAP_FACE")
    button.mode, button.floor = snap.mode, snap.floor


def _draw_hands(layout: bpy.types.UILayout, context: bpy.types.Context) -> None:
    """Set Hand Pose: one button per pose, with the operator's last-used side and keying (greyed
    out, with the operator's poll message as tooltip, for bodies without finger joints)."""
    hand = context.window_manager.operator_properties_last("vposer.set_hand_pose")
    box = layout.box()
    box.label(text="Hands", icon="HAND")
    box.row().prop(hand, "side", expand=True)
    row = box.row(align=True)
    for item in hand.bl_rna.properties["pose"].enum_items:
        button = row.operator("vposer.set_hand_pose", text=item.name)
        button.pose, button.side, button.insert_keyframe = item.identifier, hand.side, hand.insert_keyframe
    box.prop(hand, "insert_keyframe")


class VPOSER_PT_retarget(_VPoserSubPanel, bpy.types.Panel):
    bl_label = "Retarget"
    bl_idname = "VPOSER_PT_retarget"

    def draw(self, context: bpy.types.Context) -> None:
        """Import buttons for either kind of source, then the Retarget operator's last-used settings
        (as the Generate panel shows its operators'): the button runs with what is shown here."""
        from .operators.retarget import PRESET_ITEMS, preset_unit_scale, source_armatures

        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        retarget = context.window_manager.operator_properties_last("vposer.retarget")
        scale = preset_unit_scale(retarget.preset)
        row = layout.row(align=True)
        bvh = row.operator("import_anim.bvh", text="Import BVH", icon="IMPORT")
        bvh.global_scale = scale or 1.0
        bvh.update_scene_fps = bvh.update_scene_duration = True
        row.operator("vposer.import_c3d", text="Import C3D", icon="IMPORT")
        preset_name = next(name for identifier, name, _ in PRESET_ITEMS if identifier == retarget.preset)
        layout.label(text=f"BVH Scale: {scale:g} for {preset_name} files" if scale
                     else "BVH Scale: metres per unit of the file", icon="INFO")

        layout.prop(retarget, "source", expand=True)
        rig = active_body(context)
        if retarget.source == "ARMATURE":
            layout.prop(retarget, "preset")
            if retarget.preset == "CUSTOM":
                layout.prop(retarget, "preset_path")
            armatures = source_armatures(context, rig) if rig else []
            if len(armatures) == 1:
                layout.label(text=f"From {armatures[0].name}", icon="ARMATURE_DATA")
            else:
                layout.label(text="Select the mocap armature, then the body", icon="RESTRICT_SELECT_OFF")
        else:
            layout.prop_search(retarget, "marker_collection", bpy.data, "collections")
            layout.prop(retarget, "layout_path")
            layout.prop_search(retarget, "calibration_action", bpy.data, "actions")
            if not retarget.calibration_action:
                layout.prop(retarget, "calibrate_markers")
        layout.prop(retarget, "use_scene_range")
        layout.prop(retarget, "fit_shape")
        if rig is not None and rig.vposer_character.character is not None:  # a bound character's body
            layout.prop(retarget, "foot_lock")
        layout.operator("vposer.retarget", icon="ARMATURE_DATA")


class VPOSER_PT_generate(_VPoserSubPanel, bpy.types.Panel):
    bl_label = "Generate"
    bl_idname = "VPOSER_PT_generate"

    def draw(self, context: bpy.types.Context) -> None:
        """The fields are each operator's last-used settings (Blender's own pattern for tool
        settings): the buttons run with what is shown here, and the redo panel edits the same."""
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        window_manager = context.window_manager

        sample = window_manager.operator_properties_last("vposer.sample_poses")
        column = layout.column(align=True)
        for name in ("count", "spacing", "seed", "temperature"):
            column.prop(sample, name)
        layout.prop(sample, "keep_root")
        layout.operator("vposer.sample_poses", icon="RNDCURVE")

        layout.separator()
        fill = window_manager.operator_properties_last("vposer.inbetweens")
        layout.prop(fill, "use_frames")
        column = layout.column(align=True)
        column.enabled = fill.use_frames
        column.prop(fill, "frame_a")
        column.prop(fill, "frame_b")
        layout.prop(fill, "replace_existing")
        layout.operator("vposer.inbetweens", icon="IPO_EASE_IN_OUT")


class VPOSER_PT_pictures(_VPoserSubPanel, bpy.types.Panel):
    bl_label = "From Image / Video"
    bl_idname = "VPOSER_PT_pictures"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context: bpy.types.Context) -> None:
        """The picture and its camera, where the keypoints come from (a detector greyed out with the
        install help as its tooltip when the extra is missing), then Fit."""
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        settings = context.scene.vposer_pictures
        layout.prop(settings, "media_path")
        layout.prop(settings, "camera")
        layout.prop(settings, "focal")
        layout.operator("vposer.picture_camera", icon="CAMERA_DATA")
        layout.separator()
        layout.operator("vposer.detect_keypoints", icon="VIEWZOOM")
        layout.prop(settings, "keypoints_path")
        layout.prop(settings, "format")
        row = layout.row(align=True)
        row.prop(settings, "person")
        if settings.person == "INDEX":
            row.prop(settings, "person_index", text="")
        layout.prop(settings, "smoothness")
        layout.prop(settings, "insert_keyframes")
        if context.scene.camera is None:
            layout.label(text="The scene has no camera: Set Up Camera", icon="INFO")
        layout.operator("vposer.fit_picture", icon="ARMATURE_DATA")


CLASSES: tuple[type, ...] = (VPOSER_PT_main, VPOSER_PT_body, VPOSER_PT_pose, VPOSER_PT_retarget, VPOSER_PT_generate,
                             VPOSER_PT_pictures)
