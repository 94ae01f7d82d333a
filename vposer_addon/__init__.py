"""Everything that touches bpy. Registers without PyTorch; features that need it say so."""

from __future__ import annotations

import bpy

from . import panels

_CLASSES: tuple[type, ...] = panels.CLASSES


def register() -> None:
    for cls in _CLASSES:
        bpy.utils.register_class(cls)


def unregister() -> None:
    for cls in reversed(_CLASSES):
        bpy.utils.unregister_class(cls)
