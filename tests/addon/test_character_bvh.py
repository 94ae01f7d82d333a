"""A BVH written by scripts/retarget.py --character, imported by Blender's own BVH importer: the
character's hierarchy and OFFSETs, and every frame's joints where the project's reader puts them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import bpy
import pytest
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


def _save_armature_blend(path: Path, rest, names, parents) -> None:
    """An Unreal-named A-pose armature with rolled bones, in centimetres under an object turned 30
    degrees about Z and scaled 0.01, saved as a .blend (plus an empty, so the armature is not alone)."""
    from character_testing import build_character

    built = build_character("unreal", rest, names, parents, seed=6)
    turn = np.array([[np.cos(0.5), -np.sin(0.5), 0], [np.sin(0.5), np.cos(0.5), 0], [0, 0, 1.0]])
    skeleton = built.skeleton(turn, 0.01)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    data = bpy.data.armatures.new("RigData")
    rig = bpy.data.objects.new("Rig", data)
    bpy.context.scene.collection.objects.link(rig)
    bpy.context.scene.collection.objects.link(bpy.data.objects.new("Helper", None))
    bpy.context.view_layer.objects.active = rig
    bpy.ops.object.mode_set(mode="EDIT")
    for name, parent, head, tail, rest_m in zip(skeleton.names, skeleton.parents, skeleton.heads, skeleton.tails,
                                               skeleton.rest):
        bone = data.edit_bones.new(name)
        bone.head, bone.tail = head, tail
        bone.align_roll(rest_m[:, 2])
        if parent >= 0:
            bone.parent = data.edit_bones[skeleton.names[parent]]
    bpy.ops.object.mode_set(mode="OBJECT")
    rig.matrix_world = [list(row) for row in np.block([[turn * 0.01, np.zeros((3, 1))], [np.zeros((1, 3)), np.ones((1, 1))]])]
    bpy.ops.wm.save_as_mainfile(filepath=str(path))


def test_a_blend_armature_as_the_character(tmp_path):
    """--character FILE.blend:Rig: the BVH holds the armature's bone tree and its limbs follow the clip."""
    model = BodyModel.open_default("adult", dtype=torch.float64)
    with torch.no_grad():
        rest = model.rest_joints()[0]
    blend, out = tmp_path / "hero.blend", tmp_path / "walk_on_hero.bvh"
    _save_armature_blend(blend, rest, list(model.joint_names), model.parents.tolist())
    result = subprocess.run([sys.executable, "scripts/retarget.py", "examples/cmu_02_01_walk.bvh", "--fps", "10",
                             "--character", f"{blend}:Rig", "--character-from", "ik", "--out", str(out)],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["character_map"]["left_hip"] == ["thigh_l"]
    assert report["limb_direction_deg"] < 5.0 and report["limb_direction_body_deg"] < 0.01
    assert 0.8 < report["character_scale"] < 1.2  # the mean body's rig against the clip's fitted body
    written = read_bvh(out)
    assert written.names[0] == "rig_root" and "upperarm_twist_01_l" in written.names and "jaw" in written.names
    # the rest (zero-rotation) pose is the armature's, in centimetres, Y up: the head bone above the feet
    heads = rest_positions(written, root_at_origin=False)
    assert heads[written.index("head"), 1] - heads[written.index("foot_l"), 1] == pytest.approx(
        100 * float(rest[15, 1] - rest[7, 1]), abs=1.0)
    # the file's own motion, read back, follows the clip's limbs
    clip = read_bvh(REPO / "examples" / "cmu_02_01_walk.bvh")
    _, src = forward_kinematics(clip, frames=np.arange(0, clip.num_frames, 12)[: written.num_frames])
    _, dst = forward_kinematics(written)
    limbs = {(f"{S}{a}", f"{S}{b}"): (f"{c}_{s}", f"{d}_{s}") for S, s in (("Left", "l"), ("Right", "r"))
             for (a, b), (c, d) in {("UpLeg", "Leg"): ("thigh", "calf"), ("Leg", "Foot"): ("calf", "foot"),
                                    ("Arm", "ForeArm"): ("upperarm", "lowerarm"),
                                    ("ForeArm", "FingerBase"): ("lowerarm", "hand")}.items()}
    angles = []
    for (a, b), (c, d) in limbs.items():
        u = src[:, clip.index(b)] - src[:, clip.index(a)]
        v = dst[:, written.index(d)] - dst[:, written.index(c)]
        angles.append(torch.rad2deg(torch.acos(torch.nn.functional.cosine_similarity(u, v, dim=-1).clamp(-1, 1))))
    assert float(torch.stack(angles).mean()) < 4.0 and float(torch.stack(angles).max()) < 20.0
    bpy.ops.wm.read_factory_settings(use_empty=True)
    assert bpy.ops.import_anim.bvh(filepath=str(out), global_scale=0.01) == {"FINISHED"}
    assert [b.name for b in bpy.context.active_object.data.bones] == written.names
    missing = subprocess.run([sys.executable, "scripts/retarget.py", "examples/cmu_02_01_walk.bvh", "--fps", "10",
                              "--character", f"{blend}:Nobody", "--out", str(out)], capture_output=True, text=True,
                             cwd=REPO)
    assert missing.returncode != 0 and "no armature 'Nobody'" in missing.stderr and "Rig" in missing.stderr
