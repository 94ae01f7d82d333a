"""The extension registers and unregisters cleanly in real Blender, and its manifest is valid."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import bpy

REPO_ROOT = Path(__file__).resolve().parents[2]


def _registered_panel() -> bool:
    return hasattr(bpy.types, "VPOSER_PT_main")


def test_register_then_unregister_leaves_nothing_behind(extension_package, empty_scene):
    assert not _registered_panel()
    extension_package.register()
    try:
        panel = bpy.types.VPOSER_PT_main
        assert panel.bl_category == "VPoser" and panel.bl_space_type == "VIEW_3D"
    finally:
        extension_package.unregister()
    assert not _registered_panel()


def test_manifest_validates_with_blenders_extension_tool():
    scripts = Path(bpy.utils.system_resource("SCRIPTS"))
    tool = scripts / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py"
    tags = scripts / "modules" / "_bpy_internal" / "extensions" / "tags.py"
    result = subprocess.run(
        [sys.executable, str(tool), "validate", "--valid-tags", str(tags), str(REPO_ROOT)],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
