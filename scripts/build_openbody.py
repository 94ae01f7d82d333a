"""Build the open default body (core/data/openbody_adult.npz, openbody_allages.npz) from anny.

anny (Apache-2.0 code, CC0 MakeHuman/MPFB2 assets) is needed at build time only; the shipped
files are plain SMPL-H-style LBS arrays (52 joints, no pose correctives) that the core loads
like any SMPL .npz. The recipe (see docs/openbody.md):

1. Group anny's 104 bones into the 52 SMPL-H joints and sum their skin weights.
2. Bake a T-pose with anny's own forward pass (legs straight, arms and hands horizontal,
   palms down, fingers flat), with one set of pose deltas for every body.
3. Sample a few thousand bodies from anny's shape distribution (adult ages, or newborn to
   90 years), T-pose them, and keep the 16 main PCA directions scaled so betas ~ N(0, 1).
4. Fit a joint regressor by per-joint least squares over the vertices where a joint's skin
   weights meet its parent's or children's.

Only anny's default MakeHuman topology and rig are used; the build refuses anything else and
never touches anny's SMPL/SMPL-X (non-commercial) data.

    python scripts/build_openbody.py --out-dir core/data --samples 3000 --seed 0
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from core.rotations import axis_angle_to_matrix  # noqa: E402

ANNY_VERSION = "0.6.2"
N_VERTICES, N_TRIANGLES, N_BONES = 13_718, 27_420, 104
N_BETAS = 16
DTYPE = torch.float64

# anny is Z-up and faces -Y; SMPL model space is Y-up and faces +Z: p_smpl = (x, z, -y).
ANNY_TO_SMPL = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])

BODY_JOINTS = [
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar",
    "right_collar", "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist",
]
BODY_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19]
# SMPL-H finger order and the anny finger numbers: thumb 1, index 2, middle 3, ring 4, pinky 5.
FINGERS = {"index": 2, "middle": 3, "pinky": 5, "ring": 4, "thumb": 1}
JOINT_NAMES = BODY_JOINTS + [
    f"{side}_{finger}{k}" for side in ("left", "right") for finger in FINGERS for k in (1, 2, 3)
]
SMPLH_PARENTS = BODY_PARENTS + [
    wrist if k == 0 else 22 + 15 * hand + 3 * f + k - 1
    for hand, wrist in enumerate((20, 21))
    for f in range(len(FINGERS))
    for k in range(3)
]

# Phenotype on which the T-pose deltas are solved (a neutral adult of about 35 years); the same
# deltas then pose every sampled body, like SMPL's zero pose does.
BAKE_PHENOTYPE = {"gender": 0.5, "muscle": 0.5, "weight": 0.5, "height": 0.5, "proportions": 0.5}
BAKE_MORPHOLOGICAL_AGE = 35.0
VARIANT_AGES = {"adult": (18.0, 90.0), "all_ages": (0.0, 90.0)}  # morphological years
VARIANT_FILES = {"adult": "openbody_adult.npz", "all_ages": "openbody_allages.npz"}


def check_anny_version() -> None:
    """Refuse any anny but the pinned one: the recipe and its measured facts depend on it."""
    import anny

    installed = importlib.metadata.version("anny")
    if installed != ANNY_VERSION or anny.__version__ != ANNY_VERSION:
        raise RuntimeError(f"build_openbody needs anny=={ANNY_VERSION}, found {installed}")


def forbid_noncommercial_data() -> None:
    """Make every anny entry point to its SMPL/SMPL-X (non-commercial) data raise."""
    import anny.paths

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError(
            "build_openbody must never use anny's SMPL/SMPL-X topologies or data "
            "(non-commercial licence); something asked for them"
        )

    for name in ("download_noncommercial_data", "get_anny2smpl_data_path", "get_anny2smplx_data_path"):
        setattr(anny.paths, name, refuse)


def load_anny() -> torch.nn.Module:
    """anny's default model (MakeHuman topology, `anny` rig), verified to be exactly that."""
    check_anny_version()
    forbid_noncommercial_data()
    import anny
    from anny.models.model_data import RigConfig, TopologyConfig

    rig, topology = RigConfig.from_string("anny"), TopologyConfig.from_string("anny")
    if rig.base_rig != "anny" or topology.base_mesh != "makehuman" or topology.submodel != "body":
        raise RuntimeError(f"unexpected anny configuration: rig {rig}, topology {topology}")
    model = anny.Anny(
        rig=rig,
        topology=topology,
        pose_parameterization="local-ref",
        skinning_method="lbs",
        phenotypes="default",
        local_changes="none",
        facial_actions="none",
    )
    counts = (len(model.template_vertices), len(model.faces), len(model.bone_labels))
    if counts != (N_VERTICES, N_TRIANGLES, N_BONES) or model.faces.shape[1] != 3:
        raise RuntimeError(
            f"anny model has (vertices, triangles, bones) = {counts}, expected "
            f"{(N_VERTICES, N_TRIANGLES, N_BONES)}: not the default MakeHuman topology and rig"
        )
    loaded = [name for name in sys.modules if name in ("anny.models.smpl", "anny.models.retopology")]
    if loaded:
        raise RuntimeError(f"anny's SMPL/retopology code was imported ({loaded}); refusing to build")
    return model


