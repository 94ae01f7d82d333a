"""Blender extension entry point: the repository root is the extension package."""

# Blender always imports this file as a package (bl_ext.<repo>.vposer). Test runners import the
# checkout's root as a plain module when its folder name is not a Python identifier (a clone
# named "vposer-blender"); then there is no package to register from.
if __package__:
    from .vposer_addon import register, unregister

    __all__ = ["register", "unregister"]
