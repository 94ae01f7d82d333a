"""Retarget a motion-capture clip onto the body: BVH skeletons or C3D markers -> AMASS-style poses.

    python scripts/retarget.py CLIP.bvh --skeleton cmu --out clip_poses.npz
    python scripts/retarget.py TRIAL.c3d --markers core/data/markers_plugin_gait_open.json --out trial.npz
    python scripts/retarget.py TRIAL.c3d --save-calibration subject.json   # the layout fitted to the subject
    python scripts/retarget.py TAKE2.c3d --calibration subject.json        # reused for another take
    python scripts/retarget.py CLIP.bvh --blend clip.blend        # also a Blender scene and a preview PNG
    python scripts/retarget.py CLIP.bvh --character HERO.bvh --out clip_on_hero.bvh   # onto a character's skeleton
    python scripts/retarget.py LIBRARY/ --fps 30 --out-dir poses/ [--workers N | --ray[=ADDRESS]]

A BVH clip is read at --fps (default: its own rate), its joints mapped to the body by the skeleton
preset (cmu, cmu_daz, mixamo, smpl_like, or a JSON file), and each frame solved from the rotation transfer
with the preset's landmark joints as targets; one body shape is fitted to the whole clip. A C3D
clip's markers (labels as in the marker layout; lab Z up unless --up y) are solved through the
prior from its mean pose. Frames showing too few markers are left out (see "source_frames").
The layout is first calibrated to the subject with the shape, as MoSh++ does (core.markers): the
JSON gives each marker's slide from the layout's guess and distance off the skin
("marker_calibration"), and markers the layout does not know ("unknown_markers"). --calibration
reuses a saved calibration (layout and shape) as it is, for another take of the same subject.

Prints one JSON object: frames, seconds (solve time), frames_per_s, mpjpe_mm (fitted keypoints vs
the source's), per_joint_mm, fit_warning (null, or why the fit looks wrong: a mean error above
30 mm or a joint above 60 mm, with the likely cause; also printed to stderr), and what was written. With --blend, Blender (the bpy module) builds
the body, keys the result on it as an action next to the imported source clip, saves the .blend,
and writes beside it a rendered preview PNG (Workbench) and a plot of the fit (OUT_fit.png).

With --character, the solved body drives a character given as a BVH file (its hierarchy and
OFFSETs; its own motion is ignored, except the bind pose of --character-rest-frame): the motion is
written in the character's skeleton as BVH (--out OUT.bvh) at the clip's frame rate (or --fps), the
bone map detected from its joint names (--character-map auto) or named (a preset or a JSON file).
With bpy installed, --character also takes an armature in FILE.blend (the first armature, or
FILE.blend:ARMATURE), FILE.fbx or FILE.glb: the BVH then holds that armature's bone tree (Y up,
its units, its rest as the zero pose).
The report adds character_map (body joint -> bones), character_scale (character metres per body
metre), limb_direction_deg (mean angle between the source's limbs and the character's; the solved
body's for C3D), limb_direction_body_deg (the character's against the solved body's) and
end_rotation_deg (hands and feet against the source's, BVH sources).
--character-from picks what drives the character from a BVH source: transfer (the default for BVH)
the source's rotations carried through both rest alignments (the IK's start) with the solved root
path and shape, or ik the solved body, whose joints the IK puts on the source's calibrated
landmarks (limbs a few degrees off the source's where the two skeletons place joints differently).
On the benchmark clips transfer follows the source's limbs and hands within 1 degree (ik: 2.6-5
and 2.7-9.7) and slides the feet no more than ik does (docs/benchmarks.md). C3D markers always
drive the character through the solved body (ik).
The foot lock (core.foot_contact, on unless --no-foot-lock) finds where the source's ankles and toes
are planted (the solved body's for markers) and moves the character's root horizontally so its
planted feet stay put; foot_slide_mm_per_frame reports the source's and the character's (at body
size) mean horizontal ankle and toe travel on those frames.

With --out-dir it converts a library (folders, searched recursively, clips or glob patterns): one
OUT_DIR/<relative path>/<name>_poses.npz per clip, OUT_DIR/report.jsonl with one line per clip
(frames, mpjpe_mm, seconds, or the error), a JSON summary on stdout, exit status 1 when some clip
failed. Clips already done with the same settings are skipped, so a stopped run resumes (see
core/batch.py and docs/scaling.md).
"""

from __future__ import annotations