@dataclass(frozen=True)
class Rig:
    """anny's skeleton grouped into the 52 SMPL-H joints."""

    labels: list[str]
    parents: list[int]
    joint_of_bone: np.ndarray  # (104,) SMPL-H joint index of each anny bone
    entry_bones: list[list[int]]  # per joint: its bones whose parent lies outside the joint

    @property
    def bone(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels)}

    def subtree(self, bone: int) -> list[int]:
        """The bone and all its descendants."""
        out = [bone]
        for child, parent in enumerate(self.parents):
            if parent in out:
                out.append(child)  # parents precede children in anny's bone order
        return out


def joint_bone_names(labels: list[str], parents: list[int]) -> dict[str, list[str]]:
    """The recipe's mapping from SMPL-H joints to anny bones (every bone goes to one joint)."""
    index = {label: i for i, label in enumerate(labels)}

    def below(bone: str) -> list[str]:
        """The strict descendants of a bone."""
        out = [index[bone]]
        for child, parent in enumerate(parents):
            if parent in out:
                out.append(child)
        return [labels[i] for i in out[1:]]

    groups: dict[str, list[str]] = {
        "pelvis": ["root", "pelvis.L", "pelvis.R", "spine05"],
        "spine1": ["spine04", "spine03"],
        "spine2": ["spine02"],
        "spine3": ["spine01"],
        "neck": ["neck01", "neck02", "neck03"],
        "head": ["head", *below("head")],  # eyes (and jaw or tongue in larger rigs)
    }
    for side, s in (("left", "L"), ("right", "R")):
        groups |= {
            f"{side}_hip": [f"upperleg01.{s}", f"upperleg02.{s}"],
            f"{side}_knee": [f"lowerleg01.{s}", f"lowerleg02.{s}"],
            f"{side}_ankle": [f"foot.{s}"],
            f"{side}_foot": below(f"foot.{s}"),  # all the toe bones
            f"{side}_collar": [f"clavicle.{s}", f"shoulder01.{s}"],
            f"{side}_shoulder": [f"upperarm01.{s}", f"upperarm02.{s}"],
            f"{side}_elbow": [f"lowerarm01.{s}", f"lowerarm02.{s}"],
            f"{side}_wrist": [f"wrist.{s}"] + [f"metacarpal{k}.{s}" for k in range(1, 5)],
        }
        for finger, number in FINGERS.items():
            for k in (1, 2, 3):
                groups[f"{side}_{finger}{k}"] = [f"finger{number}-{k}.{s}"]
    return groups


