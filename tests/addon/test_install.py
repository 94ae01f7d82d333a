"""The extension as users get it: built by scripts/build_extension.py with Blender's own tool, installed
with Blender's extension installer, used, then uninstalled without leaving anything behind.

Installing happens in a child Python (this file run as a script) with its own BLENDER_USER_RESOURCES:
the installed copy is the package `bl_ext.user_default.vposer`, and its classes carry the same Blender
names as the checkout copy that other tests register in this process (`vposer`), so the two must
never meet; a fresh Blender also shows that the zip works on its own. No network: the --with-torch
test serves pip a local folder of small stand-in wheels.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import numpy as np
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build_extension.py"
EXTENSION_ID = "vposer"
REPO_MODULE = "user_default"
PACKAGE = f"bl_ext.{REPO_MODULE}.{EXTENSION_ID}"
DEVELOPMENT_FOLDERS = ("tests", "scripts", "docs", "examples", "build", "dist", "wheels")
THIS_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


def load_build_script():
    spec = importlib.util.spec_from_file_location("build_extension", BUILD_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def run_build(out: Path, *options: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BUILD_SCRIPT), "--out", str(out), *options],
        capture_output=True, text=True, env=env, timeout=900,
    )


def zip_manifest(zip_path: Path) -> dict:
    with zipfile.ZipFile(zip_path) as archive:
        return tomllib.loads(archive.read("blender_manifest.toml").decode())


@pytest.fixture(scope="module")
def built_zip(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    result = run_build(out)
    assert result.returncode == 0, result.stdout + result.stderr
    zips = sorted(out.glob("*.zip"))
    assert [zip_path.name for zip_path in zips] == [f"{EXTENSION_ID}-0.1.0.zip"]
    assert result.stdout.strip().splitlines()[-1] == str(zips[0])
    return zips[0]


def test_zip_holds_the_extension_and_no_development_files(built_zip):
    names = zipfile.ZipFile(built_zip).namelist()
    for required in (
        "blender_manifest.toml", "__init__.py", "LICENSE", "core/data/vposer_open.pt", "core/data/openbody_adult.npz",
        "core/data/NOTICE.md", "core/body_model.py", "vposer_addon/__init__.py", "vposer_addon/operators/body.py",
    ):
        assert required in names
    leaked = [
        name for name in names
        if name.split("/")[0] in DEVELOPMENT_FOLDERS
        or any(part.startswith(".") or part == "__pycache__" or part.endswith(".egg-info") for part in name.split("/"))
    ]
    assert leaked == []
    # The platform-independent zip carries the repository's manifest unchanged.
    manifest = zipfile.ZipFile(built_zip).read("blender_manifest.toml")
    assert manifest == (REPO_ROOT / "blender_manifest.toml").read_bytes()


def test_installed_zip_works_and_uninstalls_without_leftovers(built_zip, tmp_path):
    user_resources = tmp_path / "blender-user"
    report_path = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, __file__, str(built_zip), str(report_path)],
        capture_output=True, text=True, cwd=tmp_path, timeout=900,
        env={**os.environ, "BLENDER_USER_RESOURCES": str(user_resources)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    seen = json.loads(report_path.read_text())
    installed = seen["installed"]
    install_dir = user_resources / "extensions" / REPO_MODULE / EXTENSION_ID

    assert installed["enabled"] and installed["in_preferences_addons"]
    assert installed["preferences_class"] == "VPoserPreferences" and installed["device"] == "AUTO"
    assert Path(installed["package_file"]) == install_dir / "__init__.py"
    assert Path(installed["core_file"]) == install_dir / "core" / "body_model.py"
    assert installed["checkout_modules"] == []
    assert {"add_body", "import_poses", "export_poses"} <= set(installed["operators"])
    assert {"VPOSER_OT_add_body", "VPOSER_PT_main"} <= set(installed["new_types"])
    assert all(handler.startswith(PACKAGE) for handler in installed["new_handlers"])

    body = installed["add_body"]
    reference = np.load(REPO_ROOT / "core" / "data" / "openbody_adult.npz")
    assert body["result"] == ["FINISHED"]
    assert body["operator_module"].startswith(f"{PACKAGE}.vposer_addon.")
    assert body["armature_bones"] == reference["kintree_table"].shape[1]
    assert body["mesh_vertices"] == reference["v_template"].shape[0]
    assert body["mesh_deformed_by"] == body["armature"]

    removed = seen["uninstalled"]
    assert removed["result"] == ["FINISHED"]
    assert not removed["in_preferences_addons"]
    assert removed["operators"] == []
    assert removed["new_types"] == []
    assert removed["handlers_as_before"]
    assert not removed["object_property"]
    assert not install_dir.exists()


def test_platform_zips_declare_their_platform_and_leave_the_repository_manifest_alone(tmp_path):
    manifest_before = (REPO_ROOT / "blender_manifest.toml").read_bytes()
    result = run_build(tmp_path, "--platform", "linux-x64", "windows-x64")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (REPO_ROOT / "blender_manifest.toml").read_bytes() == manifest_before
    for platform in ("linux-x64", "windows-x64"):
        zip_path = tmp_path / f"{EXTENSION_ID}-0.1.0-{platform.replace('-', '_')}.zip"
        manifest = zip_manifest(zip_path)
        assert manifest["platforms"] == [platform]
        assert manifest["build"]["generated"] == {"platforms": [platform], "wheels": []}
        assert "core/data/vposer_open.pt" in zipfile.ZipFile(zip_path).namelist()
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        f"{EXTENSION_ID}-0.1.0-linux_x64.zip", f"{EXTENSION_ID}-0.1.0-windows_x64.zip"
    ]


def write_wheel(folder: Path, name: str, version: str, tag: str, requires: list[str]) -> None:
    """A minimal valid wheel: enough for pip to download it and for Blender to bundle it."""
    dist_info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": "",
        f"{dist_info}/METADATA": "".join(
            [f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", *(f"Requires-Dist: {r}\n" for r in requires)]
        ),
        f"{dist_info}/WHEEL": f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\nTag: {tag}\n",
    }
    files[f"{dist_info}/RECORD"] = "".join(f"{path},,\n" for path in [*files, f"{dist_info}/RECORD"])
    with zipfile.ZipFile(folder / f"{name}-{version}-{tag}.whl", "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)


def version_within(requirement: Requirement) -> str:
    """A version the requirement accepts: one of its own bounds, or a high one when it has only lower bounds."""
    candidates = [spec.version for spec in requirement.specifier] + ["99.0"]
    return next(version for version in candidates if requirement.specifier.contains(version))


# Blender Python -> (wheel tag of a compiled wheel, Blender range its zip declares (max exclusive)).
PYTHON_ZIPS = {"3.11": ("cp311-cp311", "4.2.0", "5.1.0"), "3.13": ("cp313-cp313", "5.1.0", None)}
FAKE_PLATFORMS = {"linux-x64": "manylinux_2_28_x86_64", "windows-x64": "win_amd64"}


@pytest.fixture(scope="module")
def torch_zips(tmp_path_factory) -> tuple[Path, dict[tuple[str, str], set[str]]]:
    """`--with-torch` zips for two platforms and both Blender Pythons, from a local index of stand-in wheels.

    Returns the output folder and, per (platform, Python), the wheels its zip must hold: the compiled
    wheels of its own platform and Python, a dependency whose marker names Windows only on Windows, one
    whose marker names Python 3.13 only for 3.13, and nothing that Blender ships (numpy; cattrs from 5.1 on).
    """
    index = tmp_path_factory.mktemp("index")
    torch_requires = [
        "filelock", "numpy", "winonly; sys_platform == 'win32'", "optree>=0.13; extra == 'optree'",
        "newpython; python_version >= '3.13'", "cattrs",
    ]
    for tag, _, _ in PYTHON_ZIPS.values():
        for platform_tag in FAKE_PLATFORMS.values():
            write_wheel(index, "torch", "2.13.0+cpu", f"{tag}-{platform_tag}", torch_requires)
        write_wheel(index, "numpy", "1.26.4", f"{tag}-manylinux_2_28_x86_64", [])
    write_wheel(index, "torch", "2.12.0+cpu", "cp311-cp311-manylinux_2_28_x86_64", [])
    write_wheel(index, "filelock", "3.0.0", "py3-none-any", ["typing_extensions>=4"])
    write_wheel(index, "typing_extensions", "4.12.0", "py3-none-any", [])
    write_wheel(index, "winonly", "1.0", "py3-none-any", [])
    write_wheel(index, "newpython", "1.0", "py3-none-any", [])
    write_wheel(index, "cattrs", "25.1.0", "py3-none-any", [])
    dependencies = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    # Every other runtime dependency of the project is bundled too, except numpy, which Blender ships.
    others = {
        requirement.name.replace("-", "_"): version_within(requirement)
        for requirement in map(Requirement, dependencies) if requirement.name not in ("torch", "numpy")
    }
    for name, version in others.items():
        write_wheel(index, name, version, "py3-none-any", [])
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(index))
    out = tmp_path_factory.mktemp("dist")

    result = run_build(out, "--platform", *FAKE_PLATFORMS, "--with-torch", env=env)

    assert result.returncode == 0, result.stdout + result.stderr
    common = {"filelock-3.0.0-py3-none-any.whl", "typing_extensions-4.12.0-py3-none-any.whl"}
    common |= {f"{name}-{version}-py3-none-any.whl" for name, version in others.items()}
    expected = {}
    for python, (tag, _, _) in PYTHON_ZIPS.items():
        for platform, platform_tag in FAKE_PLATFORMS.items():
            wheels = common | {f"torch-2.13.0+cpu-{tag}-{platform_tag}.whl"}
            if platform == "windows-x64":
                wheels.add("winonly-1.0-py3-none-any.whl")
            # Blender 5.1+ ships cattrs (bpy 5.2.3 requires it), Blender 4.2-5.0 does not.
            wheels.add("newpython-1.0-py3-none-any.whl" if python == "3.13" else "cattrs-25.1.0-py3-none-any.whl")
            expected[platform, python] = wheels
    assert result.stdout.strip().splitlines()[-len(expected):] == [
        str(out / zip_file_name(platform, python)) for python in PYTHON_ZIPS for platform in FAKE_PLATFORMS
    ]
    return out, expected


def zip_file_name(platform: str, python: str) -> str:
    return f"{EXTENSION_ID}-0.1.0-{platform.replace('-', '_')}-python{python}.zip"


def test_with_torch_bundles_each_platforms_and_pythons_dependency_closure_from_pip(torch_zips):
    out, expected = torch_zips
    assert sorted(path.name for path in out.iterdir()) == sorted(
        zip_file_name(platform, python) for platform, python in expected
    )
    for (platform, python), wheels in expected.items():
        zip_path = out / zip_file_name(platform, python)
        names = zipfile.ZipFile(zip_path).namelist()
        assert {name.removeprefix("wheels/") for name in names if name.startswith("wheels/")} == wheels
        manifest = zip_manifest(zip_path)
        assert sorted(manifest["wheels"]) == sorted(f"./wheels/{wheel}" for wheel in wheels)
        assert manifest["platforms"] == [platform]
        _, blender_min, blender_max = PYTHON_ZIPS[python]
        assert manifest["blender_version_min"] == blender_min
        assert manifest.get("blender_version_max") == blender_max
        # Everything else in the manifest is the repository's.
        repository = tomllib.loads((REPO_ROOT / "blender_manifest.toml").read_text())
        changed = {"platforms", "wheels", "blender_version_min", "blender_version_max", "build"}
        assert {k: v for k, v in manifest.items() if k not in changed} == {
            k: v for k, v in repository.items() if k not in changed
        }


def test_blenders_installer_takes_the_zip_for_its_python_and_refuses_the_other(torch_zips, tmp_path):
    out, _ = torch_zips
    other = next(python for python in PYTHON_ZIPS if python != THIS_PYTHON)
    zips = [out / zip_file_name("linux-x64", other), out / zip_file_name("linux-x64", THIS_PYTHON)]
    report_path = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, __file__, "--install-only", str(report_path), *map(str, zips)],
        capture_output=True, text=True, cwd=tmp_path, timeout=900,
        env={**os.environ, "BLENDER_USER_RESOURCES": str(tmp_path / "blender-user")},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    refused, taken = json.loads(report_path.read_text())
    assert not refused["installed"] and not refused["wheels_unpacked"]
    # Blender's own words name the version rule the zip breaks.
    _, blender_min, blender_max = PYTHON_ZIPS[other]
    assert f"{blender_max or blender_min}" in refused["output"] and "ERROR" in refused["output"], refused["output"]
    assert taken["installed"] and taken["enabled"]
    assert taken["wheels_unpacked"] == [f"python{THIS_PYTHON}"]


def test_blender_python_table_matches_the_installed_bpy():
    """The build's table of Blender Pythons against the bpy this Python runs: its version, the Python it
    requires, the Blender range it falls in, and what it declares Blender ships."""
    from importlib.metadata import metadata

    python = load_build_script().BLENDER_PYTHONS[THIS_PYTHON]
    bpy_metadata = metadata("bpy")
    assert bpy_metadata["Version"] == python.bpy
    assert bpy_metadata["Requires-Python"] == f"=={THIS_PYTHON}.*"
    version = tuple(map(int, python.bpy.split(".")))
    assert tuple(map(int, python.blender_min.split("."))) <= version
    assert python.blender_max is None or version < tuple(map(int, python.blender_max.split(".")))
    declared = {canonicalize_name(Requirement(line).name) for line in bpy_metadata.get_all("Requires-Dist")}
    assert set(python.ships) == declared


def test_each_python_zip_declares_the_blender_releases_its_manifest_and_python_both_allow():
    build = load_build_script()
    python311, python313 = build.BLENDER_PYTHONS["3.11"], build.BLENDER_PYTHONS["3.13"]
    text = (REPO_ROOT / "blender_manifest.toml").read_text()

    def staged(python, **bounds):
        lines = "".join(f'{key} = "{value}"\n' for key, value in bounds.items())
        kept = "".join(line for line in text.splitlines(keepends=True) if not line.startswith("blender_version_"))
        return tomllib.loads(build.staged_manifest(lines + kept, ["linux-x64"], [], python))

    manifest = staged(python311, blender_version_min="4.2.0")
    assert (manifest["blender_version_min"], manifest["blender_version_max"]) == ("4.2.0", "5.1.0")
    manifest = staged(python313, blender_version_min="4.2.0")
    assert manifest["blender_version_min"] == "5.1.0" and "blender_version_max" not in manifest
    # The narrower of the two ranges wins at each end; versions compare as numbers (5.10 after 5.2).
    manifest = staged(python313, blender_version_min="5.2.0", blender_version_max="5.10.0")
    assert (manifest["blender_version_min"], manifest["blender_version_max"]) == ("5.2.0", "5.10.0")
    manifest = staged(python311, blender_version_min="4.5.0", blender_version_max="5.0.2")
    assert (manifest["blender_version_min"], manifest["blender_version_max"]) == ("4.5.0", "5.0.2")
    # A manifest no Blender of that Python satisfies is refused, naming both ranges.
    with pytest.raises(build.BuildError, match=r"allows Blender 5\.2\.0 to any later, none of which embeds Python 3\.11"):
        staged(python311, blender_version_min="5.2.0")


def test_bad_torch_version_is_refused_before_building(tmp_path):
    result = run_build(tmp_path, "--with-torch", "--torch-version", "1.13.0")
    assert result.returncode == 1
    assert "--torch-version 1.13.0" in result.stderr and "torch>=" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_missing_bpy_says_how_to_install_it(tmp_path):
    # bpy set to None in sys.modules makes `import bpy` fail as it does where bpy is not installed.
    code = (
        "import runpy, sys; sys.modules['bpy'] = None; "
        f"sys.argv = [{str(BUILD_SCRIPT)!r}, '--out', {str(tmp_path)!r}]; "
        f"runpy.run_path({str(BUILD_SCRIPT)!r}, run_name='__main__')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "pip install bpy==5.0.1` on Python 3.11" in result.stderr
    assert "pip install bpy==5.2.3` on Python 3.13" in result.stderr
    assert not list(tmp_path.glob("*.zip"))


# --------------------------------------------------------------------------- the child Blender
def _handlers() -> dict[str, list[str]]:
    """Every app handler by list, named by module and function, to compare before and after."""
    import bpy

    return {
        name: [f"{handler.__module__}.{handler.__qualname__}" for handler in handlers]
        for name in dir(bpy.app.handlers)
        if isinstance(handlers := getattr(bpy.app.handlers, name), list)
    }


def _install_use_uninstall(zip_path: str) -> dict:
    """In a fresh Blender: install the zip as the Preferences' Install from Disk does, use it, uninstall it."""
    import bpy  # noqa: I001  (first: Blender's own addon_utils becomes importable once bpy has started)
    import addon_utils

    types_before = set(dir(bpy.types))
    handlers_before = _handlers()
    bpy.ops.extensions.package_install_files(filepath=zip_path, repo=REPO_MODULE, enable_on_install=True)
    addons = bpy.context.preferences.addons
    # The installer reports FINISHED even when it refuses a package: the checks below are what counts.
    preferences = addons[PACKAGE].preferences if PACKAGE in addons else None
    new_handlers = [
        handler for name, handlers in _handlers().items()
        for handler in handlers if handler not in handlers_before[name]
    ]
    installed: dict = {
        "enabled": addon_utils.check(PACKAGE)[1],
        "in_preferences_addons": PACKAGE in addons,
        "preferences_class": type(preferences).__name__,
        "device": getattr(preferences, "device", None),
        "package_file": sys.modules[PACKAGE].__file__ if PACKAGE in sys.modules else None,
        "operators": dir(bpy.ops.vposer),
        "new_types": sorted(set(dir(bpy.types)) - types_before),
        "new_handlers": new_handlers,
    }
    bpy.ops.wm.read_homefile(use_empty=True)
    result = bpy.ops.vposer.add_body("EXEC_DEFAULT")
    armature = next(obj for obj in bpy.data.objects if obj.type == "ARMATURE")
    mesh = next(obj for obj in bpy.data.objects if obj.type == "MESH")
    installed["add_body"] = {
        "result": sorted(result),
        "operator_module": bpy.types.VPOSER_OT_add_body.__module__,
        "armature": armature.name,
        "armature_bones": len(armature.data.bones),
        "mesh_vertices": len(mesh.data.vertices),
        "mesh_deformed_by": next(mod.object.name for mod in mesh.modifiers if mod.type == "ARMATURE"),
    }
    installed["core_file"] = sys.modules[f"{PACKAGE}.core.body_model"].__file__
    installed["checkout_modules"] = sorted(
        name for name, module in list(sys.modules.items())
        if module is not sys.modules["__main__"] and (file := getattr(module, "__file__", None))
        and Path(file).is_relative_to(REPO_ROOT) and not Path(file).is_relative_to(sys.prefix)
    )

    repo_index = [repo.module for repo in bpy.context.preferences.extensions.repos].index(REPO_MODULE)
    result = bpy.ops.extensions.package_uninstall(repo_index=repo_index, pkg_id=EXTENSION_ID)
    uninstalled = {
        "result": sorted(result),
        "in_preferences_addons": PACKAGE in bpy.context.preferences.addons,
        "operators": dir(bpy.ops.vposer),
        "new_types": sorted(set(dir(bpy.types)) - types_before),
        "handlers_as_before": _handlers() == handlers_before,
        "object_property": hasattr(bpy.types.Object, "vposer_body"),
    }
    return {"installed": installed, "uninstalled": uninstalled}


