"""core.character: binding a rig to the body and transferring poses both ways; bone map detection."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from character_testing import build_character, daz_bvh_text, own_axis_bvh_text
from core.body_model import BodyModel
from core.character import (
    BoneMapError,
    CharacterSkeleton,
    bind_character,
    body_points_to_rig,
    body_to_character,
    character_fk,
    character_to_body,
    limb_direction_errors,
    posed_character_to_body,
    rig_points_to_body,
    rig_world_rotations,
)
from core.mocap.bvh import forward_kinematics, parse_bvh
from core.mocap.skeletons import TARGET_DIRECTION_CHILD, detect_preset, get_preset
from core.mocap.transfer import skeleton_fk
from core.rotations import axis_angle_to_matrix, euler_to_matrix, matrix_to_euler, quaternion_to_matrix
from core.vposer import load_default_vposer

LIMBS = [f"{s}_{j}" for s in ("left", "right") for j in ("hip", "knee", "shoulder", "elbow", "collar")]
ENDS = ("left_wrist", "right_wrist", "left_ankle", "right_ankle")


@pytest.fixture(scope="module")
def body():
    model = BodyModel.open_default("adult", dtype=torch.float64)
    with torch.no_grad():
        rest = model.rest_joints()[0]
    return model, rest, list(model.joint_names), model.parents.tolist()


@pytest.fixture(scope="module")
def samples(body):
    """Random prior poses with random root orientations and translations: (poses (B, 52, 3), transl)."""
    B = 48
    with torch.no_grad():
        pose = load_default_vposer().sample(B, seed=7).double().reshape(B, 21, 3)
    gen = torch.Generator().manual_seed(3)
    orient = torch.randn(B, 1, 3, generator=gen, dtype=torch.float64)
    poses = torch.cat([orient, pose, torch.zeros(B, len(body[2]) - 22, 3, dtype=torch.float64)], 1)
    return poses, torch.randn(B, 3, generator=gen, dtype=torch.float64)


def _angle_deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Angle between rotation matrices through the quaternion (precise near zero)."""
    from core.rotations import matrix_to_quaternion

    dot = (matrix_to_quaternion(a) * matrix_to_quaternion(b)).sum(-1).abs().clamp(max=1)
    return torch.rad2deg(2 * torch.acos(dot))


def _direction_deg(a, b):
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1).clamp(-1, 1)
    return torch.rad2deg(torch.acos(cos))


def _check_follows(binding, names, parents, rest, poses, transl, first_bone, t_rest):
    """Body -> character: limb directions within 1 deg, hands/feet (relative to the T-pose rest the
    test built) within 2 deg; character -> body -> character within 0.5 deg."""
    pose = body_to_character(binding, poses, transl)
    heads, D = character_fk(binding, pose.quaternions, pose.location)
    joints, G = skeleton_fk(axis_angle_to_matrix(poses), rest, parents, transl)
    index = binding.skeleton.names.index
    for joint in LIMBS:
        child = TARGET_DIRECTION_CHILD[joint]
        body_dir = joints[:, names.index(child)] - joints[:, names.index(joint)]
        rig_dir = heads[:, index(first_bone[child])] - heads[:, index(first_bone[joint])]
        assert float(_direction_deg(body_dir, rig_dir).max()) < 1.0, joint
    for joint in ENDS:
        b = index(first_bone[joint])
        expected = G[:, names.index(joint)] @ torch.as_tensor(t_rest[b])
        assert float(_angle_deg(D[:, b] @ binding.rest[b], expected).max()) < 2.0, joint
    # the pelvis bone sits at scale x the body's pelvis
    torch.testing.assert_close(heads[:, binding.root_bone], binding.scale * joints[:, 0], atol=1e-6, rtol=0)
    # round trips
    back, back_transl = character_to_body(binding, pose.quaternions, pose.location)
    again = body_to_character(binding, back, back_transl)
    assert float(_angle_deg(quaternion_to_matrix(pose.quaternions), quaternion_to_matrix(again.quaternions)).max()) < 0.5
    torch.testing.assert_close(again.location, pose.location, atol=1e-6, rtol=0)
    _, G_back = skeleton_fk(axis_angle_to_matrix(back), rest, parents, back_transl)
    mapped = [j for j, chain in enumerate(binding.joint_bones) if chain]
    assert float(_angle_deg(G_back[:, mapped], G[:, mapped]).max()) < 0.5
    torch.testing.assert_close(back_transl, transl, atol=1e-6, rtol=0)
    return pose


