"""The Character section of the VPoser tab: bind a character, its bone map, the body's display."""

from __future__ import annotations

import bpy

from .character import character_body
from .operators.character import character_of_context
from .panels import _VPoserSubPanel


class VPOSER_UL_character_map(bpy.types.UIList):
    """Body joint -> character bone, the bone picked with a search over the armature's bones."""

    def draw_item(self, context: bpy.types.Context, layout: bpy.types.UILayout, data: bpy.types.AnyType,
                  item: bpy.types.AnyType, icon: int, active_data: bpy.types.AnyType, active_property: str,
                  index: int = 0, flt_flag: int = 0) -> None:
        character = data.id_data
        row = layout.row(align=True)
        row.label(text=item.name)
        row.prop_search(item, "bone", character.data, "bones", text="", icon="BONE_DATA")


class VPOSER_PT_character(_VPoserSubPanel, bpy.types.Panel):
    bl_label = "Character"
    bl_idname = "VPOSER_PT_character"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        character = character_of_context(context)
        if character is None:
            layout.label(text="Select your character's armature to bind it")
            return
        settings = character.vposer_character
        body = character_body(character)
        row = layout.row(align=True)
        row.operator("vposer.bind_character", icon="LINKED").map_source = "AUTO"
        if body is not None:
            row.operator("vposer.unbind_character", icon="UNLINKED")
            layout.label(text=f"{character.name} drives {body.name} ({settings.preset or 'custom'} map)",
                         icon="ARMATURE_DATA")
            layout.prop(settings, "body_display", expand=True)
        else:
            layout.label(text=f"{character.name} is not bound", icon="INFO")
        if len(settings.bones):
            layout.template_list("VPOSER_UL_character_map", "", settings, "bones", settings, "active_bone", rows=6)
            layout.operator("vposer.bind_character", text="Bind with This Map", icon="FILE_REFRESH").map_source = (
                "CURRENT")
        row = layout.row(align=True)
        row.operator("vposer.save_character_map", icon="EXPORT")
        row.operator("vposer.load_character_map", icon="IMPORT")


CLASSES: tuple[type, ...] = (VPOSER_UL_character_map, VPOSER_PT_character)
