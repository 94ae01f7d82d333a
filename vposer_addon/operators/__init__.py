"""Operators, one module per user job."""

from __future__ import annotations

from . import body, floor, generate, hands, io, markers, pose, retarget

CLASSES: tuple[type, ...] = (*body.CLASSES, *floor.CLASSES, *io.CLASSES, *pose.CLASSES, *retarget.CLASSES,
                             *markers.CLASSES, *generate.CLASSES, *hands.CLASSES)