@pytest.mark.parametrize("preset", ["unreal", "daz_genesis", "rigify_def"])
def test_a_pose_rig_with_rolls_other_axes_and_scale_follows_the_body(body, samples, preset):
    """Arms 40 deg down, forearms flexed, legs apart, random rolls, a Z-up object turned about
    every axis, centimetres; chains (DAZ's bend/twist pairs, Rigify's split limbs) included."""
    _, rest, names, parents = body
    built = build_character(preset, rest, names, parents, seed=2)
    world = axis_angle_to_matrix(torch.tensor([0.4, -0.3, 1.2], dtype=torch.float64)).numpy()
    binding = bind_character(built.skeleton(world, 0.01), "auto", rest, parents, names)
    assert binding.bone_map.name == preset
    assert binding.unit_scale == pytest.approx(0.01)
    assert binding.scale == pytest.approx(1.0, abs=1e-6)
    # rig space (Z-up, turned, centimetres) <-> the body's space: the trunk's bones start at its joints
    skeleton = binding.skeleton
    trunk = ["pelvis", "spine1", "spine2", "spine3", "neck", "head"]
    rig_heads = skeleton.heads[[skeleton.index(built.joint_bone[j]) for j in trunk]]
    torch.testing.assert_close(rig_points_to_body(binding, rig_heads), rest[[names.index(j) for j in trunk]],
                               atol=1e-6, rtol=0)
    np.testing.assert_allclose(body_points_to_rig(binding, rest[[names.index(j) for j in trunk]]).numpy(), rig_heads,
                               atol=1e-4)
    poses, transl = samples
    _check_follows(binding, names, parents, rest, poses, transl, built.joint_bone, built.t_rest)


def test_the_body_pose_read_from_posed_bones_is_the_one_that_posed_them(body, samples):
    """posed_character_to_body reads the bones' posed orientations in rig axes (as Blender
    evaluates them, here from FK) and the root's head in rig units: the body's world rotations of
    every mapped joint and its translation come back, as character_to_body gives them; a wrong
    shape is refused naming the expected one."""
    _, rest, names, parents = body
    built = build_character("rigify_def", rest, names, parents, seed=4)
    world = axis_angle_to_matrix(torch.tensor([-0.2, 0.5, 0.9], dtype=torch.float64)).numpy()
    binding = bind_character(built.skeleton(world, 0.01), "auto", rest, parents, names)
    poses, transl = samples
    pose = body_to_character(binding, poses, transl)
    heads, D = character_fk(binding, pose.quaternions, pose.location)
    rig_heads = heads[:, binding.root_bone] @ binding.to_model / binding.unit_scale
    back, back_transl = posed_character_to_body(binding, rig_world_rotations(binding, D), rig_heads)
    _, G = skeleton_fk(axis_angle_to_matrix(poses), rest, parents, transl)
    _, G_back = skeleton_fk(axis_angle_to_matrix(back), rest, parents, back_transl)
    mapped = [j for j, chain in enumerate(binding.joint_bones) if chain]
    assert float(_angle_deg(G_back[:, mapped], G[:, mapped]).max()) < 0.5
    torch.testing.assert_close(back_transl, transl, atol=1e-6, rtol=0)
    fk_back, _ = character_to_body(binding, pose.quaternions, pose.location)
    assert float(_angle_deg(axis_angle_to_matrix(back), axis_angle_to_matrix(fk_back)).max()) < 1e-3
    with pytest.raises(ValueError, match=r"expected \(B, \d+, 3, 3\)"):
        posed_character_to_body(binding, torch.eye(3).expand(1, 2, 3, 3), rig_heads[:1])