import argparse
import functools
import glob
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from core.batch import (REPORT_NAME, BatchError, ScriptJob, add_runner_arguments, check_runner_arguments,  # noqa: E402
                        plan, print_summary, run_batch, settings_hash)
from blender_scene import blender_output_to_stderr  # noqa: E402
from character_file import is_armature_file, load_character  # noqa: E402
from core.body_model import BodyModel  # noqa: E402
from core.character import (  # noqa: E402
    CharacterSkeleton,
    armature_bvh,
    armature_bvh_channels,
    bvh_channels,
    character_motion,
    clip_agreement,
    limb_direction_errors,
)
from core.foot_contact import body_contacts, slide_report, source_contacts  # noqa: E402
from core.markers import read_calibration  # noqa: E402
from core.mocap.bvh import read_bvh, write_bvh  # noqa: E402
from core.mocap.c3d import read_c3d, to_model_space  # noqa: E402
from core.mocap.skeletons import detect_preset  # noqa: E402
from core.mocap.transfer import skeleton_fk  # noqa: E402
from core.rotations import axis_angle_to_matrix, matrix_to_axis_angle  # noqa: E402
from core.mocap.convert import subsample_indices  # noqa: E402
from core.pose_files import PoseSequence, pose_arrays, save_pose_file  # noqa: E402
from core.retarget import (ClipTargets, Retarget, RetargetOptions, RetargetResult, bvh_targets,  # noqa: E402
                           marker_targets)
from core.vposer import VPoser, load_default_vposer, load_vposer  # noqa: E402

DEFAULT_LAYOUT = REPO / "core" / "data" / "markers_plugin_gait_open.json"


def load_targets(args: argparse.Namespace, model: BodyModel, calibration: dict[str, Any] | None = None) -> ClipTargets:
    """The clip's targets; a C3D trial's markers placed by `calibration` (see load_calibration) when given."""
    path = Path(args.input)
    if path.suffix.lower() == ".bvh":
        motion = read_bvh(path)
        frames = subsample_indices(motion.num_frames, motion.fps, args.fps) if args.fps else None
        targets = bvh_targets(motion, args.skeleton, model, frames)
        if args.fps:
            targets.fps = min(args.fps, motion.fps)
        return targets
    if path.suffix.lower() == ".c3d":
        clip = read_c3d(path, units=args.units)
        positions = to_model_space(clip.positions, args.up)
        frames = subsample_indices(clip.num_frames, clip.frame_rate, args.fps) if args.fps else np.arange(clip.num_frames)
        layout = calibration if calibration is not None else args.markers or DEFAULT_LAYOUT
        targets = marker_targets(model, layout, clip.labels, positions[frames],
                                 min(args.fps or clip.frame_rate, clip.frame_rate), source=str(path))
        targets.source_frames = frames[targets.source_frames]
        return targets
    raise SystemExit(f"error: {path}: expected a .bvh or .c3d file")


def write_character(args: argparse.Namespace, model: BodyModel, result, targets: ClipTargets, out: Path) -> dict:
    """Drive the --character BVH with the solved body and write it to `out`; the report's additions."""
    path = Path(args.character)
    if path.suffix.lower() == ".bvh":
        character = read_bvh(path)
        skeleton = CharacterSkeleton.from_bvh(character, rest_frame=args.character_rest_frame)
    elif is_armature_file(args.character):
        with blender_output_to_stderr():
            skeleton = load_character(args.character)
    else:
        raise ValueError(f"{path}: --character takes a .bvh, a .blend (FILE.blend:ARMATURE), an .fbx or a .glb")
    poses = result.poses
    if args.character_from == "transfer" and targets.init is None:
        if args.character_from_given:
            raise ValueError(f"{args.input}: --character-from transfer needs a BVH source (a clip of rotations); "
                             "markers drive the character through the solved body (ik)")
        args.character_from = "ik"
    if args.character_from == "transfer":
        poses = matrix_to_axis_angle(targets.init.rotations.double())
    contacts = foot_contacts(targets, result)
    binding, pose, heads, D = character_motion(skeleton, args.character_map, model, poses, result.transl,
                                               result.betas, None if args.no_foot_lock else contacts, result.fps)
    if path.suffix.lower() == ".bvh":
        frames = bvh_channels(binding, character, pose)
    else:  # an armature: a BVH of its bone tree, Y up, in its units
        character, keep = armature_bvh(binding)
        frames = armature_bvh_channels(binding, character, keep, pose)
    write_bvh(out, character, frames, 1.0 / result.fps)
    if contacts == "body":
        contacts = body_contacts(binding, torch.as_tensor(poses).detach().cpu(), result.transl.detach().cpu(),
                                 result.fps)
    report = {"character": str(args.character), "character_map": binding.character_map(),
              "character_scale": round(binding.scale, 4), "character_from": args.character_from,
              "foot_lock": not args.no_foot_lock,
              "foot_slide_mm_per_frame": {k: round(v, 3) for k, v in slide_report(binding, contacts, heads).items()}}
    report.update(_limb_agreement(args, binding, targets, result, heads, D))
    return report


