"""The 3D View sidebar tab "VPoser"."""

from __future__ import annotations

import bpy

from .dependencies import TORCH_MISSING_HELP, torch_available


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
            return
        layout.label(text="Body, posing and retargeting tools arrive here.")


CLASSES: tuple[type, ...] = (VPOSER_PT_main,)