def test_rest_pose_of_the_body_puts_an_a_pose_rig_in_t_pose(body):
    """At the body's rest, the rig's arms come up to horizontal: the upper arm turns 40 deg."""
    _, rest, names, parents = body
    built = build_character("mixamo", rest, names, parents, seed=5)
    binding = bind_character(built.skeleton(), "auto", rest, parents, names)
    pose = body_to_character(binding, torch.zeros(1, len(names), 3))
    arm = binding.skeleton.names.index("mixamorig:LeftArm")
    angle = math.degrees(2 * math.acos(min(1.0, abs(float(pose.quaternions[0, arm, 0])))))
    assert angle == pytest.approx(40.0, abs=0.01)
    unmapped = [binding.skeleton.names.index(n) for n in ("rig_root", "jaw", "upperarm_twist_01_l")]
    torch.testing.assert_close(pose.quaternions[0, unmapped], torch.tensor([[1.0, 0, 0, 0]] * 3, dtype=torch.float64))


def test_unmapped_bones_keep_their_current_rotation(body, samples):
    _, rest, names, parents = body
    built = build_character("vrm", rest, names, parents, seed=1)
    binding = bind_character(built.skeleton(), "vrm", rest, parents, names)
    N = binding.skeleton.num_bones
    current = torch.nn.functional.normalize(torch.randn(N, 4, generator=torch.Generator().manual_seed(0),
                                                        dtype=torch.float64), dim=-1)
    poses, transl = samples
    pose = body_to_character(binding, poses[:4], transl[:4], current=current)
    jaw = binding.skeleton.names.index("jaw")
    twist = binding.skeleton.names.index("upperarm_twist_01_l")
    for b in (jaw, twist):
        torch.testing.assert_close(quaternion_to_matrix(pose.quaternions[:, b]),
                                   quaternion_to_matrix(current[b]).expand(4, 3, 3))
    # the turned floor-level root above the pelvis bone changes nothing the body shows
    heads, D = character_fk(binding, pose.quaternions, pose.location)
    joints, G = skeleton_fk(axis_angle_to_matrix(poses[:4]), rest, parents, transl[:4])
    errors = limb_direction_errors(binding, joints, heads)
    assert len(errors) == 10 and max(float(e.max()) for e in errors.values()) < 1e-4
    torch.testing.assert_close(heads[:, binding.root_bone], binding.scale * joints[:, 0], atol=1e-6, rtol=0)
    wrist = binding.joint_bones[names.index("left_wrist")][0]
    expected = G[:, names.index("left_wrist")] @ torch.as_tensor(built.t_rest[wrist])
    assert float(_angle_deg(D[:, wrist] @ binding.rest[wrist], expected).max()) < 2.0
    # what the transfer computed on the way is character_fk's, so callers need not run it again
    mapped = [b for b, j in enumerate(binding.bone_joint) if j >= 0]
    torch.testing.assert_close(pose.world[:, mapped], D[:, mapped], atol=1e-9, rtol=0)
    torch.testing.assert_close(pose.root_head, heads[:, binding.root_bone], atol=1e-9, rtol=0)


# ------------------------------------------------------------------------------------------------
# A DAZ-style BVH (cgspeed's release layout): arms hang down in the OFFSET pose, frame 0 raises them


