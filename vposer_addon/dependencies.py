"""Whether the PyTorch core can run inside this Blender, and what to tell the user if not."""

from __future__ import annotations

import importlib.util

TORCH_MISSING_HELP = (
    "PyTorch is not installed in Blender's Python. Install the extension build that bundles it, "
    "or set 'Extra site-packages' in the add-on preferences to a folder that contains torch."
)


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None
