"""Keys read back from an object's action through its own slot (Blender 5.0's layered actions),
shared by the add-on tests."""

from __future__ import annotations

import bpy
import numpy as np


def action_curves(obj: bpy.types.Object) -> dict[tuple[str, int], bpy.types.FCurve]:
    """{(data path, index): F-curve} of the object's assigned action and slot."""
    animation_data = obj.animation_data
    channelbag = animation_data.action.layers[0].strips[0].channelbag(animation_data.action_slot)
    return {(curve.data_path, curve.array_index): curve for curve in channelbag.fcurves}


def key_co(curve: bpy.types.FCurve) -> np.ndarray:
    """(K, 2) the curve's keys as (frame, value) rows."""
    co = np.empty(2 * len(curve.keyframe_points), dtype=np.float32)
    curve.keyframe_points.foreach_get("co", co)
    return co.reshape(-1, 2)
