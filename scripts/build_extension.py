#!/usr/bin/env python3
"""Build the installable extension zip(s) with Blender's own extension tool.

    python scripts/build_extension.py [--out dist] [--platform linux-x64 ...]
                                      [--with-torch [--python 3.11 3.13] [--torch-version 2.13.0]]

The tool is the one `blender --command extension build` runs; it ships inside the bpy module, so
no Blender binary is needed, only bpy (`pip install bpy==5.0.1` on Python 3.11 or `bpy==5.2.3` on
Python 3.13; `pip install -e ".[dev]"` installs the right one). It validates the manifest, builds,
and validates each zip.

Without --platform the result is one zip for every platform and every Blender from the manifest's
blender_version_min on, without PyTorch (users bring their own: see docs/install.md). --platform
builds one zip per platform, named <id>-<version>-<platform>.zip.
--with-torch also bundles, per platform, the CPU build of PyTorch and every runtime dependency of
the project (pyproject.toml) with its own dependencies, except those Blender's Python already ships
(numpy...): `pip download --only-binary=:all: --no-deps` fetches each wheel for that platform and
Blender's Python, and a staging copy of the manifest lists them (the repository's manifest is never
modified). Compiled wheels load in one Python version only, so there is one zip per platform and
Blender Python (BLENDER_PYTHONS: 3.11 for Blender 4.2-5.0, 3.13 for 5.1 and later), named
<id>-<version>-<platform>-python<X.Y>.zip, whose manifest narrows blender_version_min/_max to the
Blender releases of that Python: Blender's installer then refuses the wrong one with its own
message. Which files go in is decided by the manifest's [build] paths_exclude_pattern; each zip is
then listed to make sure no development folder (tests, scripts, docs, ...) slipped in.

The paths of the zips are printed last, one per line.
"""

from __future__ import annotations

import argparse
import email.parser
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
MANIFEST = "blender_manifest.toml"
WHEELS = "wheels"
DEFAULT_TORCH_VERSION = "2.13.0"
# PyPI's Linux torch wheels are CUDA builds (with gigabytes of nvidia-* wheels); this index has CPU builds for all.
DEFAULT_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
# Top-level folders of the repository that must never reach a user.
DEVELOPMENT_FOLDERS = ("tests", "scripts", "docs", "examples", "build", "dist")


@dataclass(frozen=True)
class Platform:
    """A Blender platform as pip sees it: wheel platform tags, and the values of environment markers."""

    pip_tags: tuple[str, ...]
    markers: dict[str, str]


def _manylinux_x86_64() -> tuple[str, ...]:
    """Blender 4.2+ needs glibc 2.28, so any manylinux wheel up to 2.28 runs; pip does not infer the older ones."""
    return (*(f"manylinux_2_{minor}_x86_64" for minor in range(28, 16, -1)), "manylinux2014_x86_64")


_POSIX_LINUX = {"sys_platform": "linux", "platform_system": "Linux", "os_name": "posix"}
_WINDOWS = {"sys_platform": "win32", "platform_system": "Windows", "os_name": "nt"}
_MACOS = {"sys_platform": "darwin", "platform_system": "Darwin", "os_name": "posix"}

# Blender's platform names (the manifest's `platforms`). Current PyTorch wheels for macOS need macOS 14
# (pip also accepts wheels for older macOS versions under these tags).
PLATFORMS: dict[str, Platform] = {
    "linux-x64": Platform(_manylinux_x86_64(), {**_POSIX_LINUX, "platform_machine": "x86_64"}),
    "windows-x64": Platform(("win_amd64",), {**_WINDOWS, "platform_machine": "AMD64"}),
    "windows-arm64": Platform(("win_arm64",), {**_WINDOWS, "platform_machine": "ARM64"}),
    "macos-arm64": Platform(("macosx_14_0_arm64",), {**_MACOS, "platform_machine": "arm64"}),
    "macos-x64": Platform(("macosx_14_0_x86_64",), {**_MACOS, "platform_machine": "x86_64"}),
}


