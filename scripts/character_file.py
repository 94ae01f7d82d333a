"""The headless Blender half of `scripts/retarget.py --character`: a character armature read from a
.blend (the first armature, or FILE.blend:ARMATURE), an .fbx or a .glb/.gltf, through the bpy
module, as a core CharacterSkeleton (bone matrix_local, tails and parents in armature space, the
object's world matrix, the scene's unit scale).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import numpy as np

from core.character import CharacterSkeleton

SUFFIXES = (".blend", ".fbx", ".glb", ".gltf")
_SPEC = re.compile(r"^(?P<path>.*?\.(?:blend|fbx|glb|gltf))(?::(?P<armature>.+))?$", re.IGNORECASE)


def is_armature_file(spec: str | Path) -> bool:
    """Whether --character names a file read through Blender (FILE.blend[:ARMATURE], .fbx, .glb, .gltf)."""
    return _SPEC.match(str(spec)) is not None


def load_character(spec: str | Path) -> CharacterSkeleton:
    """The armature of FILE.blend[:ARMATURE], FILE.fbx or FILE.glb/.gltf (the first armature by name
    unless one is named). Raises ValueError naming the file when it holds no such armature."""
    match = _SPEC.match(str(spec))
    if match is None:
        raise ValueError(f"{spec}: expected FILE.blend[:ARMATURE], .fbx, .glb or .gltf")
    path, wanted = Path(match["path"]), match["armature"]
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="vposer-blender-user-"))
    try:
        import bpy
    except ImportError:
        raise ValueError(f"{path}: reading a {path.suffix} character needs Blender as a Python module (bpy)") from None
    bpy.ops.wm.read_factory_settings(use_empty=True)
    suffix = path.suffix.lower()
    if suffix == ".blend":
        bpy.ops.wm.open_mainfile(filepath=str(path))
    elif suffix == ".fbx":
        bpy.ops.import_scene.fbx(filepath=str(path))
    else:
        bpy.ops.import_scene.gltf(filepath=str(path))
    armatures = sorted((o for o in bpy.data.objects if o.type == "ARMATURE"), key=lambda o: o.name)
    if wanted:
        armatures = [o for o in armatures if o.name == wanted]
    if not armatures:
        names = ", ".join(o.name for o in bpy.data.objects if o.type == "ARMATURE") or "none"
        raise ValueError(f"{path}: no armature {wanted!r} (armatures: {names})" if wanted
                         else f"{path}: the file holds no armature")
    return armature_skeleton(armatures[0], f"{path}:{armatures[0].name}",
                             bpy.context.scene.unit_settings.scale_length)


def armature_skeleton(armature, source: str, unit_scale: float = 1.0) -> CharacterSkeleton:
    """A bpy armature object as a CharacterSkeleton (bones ordered parents first)."""
    bones = list(armature.data.bones)
    order: list = []
    placed: set[str] = set()
    while len(order) < len(bones):  # parents before children
        for bone in bones:
            if bone.name not in placed and (bone.parent is None or bone.parent.name in placed):
                order.append(bone)
                placed.add(bone.name)
    names = [bone.name for bone in order]
    parents = [names.index(bone.parent.name) if bone.parent else -1 for bone in order]
    matrix_local = np.array([np.array(bone.matrix_local) for bone in order])
    tails = np.array([tuple(bone.tail_local) for bone in order])
    return CharacterSkeleton.from_arrays(names, parents, matrix_local, tails, np.array(armature.matrix_world),
                                         unit_scale=unit_scale, source=source)