def test_daz_bvh_character_with_a_bind_frame(body, samples):
    _, rest, names, parents = body
    motion = parse_bvh(daz_bvh_text(rest, names), "daz.bvh")
    skeleton = CharacterSkeleton.from_bvh(motion, rest_frame=0)
    binding = bind_character(skeleton, "auto", rest, parents, names)
    assert binding.bone_map.name == "cmu_daz"
    # the bind frame's arms match the body's: no alignment left anywhere
    torch.testing.assert_close(binding.align[:22], torch.eye(3, dtype=torch.float64).expand(22, 3, 3), atol=1e-6, rtol=0)
    first = {j: binding.skeleton.names[chain[0]] for j, chain in zip(names, binding.joint_bones) if chain}
    first["left_hip"], first["right_hip"] = "lThigh", "rThigh"
    poses, transl = samples
    _check_follows(binding, names, parents, rest, poses, transl, first, skeleton.rest)
    # the OFFSET pose is not the rest: without the bind frame the arms are 90 deg off
    hanging = bind_character(CharacterSkeleton.from_bvh(motion), "cmu_daz", rest, parents, names)
    shoulder = names.index("left_shoulder")
    assert float(_angle_deg(hanging.align[shoulder], torch.eye(3, dtype=torch.float64))) == pytest.approx(90, abs=1)


def test_character_pose_of_a_bvh_frame_reads_back(body):
    """A BVH frame taken as a character pose: its joints' world rotations come back from FK."""
    _, rest, names, parents = body
    motion = parse_bvh(daz_bvh_text(rest, names), "daz.bvh")
    skeleton = CharacterSkeleton.from_bvh(motion, rest_frame=0)
    binding = bind_character(skeleton, "auto", rest, parents, names)
    world, _ = forward_kinematics(motion, frames=[1])
    R0 = torch.as_tensor(skeleton.rest)
    parent_world = torch.stack([world[0, p] if p >= 0 else torch.eye(3, dtype=torch.float64)
                                for p in skeleton.parents.tolist()])
    parent_rest = torch.stack([R0[p] if p >= 0 else torch.eye(3, dtype=torch.float64) for p in skeleton.parents.tolist()])
    from core.rotations import matrix_to_quaternion

    q = matrix_to_quaternion(R0.transpose(-1, -2) @ parent_rest @ parent_world.transpose(-1, -2) @ world[0])
    _, D = character_fk(binding, q.unsqueeze(0))
    torch.testing.assert_close(rig_world_rotations(binding, D)[0], world[0], atol=1e-9, rtol=0)


# ------------------------------------------------------------------------------------------------
# Bone maps


@pytest.mark.parametrize("preset, rename", [
    ("mixamo", None), ("mixamo", lambda n: n.replace("mixamorig:", "mixamorig1:")),
    ("mixamo", lambda n: n.replace("mixamorig:", "")), ("unreal", None), ("vrm", None),
    ("character_creator", None), ("rigify", None), ("rigify_fk", None), ("rigify_def", None),
    ("daz_genesis", None), ("daz_genesis", lambda n: {"lThighBend": "lThigh", "rThighBend": "rThigh",
                                                      "lShldrBend": "lShldr", "rShldrBend": "rShldr"}.get(n, n)),
    ("makehuman", None), ("smpl_like", None),
])  # fmt: skip
def test_rigs_are_detected_by_bone_names(body, preset, rename):
    _, rest, names, parents = body
    built = build_character(preset, rest, names, parents, a_pose=False)
    bones = [rename(n) if rename else n for n in built.names]
    found = detect_preset(bones, "rig")
    assert found.name == preset
    assert found.sources("left_knee")[0] in bones and found.sources("pelvis")[0] in bones


def test_rig_missing_a_leg_names_the_missing_joints(body):
    _, rest, names, parents = body
    built = build_character("unreal", rest, names, parents, drop=("left_hip",))
    with pytest.raises(BoneMapError, match=r"left_hip, left_knee, left_ankle") as info:
        bind_character(built.skeleton(), "auto", rest, parents, names)
    assert "right_" not in str(info.value)