@dataclass(frozen=True)
class BlenderPython:
    """The Python a range of Blender releases embeds, and the distributions those Blenders ship with it.

    `ships` is what the bpy module `bpy` (the PyPI release of that range the tests run on) declares
    as its requirements: Blender's own Python carries those, and a bundled copy would shadow
    Blender's. tests/addon/test_install.py checks it against the installed bpy.
    """

    version: str
    blender_min: str
    blender_max: str | None  # exclusive, as the manifest's blender_version_max
    bpy: str
    ships: frozenset[str]

    def markers(self) -> dict[str, str]:
        """Environment-marker values of Blender's (CPython) interpreter of this version."""
        return {"python_version": self.version, "python_full_version": f"{self.version}.0",
                "implementation_name": "cpython", "platform_python_implementation": "CPython"}


BLENDER_PYTHONS: dict[str, BlenderPython] = {
    "3.11": BlenderPython("3.11", "4.2.0", "5.1.0", "5.0.1", frozenset({"cython", "numpy", "requests", "zstandard"})),
    "3.13": BlenderPython("3.13", "5.1.0", None, "5.2.3",
                          frozenset({"cattrs", "cython", "numpy", "requests", "zstandard"})),
}


class BuildError(Exception):
    """Why no zip was built, worded for the person running the build."""


# --------------------------------------------------------------------------- Blender's tool
ExtensionTool = Callable[[list[str]], int]


def blender_extension_tool() -> ExtensionTool:
    """`blender --command extension` from the bpy module: Blender's own validator and builder.

    Importing bpy starts Blender; the caller points BLENDER_USER_RESOURCES at a scratch folder first
    so that a build never writes into the user's Blender configuration.
    """
    try:
        import bpy  # noqa: F401  (puts Blender's bundled add-ons, bl_pkg among them, on sys.path)
    except ImportError as error:
        versions = " or ".join(f"`pip install bpy=={python.bpy}` on Python {python.version}"
                               for python in BLENDER_PYTHONS.values())
        raise BuildError(
            "the build uses Blender's own extension tool, which comes with Blender as a Python module: "
            f"install it into this Python ({sys.executable}) with {versions}, "
            "or `pip install -e \".[dev]\"` in the repository"
        ) from error
    from bl_pkg.bl_extension_cli import cli_extension_handler

    return cli_extension_handler


def run_tool(tool: ExtensionTool, *args: str) -> None:
    """Run one subcommand; Blender's tool prints its own messages, so an error only points at them."""
    if tool(list(args)) != 0:
        raise BuildError(f"Blender's extension tool failed: `{' '.join(args)}` (its messages are above)")


# --------------------------------------------------------------------------- manifest and zip contents
def read_manifest(folder: Path) -> dict:
    return tomllib.loads((folder / MANIFEST).read_text(encoding="utf-8"))


def zip_name(manifest: dict, platform: str | None, python: BlenderPython | None = None) -> str:
    """The file name Blender's `build` gives an archive (with --split-platforms when for one platform),
    with the Blender Python appended for a zip of compiled wheels."""
    suffix = f"-{platform.replace('-', '_')}" if platform else ""
    if python is not None:
        suffix += f"-python{python.version}"
    return f"{manifest['id']}-{manifest['version']}{suffix}.zip"


def blender_version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def blender_range(manifest: dict, python: BlenderPython) -> tuple[str, str | None]:
    """The manifest's Blender range narrowed to the releases that embed `python` (max exclusive)."""
    low = max(manifest["blender_version_min"], python.blender_min, key=blender_version)
    highs = [high for high in (manifest.get("blender_version_max"), python.blender_max) if high]
    high = min(highs, key=blender_version) if highs else None
    if high is not None and blender_version(low) >= blender_version(high):
        raise BuildError(
            f"{MANIFEST} allows Blender {manifest['blender_version_min']} to "
            f"{manifest.get('blender_version_max') or 'any later'}, none of which embeds Python {python.version} "
            f"(Blender {python.blender_min} to {python.blender_max or 'any later'}): leave out --python {python.version}"
        )
    return low, high


def toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def toml_string_list(values: list[str]) -> str:
    return "[" + ", ".join(map(toml_string, values)) + "]"


def staged_manifest(text: str, platforms: list[str], wheels: list[str], python: BlenderPython | None = None) -> str:
    """The manifest with top-level `platforms` (and `wheels`) set, inserted before its first table; for
    wheels of one Blender Python, `blender_version_min`/`_max` replaced by that Python's Blender range."""
    existing = tomllib.loads(text)
    for key in ("platforms", "wheels"):
        if key in existing:
            raise BuildError(f"{MANIFEST} already sets `{key}`; remove it, this script sets it for each build")
    lines = text.splitlines(keepends=True)
    first_table = next((i for i, line in enumerate(lines) if line.lstrip().startswith("[")), len(lines))
    added = [f"platforms = {toml_string_list(platforms)}\n"]
    if wheels:
        added.append(f"wheels = {toml_string_list(wheels)}\n")
    top = lines[:first_table]
    if python is not None:
        low, high = blender_range(existing, python)
        replaced = ("blender_version_min", "blender_version_max")
        top = [line for line in top if line.split("=")[0].strip() not in replaced]
        added.append(f"blender_version_min = {toml_string(low)}\n")
        if high is not None:
            added.append(f"blender_version_max = {toml_string(high)}\n")
    return "".join([*top, *added, "\n", *lines[first_table:]])


def check_contents(zip_path: Path, wheels: list[str]) -> None:
    """Refuse a zip that misses the extension's entry files, or carries development files or stray wheels."""
    with zipfile.ZipFile(zip_path) as archive:
        names = archive.namelist()
    missing = [name for name in (MANIFEST, "__init__.py") if name not in names]
    development = [
        name for name in names
        if name.split("/")[0] in DEVELOPMENT_FOLDERS
        or any(part.startswith(".") or part == "__pycache__" or part.endswith(".egg-info") for part in name.split("/"))
    ]
    bundled = sorted(name for name in names if name.startswith(f"{WHEELS}/"))
    expected = sorted(f"{WHEELS}/{wheel}" for wheel in wheels)
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    if development:
        problems.append(f"development files {', '.join(development[:10])} (add them to [build] paths_exclude_pattern)")
    if bundled != expected:
        problems.append(f"wheels {bundled}, expected {expected}")
    if problems:
        zip_path.unlink()
        raise BuildError(f"{zip_path.name} was not kept: " + "; ".join(problems))


# --------------------------------------------------------------------------- wheels
def project_requirements(torch_version: str) -> list[str]:
    """The project's runtime dependencies (pyproject.toml), torch pinned to the version to bundle."""
    try:
        from packaging.requirements import Requirement
    except ImportError as error:
        raise BuildError("--with-torch reads wheel metadata with `packaging`: pip install packaging") from error

    requirements = []
    for line in tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]:
        requirement = Requirement(line)
        if requirement.name == "torch":
            if not requirement.specifier.contains(torch_version, prereleases=True):
                raise BuildError(f"--torch-version {torch_version}: pyproject.toml requires {line}")
            line = f"torch=={torch_version}"
        requirements.append(line)
    return requirements


def wheel_requirements(wheel: Path) -> list[str]:
    """Requires-Dist lines from a wheel's METADATA."""
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(name for name in archive.namelist() if name.endswith(".dist-info/METADATA"))
        message = email.parser.BytesParser().parsebytes(archive.read(metadata), headersonly=True)
    return message.get_all("Requires-Dist") or []