def foot_contacts(targets: ClipTargets, result: RetargetResult):
    """The source's foot contacts: a skeleton's ankle and toe landmarks (at body size), or "body"
    (detected on the solved body) for markers, whose labels are no joints."""
    names = targets.keypoints.names
    if not any(name.endswith("_ankle") for name in names):
        return "body"
    return source_contacts(names, targets.positions.detach().cpu().double(), result.fps)


def _limb_agreement(args, binding, targets, result, heads, D) -> dict:
    """limb_direction_deg (and end_rotation_deg) of the character against a BVH source's skeleton,
    or against the solved body for markers; limb_direction_body_deg against the solved body."""
    poses = result.poses.cpu().double().reshape(result.poses.shape[0], -1, 3)
    joints, _ = skeleton_fk(axis_angle_to_matrix(poses), binding.body_rest, binding.body_parents,
                            result.transl.cpu().double())
    to_body = float(torch.stack(list(limb_direction_errors(binding, joints, heads).values())).mean())
    if Path(args.input).suffix.lower() != ".bvh":
        return {"limb_direction_deg": to_body, "limb_reference": "body"}
    motion = read_bvh(args.input)
    preset = detect_preset(motion.names, motion.source) if args.skeleton == "auto" else args.skeleton
    agreement = clip_agreement(binding, motion, preset, targets.source_frames, heads, D)
    return {"limb_direction_deg": float(np.mean(list(agreement["limb"].values()))),
            "limb_direction_per_joint_deg": {k: round(v, 3) for k, v in agreement["limb"].items()},
            "end_rotation_deg": {k: round(v, 3) for k, v in agreement["end"].items()}, "limb_reference": "source",
            "limb_direction_body_deg": to_body}


def load_calibration(path: Path) -> dict[str, Any]:
    """A calibration saved by --save-calibration (a marker layout with the subject's shape)."""
    try:
        document = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: cannot read the calibration ({error})") from None
    if not isinstance(document, dict):
        raise ValueError(f"{path}: expected a JSON object with 'markers' and 'betas'")
    read_calibration(document, str(path))
    return document


def retarget_options(args: argparse.Namespace, model: BodyModel,
                     calibration: dict[str, Any] | None = None) -> tuple[RetargetOptions, torch.Tensor | None]:
    """Options and a fixed shape: a saved calibration holds its layout and shape as they are."""
    if calibration is not None:
        betas = read_calibration(calibration, str(args.calibration), model.num_betas)
        fixed = torch.as_tensor(betas, dtype=model.dtype, device=args.device)
        return RetargetOptions(batch_size=args.batch, fit_shape=False, calibrate=False), fixed
    return RetargetOptions(batch_size=args.batch, fit_shape=not args.no_shape), None


