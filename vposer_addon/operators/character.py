"""Bind Character, Unbind, Save Map / Load Map: a user's humanoid armature bound to a VPoser body.

Binding detects the bone map (core's presets), fits the body's shape and scale to the character's
rest joints, places the body on the character, gives it the character's current pose and stores
the binding on both objects. From then on the jobs run on the body and write the character
(vposer_addon.character.drives_character).
"""

from __future__ import annotations

import time

import bpy
from bpy_extras.io_utils import ExportHelper, ImportHelper

from .. import character as binding
from ..dependencies import core_available, missing_message
from ..reporting import reports_errors


def _poll_character(cls: type[bpy.types.Operator], context: bpy.types.Context, modes: set[str]) -> bool:
    obj = context.active_object
    if not core_available():
        cls.poll_message_set(missing_message())
        return False
    if obj is None or obj.type != "ARMATURE" or obj.vposer_body.is_body:
        cls.poll_message_set("Select your character's armature (not a VPoser body)")
        return False
    if context.mode not in modes:
        cls.poll_message_set("Switch to Object Mode" if modes == {"OBJECT"} else "Switch to Object or Pose Mode")
        return False
    return True


class VPOSER_OT_bind_character(bpy.types.Operator):
    """Bind the active armature (your character) to a VPoser body: detect which bone follows which body joint,
    fit the body to the character; from then on posing, retargeting and generating key the character"""

    bl_idname = "vposer.bind_character"
    bl_label = "Bind Character"
    bl_options = {"REGISTER", "UNDO"}

    map_source: bpy.props.EnumProperty(
        name="Bone Map",
        items=[
            ("AUTO", "Detect", "Detect the bone map from the bone names"),
            ("CURRENT", "Current Map", "Keep the map shown in the Character panel (after editing it)"),
        ],
        default="AUTO",
    )

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return _poll_character(cls, context, {"OBJECT"})  # it may add a body, which needs Object Mode

    @reports_errors("Cannot bind the character")
    def execute(self, context: bpy.types.Context) -> set[str]:
        from ..character_transfer import bind

        started = time.perf_counter()
        character = context.active_object
        body = _body_to_drive(context, character)
        current = character.vposer_character.mapping() if self.map_source == "CURRENT" else None
        body, report = bind(context, character, body, current)
        for obj in context.selected_objects:
            obj.select_set(obj == character)
        character.select_set(True)
        context.view_layer.objects.active = character
        seconds = time.perf_counter() - started
        self.report({"INFO"}, f"Bound {character.name} to {body.name} in {seconds:.1f} s: {report}")
        return {"FINISHED"}


def _body_to_drive(context: bpy.types.Context, character: bpy.types.Object) -> bpy.types.Object | None:
    """The body already bound to the character, else a selected VPoser body, else None (bind makes one)."""
    bound = binding.character_body(character)
    if bound is not None:
        return bound
    bodies = [obj for obj in context.selected_objects if obj.type == "ARMATURE" and obj.vposer_body.is_body
              and binding.bound_character(obj) in (None, character)]
    return bodies[0] if len(bodies) == 1 else None


class VPOSER_OT_unbind_character(bpy.types.Operator):
    """Unbind the character: jobs act on the body again; the body, the map's keys and actions stay"""

    bl_idname = "vposer.unbind_character"
    bl_label = "Unbind"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        obj = context.active_object
        if obj is None or binding.character_body(obj) is None:
            cls.poll_message_set("Select a bound character")
            return False
        return True

    @reports_errors("Cannot unbind the character")
    def execute(self, context: bpy.types.Context) -> set[str]:
        character = context.active_object
        body = binding.character_body(character)
        character.vposer_character.body = None
        body.vposer_character.character = None
        binding.show_body(body, "SOLID")
        self.report({"INFO"}, f"Unbound {character.name} from {body.name}; its bone map is kept for the next bind")
        return {"FINISHED"}


class VPOSER_OT_save_character_map(bpy.types.Operator, ExportHelper):
    """Save the character's bone map (body joint -> bone) as JSON, to bind other characters named alike"""

    bl_idname = "vposer.save_character_map"
    bl_label = "Save Map"

    filename_ext = ".json"
    filter_glob: bpy.props.StringProperty(default="*.json", options={"HIDDEN"})

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        obj = context.active_object
        if obj is None or obj.type != "ARMATURE" or not obj.vposer_character.mapping():
            cls.poll_message_set("Select a character with a bone map (Bind Character makes one)")
            return False
        return True

    @reports_errors("Cannot save the bone map")
    def execute(self, context: bpy.types.Context) -> set[str]:
        from ..character_transfer import save_map

        settings = context.active_object.vposer_character
        mapping = settings.mapping()
        save_map(self.filepath, mapping, settings.preset)
        self.report({"INFO"}, f"Saved {len(mapping)} map entries to {self.filepath}")
        return {"FINISHED"}


class VPOSER_OT_load_character_map(bpy.types.Operator, ImportHelper):
    """Load a bone map (JSON) onto the active armature; Bind Character with 'Current Map' uses it"""

    bl_idname = "vposer.load_character_map"
    bl_label = "Load Map"
    bl_options = {"REGISTER", "UNDO"}

    filename_ext = ".json"
    filter_glob: bpy.props.StringProperty(default="*.json", options={"HIDDEN"})

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return _poll_character(cls, context, {"OBJECT", "POSE"})

    @reports_errors("Cannot load the bone map")
    def execute(self, context: bpy.types.Context) -> set[str]:
        from ..character_transfer import load_map, map_preset_name

        character = context.active_object
        mapping = load_map(self.filepath, [bone.name for bone in character.data.bones])
        character.vposer_character.set_mapping(mapping)
        character.vposer_character.preset = map_preset_name(self.filepath)
        bound = " (bind again with 'Current Map' to use it)" if binding.character_body(character) else ""
        self.report({"INFO"}, f"Loaded {len(mapping)} map entries from {self.filepath}{bound}")
        return {"FINISHED"}


def character_of_context(context: bpy.types.Context) -> bpy.types.Object | None:
    """The character shown in the Character panel: the active armature (a character or one to
    bind), or the character of the active body."""
    obj = context.active_object
    if obj is not None and obj.type != "ARMATURE" and obj.parent is not None and obj.parent.type == "ARMATURE":
        obj = obj.parent
    if obj is None or obj.type != "ARMATURE":
        return None
    if obj.vposer_body.is_body:
        return binding.bound_character(obj)
    return obj


CLASSES: tuple[type, ...] = (VPOSER_OT_bind_character, VPOSER_OT_unbind_character, VPOSER_OT_save_character_map,
                             VPOSER_OT_load_character_map)
