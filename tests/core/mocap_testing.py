"""A tiny skeleton in the layout of cgspeed's DAZ-friendly CMU release, written as BVH, for tests
of the `cmu_daz` preset (core and add-on)."""

from __future__ import annotations

import numpy as np

from core.mocap.bvh import format_bvh

# The release's rest frame: arms from hanging down to horizontal, and (as real T-pose frames do) a
# joint that is not at its zero rotation, the back bent 8 deg, which no bone direction reveals.
T_POSE = {"lShldr": (90, 0, 0), "rShldr": (-90, 0, 0), "abdomen": (0, 8, 0)}


def daz_like_text(frames: list[dict]) -> str:
    """A DAZ-named skeleton in centimetres whose OFFSET pose hangs the arms down; frames: per frame
    {joint: (z, x, y) degrees} in the release's channel order, the root's (z, y, x)."""
    joints = [("hip", None, (0, 0, 0)), ("abdomen", "hip", (0, 8, 0)), ("chest", "abdomen", (0, 12, 0)),
              ("neck", "chest", (0, 20, 0)), ("head", "neck", (0, 10, 3))]
    for c, x in (("l", 1), ("r", -1)):  # depth-first, the order format_bvh writes
        joints += [(f"{c}Collar", "chest", (7 * x, 12, 0)), (f"{c}Shldr", f"{c}Collar", (11 * x, 2, 0)),
                   (f"{c}ForeArm", f"{c}Shldr", (0, -27, 0)), (f"{c}Hand", f"{c}ForeArm", (0, -26, 0))]
    for c, x in (("l", 1), ("r", -1)):
        joints += [(f"{c}Buttock", "hip", (9 * x, -8, 0)), (f"{c}Thigh", f"{c}Buttock", (0, 0, 0)),
                   (f"{c}Shin", f"{c}Thigh", (0, -42, 0)), (f"{c}Foot", f"{c}Shin", (0, -42, 0))]
    names = [n for n, _, _ in joints]
    parents = [names.index(p) if p else -1 for _, p, _ in joints]
    channels = [("Xposition", "Yposition", "Zposition", "Zrotation", "Yrotation", "Xrotation")] + [
        ("Zrotation", "Xrotation", "Yrotation")] * (len(names) - 1)
    rows = [[0, 95, 0] + [v for n in names for v in frame.get(n, (0, 0, 0))] for frame in frames]
    return format_bvh(names, parents, [o for _, _, o in joints], channels, np.array(rows), 1 / 120)