def marker_report(targets: ClipTargets, result: Any, save: Path | None) -> dict[str, Any]:
    """The markers the layout does not know, and the calibration (also written to `save`)."""
    report: dict[str, Any] = {"unknown_markers": list(targets.unused_labels)} if targets.init is None else {}
    if result.calibration is not None:
        report["marker_calibration"] = result.calibration["calibration"]
        if save is not None:
            save.write_text(json.dumps(result.calibration, indent=1))
            report["calibration_out"] = str(save)
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", metavar="INPUT", nargs="*",  # one at least, checked in is_batch (see --ray)
                        help="a .bvh or .c3d clip; or, with --out-dir, folders (searched recursively), clips and glob patterns")
    parser.add_argument("--out", type=Path, help="AMASS-style .npz to write (default: INPUT_poses.npz in the current folder)")
    parser.add_argument("--out-dir", type=Path, help="batch: one OUT_DIR/<relative path>/<name>_poses.npz per clip "
                        "and OUT_DIR/report.jsonl; clips done earlier with the same settings are skipped")
    parser.add_argument("--skeleton", default="cmu",
                        help="BVH skeleton preset: cmu, cmu_daz, mixamo, smpl_like, auto (by joint names) or a .json")
    parser.add_argument("--markers", type=Path, help="C3D marker layout .json (default: the shipped Plug-in Gait)")
    parser.add_argument("--calibration", type=Path, help="C3D: a saved calibration (layout + shape) to reuse as it is")
    parser.add_argument("--save-calibration", type=Path, help="C3D: write the layout calibrated to this subject")
    parser.add_argument("--up", default="z", choices=("z", "y"), help="C3D lab up axis (default z)")
    parser.add_argument("--units", choices=("mm", "cm", "m"), help="override the C3D file's POINT:UNITS")
    parser.add_argument("--fps", type=float, help="resample to this frame rate (default: the clip's own)")
    parser.add_argument("--body", type=Path, help="SMPL-family .npz (default: the open adult body)")
    parser.add_argument("--prior", type=Path, help="VPoser weights or official folder (default: the shipped one)")
    parser.add_argument("--no-shape", action="store_true", help="keep the body's default shape (betas 0)")
    parser.add_argument("--batch", type=int, default=1000, help="frames solved together")
    parser.add_argument("--device", default="cpu", help="torch device: cpu or cuda")
    parser.add_argument("--threads", type=int, help="torch CPU threads (one clip; a batch runs one per worker)")
    parser.add_argument("--blend", type=Path, help="also save a Blender scene with the body keyed (needs bpy)")
    parser.add_argument("--character", help="a character's skeleton: .bvh, or with bpy FILE.blend[:ARMATURE], .fbx, "
                        ".glb; the motion is written in it (--out .bvh)")
    parser.add_argument("--character-map", default="auto",
                        help="bone map of the character: auto (by bone names), a preset name or a .json")
    parser.add_argument("--character-from", choices=("ik", "transfer"),
                        help="BVH sources: drive the character with the source's rotations and the solved root path "
                             "(transfer, the default: limbs follow the source's) or with the solved body (ik: its "
                             "joints on the calibrated landmarks); C3D: always ik")
    parser.add_argument("--character-rest-frame", type=int,
                        help="frame of the character file holding its bind pose (default: its OFFSET pose)")
    parser.add_argument("--no-foot-lock", action="store_true",
                        help="--character: let the root follow the body's path scaled (default: the root moves so "
                             "the character's feet stay put where the source's are planted)")
    add_runner_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.character_from_given = args.character_from is not None
    args.character_from = args.character_from or "transfer"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda, but this PyTorch sees no CUDA device")
    if is_batch(parser, args):
        return run_library(args)
    args.input = args.input[0]
    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out or Path(Path(args.input).stem + ("_character.bvh" if args.character else "_poses.npz"))
    if args.character and out.suffix.lower() != ".bvh":
        raise SystemExit(f"error: --character writes BVH; --out must end in .bvh, got {out}")

    try:  # the project's errors (VPoserError) are ValueErrors
        model = load_body(args.body, args.device)
        result, targets = solve(args, model)
        if args.character:
            character_report = write_character(args, model, result, targets, out)
        else:
            save_pose_file(out, pose_sequence(result), source_frames=np.asarray(targets.source_frames))
    except (OSError, KeyError, ValueError) as error:
        raise SystemExit(f"error: {error.args[0] if error.args else error}") from None
    frames = result.poses.shape[0]
    report = {
        "input": str(args.input),
        "frames": frames,
        "seconds": round(result.seconds, 3),
        "frames_per_s": frames / result.seconds,
        "mpjpe_mm": result.mpjpe_mm,
        "per_joint_mm": result.per_keypoint_mm(),
        "fit_warning": result.fit_warning(),
        "landmark_offsets_mm": {name: [round(1000 * v, 1) for v in local] for name, local in result.offsets.items()},
        **marker_report(targets, result, args.save_calibration),
        "betas": [round(float(b), 3) for b in result.betas],
        "device": args.device,
        "out": str(out),
    }
    if args.character:
        report.update(character_report)
    if args.blend:
        from blender_scene import save_scene  # a bpy job; imported only when asked for

        report.update(save_scene(Path(args.input), out, args.blend, body=args.body, skeleton=args.skeleton))
    print(json.dumps(report, indent=1))
    if report["fit_warning"]:
        print(f"warning: {report['fit_warning']}", file=sys.stderr)
    return 0