def test_non_humanoid_armature_is_refused():
    names = ["Root", "Body", "Neck", "Jaw", "Tail.001", "Tail.002", "Wing.L", "Wing.R", "Leg_FL", "Leg_FR"]
    heads = np.array([[0, 0, 0], [0, 1, 0], [0, 1.5, 0.5], [0, 1.5, 0.9], [0, 1, -1], [0, 1, -2],
                      [0.5, 1.2, 0], [-0.5, 1.2, 0], [0.3, 0.8, 0.5], [-0.3, 0.8, 0.5]], dtype=float)
    parents = [-1, 0, 1, 2, 1, 4, 1, 1, 1, 1]
    skeleton = CharacterSkeleton(names, parents, heads, heads + [0, 0.1, 0], np.tile(np.eye(3), (10, 1, 1)))
    with pytest.raises(BoneMapError, match="not a humanoid armature"):
        bind_character(skeleton, "auto", torch.zeros(22, 3), list(range(-1, 21)))


def test_json_bone_map(body, samples, tmp_path):
    """A custom map as JSON; a map naming bones the rig lacks is refused with their names."""
    _, rest, names, parents = body
    unreal = get_preset("unreal")
    built = build_character(unreal, rest, names, parents, seed=4)
    rename = {n: "B_" + n for n in built.names}
    built.names = [rename[n] for n in built.names]
    custom = {"name": "my_rig", "joints": {k: ["B_" + b for b in unreal.sources(k)] for k in names[:22]}}
    path = tmp_path / "map.json"
    path.write_text(json.dumps(custom))
    binding = bind_character(built.skeleton(), str(path), rest, parents, names)
    assert binding.bone_map.name == "my_rig" and binding.character_map()["spine3"] == ["B_spine_03", "B_spine_04", "B_spine_05"]
    first = {k: "B_" + v for k, v in built.joint_bone.items()}
    _check_follows(binding, names, parents, rest, *[s[:8] for s in samples], first, built.t_rest)
    custom["joints"]["head"] = "B_skull"
    with pytest.raises(BoneMapError, match="B_skull"):
        bind_character(built.skeleton(), custom, rest, parents, names)


# ------------------------------------------------------------------------------------------------
# Fitting the body


def _landmark_gaps(binding, names, parents, rest):
    """Distances (m) between the character's rest limb joints and the body's (shape `rest`) posed
    in the character's rest and scaled by binding.scale."""
    N = binding.skeleton.num_bones
    poses, transl = character_to_body(binding, torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64).expand(1, N, 4))
    joints, _ = skeleton_fk(axis_angle_to_matrix(poses), rest, parents, transl)
    limbs = [names.index(f"{s}_{j}") for s in ("left", "right") for j in ("knee", "ankle", "elbow", "wrist")]
    heads = binding.heads[[binding.joint_bones[j][0] for j in limbs]]
    return (binding.scale * joints[0, limbs] - heads).norm(dim=-1)


def test_fit_body_puts_the_body_joints_on_the_character(body):
    """A character on a differently shaped, 10 % larger body in an A-pose: the fitted shape and
    scale put the body's limb joints within 1.2 cm of the character's, far closer than the mean
    shape scaled by leg length does."""
    model, rest, names, parents = body
    betas = torch.zeros(model.num_betas, dtype=torch.float64)
    betas[:4] = torch.tensor([1.5, -1.0, 0.8, -1.2])
    with torch.no_grad():
        shaped = model.rest_joints(betas.unsqueeze(0))[0]
    built = build_character("mixamo", shaped * 1.1, names, parents, seed=3)
    unfitted = bind_character(built.skeleton(), "auto", rest, parents, names)
    fitted = bind_character(built.skeleton(), "auto", model=model)
    assert fitted.betas is not None and fitted.betas.shape == (model.num_betas,)
    with torch.no_grad():
        fitted_rest = model.rest_joints(fitted.betas.unsqueeze(0).to(model.dtype))[0]
    torch.testing.assert_close(fitted.body_rest, fitted_rest)
    before = _landmark_gaps(unfitted, names, parents, rest)
    after = _landmark_gaps(fitted, names, parents, fitted_rest)
    assert float(after.max()) < 0.012, after
    assert float(after.mean()) < 0.5 * float(before.mean())


