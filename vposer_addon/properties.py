"""What a body armature remembers about itself: the model it came from, its joints, its shape.

Shape sliders rewrite the mesh's rest coordinates and move the bones (through core), rather
than driving 16 shape keys: the betas stay the one source of truth (no keys to fall out of sync
with the sliders), the body costs no extra per-key vertex arrays in the .blend, the rest mesh is
exactly core's shaped mesh, and the bones have to be moved by Python anyway because the joints
move with the shape.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import bpy
import numpy as np

from . import bridge

if TYPE_CHECKING:
    from ..core.body_model import BodyModel

MAX_BETAS = 16
SOURCE_ITEMS = [
    ("ADULT", "Open Adult", "The shipped open adult body"),
    ("ALL_AGES", "Open All-Ages", "The shipped open all-ages body"),
    ("FILE", "Model File", "An SMPL-family .npz file"),
]
_OPEN_VARIANTS = {"ADULT": "adult", "ALL_AGES": "all_ages"}
_models: dict[str, tuple[int, dict[str, BodyModel]]] = {}  # file -> (modification time, model per device)


def load_body_model(source: str, path: str = "", device: str = "cpu") -> BodyModel:
    """The core model for a body source on `device`, read once per session and again only if the
    file changes.

    Pose correctives are left out: Blender's Armature modifier is plain LBS, and solvers should
    see the body the viewport shows. At most MAX_BETAS shape components are kept.
    Raises core's BodyModelError (a message naming the file) for a missing or malformed file.
    """
    from ..core.body_model import DATA_DIR, OPEN_BODY_VARIANTS, BodyModel
    from ..core.model_files import BodyModelError, load_model_arrays

    file = DATA_DIR / OPEN_BODY_VARIANTS[_OPEN_VARIANTS[source]] if source in _OPEN_VARIANTS else Path(path)
    key = str(file)
    modified = file.stat().st_mtime_ns if file.is_file() else -1
    cached = _models.get(key)
    if cached is None or cached[0] != modified:
        try:
            arrays = load_model_arrays(file)
        except BodyModelError as error:  # said here, as operators load the body on the way to other things
            raise BodyModelError(f"cannot load the body model file: {error}") from error
        model = BodyModel(arrays, num_betas=min(MAX_BETAS, arrays.shapedirs.shape[-1]), use_pose_correctives=False)
        cached = _models[key] = (modified, {"cpu": model})
    models = cached[1]
    if device not in models:
        models[device] = models["cpu"].to(device)
    return models[device]


def apply_shape(rig: bpy.types.Object) -> None:
    """Reshape a body to its betas: core computes the rest mesh and joints, the bridge writes them."""
    import torch

    body = rig.vposer_body
    model = body.body_model()
    betas = torch.as_tensor(body.betas_array()[None], dtype=model.dtype)
    with torch.no_grad():
        vertices = model.shaped_vertices(betas)[0].numpy()
        joints = model.rest_joints(betas)[0].numpy()
    bridge.set_rest_shape(rig, body.mesh, body.joint_names(), model.parents.numpy(), joints, vertices)
    body.applied_betas = body.betas


def _betas_changed(self: VPoserBody, _context: bpy.types.Context) -> None:
    # Blender calls this twice for one `betas[i] = x` from Python; reshaping is the costly part.
    if not (self.is_body and self.mesh) or tuple(self.betas) == tuple(self.applied_betas):
        return
    try:
        apply_shape(self.id_data)
    except (ImportError, ValueError, RuntimeError) as error:  # no torch; BodyModelError; a refused mode change
        print(f"VPoser: could not reshape {self.id_data.name}: {error}")  # update callbacks cannot report


class VPoserJoint(bpy.types.PropertyGroup):
    """One model joint; its name is the bone's name."""


class VPoserBody(bpy.types.PropertyGroup):
    """Set on a body's armature object by 'Add Body'."""

    is_body: bpy.props.BoolProperty(name="Is VPoser Body", default=False)
    source: bpy.props.EnumProperty(name="Model", items=SOURCE_ITEMS, default="ADULT")
    model_path: bpy.props.StringProperty(name="Model File", subtype="FILE_PATH")
    joints: bpy.props.CollectionProperty(type=VPoserJoint, description="Joints in the model's order")
    num_betas: bpy.props.IntProperty(name="Shape Components", min=0, max=MAX_BETAS)
    betas: bpy.props.FloatVectorProperty(
        name="Shape",
        description="Shape coefficients (betas); the mesh and bones follow as you drag",
        size=MAX_BETAS,
        soft_min=-5.0,
        soft_max=5.0,
        min=-10.0,
        max=10.0,
        update=_betas_changed,
    )
    applied_betas: bpy.props.FloatVectorProperty(size=MAX_BETAS, options={"HIDDEN"})  # what the mesh shows
    mesh: bpy.props.PointerProperty(name="Mesh", type=bpy.types.Object, description="The skinned body mesh")

    def joint_names(self) -> list[str]:
        return [joint.name for joint in self.joints]

    def body_model(self, device: str = "cpu") -> BodyModel:
        return load_body_model(self.source, self.model_path, device)

    def model_file_missing(self) -> bool:
        return self.source == "FILE" and not os.path.isfile(self.model_path)

    def betas_array(self) -> np.ndarray:
        return np.array(self.betas[: self.num_betas], dtype=np.float64)


def active_body(context: bpy.types.Context) -> bpy.types.Object | None:
    """The body armature of the active object (the armature itself or its mesh, or the character
    it is bound to: jobs on a character run on its body), if any."""
    obj = context.active_object
    if obj is not None and not obj.vposer_body.is_body and obj.vposer_character.body is None and obj.parent is not None:
        obj = obj.parent
    if obj is not None and obj.vposer_character.body is not None:
        obj = obj.vposer_character.body
    return obj if obj is not None and obj.vposer_body.is_body else None


def attach() -> None:
    bpy.types.Object.vposer_body = bpy.props.PointerProperty(type=VPoserBody)


def detach() -> None:
    del bpy.types.Object.vposer_body


CLASSES: tuple[type, ...] = (VPoserJoint, VPoserBody)