def group_bones(labels: list[str], parents: list[int]) -> Rig:
    """Assign every anny bone to one SMPL-H joint and check the joint tree is SMPL-H's."""
    groups = joint_bone_names(labels, parents)
    index = {label: i for i, label in enumerate(labels)}
    joint_of_bone = np.full(len(labels), -1)
    for j, name in enumerate(JOINT_NAMES):
        for bone in groups[name]:
            if bone not in index:
                raise RuntimeError(f"anny rig has no bone {bone!r} (for joint {name})")
            if joint_of_bone[index[bone]] != -1:
                raise RuntimeError(f"anny bone {bone!r} assigned to two joints")
            joint_of_bone[index[bone]] = j
    if any(p >= c for c, p in enumerate(parents)):
        raise RuntimeError("anny's bones are expected to come after their parents")
    unassigned = [labels[i] for i in np.flatnonzero(joint_of_bone < 0)]
    if unassigned:
        raise RuntimeError(f"anny bones not assigned to any SMPL-H joint: {unassigned}")
    entry_bones: list[list[int]] = [[] for _ in JOINT_NAMES]
    for bone, parent in enumerate(parents):
        j = joint_of_bone[bone]
        if parent < 0 or joint_of_bone[parent] != j:
            entry_bones[j].append(bone)
            expected = SMPLH_PARENTS[j]
            got = -1 if parent < 0 else int(joint_of_bone[parent])
            if got != expected:
                raise RuntimeError(f"bone {labels[bone]} makes {JOINT_NAMES[j]} a child of joint {got}")
    return Rig(list(labels), list(parents), joint_of_bone, entry_bones)


def joint_positions(rig: Rig, heads: torch.Tensor) -> torch.Tensor:
    """(..., 104, 3) bone heads -> (..., 52, 3) joints: the mean head of each joint's entry
    bones (the first bone's head; for the toes, the mean of the five toe bases)."""
    return torch.stack([heads[..., bones, :].mean(-2) for bones in rig.entry_bones], dim=-2)


