"""The README's main job: scripts/retarget.py CLIP.bvh --blend OUT.blend, in its own process (it
starts Blender as a module itself)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import matplotlib.image

REPO = Path(__file__).resolve().parents[2]


def test_retarget_saves_a_blend_and_a_rendered_preview(tmp_path):
    blend = tmp_path / "walk.blend"
    command = [sys.executable, "scripts/retarget.py", "examples/cmu_02_01_walk.bvh", "--fps", "30",
               "--out", str(tmp_path / "walk.npz"), "--blend", str(blend)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert blend.stat().st_size > 100_000
    preview = matplotlib.image.imread(report["preview"])
    assert preview.shape[0] == 360 and preview.shape[1] == 6 * 240  # six rendered frames side by side
    assert preview[..., :3].std() > 0.05  # something was drawn, not a blank frame
    assert Path(report["fit_plot"]).stat().st_size > 10_000
    check = subprocess.run(
        [sys.executable, "-c", (
            "import bpy, sys; bpy.ops.wm.open_mainfile(filepath=sys.argv[1]);"
            "body = bpy.data.objects['Body'];"
            "curve = body.animation_data.action.layers[0].strips[0].channelbags[0].fcurves[0];"
            "print(len(curve.keyframe_points))"), str(blend)],
        capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip().splitlines()[-1] == "86"
