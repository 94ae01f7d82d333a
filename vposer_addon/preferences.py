"""Extension preferences: which body and prior to use, where torch runs, and where a CUDA torch lives."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import bpy

from ..core.errors import VPoserError

# Preferences belong to the extension's top-level package ("vposer", or "bl_ext.<repo>.vposer" once installed).
ADDON_ID = __package__.rpartition(".")[0]

BODY_ITEMS = [
    ("ADULT", "Open Adult", "The shipped open adult body (SMPL-H joint layout, 16 shape components)"),
    ("ALL_AGES", "Open All-Ages", "The shipped open body covering children to elders"),
    ("USER_FILE", "User Model File", "The SMPL / SMPL-H / SMPL-X .npz file set below"),
]


def _extra_site_packages_changed(self: VPoserPreferences, _context: bpy.types.Context) -> None:
    add_extra_site_packages(self.extra_site_packages)


class VPoserPreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    default_body: bpy.props.EnumProperty(
        name="Default Body",
        description="Body that 'Add Body' builds unless told otherwise",
        items=BODY_ITEMS,
        default="ADULT",
    )
    model_path: bpy.props.StringProperty(
        name="Model File",
        description="Your SMPL, SMPL-H or SMPL-X .npz (licensed separately; never shipped with the extension)",
        subtype="FILE_PATH",
    )
    vposer_path: bpy.props.StringProperty(
        name="VPoser Folder",
        description="Folder of the official VPoser v2 release (e.g. V02_05); leave empty for the shipped open prior",
        subtype="DIR_PATH",
    )
    device: bpy.props.EnumProperty(
        name="Device",
        description="Where PyTorch runs the prior and the solver",
        items=[
            ("AUTO", "Auto", "CUDA when this PyTorch build sees a GPU, otherwise the CPU"),
            ("CPU", "CPU", "Always the CPU"),
            ("CUDA", "CUDA", "An NVIDIA GPU; needs a CUDA build of PyTorch"),
        ],
        default="AUTO",
    )
    extra_site_packages: bpy.props.StringProperty(
        name="Extra Site-Packages",
        description="Folder that holds a CUDA build of PyTorch; added to Python's search path when the extension loads",
        subtype="DIR_PATH",
        update=_extra_site_packages_changed,
    )

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        layout.use_property_split = True
        layout.prop(self, "default_body")
        layout.prop(self, "model_path")
        layout.prop(self, "vposer_path")
        layout.prop(self, "device")
        layout.prop(self, "extra_site_packages")
        box = layout.box()
        problem = extra_site_packages_problem(self.extra_site_packages)
        if problem:
            for line in problem.split(": ", 1):
                box.label(text=line, icon="ERROR")
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        for line in (
            "The bundled PyTorch runs on the CPU. For a GPU, install a CUDA build of PyTorch",
            f"for Python {version} into a separate folder (pip install --target FOLDER torch ...)",
            "and set Extra Site-Packages to it. Restart Blender after changing it: a PyTorch",
            "that is already loaded cannot be swapped.",
        ):
            box.label(text=line)


def get_preferences(context: bpy.types.Context) -> VPoserPreferences | None:
    """The extension's preferences, or None when it was registered without being enabled (scripts)."""
    addon = context.preferences.addons.get(ADDON_ID)
    return addon.preferences if addon else None


class DeviceError(VPoserError):
    """The Device preference asks for what this PyTorch cannot do; the message says what to change."""


def resolve_device(context: bpy.types.Context) -> str:
    """'cuda' or 'cpu' for torch, from the Device preference (Auto picks CUDA when available);
    DeviceError when CUDA is asked for and this PyTorch sees no GPU."""
    import torch

    preferences = get_preferences(context)
    choice = preferences.device if preferences else "AUTO"
    if choice == "CUDA" and not torch.cuda.is_available():
        raise DeviceError(
            "Device is set to CUDA, but this PyTorch sees no GPU (a CPU-only build?): "
            "set Extra Site-Packages to a CUDA build of PyTorch, or pick Auto"
        )
    return "cuda" if choice != "CPU" and torch.cuda.is_available() else "cpu"


def _runs_here(tag: str) -> bool:
    """Whether a wheel tag (interpreter-abi-platform, e.g. cp311-cp311-win_amd64) loads in this Python."""
    interpreter, _, rest = tag.partition("-")
    abi = rest.partition("-")[0]
    this = (sys.version_info.major, sys.version_info.minor)
    if interpreter.startswith("py"):
        return True  # py3, py2.py3: pure Python
    if not interpreter.startswith("cp"):
        return False  # another implementation (PyPy: pp310)
    version = interpreter[2:]
    major, minor = int(version[0]), int(version[1:] or 0)
    return (major, minor) == this or (abi == "abi3" and (major, minor) <= this)


def foreign_packages(folder: Path) -> list[str]:
    """Distributions in a `pip install --target` folder compiled for another Python than Blender's,
    as "name (tag)": their *.dist-info/WHEEL tags say which CPython they load in."""
    foreign = []
    for wheel in sorted(folder.glob("*.dist-info/WHEEL")):
        tags = [line.partition(":")[2].strip() for line in wheel.read_text(errors="replace").splitlines()
                if line.startswith("Tag:")]
        if tags and not any(_runs_here(tag) for tag in tags):
            foreign.append(f"{wheel.parent.name.removesuffix('.dist-info')} ({tags[0].partition('-')[0]})")
    return foreign


def extra_site_packages_problem(folder: str) -> str | None:
    """Why the Extra Site-Packages folder cannot be used in this Blender, or None when it can (or is unset).

    Blender 5.1 moved from Python 3.11 to 3.13, and preferences carry over from an older Blender: a
    folder of PyTorch for 3.11 would shadow the bundled PyTorch and fail to import.
    """
    if not folder:
        return None
    path = Path(os.path.normpath(bpy.path.abspath(folder)))
    if not path.is_dir():
        return f"Extra Site-Packages: {path} is not a folder"
    foreign = foreign_packages(path)
    if foreign:
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        return (f"Extra Site-Packages is not used: {path} holds packages for another Python "
                f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); this Blender runs Python "
                f"{version}: install them again with Python {version} into a new folder")
    return None


def add_extra_site_packages(folder: str) -> bool:
    """Put a user's site-packages folder ahead of the bundled wheels so its torch wins; True if added.

    A folder that is missing or holds packages for another Python is left out (the preferences say why).
    """
    if not folder or extra_site_packages_problem(folder):
        return False
    path = os.path.normpath(bpy.path.abspath(folder))
    if path not in sys.path:
        sys.path.insert(0, path)
    return True


def register_extra_site_packages() -> None:
    """Called on register: the stored preference takes effect before anything imports torch."""
    preferences = get_preferences(bpy.context)
    if preferences:
        add_extra_site_packages(preferences.extra_site_packages)


CLASSES: tuple[type, ...] = (VPoserPreferences,)
