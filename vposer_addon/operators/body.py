"""Add Body: a skinned body (armature + mesh) from the open default or the user's model file,
standing on the 3D cursor."""

from __future__ import annotations

from typing import TYPE_CHECKING

import bpy
import numpy as np
from mathutils import Matrix, Vector

from .. import bridge
from ..dependencies import core_available, missing_message
from ..preferences import get_preferences
from ..properties import load_body_model
from ..reporting import reports_errors

if TYPE_CHECKING:
    from ...core.body_model import BodyModel


class VPOSER_OT_add_body(bpy.types.Operator):
    """Add a body: an armature with one bone per model joint and the skinned mesh"""

    bl_idname = "vposer.add_body"
    bl_label = "Add Body"
    bl_options = {"REGISTER", "UNDO"}

    source: bpy.props.EnumProperty(
        name="Model",
        items=[
            ("DEFAULT", "Preferences Default", "The default body chosen in the extension preferences"),
            ("ADULT", "Open Adult", "The shipped open adult body"),
            ("ALL_AGES", "Open All-Ages", "The shipped open body covering children to elders"),
            ("USER_FILE", "User Model File", "The SMPL / SMPL-H / SMPL-X .npz set in the extension preferences"),
        ],
        default="DEFAULT",
    )
    name: bpy.props.StringProperty(name="Name", default="Body")

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        if not core_available():
            cls.poll_message_set(missing_message())
            return False
        if context.mode != "OBJECT":
            cls.poll_message_set("Switch to Object Mode to add a body")
            return False
        return True

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        return context.window_manager.invoke_props_dialog(self, confirm_text="Add")

    @reports_errors("Cannot add a body")
    def execute(self, context: bpy.types.Context) -> set[str]:
        source, path = self._resolve_source(context)
        if source == "FILE" and not path:
            self.report({"ERROR"}, "No model file is set: choose one in the VPoser extension preferences")
            return {"CANCELLED"}
        model = load_body_model(source, path)  # everything that can fail happens before the scene changes

        collection = context.view_layer.active_layer_collection.collection
        rest = _rest_body(model)
        rig, skin = bridge.create_body(collection, self.name, rest)
        rig.location = _standing_location(context.scene.cursor.location, rest.vertices)
        body = rig.vposer_body
        body.is_body = True
        body.source = source
        body.model_path = path
        body.num_betas = model.num_betas
        body.mesh = skin
        for joint_name in model.joint_names:
            body.joints.add().name = joint_name

        for obj in context.selected_objects:
            obj.select_set(False)
        rig.select_set(True)
        context.view_layer.objects.active = rig
        self.report({"INFO"}, f"Added {rig.name}: {model.num_joints} joints, {model.num_vertices} vertices")
        return {"FINISHED"}

    def _resolve_source(self, context: bpy.types.Context) -> tuple[str, str]:
        """(source as stored on the body, absolute model path or '')."""
        preferences = get_preferences(context)
        choice = self.source
        if choice == "DEFAULT":
            choice = preferences.default_body if preferences else "ADULT"
        if choice == "USER_FILE":
            return "FILE", bpy.path.abspath(preferences.model_path) if preferences else ""
        return choice, ""


def _standing_location(cursor: Vector, vertices: np.ndarray) -> Vector:
    """Where the rig goes so its rest mesh stands on the 3D cursor: the lowest point (the soles;
    for a hand model, the hand's underside) at the cursor's height, the model's origin above the
    cursor (a body's pelvis, a hand's wrist side)."""
    from ...core.floor import lowest_heights

    at_cursor = Matrix.Translation(cursor) @ bridge.Y_UP_TO_Z_UP
    return cursor + Vector((0.0, 0.0, cursor.z - float(lowest_heights(vertices, np.array(at_cursor)))))


def _rest_body(model: BodyModel) -> bridge.BodyArrays:
    """The model at zero shape, as the numpy arrays the bridge builds from."""
    import torch

    with torch.no_grad():
        return bridge.BodyArrays(
            joint_names=list(model.joint_names),
            parents=model.parents.numpy(),
            rest_joints=model.rest_joints()[0].numpy(),
            vertices=model.shaped_vertices()[0].numpy(),
            faces=model.faces.numpy(),
            weights=model.weights.numpy(),
        )


CLASSES: tuple[type, ...] = (VPOSER_OT_add_body,)
