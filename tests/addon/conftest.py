"""Real Blender (the bpy module), headless. bpy is imported once per process, after its user
folders are moved to a temporary directory so tests never touch the user's Blender config."""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
from pathlib import Path

import pytest

_USER_RESOURCES = tempfile.mkdtemp(prefix="vposer-blender-user-")
os.environ["BLENDER_USER_RESOURCES"] = _USER_RESOURCES

bpy = pytest.importorskip("bpy")

REPO_ROOT = Path(__file__).resolve().parents[2]
EXTENSION_ID = "vposer"


@pytest.fixture(scope="session")
def extension_package():
    """The repository imported as the package Blender would see (`vposer`), not yet registered.

    A folder holding a link named after the extension id makes the relative imports inside the
    add-on resolve exactly as they do when Blender loads the installed extension.
    """
    parent = Path(tempfile.mkdtemp(prefix="vposer-package-"))
    (parent / EXTENSION_ID).symlink_to(REPO_ROOT, target_is_directory=True)
    sys.path.insert(0, str(parent))
    return importlib.import_module(EXTENSION_ID)


@pytest.fixture(scope="module")
def addon(extension_package):
    """The extension registered and enabled (so its preferences exist), as Blender does on start-up."""
    extension_package.register()
    entry = bpy.context.preferences.addons.new()
    entry.module = extension_package.__name__
    yield extension_package
    bpy.context.preferences.addons.remove(entry)
    extension_package.unregister()


@pytest.fixture(scope="module")
def bridge(extension_package):
    return importlib.import_module(f"{extension_package.__name__}.vposer_addon.bridge")


@pytest.fixture(scope="module")
def adult():
    """The open adult body in float64, the reference that Blender's deformation is compared with."""
    import torch

    from core.body_model import BodyModel

    return BodyModel.open_default("adult", dtype=torch.float64)


@pytest.fixture
def empty_scene():
    bpy.ops.wm.read_homefile(use_empty=True)
    return bpy.context.scene