def _install_each(zip_paths: list[str]) -> list[dict]:
    """In a fresh Blender: install each zip in turn; whether Blender took it, and what it printed meanwhile."""
    import bpy  # noqa: I001
    import addon_utils

    site = Path(bpy.utils.user_resource("EXTENSIONS")) / ".local" / "lib"
    reports = []
    for zip_path in zip_paths:
        sys.stdout.flush()
        with tempfile.TemporaryFile() as captured:
            saved = os.dup(1)
            os.dup2(captured.fileno(), 1)  # Blender prints from C and from Python: capture the file descriptor
            try:
                bpy.ops.extensions.package_install_files(filepath=zip_path, repo=REPO_MODULE, enable_on_install=True)
            finally:
                sys.stdout.flush()
                os.dup2(saved, 1)
                os.close(saved)
            captured.seek(0)
            output = captured.read().decode(errors="replace")
        reports.append({
            "installed": (Path(bpy.utils.user_resource("EXTENSIONS")) / REPO_MODULE / EXTENSION_ID).is_dir(),
            "enabled": addon_utils.check(PACKAGE)[1],
            "wheels_unpacked": sorted(path.name for path in site.glob("python*") if any(path.rglob("*.dist-info"))),
            "output": output,
        })
    return reports


if __name__ == "__main__":
    import tempfile

    if sys.argv[1] == "--install-only":
        Path(sys.argv[2]).write_text(json.dumps(_install_each(sys.argv[3:])))
    else:
        Path(sys.argv[2]).write_text(json.dumps(_install_use_uninstall(sys.argv[1])))
