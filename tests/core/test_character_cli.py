"""scripts/retarget.py --character: the shipped CMU walk written in a DAZ-style character's skeleton."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from character_testing import daz_bvh_text
from core.body_model import BodyModel
from core.mocap.bvh import forward_kinematics, read_bvh

REPO = Path(__file__).resolve().parents[2]
CLIP = REPO / "examples" / "cmu_02_01_walk.bvh"
# (source joint, its child) -> (character joint, its child): the limbs both skeletons have
LIMBS = {("LeftUpLeg", "LeftLeg"): ("lThigh", "lShin"), ("LeftLeg", "LeftFoot"): ("lShin", "lFoot"),
         ("RightUpLeg", "RightLeg"): ("rThigh", "rShin"), ("RightLeg", "RightFoot"): ("rShin", "rFoot"),
         ("LeftArm", "LeftForeArm"): ("lShldr", "lForeArm"), ("RightArm", "RightForeArm"): ("rShldr", "rForeArm"),
         ("LeftForeArm", "LeftFingerBase"): ("lForeArm", "lHand"),
         ("RightForeArm", "RightFingerBase"): ("rForeArm", "rHand")}


def write_character(path: Path) -> None:
    model = BodyModel.open_default("adult", dtype=torch.float64)
    with torch.no_grad():
        rest = model.rest_joints()[0]
    path.write_text(daz_bvh_text(rest, list(model.joint_names)))


@pytest.fixture(scope="module")
def walk_on_character(tmp_path_factory):
    folder = tmp_path_factory.mktemp("character")
    character, out = folder / "daz.bvh", folder / "walk_on_daz.bvh"
    write_character(character)
    result = subprocess.run([sys.executable, "scripts/retarget.py", str(CLIP), "--fps", "30", "--character",
                             str(character), "--character-rest-frame", "0", "--character-from", "ik", "--out", str(out)],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    return character, out, json.loads(result.stdout)


def test_character_bvh_keeps_the_character_hierarchy(walk_on_character):
    character, out, report = walk_on_character
    source, written = read_bvh(character), read_bvh(out)
    assert written.names == source.names and written.channels == source.channels
    np.testing.assert_array_equal(written.parents, source.parents)
    np.testing.assert_allclose(written.offsets, source.offsets, atol=1e-6)
    assert set(written.end_sites) == set(source.end_sites)
    assert written.num_frames == report["frames"] == 86 and written.fps == pytest.approx(30, rel=1e-5)
    assert report["character_map"]["left_knee"] == ["lShin"] and report["character_map"]["pelvis"] == ["hip"]
    assert report["character_scale"] == pytest.approx(1.0, abs=0.1)


def test_character_limbs_follow_the_source(walk_on_character):
    """Limb directions of the written file, read back, against the clip's at the same frames."""
    _, out, report = walk_on_character
    clip, written = read_bvh(CLIP), read_bvh(out)
    frames = np.arange(0, clip.num_frames, 4)[: written.num_frames]
    _, src = forward_kinematics(clip, frames=frames)
    _, dst = forward_kinematics(written)
    angles = []
    for (a, b), (c, d) in LIMBS.items():
        u = src[:, clip.index(b)] - src[:, clip.index(a)]
        v = dst[:, written.index(d)] - dst[:, written.index(c)]
        angles.append(torch.rad2deg(torch.acos(torch.nn.functional.cosine_similarity(u, v, dim=-1).clamp(-1, 1))))
    angles = torch.stack(angles)
    assert float(angles.mean()) < 5.0 and float(angles.max()) < 25.0
    assert report["limb_direction_deg"] < 5.0 and report["limb_direction_body_deg"] < 0.01
    # the root travels as the clip's does, scaled to the character: the walk goes the same way
    travel_src = (src[-1, 0] - src[0, 0])[[0, 2]] * 0.05644
    travel_dst = (dst[-1, 0] - dst[0, 0])[[0, 2]] * 0.01
    assert float(torch.nn.functional.cosine_similarity(travel_src, travel_dst, dim=0)) > 0.99
    assert float(travel_dst.norm() / travel_src.norm()) == pytest.approx(report["character_scale"], rel=0.1)


