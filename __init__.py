"""Blender extension entry point: the repository root is the extension package."""

from .vposer_addon import register, unregister

__all__ = ["register", "unregister"]
