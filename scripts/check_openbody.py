"""Measure how well plain LBS on the shipped open body reproduces anny's own forward pass.

For held-out bodies (phenotypes drawn from anny's shape distribution with a seed the build
never used) in random poses, compare anny's posed mesh with plain LBS on the exported arrays:

1. anny T-poses each body with the build's bake (same deltas as the build).
2. Its betas are the least-squares projection of that T-posed mesh onto the shipped PCA basis.
3. A random SMPL-H pose (N(0, sigma) per axis on every joint) is applied on both sides:
   - LBS: the runtime body model (core.body_model.BodyModel, float64) with those betas;
   - anny: each bone's world pose is the SMPL joint's world transform (computed on anny's own
     T-pose joints) times the bone's T-pose world pose, so every anny bone group turns
     rigidly about its joint, anny's skinning then deforms anny's own rest mesh.
4. Vertex and joint distances are reported in millimetres (mean, 99th percentile, max), with
   the share of the held-out T-poses' variance about the mean body that the 16 betas capture,
   and the floor of any bake-then-LBS export ("lbs_floor": the exported skin weights applied to
   anny's own T-posed mesh about anny's own joints, no PCA and no regressor).
5. "localref_gap_max_mm" confirms that the rigid-group posing of step 3 is anny's `local-ref`
   pose with each joint's rotation composed onto its bones, whenever the feet are unposed (the
   toes then turn about their shared pivot rather than each about its own base).

    python scripts/check_openbody.py --bodies 200 --seed 1000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_openbody as build  # noqa: E402
from build_openbody import DTYPE, REPO  # noqa: E402

from core.body_model import BodyModel  # noqa: E402
from core.rotations import axis_angle_to_matrix  # noqa: E402


def smpl_world_transforms(joints: torch.Tensor, pose: torch.Tensor, parents: list[int]) -> torch.Tensor:
    """(B, J, 4, 4) world transforms relative to the rest pose for local axis-angle ``pose``
    (B, J, 3) about rest ``joints`` (B, J, 3): SMPL's forward kinematics."""
    rotations = axis_angle_to_matrix(pose)
    world: list[torch.Tensor] = []
    for j, parent in enumerate(parents):
        local = torch.eye(4, dtype=pose.dtype).repeat(len(pose), 1, 1)
        local[:, :3, :3] = rotations[:, j]
        local[:, :3, 3] = joints[:, j] - (joints[:, parent] if parent >= 0 else 0.0)
        world.append(local if parent < 0 else world[parent] @ local)
    transforms = torch.stack(world, dim=1)
    offset = (transforms[..., :3, :3] @ joints[..., None])[..., 0]
    transforms[..., :3, 3] -= offset
    return transforms


