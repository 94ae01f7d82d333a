"""A BVH written by scripts/retarget.py --character, imported by Blender's own BVH importer: the
character's hierarchy and OFFSETs, and every frame's joints where the project's reader puts them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import bpy
import numpy as np
import torch

from core.body_model import BodyModel
from core.mocap.bvh import forward_kinematics, read_bvh, rest_positions

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "core"))
from character_testing import daz_bvh_text  # noqa: E402


def test_blender_imports_the_character_bvh(tmp_path):
    model = BodyModel.open_default("adult", dtype=torch.float64)
    with torch.no_grad():
        rest = model.rest_joints()[0]
    character, out = tmp_path / "daz.bvh", tmp_path / "walk_on_daz.bvh"
    character.write_text(daz_bvh_text(rest, list(model.joint_names)))
    result = subprocess.run([sys.executable, "scripts/retarget.py", "examples/cmu_02_01_walk.bvh", "--fps", "10",
                             "--character", str(character), "--character-rest-frame", "0", "--out", str(out)],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    ours = read_bvh(out)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    assert bpy.ops.import_anim.bvh(filepath=str(out), global_scale=0.01, frame_start=1,
                                   rotate_mode="NATIVE") == {"FINISHED"}
    rig = bpy.context.active_object
    bones = rig.data.bones
    assert [b.name for b in bones] == ours.names
    assert [ours.names.index(b.parent.name) if b.parent else -1 for b in bones] == ours.parents.tolist()
    to_blender = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]]) * 0.01  # Y-up file -> Z-up, cm -> m
    heads = np.array([b.head_local for b in bones])
    np.testing.assert_allclose(heads, rest_positions(read_bvh(character), root_at_origin=False) @ to_blender.T,
                               atol=1e-5)
    _, positions = forward_kinematics(ours)
    for frame in (0, ours.num_frames // 2, ours.num_frames - 1):
        bpy.context.scene.frame_set(1 + frame)
        posed = np.array([rig.matrix_world @ p.head for p in rig.pose.bones])
        np.testing.assert_allclose(posed, positions[frame].numpy() @ to_blender.T, atol=1e-4)
