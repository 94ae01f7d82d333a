"""The 3D View sidebar tab "VPoser"."""

from __future__ import annotations

import bpy

from .dependencies import TORCH_MISSING_HELP, torch_available
from .properties import SOURCE_ITEMS, active_body

_SOURCE_NAMES = {identifier: name for identifier, name, _ in SOURCE_ITEMS}


class VPOSER_PT_main(bpy.types.Panel):
    bl_label = "VPoser"
    bl_idname = "VPOSER_PT_main"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "VPoser"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        if not torch_available():
            box = layout.box()
            box.label(text="PyTorch is missing", icon="ERROR")
            for line in TORCH_MISSING_HELP.split(". "):
                box.label(text=line)


class VPOSER_PT_body(bpy.types.Panel):
    bl_label = "Body"
    bl_idname = "VPOSER_PT_body"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "VPoser"
    bl_parent_id = "VPOSER_PT_main"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return torch_available()

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
        row = layout.row(align=True)
        row.operator("vposer.import_poses", icon="IMPORT")
        row.operator("vposer.export_poses", icon="EXPORT")


CLASSES: tuple[type, ...] = (VPOSER_PT_main, VPOSER_PT_body)