def pip_download(requirement: str, platform: str, python: BlenderPython, dest: Path, index_url: str | None) -> Path:
    """One wheel for `platform` and Blender's Python version, without resolving its dependencies."""
    python_version = python.version
    command = [
        sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--no-deps",
        "--python-version", python_version, "--implementation", "cp",
        *(option for tag in PLATFORMS[platform].pip_tags for option in ("--platform", tag)),
        "--dest", str(dest), *(("--index-url", index_url) if index_url else ()), requirement,
    ]
    print(f"downloading {requirement} for {platform} (Python {python_version})", flush=True)
    before = set(dest.glob("*.whl"))
    result = subprocess.run(command, capture_output=True, text=True)
    added = sorted(set(dest.glob("*.whl")) - before)
    if result.returncode != 0 or len(added) != 1:
        output = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise BuildError(
            f"pip found no wheel of {requirement} for {platform}, Python {python_version} "
            f"(pip platform tags {', '.join(PLATFORMS[platform].pip_tags[:2])}...):\n  " + "\n  ".join(output)
        )
    return added[0]


def download_wheels(platform: str, python: BlenderPython, torch_version: str, torch_index: str,
                    dest: Path) -> list[Path]:
    """Torch and the project's other runtime dependencies for one platform and Blender Python, with all
    their dependencies.

    Dependencies are followed from each wheel's own metadata with markers evaluated for the target
    platform and Python (pip evaluates them for the machine and Python it runs on, even with --platform
    and --python-version), skipping what Blender ships.
    """
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    environment = {**PLATFORMS[platform].markers, **python.markers(), "extra": ""}
    seen = {canonicalize_name(name) for name in python.ships}
    queue = [Requirement(line) for line in project_requirements(torch_version)]
    wheels = []
    while queue:
        requirement = queue.pop(0)
        name = canonicalize_name(requirement.name)
        if name in seen or (requirement.marker is not None and not requirement.marker.evaluate(environment)):
            continue
        seen.add(name)
        spec = f"{requirement.name}{requirement.specifier}"
        wheel = pip_download(spec, platform, python, dest, torch_index if name == "torch" else None)
        wheels.append(wheel)
        queue.extend(Requirement(line) for line in wheel_requirements(wheel))
    return wheels


# --------------------------------------------------------------------------- builds
def build_universal(tool: ExtensionTool, out: Path) -> Path:
    """One zip straight from the repository, for every platform, without bundled wheels."""
    run_tool(tool, "build", "--source-dir", str(REPO_ROOT), "--output-dir", str(out))
    zip_path = out / zip_name(read_manifest(REPO_ROOT), None)
    check_contents(zip_path, [])
    run_tool(tool, "validate", str(zip_path))
    return zip_path


def build_for_platform(tool: ExtensionTool, staging: Path, platform: str, python: BlenderPython | None, out: Path,
                       wheels: list[Path]) -> Path:
    """A zip for one platform (and Blender Python, when it bundles wheels) from the staging copy, whose
    manifest names the platform, its wheels and the Blender releases they load in.

    Blender's tool names the zip after the platform only, so it builds into a folder of its own and the
    zip is then moved to `out` under its full name.
    """
    wheel_folder = staging / WHEELS
    shutil.rmtree(wheel_folder, ignore_errors=True)
    if wheels:
        wheel_folder.mkdir()
        for wheel in wheels:
            shutil.copy2(wheel, wheel_folder / wheel.name)
    listed = [f"./{WHEELS}/{wheel.name}" for wheel in wheels]
    (staging / MANIFEST).write_text(
        staged_manifest((REPO_ROOT / MANIFEST).read_text(encoding="utf-8"), [platform], listed, python),
        encoding="utf-8",
    )
    run_tool(tool, "validate", str(staging))
    built = staging.parent / "built"
    shutil.rmtree(built, ignore_errors=True)
    built.mkdir()
    run_tool(tool, "build", "--source-dir", str(staging), "--output-dir", str(built), "--split-platforms")
    manifest = read_manifest(staging)
    zip_path = out / zip_name(manifest, platform, python)
    shutil.move(built / zip_name(manifest, platform), zip_path)
    check_contents(zip_path, [wheel.name for wheel in wheels])
    run_tool(tool, "validate", str(zip_path))
    return zip_path