def solve(args: argparse.Namespace, model: BodyModel, progress: bool = True) -> tuple[RetargetResult, ClipTargets]:
    """Retarget the clip args.input onto `model` (with a progress bar over its frames)."""
    calibration = load_calibration(args.calibration) if args.calibration else None  # read once
    targets = load_targets(args, model, calibration)
    prior = None
    if targets.init is None:
        prior = load_prior(args.prior, args.device)
    options, betas = retarget_options(args, model, calibration)
    run = Retarget(model, targets, prior, options, betas=betas)
    with tqdm(total=targets.positions.shape[0], unit="frame", file=sys.stderr, leave=False, disable=not progress) as bar:
        for done, _ in run:
            bar.update(done - bar.n)
    return run.result(), targets


def pose_sequence(result: RetargetResult) -> PoseSequence:
    return PoseSequence(result.poses.cpu().double().numpy(), result.transl.cpu().double().numpy(),
                        result.betas.cpu().double().numpy(), framerate=result.fps)


@functools.lru_cache(maxsize=2)
def load_body(path: Path | None, device: str) -> BodyModel:
    """The body, loaded once per batch worker."""
    model = BodyModel.from_file(path) if path else BodyModel.open_default("adult")
    return model.to(device)


@functools.lru_cache(maxsize=2)
def load_prior(path: Path | None, device: str) -> VPoser:
    return (load_vposer(path) if path else load_default_vposer()).to(device).eval()


# ------------------------------------------------------------------------------------------------
# Whole libraries (core.batch): one task per clip, run here, in local processes or on Ray

BATCH_ONLY = ("input", "out", "out_dir", "workers", "ray", "threads", "blend")  # options that leave outputs alone


def is_batch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> bool:
    """A batch when --out-dir is given; several inputs, a folder or a pattern need it."""
    check_runner_arguments(parser, args)
    if args.ray and (Path(args.ray).exists() or Path(args.ray).suffix.lower() in (".bvh", ".c3d")):
        args.input.insert(0, args.ray)  # "--ray FOLDER ...": the folder is an input, Ray's local cluster meant
        args.ray = ""
    if not args.input:
        parser.error("the following arguments are required: INPUT")
    single = len(args.input) == 1 and not Path(args.input[0]).is_dir() and not glob.has_magic(args.input[0])
    if args.out_dir is None:
        if not single:
            parser.error("several clips, a folder or a pattern need --out-dir (one .npz per clip is written there)")
        if args.workers is not None or args.ray is not None:
            parser.error("--workers and --ray go with --out-dir")
        return False
    if args.out or args.blend or args.character or args.save_calibration:
        parser.error("--out, --blend, --character and --save-calibration are for one clip; a batch (--out-dir) "
                     "names its outputs after the clips")
    return True


def run_library(args: argparse.Namespace) -> int:
    """Retarget every clip of args.input into args.out_dir; prints a JSON summary, returns 1 when
    some clip failed."""
    settings = {key: value for key, value in vars(args).items() if key not in BATCH_ONLY}
    job = ScriptJob(str(Path(__file__).resolve()), "retarget_clip", settings)
    try:
        tasks = plan(args.input, args.out_dir, (".bvh", ".c3d"), "_poses.npz")
        result = run_batch(tasks, job, settings_hash(settings), args.out_dir, args.workers, args.ray)
    except BatchError as error:
        raise SystemExit(f"error: {error}") from None
    report = args.out_dir / REPORT_NAME
    print_summary(result, report, lambda line: print(line, file=sys.stderr))
    print(json.dumps(result.summary(report), indent=1))
    return 1 if result.failed else 0


def retarget_clip(path: Path, settings: dict) -> tuple[list[dict[str, np.ndarray]], dict]:
    """A batch worker's clip: the same solve as a single clip; returns the .npz arrays and the
    report's fields."""
    args = argparse.Namespace(**settings, input=str(path))
    result, targets = solve(args, load_body(args.body, args.device), progress=False)
    arrays = pose_arrays(pose_sequence(result), source_frames=np.asarray(targets.source_frames))
    info = {"frames": int(result.poses.shape[0]), "mpjpe_mm": round(result.mpjpe_mm, 3),
            "solve_seconds": round(result.seconds, 3), "fit_warning": result.fit_warning()}
    return [arrays], info


if __name__ == "__main__":
    sys.exit(main())