def test_character_errors_are_clear(tmp_path):
    character = tmp_path / "rig.bvh"
    write_character(character)
    bad_map = tmp_path / "map.json"
    bad_map.write_text(json.dumps({"joints": {"pelvis": "hip", "head": "skull"}}))
    result = subprocess.run([sys.executable, "scripts/retarget.py", str(CLIP), "--fps", "10", "--character",
                             str(character), "--character-map", str(bad_map), "--out", str(tmp_path / "o.bvh")],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode != 0 and "skull" in result.stderr and "Traceback" not in result.stderr
    result = subprocess.run([sys.executable, "scripts/retarget.py", str(CLIP), "--character", str(character),
                             "--out", str(tmp_path / "o.npz")], capture_output=True, text=True, cwd=REPO)
    assert result.returncode != 0 and ".bvh" in result.stderr


def test_c3d_trial_onto_a_character(tmp_path):
    """Markers solved through the prior, written in the character's skeleton; the limbs are
    compared with the solved body's (a marker trial has no skeleton of its own)."""
    from test_c3d import write_c3d

    from core.keypoints import KeypointSet
    from core.mocap.c3d import lab_to_model_rotation

    body = BodyModel.open_default("adult")
    markers = KeypointSet.from_json(body, REPO / "core" / "data" / "markers_plugin_gait_open.json")
    rotations = torch.eye(3).expand(2, body.num_joints, 3, 3).clone()
    with torch.no_grad():
        model_space = markers.evaluate(rotations, None, torch.tensor([[0.0, 0.9, 0.0]]).expand(2, 3)).numpy()
    trial = write_c3d(tmp_path / "trial.c3d", list(markers.names), 1000 * model_space @ lab_to_model_rotation("z"),
                      rate=100.0)
    character, out = tmp_path / "daz.bvh", tmp_path / "trial_on_daz.bvh"
    write_character(character)
    result = subprocess.run([sys.executable, "scripts/retarget.py", str(trial), "--character", str(character),
                             "--character-rest-frame", "0", "--out", str(out)], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["limb_reference"] == "body" and report["limb_direction_deg"] < 0.01
    written = read_bvh(out)
    assert written.num_frames == 2 and written.fps == pytest.approx(100, rel=1e-5)
    assert written.names == read_bvh(character).names


def _transfer(character: Path, out: Path, *extra: str) -> dict:
    result = subprocess.run([sys.executable, "scripts/retarget.py", str(CLIP), "--fps", "30", "--character",
                             str(character), "--character-rest-frame", "0", "--out", str(out), *extra],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def transfer_on_character(walk_on_character, tmp_path_factory):
    """The default run (transfer, foot lock on) onto the same character: (out, report)."""
    out = tmp_path_factory.mktemp("transfer") / "walk_transfer.bvh"
    return out, _transfer(walk_on_character[0], out)


def test_character_from_transfer_by_default_follows_the_source_limbs(walk_on_character, transfer_on_character):
    """By default a BVH source's rotations drive the character (the solved root path): its limbs read
    back along the clip's, closer than with --character-from ik, which follows the solved body."""
    character, _, ik_report = walk_on_character
    out, report = transfer_on_character
    assert report["character_from"] == "transfer" and ik_report["character_from"] == "ik"
    assert report["limb_direction_deg"] < 1.0 and report["limb_direction_deg"] < ik_report["limb_direction_deg"] / 2
    clip, written = read_bvh(CLIP), read_bvh(out)
    frames = np.arange(0, clip.num_frames, 4)[: written.num_frames]
    _, src = forward_kinematics(clip, frames=frames)
    _, dst = forward_kinematics(written)
    for (a, b), (c, d) in LIMBS.items():
        u = src[:, clip.index(b)] - src[:, clip.index(a)]
        v = dst[:, written.index(d)] - dst[:, written.index(c)]
        cos = torch.nn.functional.cosine_similarity(u, v, dim=-1).clamp(-1, 1)
        assert float(torch.rad2deg(torch.acos(cos)).mean()) < 2.0, (a, b)


def test_the_foot_lock_keeps_planted_feet_and_leaves_the_limbs(walk_on_character, transfer_on_character, tmp_path):
    """On by default: on the source's planted frames the character's feet (at body size) slide no
    more than the source's, less than with --no-foot-lock; the limbs are the same either way, and
    the root path differs by a smooth offset only."""
    out, report = transfer_on_character
    loose_out = tmp_path / "walk_loose.bvh"
    loose = _transfer(walk_on_character[0], loose_out, "--no-foot-lock")
    assert report["foot_lock"] is True and loose["foot_lock"] is False
    slide, loose_slide = report["foot_slide_mm_per_frame"], loose["foot_slide_mm_per_frame"]
    assert slide["source"] == loose_slide["source"]
    assert slide["character"] < loose_slide["character"] and slide["character"] <= slide["source"] + 0.5
    assert report["limb_direction_deg"] == pytest.approx(loose["limb_direction_deg"], abs=1e-3)
    _, locked = forward_kinematics(read_bvh(out))
    _, free = forward_kinematics(read_bvh(loose_out))
    offset = (locked[:, 0] - free[:, 0]) * 0.01  # the hip, centimetres -> metres
    assert float(offset[:, 1].abs().max()) < 1e-6  # horizontal only
    assert float((offset[1:] - offset[:-1]).norm(dim=-1).max()) <= 0.5 / 30 + 1e-6  # no pops