def bake_phenotype(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The phenotype the T-pose is solved on, its age set through anny's calibrated age mapping."""
    from anny.shape_distribution import SimpleShapeDistribution

    mapping = SimpleShapeDistribution(model).morphological_age_mapping
    age = mapping.morphological_to_anny_age(torch.tensor([BAKE_MORPHOLOGICAL_AGE], dtype=DTYPE))
    return {k: torch.tensor([v], dtype=DTYPE) for k, v in BAKE_PHENOTYPE.items()} | {"age": age}


def sample_phenotypes(model: torch.nn.Module, n: int, ages: tuple[float, float], seed: int) -> dict[str, torch.Tensor]:
    """n phenotypes from anny's shape distribution, morphological age uniform in ``ages``."""
    from anny.shape_distribution import SimpleShapeDistribution

    low, high = (torch.tensor(a, dtype=DTYPE) for a in ages)
    distribution = SimpleShapeDistribution(model, torch.distributions.Uniform(low, high))
    torch.manual_seed(seed)
    _, phenotypes = distribution.sample(n)
    return phenotypes


def deltas_from_world(rig: Rig, world: torch.Tensor) -> torch.Tensor:
    """(104, 3, 3) world-aligned rotations G_c -> (104, 4, 4) `local-ref` deltas D_c = G_p^T G_c.

    In anny's `local-ref` parameterisation a bone's posed orientation is G_c U_c (U_c its
    reference orientation) with G_c = G_parent D_c: exactly SMPL's chain of local rotations in
    world-aligned axes.
    """
    parent = torch.tensor([0, *rig.parents[1:]])
    deltas = torch.eye(4, dtype=world.dtype).repeat(len(rig.labels), 1, 1)
    deltas[:, :3, :3] = world[parent].transpose(1, 2) @ world
    deltas[0, :3, :3] = world[0]
    return deltas


def pose_anny(
    model: torch.nn.Module, deltas: torch.Tensor, phenotypes: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """anny's forward pass in `local-ref` with the root kept at its rest position.

    A `local-ref` root delta is the root's world pose, so a zero translation would move the
    body to the origin; the rest root head is added back (the root is not rotated here).
    """
    out = model(pose_parameters=deltas, phenotype_kwargs=phenotypes, pose_parameterization="local-ref")
    root = out["rest_bone_heads"][:, :1]
    out["vertices"] = out["vertices"] + root
    out["bone_poses"] = out["bone_poses"].clone()
    out["bone_poses"][..., :3, 3] += root
    return out


def _rotation_between(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The smallest rotation taking direction a to direction b."""
    a, b = a / a.norm(), b / b.norm()
    axis = torch.linalg.cross(a, b)
    angle = torch.atan2(axis.norm(), a @ b)
    return axis_angle_to_matrix(axis / axis.norm().clamp_min(1e-12) * angle)


def bake_tpose(model: torch.nn.Module, rig: Rig, verbose: bool = True) -> torch.Tensor:
    """`local-ref` deltas (104, 4, 4) taking anny's A-pose to the open body's T-pose.

    Each step turns one bone (and its subtree) about its head by the smallest rotation that
    aims a direction measured on anny's own posed skeleton, so the legs hang straight down
    (abduction removed), upper arms, forearms and hands point along +-X, the knuckle line is
    level with the palms down, and every finger segment is levelled (a flat hand).
    """
    phenotype = bake_phenotype(model)
    bone = rig.bone
    world = torch.eye(3, dtype=DTYPE).repeat(len(rig.labels), 1, 1)
    weights = model.dense_vertex_bone_weights

    def rotate(b: int, rotation: torch.Tensor) -> None:
        for c in rig.subtree(b):
            world[c] = rotation @ world[c]

    def posed() -> tuple[torch.Tensor, torch.Tensor]:
        out = pose_anny(model, deltas_from_world(rig, world)[None], phenotype)
        return out["bone_poses"][0, :, :3, 3], out["vertices"][0]

    def direction(b: int, heads: torch.Tensor, vertices: torch.Tensor) -> torch.Tensor:
        """Towards the bone's only child, or for an end bone towards the centre of the skin it owns."""
        kids = [c for c, p in enumerate(rig.parents) if p == b]
        if len(kids) == 1:
            return heads[kids[0]] - heads[b]
        return vertices[weights[:, b] > 0.5].mean(0) - heads[b]

    def aim(pairs: list[tuple[str, str | None, torch.Tensor | None]]) -> None:
        """Aim bone->tip (or the bone's own direction) at a target; None levels it instead."""
        heads, vertices = posed()
        for name, tip, target in pairs:
            b = bone[name]
            d = heads[bone[tip]] - heads[b] if tip else direction(b, heads, vertices)
            t = d * torch.tensor([1.0, 1.0, 0.0], dtype=DTYPE) if target is None else target
            rotation = _rotation_between(d, t)
            rotate(b, rotation)
            if verbose:
                angle = torch.rad2deg(torch.arccos(((rotation.trace() - 1) / 2).clamp(-1, 1)))
                print(f"  bake {name:14s} {angle.item():5.1f} deg")

    for s, x in (("L", 1.0), ("R", -1.0)):
        axis = torch.tensor([x, 0.0, 0.0], dtype=DTYPE)
        heads, _ = posed()
        leg = heads[bone[f"foot.{s}"]] - heads[bone[f"upperleg01.{s}"]]
        aim([(f"upperleg01.{s}", f"foot.{s}", leg * torch.tensor([0.0, 1.0, 1.0], dtype=DTYPE))])
        aim([(f"upperarm01.{s}", f"lowerarm01.{s}", axis)])
        aim([(f"lowerarm01.{s}", f"wrist.{s}", axis)])
        aim([(f"wrist.{s}", f"finger3-1.{s}", axis)])
        # Palms down: turn the forearm's twist bone about the (now horizontal) forearm axis until
        # the line from the little finger's knuckle to the index finger's is level.
        heads, _ = posed()
        knuckles = heads[bone[f"finger2-1.{s}"]] - heads[bone[f"finger5-1.{s}"]]
        twist = torch.atan2(knuckles[2], -knuckles[1])  # anny: -Y is forward, Z is up
        rotate(bone[f"lowerarm02.{s}"], axis_angle_to_matrix(twist * torch.tensor([1.0, 0.0, 0.0], dtype=DTYPE)))
        if verbose:
            print(f"  bake lowerarm02.{s}   {torch.rad2deg(twist.abs()).item():5.1f} deg (palm twist)")
        aim([(f"wrist.{s}", f"finger3-1.{s}", axis)])
        for k in (1, 2, 3):
            aim([(f"finger{f}-{k}.{s}", None, None) for f in range(1, 6)])
    return deltas_from_world(rig, world)


def tpose_bodies(
    model: torch.nn.Module, deltas: torch.Tensor, phenotypes: dict[str, torch.Tensor], batch: int = 100
) -> tuple[torch.Tensor, torch.Tensor]:
    """T-posed vertices (N, V, 3) and bone heads (N, 104, 3), in SMPL model space."""
    to_smpl = torch.as_tensor(ANNY_TO_SMPL, dtype=DTYPE)
    n = len(next(iter(phenotypes.values())))
    vertices, heads = [], []
    for start in range(0, n, batch):
        chunk = {k: v[start:start + batch] for k, v in phenotypes.items()}
        with torch.no_grad():
            out = pose_anny(model, deltas[None], chunk)
        vertices.append(out["vertices"] @ to_smpl.T)
        heads.append(out["bone_poses"][..., :3, 3] @ to_smpl.T)
    return torch.cat(vertices), torch.cat(heads)


def fit_pca(vertices: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Mean (V, 3), directions (V, 3, k) scaled to one standard deviation, variance kept.

    Exact PCA through the N x N Gram matrix (N samples << 3V coordinates). Directions are
    signed so that +beta_0 makes the body taller and the others have a positive largest entry.
    """
    n = len(vertices)
    flat = vertices.reshape(n, -1)
    mean = flat.mean(0)
    centred = flat - mean
    eigval, eigvec = torch.linalg.eigh(centred @ centred.T)
    eigval, eigvec = eigval.flip(0).clamp_min(0), eigvec.flip(1)
    directions = (centred.T @ eigvec[:, :k]) / eigval[:k].sqrt()  # unit columns
    directions = directions * (eigval[:k] / (n - 1)).sqrt()  # one standard deviation
    signs = torch.sign(directions.gather(0, directions.abs().argmax(0, keepdim=True))[0])
    y = mean.reshape(-1, 3)[:, 1]
    top, bottom = 3 * y.argmax() + 1, 3 * y.argmin() + 1  # Y coordinates of the highest and lowest points
    signs[0] = torch.sign(directions[top, 0] - directions[bottom, 0])
    directions = directions * signs
    kept = float(eigval[:k].sum() / eigval.sum())
    return mean.reshape(-1, 3), directions.reshape(-1, 3, k), kept


def fit_joint_regressor(
    vertices: torch.Tensor,
    joints: torch.Tensor,
    weights: torch.Tensor,
    parents: list[int],
    ridge: float = 1e-6,
) -> torch.Tensor:
    """(52, V) regressor with rows summing to 1, fitted joint by joint by least squares.

    Joint j uses the vertices where its skin weights meet its parent's or a child's (the ring
    of skin around the articulation). A small ridge towards the plain average of those
    vertices makes the fit unique, as the samples span few shape directions; the sum-to-one
    constraint keeps the regressor translation-equivariant.
    """
    n_joints, n_vertices = weights.shape[1], weights.shape[0]
    regressor = torch.zeros(n_joints, n_vertices, dtype=DTYPE)
    has = weights > 0
    for j in range(n_joints):
        neighbours = [p for p in (parents[j],) if p >= 0] + [c for c, p in enumerate(parents) if p == j]
        ring = has[:, j] & has[:, neighbours].any(1)
        idx = torch.nonzero(ring).squeeze(1)
        if len(idx) < 8:
            raise RuntimeError(f"joint {JOINT_NAMES[j]} has only {len(idx)} ring vertices")
        x = vertices[:, idx]  # (N, m, 3)
        centre = x.mean(1, keepdim=True)
        a = (x - centre).permute(0, 2, 1).reshape(-1, len(idx))  # one row per sample and axis
        b = (joints[:, j] - centre[:, 0]).reshape(-1)
        m = len(idx)
        gram = a.T @ a
        lam = ridge * gram.trace() / m
        uniform = torch.full((m,), 1.0 / m, dtype=DTYPE)
        kkt = torch.zeros(m + 1, m + 1, dtype=DTYPE)
        kkt[:m, :m] = gram + lam * torch.eye(m, dtype=DTYPE)
        kkt[:m, m] = kkt[m, :m] = 1.0
        rhs = torch.cat([a.T @ b + lam * uniform, torch.ones(1, dtype=DTYPE)])
        regressor[j, idx] = torch.linalg.solve(kkt, rhs)[:m]
    return regressor


def build_variant(
    model: torch.nn.Module, rig: Rig, deltas: torch.Tensor, variant: str, samples: int, seed: int
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Arrays of one shipped file, and the numbers the report quotes."""
    t0 = time.time()
    phenotypes = sample_phenotypes(model, samples, VARIANT_AGES[variant], seed)
    vertices, heads = tpose_bodies(model, deltas, phenotypes)
    print(f"  {variant}: {samples} bodies T-posed in {time.time() - t0:.0f} s; fitting the PCA...", flush=True)
    mean, shapedirs, kept = fit_pca(vertices, N_BETAS)
    betas = torch.linalg.lstsq(shapedirs.reshape(-1, N_BETAS), (vertices - mean).reshape(samples, -1).T).solution
    projected = mean + torch.einsum("vck,kn->nvc", shapedirs, betas)
    weights = torch.zeros(N_VERTICES, len(JOINT_NAMES), dtype=DTYPE)
    weights.index_add_(1, torch.as_tensor(rig.joint_of_bone), model.dense_vertex_bone_weights.to(DTYPE))
    joints = joint_positions(rig, heads)
    print(f"  {variant}: fitting the joint regressor...", flush=True)
    regressor = fit_joint_regressor(projected, joints, weights, SMPLH_PARENTS)
    train_joint_error = (torch.einsum("jv,nvc->njc", regressor, projected) - joints).norm(dim=-1)
    height = mean[:, 1].max() - mean[:, 1].min()
    stats = {
        "pca_variance_kept": kept,
        "pca_train_vertex_error_mean_mm": 1000 * float((projected - vertices).norm(dim=-1).mean()),
        "regressor_train_joint_error_mean_mm": 1000 * float(train_joint_error.mean()),
        "mean_height_m": float(height),
        "seconds": time.time() - t0,
    }
    arrays = {
        "v_template": mean.numpy().astype(np.float32),
        "f": model.faces.numpy().astype(np.int32),
        "J_regressor": regressor.numpy().astype(np.float32),
        "weights": weights.numpy().astype(np.float32),
        "kintree_table": np.stack([SMPLH_PARENTS, np.arange(len(JOINT_NAMES))]).astype(np.int64),
        "shapedirs": shapedirs.numpy().astype(np.float32),
        "joint_names": np.array(JOINT_NAMES, dtype=str),
        "model_type": np.array("openbody"),
        "variant": np.array(variant),
        "source": np.array(
            f"built by scripts/build_openbody.py from anny {ANNY_VERSION} (Apache-2.0 code, CC0 "
            f"MakeHuman/MPFB2 assets); {samples} bodies, morphological ages "
            f"{VARIANT_AGES[variant][0]:g}-{VARIANT_AGES[variant][1]:g}, seed {seed}; see NOTICE.md"
        ),
    }
    return arrays, stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=Path, default=REPO / "core" / "data")
    parser.add_argument("--samples", type=int, default=3000, help="bodies per variant for the PCA")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", nargs="+", default=list(VARIANT_FILES), choices=list(VARIANT_FILES))
    args = parser.parse_args(argv)

    print(f"loading anny {ANNY_VERSION} (a cold build takes a minute or two)...")
    model = load_anny()
    rig = group_bones(model.bone_labels, model.bone_parents)
    print("baking the T-pose through anny's forward pass:")
    deltas = bake_tpose(model, rig)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for i, variant in enumerate(args.variants):
        arrays, stats = build_variant(model, rig, deltas, variant, args.samples, args.seed + i)
        path = args.out_dir / VARIANT_FILES[variant]
        np.savez_compressed(path, **arrays)
        summary = ", ".join(f"{k} {v:.6g}" for k, v in stats.items())
        print(f"  wrote {path} ({path.stat().st_size / 1e6:.2f} MB): {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
