"""Rotation transfer from a CMU-like BVH skeleton to an SMPL-style skeleton; mirroring; presets;
scripts/prepare_mocap.py end to end on a tiny folder."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from core.mocap.convert import keep_changed, subsample_indices
from core.mocap.bvh import format_bvh, parse_bvh
from core.mocap.skeletons import (
    SMPL_BODY_JOINT_NAMES,
    SMPL_BODY_PARENTS,
    SMPLH_JOINT_NAMES,
    SkeletonPreset,
    get_preset,
    load_preset,
)
from core.mocap.transfer import (
    build_transfer,
    infer_axes,
    minimal_rotation,
    mirror_axis_angle,
    mirror_rotations,
    mirror_translation,
    retarget_bvh,
    skeleton_fk,
)
from core.rotations import axis_angle_to_matrix
from mocap_testing import T_POSE, daz_like_text

ROOT = Path(__file__).resolve().parents[2]
SCALE = get_preset("cmu").unit_scale
D = math.pi / 180

# ------------------------------------------------------------------------------------------------
# A CMU-like 31-joint skeleton (cgspeed names, file order of the main set), symmetric, in metres
# (written in CMU units). `splay` tilts both leg bones outwards, as CMU's ASF rest does (20 deg).


def cmu_like(splay_deg: float = 0.0):
    s, c = math.sin(splay_deg * D), math.cos(splay_deg * D)
    joints = []  # (name, parent name, offset in metres)

    def add(name, parent, offset):
        joints.append((name, parent, np.array(offset, dtype=float)))

    add("Hips", None, (0, 0, 0))
    for side, x in (("Left", 1), ("Right", -1)):
        L = side[0]
        add(f"{L}HipJoint", "Hips", (0, 0, 0))
        add(f"{side}UpLeg", f"{L}HipJoint", (0.09 * x, -0.08, 0))
        add(f"{side}Leg", f"{side}UpLeg", (0.42 * s * x, -0.42 * c, 0))
        add(f"{side}Foot", f"{side}Leg", (0.42 * s * x, -0.42 * c, 0))
        add(f"{side}ToeBase", f"{side}Foot", (0, -0.05, 0.13))
    add("LowerBack", "Hips", (0, 0, 0))
    add("Spine", "LowerBack", (0, 0.12, 0))
    add("Spine1", "Spine", (0, 0.12, 0))
    add("Neck", "Spine1", (0, 0.14, 0))
    add("Neck1", "Neck", (0, 0.05, 0))
    add("Head", "Neck1", (0, 0.05, 0))
    for side, x in (("Left", 1), ("Right", -1)):
        add(f"{side}Shoulder", "Spine1", (0, 0.14, 0))
        add(f"{side}Arm", f"{side}Shoulder", (0.18 * x, 0.02, 0))
        add(f"{side}ForeArm", f"{side}Arm", (0.27 * x, 0, 0))
        add(f"{side}Hand", f"{side}ForeArm", (0.17 * x, 0, 0))
        add(f"{side}FingerBase", f"{side}Hand", (0.09 * x, 0, 0))
        add(f"{side}HandIndex1", f"{side}FingerBase", (0.04 * x, 0, 0))
        add(f"{side[0]}Thumb", f"{side}Hand", (0.09 * x, 0, 0))
    # depth-first file order, as in the real files
    order = []

    def visit(name):
        order.append(name)
        for n, p, _ in joints:
            if p == name:
                visit(n)

    visit("Hips")
    by_name = {n: (p, o) for n, p, o in joints}
    parents = [order.index(by_name[n][0]) if by_name[n][0] else -1 for n in order]
    offsets = np.stack([by_name[n][1] for n in order]) / SCALE
    return order, parents, offsets


def cmu_like_text(frames: list[dict], splay_deg: float = 0.0, hips=(0.0, 0.95, 0.0)) -> str:
    """frames: per frame {joint: (z, y, x) degrees}; the root may carry 'pos' in metres."""
    names, parents, offsets = cmu_like(splay_deg)
    channels = [("Xposition", "Yposition", "Zposition", "Zrotation", "Yrotation", "Xrotation")] + [
        ("Zrotation", "Yrotation", "Xrotation")
    ] * (len(names) - 1)
    rows = []
    for frame in frames:
        pos = np.asarray(frame.get("pos", hips)) / SCALE
        row = list(pos)
        for name in names:
            row += list(frame.get(name, (0.0, 0.0, 0.0)))
        rows.append(row)
    ends = {names.index(n): (0, 0, 0.05 / SCALE) for n in ("LeftToeBase", "RightToeBase")}
    ends[names.index("Head")] = (0, 0.1 / SCALE, 0)
    return format_bvh(names, parents, offsets, channels, np.array(rows), 1 / 120, ends)


# The target: an SMPL-like T-pose whose limb directions match the straight-legged source.
_HALF = {
    "pelvis": (0, -0.20, 0), "spine1": (0, -0.08, 0), "spine2": (0, 0.04, 0), "spine3": (0, 0.10, 0),
    "neck": (0, 0.30, 0), "head": (0, 0.40, 0.03),
    "left_hip": (0.09, -0.28, 0), "left_knee": (0.09, -0.70, 0), "left_ankle": (0.09, -1.12, 0),
    "left_foot": (0.09, -1.17, 0.13), "left_collar": (0.07, 0.22, 0), "left_shoulder": (0.18, 0.24, 0),
    "left_elbow": (0.45, 0.24, 0), "left_wrist": (0.71, 0.24, 0),
}  # fmt: skip


def target_skeleton():
    rest = []
    for n in SMPL_BODY_JOINT_NAMES:
        if n.startswith("right_"):
            x, y, z = _HALF["left_" + n[6:]]
            rest.append((-x, y, z))
        else:
            rest.append(_HALF[n])
    return torch.tensor(rest, dtype=torch.float64), torch.tensor(SMPL_BODY_PARENTS)


def convert(frames, splay_deg=0.0, preset="cmu", **kwargs):
    rest, parents = target_skeleton()
    motion = parse_bvh(cmu_like_text(frames, splay_deg), "mini.bvh")
    return retarget_bvh(motion, preset, rest, parents, **kwargs)


def pose_of(result, frame=0) -> dict[str, np.ndarray]:
    return {n: result.poses[frame, j].numpy() for j, n in enumerate(SMPL_BODY_JOINT_NAMES)}


def assert_only(pose: dict, expected: dict, atol=1e-9):
    for name, value in pose.items():
        np.testing.assert_allclose(value, expected.get(name, (0, 0, 0)), atol=atol, err_msg=name)


# ------------------------------------------------------------------------------------------------


def test_zero_frame_gives_zero_pose_and_pelvis_on_hips():
    result = convert([{"pos": (0.3, 0.95, -1.2)}])
    assert_only(pose_of(result), {})
    rest, _ = target_skeleton()
    np.testing.assert_allclose(result.trans[0].numpy(), np.array([0.3, 0.95, -1.2]) - rest[0].numpy(), atol=1e-9)
    assert all(abs(a) < 1e-6 for a in result.setup.align_angles_deg().values())


def test_known_pose_arm_raise_elbow_bend_turn():
    # Hips turned 90 deg about Y; left arm raised 45 deg (about +Z); left elbow bent 90 deg so the
    # forearm points forward (about Y by -90); channels are Z, Y, X.
    frame = {"Hips": (0, 90, 0), "LeftArm": (45, 0, 0), "LeftForeArm": (0, -90, 0)}
    pose = pose_of(convert([frame]))
    assert_only(pose, {
        "pelvis": (0, math.pi / 2, 0),
        "left_shoulder": (0, 0, math.pi / 4),
        "left_elbow": (0, -math.pi / 2, 0),
    })  # fmt: skip


def test_forearm_twist_is_shared_and_neck_is_averaged():
    frame = {"LeftForeArm": (0, -90, 0), "LeftHand": (0, 0, 40), "Neck": (0, 0, 20), "Neck1": (0, 0, -10)}
    result = convert([frame])
    local = dict(zip(SMPL_BODY_JOINT_NAMES, result.local[0].numpy()))
    Rm = lambda seq, ang: Rotation.from_euler(seq, ang, degrees=True).as_matrix()  # noqa: E731
    # elbow: the forearm bend and half the CMU wrist twist (about the forearm, local X)
    np.testing.assert_allclose(local["left_elbow"], Rm("YX", [-90, 20]), atol=1e-9)
    np.testing.assert_allclose(local["left_wrist"], Rm("X", 20), atol=1e-9)
    # neck: the mean of Neck (20) and Neck+Neck1 (10) globals = 15 deg; head: 10 - 15 = -5 deg
    np.testing.assert_allclose(pose_of(result)["neck"], (15 * D, 0, 0), atol=1e-9)
    np.testing.assert_allclose(pose_of(result)["head"], (-5 * D, 0, 0), atol=1e-9)


def test_splayed_rest_legs_are_aligned():
    # CMU's rest has both leg bones 20 deg outwards: A_hip is 20 deg about Z (no twist).
    zero = convert([{}], splay_deg=20.0)
    angles = zero.setup.align_angles_deg()
    for name in ("left_hip", "right_hip", "left_knee", "right_knee"):
        assert angles[name] == pytest.approx(20.0, abs=1e-4)  # offsets written with 6 decimals
    assert angles["spine1"] == 0.0 and angles["left_collar"] == 0.0
    # ankles and feet continue the splayed limb (their own direction cannot show the roll)
    assert angles["left_ankle"] == angles["left_knee"] and angles["right_foot"] == angles["right_knee"]
    # the zero-rotation source frame has splayed legs, so the body's hips abduct by 20 deg
    assert_only(pose_of(zero), {"left_hip": (0, 0, 20 * D), "right_hip": (0, 0, -20 * D)}, atol=1e-6)
    # a source frame that brings the thighs back to vertical is the body's rest pose
    straight = convert([{"LeftUpLeg": (-20, 0, 0), "RightUpLeg": (20, 0, 0)}], splay_deg=20.0)
    assert_only(pose_of(straight), {}, atol=1e-6)


def test_aligned_bones_follow_the_source_directions():
    rng = np.random.default_rng(1)
    names, _, _ = cmu_like(20.0)
    frames = [{n: tuple(rng.uniform(-60, 60, 3)) for n in names} | {"pos": (0.1, 0.9, 0.2)} for _ in range(4)]
    for frame in frames:  # CMU's lwrist (LeftHand) only twists about the forearm
        frame["LeftHand"] = (0, 0, frame["LeftHand"][2])
        frame["RightHand"] = (0, 0, frame["RightHand"][2])
    motion = parse_bvh(cmu_like_text(frames, 20.0))
    rest, parents = target_skeleton()
    result = retarget_bvh(motion, "cmu", rest, parents)
    joints, _ = skeleton_fk(result.local, rest, parents, result.trans)
    from core.mocap.bvh import forward_kinematics

    _, src = forward_kinematics(motion)
    src = src * SCALE
    t = {n: i for i, n in enumerate(SMPL_BODY_JOINT_NAMES)}
    s = {n: i for i, n in enumerate(names)}
    for (a, b), (sa, sb) in {
        ("left_hip", "left_knee"): ("LeftUpLeg", "LeftLeg"),
        ("right_knee", "right_ankle"): ("RightLeg", "RightFoot"),
        ("left_shoulder", "left_elbow"): ("LeftArm", "LeftForeArm"),
        ("right_elbow", "right_wrist"): ("RightForeArm", "RightFingerBase"),
        ("spine3", "neck"): ("Spine1", "Neck"),  # A = I here, and the rest directions agree
    }.items():
        dt = torch.nn.functional.normalize(joints[:, t[b]] - joints[:, t[a]], dim=-1)
        ds = torch.nn.functional.normalize(src[:, s[sb]] - src[:, s[sa]], dim=-1)
        torch.testing.assert_close(dt, ds, atol=1e-6, rtol=0)
    # the pelvis lands on the source hips
    torch.testing.assert_close(joints[:, 0], src[:, 0], atol=1e-9, rtol=0)
    # or, anchored at the hips, the hip midpoints coincide
    hips = retarget_bvh(motion, "cmu", rest, parents, anchor="hips")
    joints, _ = skeleton_fk(hips.local, rest, parents, hips.trans)
    mid_t = (joints[:, t["left_hip"]] + joints[:, t["right_hip"]]) / 2
    mid_s = (src[:, s["LeftUpLeg"]] + src[:, s["RightUpLeg"]]) / 2
    torch.testing.assert_close(mid_t, mid_s, atol=1e-9, rtol=0)


def test_axis_change_z_up_source():
    # The same skeleton in a Z-up, -Y-facing world (SMPL (X, Y, Z) = source (x, z, -y)).
    names, parents, offsets = cmu_like()
    C = np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])  # p_smpl = C p_src
    src_offsets = offsets @ C  # C^T applied to each row
    channels = [("Xposition", "Yposition", "Zposition", "Zrotation", "Yrotation", "Xrotation")] + [
        ("Zrotation", "Yrotation", "Xrotation")
    ] * (len(names) - 1)
    row = np.zeros(3 + 3 * len(names))
    row[:3] = C.T @ np.array([0.5, 0.9, 2.0]) / SCALE
    row[3] = 90  # root about the source's z = SMPL's +Y
    motion = parse_bvh(format_bvh(names, parents, src_offsets, channels, row[None], 1 / 120))
    preset = get_preset("cmu").to_dict() | {"axes": None, "name": "cmu_zup"}
    rest, tparents = target_skeleton()
    result = retarget_bvh(motion, preset, rest, tparents)
    assert result.setup.axes.tolist() == C.tolist()
    assert_only(pose_of(result), {"pelvis": (0, math.pi / 2, 0)})
    np.testing.assert_allclose(result.trans[0].numpy(), np.array([0.5, 0.9, 2.0]) - rest[0].numpy(), atol=1e-9)


def test_infer_axes():
    assert infer_axes(up=(0.02, 1.0, -0.1), left=(1.0, 0.0, 0.05)) == ("+x", "+y", "+z")
    assert infer_axes(up=(0, 0, 1.0), left=(-1.0, 0.1, 0)) == ("-x", "+z", "+y")


def test_minimal_rotation():
    a = torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]], dtype=torch.float64)
    b = torch.tensor([[0.34, -0.94, 0], [0, 0, 2], [0, 0, -1]], dtype=torch.float64)
    R = minimal_rotation(a, b)
    torch.testing.assert_close((R @ a.unsqueeze(-1)).squeeze(-1), torch.nn.functional.normalize(b, dim=-1))
    # least angle: the rotation angle equals the angle between the directions (180 deg for opposite)
    cos = (torch.nn.functional.normalize(a, dim=-1) * torch.nn.functional.normalize(b, dim=-1)).sum(-1)
    cos_rotation = (R.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    torch.testing.assert_close(cos_rotation, cos)
    torch.testing.assert_close(R @ R.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand(3, 3, 3))


# ------------------------------------------------------------------------------------------------
# Mirroring


def test_mirror_twice_is_identity():
    poses = torch.randn(5, 52 * 3, dtype=torch.float64)
    torch.testing.assert_close(mirror_axis_angle(mirror_axis_angle(poses, SMPLH_JOINT_NAMES), SMPLH_JOINT_NAMES), poses)
    arr = poses.numpy()
    np.testing.assert_allclose(mirror_axis_angle(mirror_axis_angle(arr, SMPLH_JOINT_NAMES), SMPLH_JOINT_NAMES), arr)
    trans = np.random.default_rng(0).normal(size=(5, 3))
    np.testing.assert_allclose(mirror_translation(mirror_translation(trans, (0.01, 0, 0)), (0.01, 0, 0)), trans)


def test_mirror_of_left_arm_raise_is_right_arm_raise():
    left = convert([{"LeftArm": (45, 0, 10), "LeftForeArm": (0, -70, 0), "Hips": (10, 30, 0)}])
    right = convert([{"RightArm": (-45, 0, 10), "RightForeArm": (0, 70, 0), "Hips": (-10, -30, 0)}])
    mirrored = mirror_axis_angle(left.poses.reshape(1, -1), SMPL_BODY_JOINT_NAMES)
    torch.testing.assert_close(mirrored, right.poses.reshape(1, -1), atol=1e-9, rtol=0)


def test_mirrored_pose_moves_the_mirrored_skeleton():
    rest, parents = target_skeleton()
    rng = np.random.default_rng(3)
    poses = torch.as_tensor(rng.normal(0, 0.5, (3, 22, 3)))
    trans = torch.as_tensor(rng.normal(0, 0.5, (3, 3)))
    joints, _ = skeleton_fk(axis_angle_to_matrix(poses), rest, parents, trans)
    mp = mirror_axis_angle(poses, SMPL_BODY_JOINT_NAMES)
    expected_rotations = mirror_rotations(axis_angle_to_matrix(poses), SMPL_BODY_JOINT_NAMES)
    torch.testing.assert_close(axis_angle_to_matrix(mp), expected_rotations)
    mjoints, _ = skeleton_fk(axis_angle_to_matrix(mp), rest, parents, mirror_translation(trans, rest[0]))
    from core.mocap.transfer import mirror_permutation

    expected = joints[:, mirror_permutation(SMPL_BODY_JOINT_NAMES)] * torch.tensor([-1.0, 1, 1], dtype=torch.float64)
    torch.testing.assert_close(mjoints, expected)


# ------------------------------------------------------------------------------------------------
# Presets


def test_presets_and_custom(tmp_path):
    cmu = get_preset("cmu")
    assert cmu.sources("left_wrist") == ("LeftFingerBase",)
    assert cmu.sources("neck") == ("Neck", "Neck1")
    assert cmu.sources("left_index1") == ()
    assert cmu.unit_scale == pytest.approx(0.05644)
    mixamo = get_preset("mixamo")
    assert mixamo.sources("left_elbow") == ("mixamorig:LeftForeArm",)
    assert mixamo.sources("right_thumb3") == ("mixamorig:RightHandThumb3",)
    assert mixamo.with_prefix("mixamorig1:", "mixamorig:").sources("pelvis") == ("mixamorig1:Hips",)
    assert get_preset("smpl_like").sources("right_ring2") == ("right_ring2",)
    daz = get_preset("cmu_daz")
    assert daz.sources("right_knee") == ("rShin",) and daz.sources("spine2") == ("abdomen", "chest")
    assert daz.rest_frame == 0 and load_preset(daz.to_dict()) == daz
    path = tmp_path / "rig.json"
    path.write_text(json.dumps(cmu.to_dict() | {"name": "mine"}))
    mine = load_preset(str(path))
    assert mine.name == "mine" and mine.joints == cmu.joints and mine.directions == dict(cmu.directions)
    assert load_preset({"joints": {"pelvis": "root"}}).sources("pelvis") == ("root",)
    with pytest.raises(ValueError, match="unmapped"):
        SkeletonPreset("x", {"pelvis": "a"}, {"left_hip": "b"})
    with pytest.raises(KeyError, match="unknown skeleton preset"):
        load_preset("nope")


def test_missing_source_joint_is_named():
    rest, parents = target_skeleton()
    names, _, offsets = cmu_like()
    with pytest.raises(KeyError, match="LeftFingerBase"):
        build_transfer("cmu", [n.replace("LeftFingerBase", "LHand") for n in names], offsets, rest, parents)


def test_smpl_like_preset_copies_rotations():
    rest, parents = target_skeleton()
    offsets = rest.numpy().copy()
    offsets[1:] -= rest.numpy()[list(SMPL_BODY_PARENTS[1:])]
    rng = np.random.default_rng(5)
    angles = rng.uniform(-50, 50, (2, 22, 3))
    frames = np.concatenate([np.zeros((2, 3)), angles.reshape(2, -1)], 1)
    channels = [("Xposition", "Yposition", "Zposition", "Xrotation", "Yrotation", "Zrotation")] + [
        ("Xrotation", "Yrotation", "Zrotation")
    ] * 21
    # SMPL's joint order is not depth-first: write the file in depth-first order, map by name
    order = []

    def visit(j):
        order.append(j)
        for c in range(22):
            if SMPL_BODY_PARENTS[c] == j:
                visit(c)

    visit(0)
    text = format_bvh(
        [SMPL_BODY_JOINT_NAMES[j] for j in order],
        [order.index(SMPL_BODY_PARENTS[j]) if j else -1 for j in order],
        offsets[order],
        [channels[j] for j in order],
        np.concatenate([frames[:, :3]] + [angles[:, j] for j in order], 1),
        1 / 30,
    )
    result = retarget_bvh(parse_bvh(text), "smpl_like", rest, parents)
    expected = Rotation.from_euler("XYZ", angles.reshape(-1, 3), degrees=True).as_matrix()
    expected = torch.as_tensor(expected).reshape(2, 22, 3, 3)
    torch.testing.assert_close(result.local, expected, atol=1e-7, rtol=0)  # angles written with 6 decimals


# ------------------------------------------------------------------------------------------------
# scripts/prepare_mocap.py


def _load_script():
    spec = importlib.util.spec_from_file_location("prepare_mocap", ROOT / "scripts" / "prepare_mocap.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prepare_mocap_end_to_end(tmp_path, capsys):
    from core.synthetic_models import write_model

    body = write_model(tmp_path / "body.npz", "smplh", num_vertices=120, num_faces=200, num_shape=4)
    src = tmp_path / "bvh"
    src.mkdir()
    t = np.arange(48)
    moving = [{"LeftArm": (40 * np.sin(k / 5), 0, 0), "RightUpLeg": (0, 0, 30 * np.cos(k / 7)),
               "pos": (0.01 * k, 0.95, 0)} for k in t]
    static = [{"LeftArm": (30, 0, 0)}] * 48
    (src / "01_01.bvh").write_text(cmu_like_text(moving))
    (src / "01_02.bvh").write_text(cmu_like_text(static))
    (src / "02_01.bvh").write_text(cmu_like_text(moving[::-1]))
    (src / "notes.txt").write_text("not a bvh")
    script = _load_script()
    out = tmp_path / "out"
    assert script.main([str(src), str(out), "--body", str(body), "--val-subjects", "02"]) == 0
    printed = capsys.readouterr().out
    assert "01_01.bvh" in printed and "train" in printed and "val" in printed
    assert sorted(p.name for p in (out / "train").iterdir()) == [
        "01_01.npz", "01_01_mirror.npz", "01_02.npz", "01_02_mirror.npz"]
    assert sorted(p.name for p in (out / "val").iterdir()) == ["02_01.npz"]
    clip = np.load(out / "train" / "01_01.npz")
    assert clip["poses"].shape == (12, 156) and clip["trans"].shape == (12, 3)  # 48 frames @120 -> 12 @30
    assert clip["betas"].shape == (16,) and not clip["betas"].any()
    assert str(clip["gender"]) == "neutral" and float(clip["mocap_framerate"]) == 30.0
    assert str(clip["subject"]) == "01" and str(clip["source_file"]) == "01_01.bvh"
    assert clip["source_frames"].tolist() == list(range(0, 48, 4))
    assert not clip["poses"][:, 66:].any()  # hands stay zero
    mirrored = np.load(out / "train" / "01_01_mirror.npz")
    np.testing.assert_allclose(mirror_axis_angle(mirrored["poses"], SMPLH_JOINT_NAMES), clip["poses"], atol=1e-6)
    # a static take keeps one frame
    assert np.load(out / "train" / "01_02.npz")["poses"].shape == (1, 156)
    # deterministic
    out2 = tmp_path / "out2"
    script.main([str(src), str(out2), "--body", str(body), "--val-subjects", "02", "--no-mirror"])
    assert sorted(p.name for p in (out2 / "train").iterdir()) == ["01_01.npz", "01_02.npz"]
    np.testing.assert_array_equal(np.load(out2 / "train" / "01_01.npz")["poses"], clip["poses"])


def test_subsample_and_near_duplicates():
    assert subsample_indices(9, 120.0, 30.0).tolist() == [0, 4, 8]
    assert subsample_indices(10, 120.00048, 30.0).tolist() == [0, 4, 8]
    assert subsample_indices(8, 100.0, 30.0).tolist() == [0, 3, 7]
    assert subsample_indices(5, 30.0, 30.0).tolist() == [0, 1, 2, 3, 4]
    joints = torch.zeros(6, 2, 3, dtype=torch.float64)
    joints[:, 1, 0] = torch.tensor([0, 0.004, 0.008, 0.012, 0.012, 0.05])
    # compared with the last kept frame, so slow drifts are not lost
    assert keep_changed(joints, 0.01).tolist() == [0, 3, 5]
    assert keep_changed(joints, 0).tolist() == list(range(6))


def test_twist_flips_are_undone():
    from core.mocap.transfer import fix_twist_flips, twist_angles

    rest, parents = target_skeleton()
    names = SMPL_BODY_JOINT_NAMES
    ankle = names.index("left_ankle")
    axis = torch.nn.functional.normalize(rest[names.index("left_foot")] - rest[ankle], dim=-1)
    bend = axis_angle_to_matrix(torch.tensor([0.4, 0.0, 0.0], dtype=torch.float64))
    local = torch.eye(3, dtype=torch.float64).repeat(3, 22, 1, 1)
    local[:, ankle] = bend
    flipped = bend @ axis_angle_to_matrix(torch.pi * 0.95 * axis)  # rolled 171 deg about the foot
    local[1, ankle] = flipped
    local[2, ankle] = bend @ axis_angle_to_matrix(0.5 * axis)  # a plausible 29-degree roll stays
    fixed, changed = fix_twist_flips(local, names, parents, rest)
    assert changed == 1
    assert abs(float(twist_angles(fixed[1, ankle], axis))) == pytest.approx(0.05 * math.pi, abs=1e-9)
    # the bone keeps its direction; other frames and joints are untouched
    torch.testing.assert_close(fixed[1, ankle] @ axis, flipped @ axis)
    torch.testing.assert_close(fixed[[0, 2]], local[[0, 2]])
    # the wrist (no child in a 22-joint body) uses the forearm's direction
    wrist = names.index("right_wrist")
    local[0, wrist] = axis_angle_to_matrix(torch.tensor([-2.8, 0.0, 0.0], dtype=torch.float64))
    fixed, changed = fix_twist_flips(local, names, parents, rest)
    assert changed == 2
    expected = axis_angle_to_matrix(torch.tensor([math.pi - 2.8, 0, 0], dtype=torch.float64))
    torch.testing.assert_close(fixed[0, wrist], expected)


# ------------------------------------------------------------------------------------------------
# cgspeed's DAZ-friendly skeleton: its rest is frame 0 (a T-pose), not the OFFSET pose


REST_BEND = Rotation.from_euler("x", T_POSE["abdomen"][1], degrees=True)  # the rest frame's bent back


def test_daz_rest_frame_is_the_t_pose_and_channels_read_z_x_y():
    # Frame 1: left arm raised 45 deg above the T-pose; left elbow bent 90 deg so the forearm points
    # forward: relative to the T-pose that is Ry(-90) after the arm's Rz(45); as a local rotation
    # under the shoulder's Rz(135) it is Rz(-90) Ry(-90) Rz(90) = Rx(-90), written as Z-X-Y channels.
    # The rest frame's bent back carries the arm's axes with it, and the back itself stays at rest.
    raised = T_POSE | {"lShldr": (135, 0, 0), "lForeArm": (0, -90, 0)}
    rest, parents = target_skeleton()
    result = retarget_bvh(parse_bvh(daz_like_text([T_POSE, raised])), "cmu_daz", rest, parents)
    assert_only(pose_of(result, 0), {})
    assert_only(pose_of(result, 1), {"left_shoulder": REST_BEND.apply((0, 0, math.pi / 4)),
                                     "left_elbow": REST_BEND.apply((0, -math.pi / 2, 0))}, atol=1e-6)
    assert result.setup.scale == 0.01


def test_daz_conversion_drops_the_rest_frame(tmp_path):
    from core.mocap.convert import convert_file

    path = tmp_path / "135_01.bvh"
    path.write_text(daz_like_text([T_POSE] + [T_POSE | {"lShldr": (90 + k, 0, 0)} for k in range(1, 13)]))
    rest, parents = target_skeleton()
    clip = convert_file(path, (rest, parents, SMPL_BODY_JOINT_NAMES), get_preset("cmu_daz"), 30.0, 0.0)
    assert clip["source_frames"].tolist() == [4, 8, 12]  # frames 0-12: every 4th but the rest
    left_shoulder = clip["poses"][:, 16 * 3:17 * 3]
    np.testing.assert_allclose(left_shoulder, REST_BEND.apply(np.deg2rad([[0, 0, 4], [0, 0, 8], [0, 0, 12]])), atol=1e-6)


# ------------------------------------------------------------------------------------------------
# Custom presets: what is not understood is refused, listing what is allowed


def test_unknown_joint_names_are_refused_with_the_allowed_names():
    from core.mocap.skeletons import SkeletonPresetError

    with pytest.raises(SkeletonPresetError) as caught:
        load_preset({"name": "rig", "joints": {"pelvis": "Hips", "left_elbw": "LeftForeArm", "tail": "Tail"}})
    message = str(caught.value)
    assert message.startswith("preset 'rig': 'joints' names unknown SMPL joints 'left_elbw' (did you mean "
                              "'left_elbow'?), 'tail';")
    for name in SMPL_BODY_JOINT_NAMES + ["left_hand", "jaw", "left_eye", "right_eye"]:  # every allowed kind is listed
        assert name in message
    assert "left_ or right_ + index, middle, pinky, ring, thumb + 1, 2 or 3" in message
    with pytest.raises(SkeletonPresetError, match=r"'landmarks' names unknown SMPL joint 'Head' \(did you mean "
                                                  r"'head'\?\)"):
        load_preset({"joints": {"pelvis": "Hips", "head": "Head"}, "landmarks": ["Head"]})
    # every name the shipped presets and the body models use is allowed
    assert load_preset({"joints": {name: name for name in SMPLH_JOINT_NAMES + ["jaw", "left_hand"]}})


@pytest.mark.parametrize("entry, message", [
    ({"rest_frame": -1}, r"'rest_frame' must be a frame index of the clip, 0 or more .*got -1"),
    ({"rest_frame": 1.5}, r"'rest_frame' must be a frame index .*got 1\.5"),
    ({"rest_frame": "0"}, r"'rest_frame' must be a frame index .*got '0'"),
    ({"rest_frame": True}, r"'rest_frame' must be a frame index .*got True"),
    ({"unit_scale": 0}, r"'unit_scale' must be a positive number of metres per source unit"),
    ({"unit_scale": "cm"}, r"'unit_scale' must be a positive number"),
    ({"joints": {"pelvis": 3}}, r"'joints' maps 'pelvis' to 3; expected a source joint name or a list of them"),
    ({"joints": ["pelvis"]}, r"'joints' must be an object"),
    ({"directions": {"pelvis": ["a"]}}, r"'directions' must map SMPL joints to one source joint name each"),
    ({"axes": ["+x", "+y"]}, r"axes must be three of"),
    ({"joint": {}}, r"unknown preset keys \['joint'\]; the keys are name, description, joints, directions"),
])
def test_bad_preset_values_are_refused(entry, message):
    from core.mocap.skeletons import SkeletonPresetError

    with pytest.raises(SkeletonPresetError, match=message):
        load_preset({"joints": {"pelvis": "Hips"}} | entry)


def test_a_preset_file_that_is_not_an_object_is_refused(tmp_path):
    from core.mocap.skeletons import SkeletonPresetError

    path = tmp_path / "rig.json"
    path.write_text(json.dumps([["pelvis", "Hips"]]))
    with pytest.raises(SkeletonPresetError, match="a skeleton preset is a JSON object with the keys .*, not a list"):
        load_preset(path)


def test_a_rest_frame_the_clip_lacks_is_refused_with_the_valid_frames():
    from core.mocap.skeletons import SkeletonPresetError

    rest, parents = target_skeleton()
    motion = parse_bvh(daz_like_text([T_POSE, T_POSE | {"lShldr": (120, 0, 0)}, T_POSE]))
    motion.source = "clip.bvh"
    far = get_preset("cmu_daz").to_dict() | {"rest_frame": 99999}
    with pytest.raises(SkeletonPresetError, match=r"clip\.bvh: preset 'cmu_daz' takes the rest pose from frame 99999 "
                                                  r"\('rest_frame'\), but the clip has 3 frames: valid rest frames "
                                                  r"are 0-2"):
        retarget_bvh(motion, far, rest, parents)
    last = retarget_bvh(motion, far | {"rest_frame": 2}, rest, parents)  # the last frame is a valid rest
    assert torch.allclose(last.poses[2], torch.zeros_like(last.poses[2]), atol=1e-6)


def test_the_user_guide_documents_every_preset_key_and_its_example_loads():
    from core.mocap.skeletons import PRESET_KEYS

    guide = (ROOT / "docs" / "user_guide.md").read_text()
    section = guide[guide.index("### Custom skeleton presets (JSON)"):]
    section = section[:section.index("\n## ")]
    for key in PRESET_KEYS:
        assert f"- **`{key}`**" in section, key
    example = json.loads(section[section.index("```json") + len("```json"):section.index("```\n", section.index("```json"))])
    preset = load_preset(example)
    assert set(example) == set(PRESET_KEYS)
    assert set(preset.joints) == set(SMPL_BODY_JOINT_NAMES)
    assert preset.sources("left_hip") and preset.sources("right_hip") and len(preset.landmark_joints()) >= 3
