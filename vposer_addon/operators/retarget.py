"""Retarget imported mocap (a BVH armature or marker empties) onto a body as a new action."""

from __future__ import annotations

CLASSES: tuple[type, ...] = ()