def test_matrix_to_euler_inverts_euler_to_matrix():
    gen = torch.Generator().manual_seed(0)
    angles = (torch.rand(500, 3, generator=gen, dtype=torch.float64) - 0.5) * torch.tensor([6.0, 3.0, 6.0])
    for order in ("XYZ", "XZY", "YXZ", "YZX", "ZXY", "ZYX"):
        back = matrix_to_euler(euler_to_matrix(angles, order), order)
        torch.testing.assert_close(back, angles, atol=1e-9, rtol=0)


def test_mocap_clips_detect_their_preset(body):
    """One detection for both uses: the CMU walk and a DAZ-release clip retarget with skeleton "auto"."""
    from pathlib import Path

    from core.mocap.bvh import read_bvh
    from core.retarget import bvh_targets

    model, rest, names, _ = body
    walk = read_bvh(Path(__file__).resolve().parents[2] / "examples" / "cmu_02_01_walk.bvh")
    assert detect_preset(walk.names, "walk").name == "cmu"
    daz = parse_bvh(daz_bvh_text(rest, names), "daz.bvh")
    assert detect_preset(daz.names, "daz").name == "cmu_daz"
    auto = bvh_targets(walk, "auto", model, np.arange(0, 40, 8))
    named = bvh_targets(walk, "cmu", model, np.arange(0, 40, 8))
    assert auto.keypoints.names == named.keypoints.names
    torch.testing.assert_close(auto.positions, named.positions)


def test_bvh_with_offsets_along_each_bone_follows_with_or_without_its_bind_frame(body, samples):
    """Character Creator-style BVH: OFFSETs in each parent bone's rolled frame. With its bind frame
    everything follows; from the crumpled zero pose the limb directions still do."""
    _, rest, names, parents = body
    built = build_character("character_creator", rest, names, parents, seed=8, a_pose=False)
    motion = parse_bvh(own_axis_bvh_text(built), "cc.bvh")
    poses, transl = samples
    bound = bind_character(CharacterSkeleton.from_bvh(motion, rest_frame=0), "auto", rest, parents, names)
    assert bound.bone_map.name == "character_creator"
    t_rest = built.rest[[built.names.index(n) for n in motion.names]]  # the file lists the bones depth first
    _check_follows(bound, names, parents, rest, poses, transl, built.joint_bone, t_rest)
    # written back: the pelvis bone (under an unmoving root, rotation channels only) still travels
    from core.character import bvh_channels
    from core.mocap.bvh import format_bvh

    pose = body_to_character(bound, poses[:5], transl[:5])
    text = format_bvh(motion.names, motion.parents, motion.offsets, motion.channels,
                      bvh_channels(bound, motion, pose), 1 / 30)
    _, positions = forward_kinematics(parse_bvh(text, "back.bvh"))
    heads, _ = character_fk(bound, pose.quaternions, pose.location)
    assert motion.names[0] == "rig_root" and "Xposition" not in motion.channels[bound.root_bone]
    torch.testing.assert_close(positions[:, 1:] * bound.unit_scale, heads[:, 1:], atol=1e-6, rtol=0)  # the root moved
    crumpled = bind_character(CharacterSkeleton.from_bvh(motion), "character_creator", rest, parents, names)
    pose = body_to_character(crumpled, poses, transl)
    heads, _ = character_fk(crumpled, pose.quaternions, pose.location)
    joints, _ = skeleton_fk(axis_angle_to_matrix(poses), rest, parents, transl)
    errors = limb_direction_errors(crumpled, joints, heads)
    assert len(errors) >= 8 and max(float(e.max()) for e in errors.values()) < 1.0