def anny_posed(
    model: torch.nn.Module,
    rig: build.Rig,
    deltas: torch.Tensor,
    phenotypes: dict[str, torch.Tensor],
    pose: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """anny's T-pose and posed mesh and joints for SMPL-H ``pose`` (B, 52, 3), in SMPL space,
    and the SMPL joint transforms (B, 52, 4, 4) about anny's own T-pose joints."""
    to_smpl = torch.as_tensor(build.ANNY_TO_SMPL, dtype=DTYPE)
    with torch.no_grad():
        tpose = build.pose_anny(model, deltas[None], phenotypes)
        bone_poses = tpose["bone_poses"]  # (B, 104, 4, 4), anny space
        joints = build.joint_positions(rig, bone_poses[..., :3, 3]) @ to_smpl.T
        transforms = smpl_world_transforms(joints, pose, build.SMPLH_PARENTS)
        change = torch.eye(4, dtype=DTYPE)
        change[:3, :3] = to_smpl
        anny_transforms = change.T @ transforms @ change  # the same motions in anny space
        world = anny_transforms[:, torch.as_tensor(rig.joint_of_bone)] @ bone_poses
        posed = model(pose_parameters=world, phenotype_kwargs=phenotypes, pose_parameterization="world")
    posed_joints = (transforms[..., :3, :3] @ joints[..., None])[..., 0] + transforms[..., :3, 3]
    return {
        "tpose_vertices": tpose["vertices"] @ to_smpl.T,
        "tpose_joints": joints,
        "vertices": posed["vertices"] @ to_smpl.T,
        "joints": posed_joints,
        "transforms": transforms,
    }


def localref_gap_mm(
    model: torch.nn.Module, rig: build.Rig, deltas: torch.Tensor, phenotypes: dict[str, torch.Tensor],
    pose: torch.Tensor,
) -> float:
    """Largest vertex gap (mm) between the rigid-group posing used here and anny's `local-ref`
    pose with each joint's rotation composed onto its bones, feet unposed (where they differ)."""
    pose = pose.clone()
    pose[:, [build.JOINT_NAMES.index("left_foot"), build.JOINT_NAMES.index("right_foot")]] = 0.0
    ref = anny_posed(model, rig, deltas, phenotypes, pose)
    to_smpl = torch.as_tensor(build.ANNY_TO_SMPL, dtype=DTYPE)
    bake = [deltas[0, :3, :3]]  # world-aligned T-pose rotations G_c = G_parent D_c
    for bone in range(1, len(rig.labels)):
        bake.append(bake[rig.parents[bone]] @ deltas[bone, :3, :3])
    rotations = to_smpl.T @ ref["transforms"][..., :3, :3] @ to_smpl  # anny space
    world = rotations[:, torch.as_tensor(rig.joint_of_bone)] @ torch.stack(bake)
    local_ref = torch.stack([build.deltas_from_world(rig, w) for w in world])
    with torch.no_grad():
        vertices = build.pose_anny(model, local_ref, phenotypes)["vertices"] @ to_smpl.T
    return 1000 * float((vertices - ref["vertices"]).norm(dim=-1).max())


def check_variant(
    model: torch.nn.Module, rig: build.Rig, deltas: torch.Tensor, path: Path, variant: str,
    bodies: int, sigma: float, seed: int, batch: int = 50,
) -> dict[str, float | int | str]:
    """Held-out agreement of the runtime body model (core.body_model) with anny for one file."""
    body = BodyModel.from_file(path, dtype=DTYPE)
    phenotypes = build.sample_phenotypes(model, bodies, build.VARIANT_AGES[variant], seed)
    generator = torch.Generator().manual_seed(seed)
    pose = sigma * torch.randn(bodies, len(build.JOINT_NAMES), 3, generator=generator, dtype=DTYPE)
    errors: dict[str, list[torch.Tensor]] = {
        k: [] for k in ("tpose", "rest_joints", "posed", "posed_joints", "lbs_floor")}
    residual = total = 0.0
    for start in range(0, bodies, batch):
        chunk = {k: v[start:start + batch] for k, v in phenotypes.items()}
        chunk_pose = pose[start:start + batch]
        ref = anny_posed(model, rig, deltas, chunk, chunk_pose)
        offsets = (ref["tpose_vertices"] - body.v_template).reshape(len(chunk_pose), -1)
        betas = torch.linalg.lstsq(body.shape_basis.T, offsets.T).solution.T
        with torch.no_grad():
            rest = body(betas=betas)
            posed = body(
                betas=betas,
                global_orient=chunk_pose[:, 0],
                body_pose=chunk_pose[:, 1:22].flatten(1),
                left_hand_pose=chunk_pose[:, 22:37].flatten(1),
                right_hand_pose=chunk_pose[:, 37:52].flatten(1),
            )
        errors["tpose"].append((rest.vertices - ref["tpose_vertices"]).norm(dim=-1))
        errors["rest_joints"].append((rest.joints - ref["tpose_joints"]).norm(dim=-1))
        errors["posed"].append((posed.vertices - ref["vertices"]).norm(dim=-1))
        errors["posed_joints"].append((posed.joints - ref["joints"]).norm(dim=-1))
        # The floor of any bake-then-LBS export: the same skinning applied to anny's own T-posed
        # mesh about anny's own joints (no PCA, no regressor).
        blend = torch.einsum("vj,bjrc->bvrc", body.weights, ref["transforms"])
        floor = (blend[..., :3, :3] @ ref["tpose_vertices"][..., None])[..., 0] + blend[..., :3, 3]
        errors["lbs_floor"].append((floor - ref["vertices"]).norm(dim=-1))
        residual += float(((rest.vertices - ref["tpose_vertices"]) ** 2).sum())
        total += float(((ref["tpose_vertices"] - body.v_template) ** 2).sum())
    result: dict[str, float | int | str] = {"variant": variant, "file": path.name}
    for name, values in errors.items():
        stacked = 1000 * torch.cat(values).flatten()
        result[f"{name}_mean_mm"] = round(float(stacked.mean()), 3)
        result[f"{name}_p99_mm"] = round(float(stacked.kthvalue(int(0.99 * len(stacked))).values), 3)
        result[f"{name}_max_mm"] = round(float(stacked.max()), 3)
    result["pca_heldout_variance_captured"] = round(1 - residual / total, 6)
    first = {k: v[:batch] for k, v in phenotypes.items()}
    result["localref_gap_max_mm"] = localref_gap_mm(model, rig, deltas, first, pose[:batch])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=REPO / "core" / "data")
    parser.add_argument("--variants", nargs="+", default=list(build.VARIANT_FILES), choices=list(build.VARIANT_FILES))
    parser.add_argument("--bodies", type=int, default=200, help="held-out bodies (one random pose each)")
    parser.add_argument("--sigma", type=float, default=0.3, help="pose angle std per axis (rad)")
    parser.add_argument("--seed", type=int, default=1000, help="must differ from the build's seeds")
    args = parser.parse_args(argv)

    model = build.load_anny()
    rig = build.group_bones(model.bone_labels, model.bone_parents)
    deltas = build.bake_tpose(model, rig, verbose=False)
    report = {
        "anny_version": build.ANNY_VERSION,
        "bodies": args.bodies,
        "pose_sigma_rad": args.sigma,
        "seed": args.seed,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}",
        "variants": [
            check_variant(model, rig, deltas, args.model_dir / build.VARIANT_FILES[v], v,
                          args.bodies, args.sigma, args.seed + i)
            for i, v in enumerate(args.variants)
        ],
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
