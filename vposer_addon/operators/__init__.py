"""Operators, one module per user job."""

from __future__ import annotations

from . import body, io

CLASSES: tuple[type, ...] = (*body.CLASSES, *io.CLASSES)