def test_armature_bvh_reads_back_the_character_pose(body, samples):
    """An armature written as BVH (bones in an order that is not the file's depth-first one): the
    project's reader puts every joint where the character's kinematics put its bone head."""
    from core.character import armature_bvh, armature_bvh_channels
    from core.mocap.bvh import format_bvh

    _, rest, names, parents = body
    built = build_character("unreal", rest, names, parents, seed=6)
    binding = bind_character(built.skeleton(np.eye(3), 0.01), "auto", rest, parents, names)
    motion, keep = armature_bvh(binding)
    assert motion.names != [binding.skeleton.names[b] for b in sorted(keep)]  # the orders differ
    poses, transl = samples
    pose = body_to_character(binding, poses[:6], transl[:6])
    frames = armature_bvh_channels(binding, motion, keep, pose)
    text = format_bvh(motion.names, motion.parents, motion.offsets, motion.channels, frames, 1 / 30,
                      dict(motion.end_sites))
    _, positions = forward_kinematics(parse_bvh(text, "rig.bvh"))
    heads, _ = character_fk(binding, pose.quaternions, pose.location)
    torch.testing.assert_close(positions * 0.01, heads[:, keep], atol=1e-6, rtol=0)


def test_segments_give_the_rest_direction_of_a_control_away_from_its_segment(body, samples):
    """A Rigify-like spine: the spine1 control starts at spine2's joint (the pivot it turns about)
    and leans 20 deg sideways off the body's spine1 -> spine2 at rest. Its head -> next joint's head is
    degenerate; the map's `segments` names the bone whose own head -> tail is the segment, and the
    posed control then runs along the body's posed spine1 -> spine2 whatever the pose."""
    _, rest, names, parents = body
    J = 22
    rest_np = rest[:J].numpy()
    heads, tails = rest_np.copy(), rest_np.copy()
    for j in range(J):
        child = TARGET_DIRECTION_CHILD.get(names[j])
        tails[j] = rest_np[names.index(child)] if child and names.index(child) < J else rest_np[j] + [0, 0.05, 0]
    s1, s2 = names.index("spine1"), names.index("spine2")
    segment = rest_np[s2] - rest_np[s1]
    tilted = axis_angle_to_matrix(torch.tensor([0.0, 0.0, math.radians(20.0)], dtype=torch.float64)).numpy() @ segment
    heads[s1], tails[s1] = rest_np[s2], rest_np[s2] + tilted
    skeleton = CharacterSkeleton(names[:J], parents[:J], heads, tails, np.broadcast_to(np.eye(3), (J, 3, 3)).copy(),
                                 to_model=np.eye(3), unit_scale=1.0, source="pivot rig")
    bone_map = {"name": "pivot", "joints": {n: n for n in names[:J]}}
    poses, transl = samples
    joints, _ = skeleton_fk(axis_angle_to_matrix(poses), rest, parents, transl)
    body_dir = joints[:, s2] - joints[:, s1]

    def control_direction(binding):
        pose = body_to_character(binding, poses, transl)
        _, D = character_fk(binding, pose.quaternions, pose.location)
        return D[:, s1] @ torch.as_tensor(tilted)

    plain = bind_character(skeleton, bone_map, rest, parents, names)
    assert float(_direction_deg(control_direction(plain), body_dir).mean()) > 10.0  # the degenerate direction
    segmented = bind_character(skeleton, {**bone_map, "segments": {"spine1": "spine1"}}, rest, parents, names)
    assert segmented.bone_map.segments == {"spine1": "spine1"}
    assert float(_direction_deg(control_direction(segmented), body_dir).max()) < 1e-3
    with pytest.raises(BoneMapError, match="segments"):
        bind_character(skeleton, {**bone_map, "segments": {"spine1": ["spine1", "spine2"]}}, rest, parents, names)