def stage(tool: ExtensionTool, scratch: Path) -> Path:
    """The files the repository's manifest selects, unpacked into a folder whose manifest can be changed.

    Blender's tool applies [build] paths_exclude_pattern while building a first zip, so the staging
    copy holds exactly what a release holds (and never the large development folders).
    """
    first = scratch / "first"
    first.mkdir()
    staging = scratch / "staging"
    with zipfile.ZipFile(build_universal(tool, first)) as archive:
        archive.extractall(staging)
    return staging


def build(tool: ExtensionTool, scratch: Path, out: Path, platforms: list[str], pythons: list[BlenderPython],
          torch_version: str, torch_index: str) -> list[Path]:
    """Validate, build and check the zip(s) (intermediate files go to `scratch`); returns their paths.

    With `pythons` (--with-torch), one zip per platform and Blender Python, bundling its wheels.
    """
    out.mkdir(parents=True, exist_ok=True)
    run_tool(tool, "validate", str(REPO_ROOT))
    if not platforms:
        return [build_universal(tool, out)]
    for python in pythons:
        blender_range(read_manifest(REPO_ROOT), python)  # a Python the manifest rules out fails before downloads
    staging = stage(tool, scratch)
    zips = []
    for python in pythons or [None]:
        for platform in platforms:
            wheels = []
            if python is not None:
                downloads = scratch / f"wheels-{platform}-python{python.version}"
                downloads.mkdir()
                wheels = download_wheels(platform, python, torch_version, torch_index, downloads)
            zips.append(build_for_platform(tool, staging, platform, python, out, wheels))
    return zips


def default_platforms(with_torch: bool) -> list[str]:
    """Bundled wheels are per platform: with --with-torch alone, build for this machine's (Blender's naming)."""
    if not with_torch:
        return []
    from bl_pkg.cli.blender_ext import platform_from_this_system

    platform = platform_from_this_system()
    if platform not in PLATFORMS:
        raise BuildError(f"this machine's platform, {platform}, is not one of {', '.join(PLATFORMS)}: use --platform")
    return [platform]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "dist", help="folder for the zip(s) (default: dist)")
    parser.add_argument("--platform", nargs="+", choices=sorted(PLATFORMS), default=[], dest="platforms",
                        help="build one zip per platform (default: one zip for all platforms)")
    parser.add_argument("--with-torch", action="store_true",
                        help="bundle CPU PyTorch and the other runtime dependencies (about 110-190 MB per platform; "
                             "needs network access; default platform: this machine's)")
    parser.add_argument("--python", nargs="+", choices=sorted(BLENDER_PYTHONS), dest="pythons",
                        help="with --with-torch: the Blender Pythons to build for (default: all, "
                             + ", ".join(f"{python.version} for Blender {python.blender_min}"
                                         + (f" up to {python.blender_max} (exclusive)" if python.blender_max else " on")
                                         for python in BLENDER_PYTHONS.values()) + ")")
    parser.add_argument("--torch-version", default=DEFAULT_TORCH_VERSION, help="PyTorch version to bundle")
    parser.add_argument("--torch-index-url", default=DEFAULT_TORCH_INDEX,
                        help="package index for the torch wheel (default: PyTorch's CPU builds)")
    args = parser.parse_args(argv)
    if args.pythons and not args.with_torch:
        parser.error("--python goes with --with-torch (a zip without wheels runs in every Blender the manifest allows)")
    pythons = [BLENDER_PYTHONS[version] for version in (args.pythons or BLENDER_PYTHONS)] if args.with_torch else []
    try:
        if args.with_torch:
            project_requirements(args.torch_version)  # a bad version fails before anything is downloaded
        with tempfile.TemporaryDirectory(prefix="vposer-extension-build-") as scratch:
            os.environ.setdefault("BLENDER_USER_RESOURCES", os.path.join(scratch, "blender-user"))
            tool = blender_extension_tool()
            platforms = args.platforms or default_platforms(args.with_torch)
            zips = build(tool, Path(scratch), args.out.resolve(), platforms, pythons,
                         args.torch_version, args.torch_index_url)
    except BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for zip_path in zips:
        print(zip_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
