"""Whether the PyTorch core can run inside this Blender, and what to tell the user if not.

REQUIRED lists every module the core imports when an operator runs; each is checked here, where
polls and the panel ask, so a missing one greys the buttons out with its name instead of failing
in the middle of a job with "No module named ...". Modules only some jobs need are imported by
those jobs, which say what to install: PyYAML (the official VPoser release's config) and c3d
(Import C3D Markers, whose poll checks it).
"""

from __future__ import annotations

import importlib.util

REQUIRED: tuple[tuple[str, str], ...] = (("torch", "PyTorch"), ("numpy", "NumPy"))  # (module, package name)


def missing_packages() -> list[str]:
    """Names of the REQUIRED packages that this Python cannot import."""
    return [package for module, package in REQUIRED if importlib.util.find_spec(module) is None]


def core_available() -> bool:
    return not missing_packages()


def missing_phrase() -> str:
    """'PyTorch is missing', 'PyTorch and NumPy are missing'."""
    missing = missing_packages()
    return f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing"


def missing_message() -> str:
    """One line for a poll: what is missing, and where to read how to get it."""
    return f"{missing_phrase()}: the VPoser tab says how to install it"


# Lines the panel shows under missing_phrase().
MISSING_HELP = (
    "Blender's Python cannot import it. Install the extension",
    "build that bundles PyTorch, or set 'Extra Site-Packages'",
    "in the add-on preferences to a folder that contains it",
)
