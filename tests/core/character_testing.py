"""Characters built from the body's own rest joints for tests of core.character: bones named by a
bone map, optionally bent into an A-pose (arms lowered, elbows flexed, legs splayed, each about an
axis perpendicular to the bone, as artists pose a rest), rolled at random, in a Z-up rig of
another scale. The test knows every rotation it applied, so it knows the T-pose orientation each
posed bone must reach."""

from __future__ import annotations

import math

import numpy as np
import torch

from core.character import BLENDER_TO_MODEL, CharacterSkeleton
from core.mocap.bvh import format_bvh
from core.mocap.skeletons import TARGET_DIRECTION_CHILD, SkeletonPreset, get_preset
from core.rotations import axis_angle_to_matrix, euler_to_matrix


def _rotation(axis, degrees) -> np.ndarray:
    axis = np.asarray(axis, dtype=np.float64)
    axis = axis / np.linalg.norm(axis)
    return axis_angle_to_matrix(torch.as_tensor(axis * math.radians(degrees))).numpy()


def _roll_frame(direction, rng) -> np.ndarray:
    y = direction / np.linalg.norm(direction)
    x = rng.normal(size=3)
    x -= (x @ y) * y
    x /= np.linalg.norm(x)
    return np.stack([x, y, np.cross(x, y)], axis=1)


class BuiltCharacter:
    """names, parents, heads/tails (N, 3) and rest (N, 3, 3) in model space metres (A-pose), the
    T-pose rest orientations t_rest (N, 3, 3), and the bone of each body joint."""

    def __init__(self, names, parents, heads, tails, rest, t_rest, joint_bone):
        self.names, self.parents = names, parents
        self.heads, self.tails, self.rest, self.t_rest = heads, tails, rest, t_rest
        self.joint_bone = joint_bone  # body joint name -> first bone name

    def skeleton(self, world_rotation=np.eye(3), scale=1.0, source="test rig") -> CharacterSkeleton:
        """As a Blender armature: armature space = (world_rotation^T B^T model) / scale."""
        to_rig = world_rotation.T @ BLENDER_TO_MODEL.T / scale
        M = np.tile(np.eye(4), (len(self.names), 1, 1))
        M[:, :3, :3] = world_rotation.T @ BLENDER_TO_MODEL.T @ self.rest
        M[:, :3, 3] = self.heads @ to_rig.T
        W = np.eye(4)
        W[:3, :3] = world_rotation * scale
        return CharacterSkeleton.from_arrays(self.names, self.parents, M, self.tails @ to_rig.T, W, source=source)


def build_character(preset: str | SkeletonPreset, body_rest, body_names, body_parents, seed: int = 0,
                    a_pose: bool = True, drop: tuple[str, ...] = (), extras: bool = True) -> BuiltCharacter:
    """A rig over the body's 22 joints with the preset's names (first alternative of each name;
    chains split the joint's segment evenly), plus an unmapped floor-level root, a jaw and a twist
    bone; `drop` leaves body joints (and what hangs below them) out."""
    preset = get_preset(preset) if isinstance(preset, str) else preset
    rng = np.random.default_rng(seed)
    rest = np.asarray(body_rest, dtype=np.float64)
    index = {n: i for i, n in enumerate(body_names)}
    names, parents, heads, tails = [], [], [], []
    last: dict[int, int] = {}  # body joint -> its last bone
    joint_bone = {}
    if extras:
        names.append("rig_root"), parents.append(-1), heads.append(np.array([0, rest[:, 1].min(), 0.0]))
        tails.append(heads[-1] + [0, 0, 0.2])
    dropped: set[int] = set()
    for j, name in enumerate(body_names[:22]):
        p = body_parents[j]
        if name in drop or p in dropped:
            dropped.add(j)
            continue
        chain = [b.split("|")[0] for b in preset.sources(name)]
        if not chain:
            last[j] = last.get(p, -1)
            continue
        child = TARGET_DIRECTION_CHILD.get(name)
        if child in index and index[child] < 22:
            end = rest[index[child]]
        elif name == "head":
            end = rest[j] + [0, 0.18, 0.02]
        elif name.endswith("_wrist"):
            end = rest[j] + 0.08 * (rest[j] - rest[p]) / np.linalg.norm(rest[j] - rest[p])
        else:  # feet, toes
            end = rest[j] + [0, -0.02, 0.06]
        k = len(chain)
        for i, bone in enumerate(chain):
            names.append(bone)
            parents.append(last.get(p, 0 if extras else -1) if i == 0 else len(names) - 2)
            heads.append(rest[j] + i / k * (end - rest[j]))
            tails.append(rest[j] + (i + 1) / k * (end - rest[j]))
        joint_bone[name] = chain[0]
        last[j] = len(names) - 1
        if extras and name == "head":
            names.append("jaw"), parents.append(len(names) - 2), heads.append(rest[j] + [0, 0.02, 0.05])
            tails.append(rest[j] + [0, -0.03, 0.12])
        if extras and name == "left_shoulder":
            names.append("upperarm_twist_01_l"), parents.append(len(names) - 2)
            heads.append(0.5 * (rest[j] + end)), tails.append(0.8 * end + 0.2 * rest[j])
    heads, tails = np.array(heads), np.array(tails)
    parents = np.array([p if p is not None else -1 for p in parents])
    t_rest = np.stack([_roll_frame(t - h, rng) for h, t in zip(heads, tails)])
    posed_rest = t_rest.copy()
    if a_pose:
        def subtree(root):
            inside = np.zeros(len(names), bool)
            inside[root] = True
            for b in range(root + 1, len(names)):
                inside[b] = parents[b] >= 0 and inside[parents[b]]
            return inside

        def bend(bone_name, degrees, towards):
            b = names.index(bone_name)
            d = tails[b] - heads[b]
            axis = np.cross(d, towards)  # perpendicular to the bone: a bend, no twist
            R = _rotation(axis, degrees)
            moved = subtree(b)
            pivot = heads[b].copy()
            heads[moved] = (heads[moved] - pivot) @ R.T + pivot
            tails[moved] = (tails[moved] - pivot) @ R.T + pivot
            posed_rest[moved] = R @ posed_rest[moved]

        for side in ("left", "right"):
            bone = lambda joint: joint_bone.get(f"{side}_{joint}")  # noqa: E731
            if bone("shoulder"):
                bend(bone("shoulder"), 40, [0, -1, 0])  # arms 40 deg down
            if bone("elbow"):
                bend(bone("elbow"), 25, [0, 0, 1])  # forearms flexed forwards
            if bone("hip"):
                bend(bone("hip"), 6, [1 if side == "left" else -1, 0, 0])  # legs apart
    return BuiltCharacter(names, parents, heads, tails, posed_rest, t_rest, joint_bone)


