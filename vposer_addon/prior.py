"""The pose prior the operators use: the user's official VPoser folder when the preferences name
one, else the shipped open prior; loaded once per session and again only when the choice changes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import bpy

from .preferences import get_preferences, resolve_device

if TYPE_CHECKING:
    from ..core.body_model import BodyModel
    from ..core.vposer import VPoser

_priors: dict[tuple[str, str, str], VPoser] = {}  # (path, device, dtype) -> prior in eval mode


def load_prior(context: bpy.types.Context, like: BodyModel | None = None) -> VPoser:
    """The prior in eval mode on the preferred device, or on `like`'s device and dtype when given
    (the solver needs prior and body together). Raises core's VPoserLoadError naming the folder
    and the preference it comes from."""
    import torch

    from ..core.vposer import VPoserLoadError, default_vposer_path, load_vposer

    preferences = get_preferences(context)
    folder = bpy.path.abspath(preferences.vposer_path) if preferences and preferences.vposer_path else ""
    path = folder or str(default_vposer_path())
    device = str(like.device) if like is not None else resolve_device(context)
    dtype = like.dtype if like is not None else torch.float32
    key = (path, device, str(dtype))
    if key not in _priors:
        try:
            prior = load_vposer(path)
        except VPoserLoadError as error:
            where = "the VPoser Folder set in the preferences" if folder else "the shipped one"
            raise VPoserLoadError(f"cannot load the pose prior ({where}): {error}") from error
        _priors[key] = prior.to(device=device, dtype=dtype).eval()
    return _priors[key]
