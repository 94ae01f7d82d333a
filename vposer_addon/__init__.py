"""Everything that touches bpy. Registers without PyTorch; features that need it say so."""

from __future__ import annotations

import bpy

from . import character, character_panel, operators, panels, pictures, preferences, properties, targets

_CLASSES: tuple[type, ...] = (
    *preferences.CLASSES, *properties.CLASSES, *targets.CLASSES, *character.CLASSES, *pictures.CLASSES,
    *operators.CLASSES,
    *panels.CLASSES,
    *character_panel.CLASSES,
)


def register() -> None:
    for cls in _CLASSES:
        bpy.utils.register_class(cls)
    properties.attach()
    targets.attach()
    character.attach()
    pictures.attach()
    preferences.register_extra_site_packages()


def unregister() -> None:
    pictures.detach()
    character.detach()
    targets.detach()
    properties.detach()
    for cls in reversed(_CLASSES):
        bpy.utils.unregister_class(cls)