def daz_bvh_text(rest: torch.Tensor, names: list[str]) -> str:
    """cmu_daz-named skeleton on the body's own rest joints (centimetres), OFFSETs with the arms
    hanging down, frame 0 the T-pose that matches the body's rest, frame 1 a bent pose."""
    p = {n: rest[names.index(n)].numpy() * 100 for n in names[:22]}
    p.update({f"{s}_middle1": rest[names.index(f"{s}_middle1")].numpy() * 100 for s in ("left", "right")})
    bones = [("hip", None, "pelvis"), ("abdomen", "hip", "spine2"), ("chest", "abdomen", "spine3"),
             ("neck", "chest", "neck"), ("head", "neck", "head")]
    for c, s in (("l", "left"), ("r", "right")):
        bones += [(f"{c}Collar", "chest", f"{s}_collar"), (f"{c}Shldr", f"{c}Collar", f"{s}_shoulder"),
                  (f"{c}ForeArm", f"{c}Shldr", f"{s}_elbow"), (f"{c}Hand", f"{c}ForeArm", f"{s}_wrist")]
    for c, s in (("l", "left"), ("r", "right")):
        bones += [(f"{c}Buttock", "hip", f"{s}_hip"), (f"{c}Thigh", f"{c}Buttock", f"{s}_hip"),
                  (f"{c}Shin", f"{c}Thigh", f"{s}_knee"), (f"{c}Foot", f"{c}Shin", f"{s}_ankle")]
    bnames = [b for b, _, _ in bones]
    parents = [bnames.index(q) if q else -1 for _, q, _ in bones]
    down = {"l": euler_to_matrix(torch.tensor([math.radians(-90), 0, 0], dtype=torch.float64), "ZXY").numpy(),
            "r": euler_to_matrix(torch.tensor([math.radians(90), 0, 0], dtype=torch.float64), "ZXY").numpy()}
    offsets = []
    for b, q, joint in bones:
        offset = p[joint] - (p[bones[bnames.index(q)][2]] if q else 0 * p[joint])
        if q and q[1:] in ("Shldr", "ForeArm", "Hand") and q[0] in "lr":  # below the shoulder: hanging down
            offset = down[q[0]] @ offset
        offsets.append(offset)
    offsets[0] = np.zeros(3)
    ends = {bnames.index(f"{c}Hand"): down[c] @ (p[f"{s}_middle1"] - p[f"{s}_wrist"]) for c, s in (("l", "left"), ("r", "right"))}
    ends.update({bnames.index(f"{c}Foot"): p[f"{s}_foot"] - p[f"{s}_ankle"] for c, s in (("l", "left"), ("r", "right"))})
    ends[bnames.index("head")] = np.array([0, 15.0, 0])
    channels = [("Xposition", "Yposition", "Zposition", "Zrotation", "Yrotation", "Xrotation")] + [
        ("Zrotation", "Xrotation", "Yrotation")] * (len(bnames) - 1)
    t_pose = {"lShldr": (90, 0, 0), "rShldr": (-90, 0, 0)}
    bent = {**t_pose, "lForeArm": (0, 0, 70), "abdomen": (10, 20, 0), "rThigh": (0, -40, 5)}
    rows = [[0, 93, 0] + [v for n in bnames for v in frame.get(n, (0, 0, 0))] for frame in (t_pose, bent)]
    return format_bvh(bnames, parents, offsets, channels, np.array(rows), 1 / 120, ends)


def own_axis_bvh_text(built: BuiltCharacter) -> str:
    """A BVH of a built rig (model space metres, T-pose if built so) written as some exporters do:
    each OFFSET in its parent bone's own frame (centimetres), so the zero-rotation pose is a
    crumpled figure, and frame 0 holding the rotations that give the bind pose back."""
    from core.rotations import matrix_to_euler

    heads, rest, parents = built.heads * 100, built.rest, list(built.parents)
    offsets, rows = [], [[*heads[0]]]
    for j, p in enumerate(parents):
        offsets.append(np.zeros(3) if p < 0 else rest[p].T @ (heads[j] - heads[p]))
        local = rest[j] if p < 0 else rest[p].T @ rest[j]
        rows[0] += list(np.rad2deg(matrix_to_euler(torch.as_tensor(local), "ZXY").numpy()))
    channels = [("Xposition", "Yposition", "Zposition", "Zrotation", "Xrotation", "Yrotation")] + [
        ("Zrotation", "Xrotation", "Yrotation")] * (len(parents) - 1)
    return format_bvh(built.names, parents, offsets, channels, np.array(rows), 1 / 30)
