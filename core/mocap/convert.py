"""Converting one BVH clip to the body's pose layout, the way the training data is made.

Shared by scripts/prepare_mocap.py (which writes the training set) and scripts/eval_prior.py
(which must convert held-out clips identically): subsample to a frame rate, transfer rotations
through a skeleton preset, undo the data's twist flips, drop near-duplicate frames.
"""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import torch

from ..body_model import BodyModel
from ..rotations import matrix_to_axis_angle
from .bvh import read_bvh
from .skeletons import SMPL_BODY_JOINT_NAMES, SkeletonPreset, default_target_names
from .transfer import TransferSetup, build_transfer, fix_twist_flips, retarget_bvh, skeleton_fk, source_rest

DEFAULT_MIN_CHANGE = 0.01  # metres


def load_target(body: str | None):
    """(rest joints (J, 3) float64, parents (J,), joint names) of the body at betas = 0."""
    if body:
        model = BodyModel.from_file(body, dtype=torch.float64)
    else:
        model = BodyModel.open_default("adult", dtype=torch.float64)
    with torch.no_grad():
        rest = model.rest_joints()[0]
    names = list(getattr(model, "joint_names", None) or default_target_names(rest.shape[0]))
    return rest, model.parents.clone(), names


def subsample_indices(num_frames: int, source_fps: float, fps: float) -> np.ndarray:
    """Nearest source frame for each output frame at `fps` (every 4th for 120 -> 30). A BVH frame
    time is rounded (0.0333333 s reads as 30.00003 fps), so rates within 1e-4 of each other or of a
    whole multiple count as exact: else the last frame of a clip would be lost to the rounding."""
    ratio = source_fps / fps
    if abs(ratio - round(ratio)) < 1e-4 * ratio:
        ratio = float(round(ratio))
    if ratio <= 1.0:
        return np.arange(num_frames)
    count = int(np.floor((num_frames - 1) / ratio + 1e-9)) + 1
    return np.minimum(np.round(np.arange(count) * ratio).astype(np.int64), num_frames - 1)


def keep_changed(joints: torch.Tensor, min_change: float) -> np.ndarray:
    """Greedy near-duplicate filter: indices of frames whose joints (T, J, 3) moved >= min_change
    (max over joints, metres) from the last kept frame. The first frame is always kept."""
    if min_change <= 0 or joints.shape[0] == 0:
        return np.arange(joints.shape[0])
    p = joints.numpy()
    kept = [0]
    last = p[0]
    for i in range(1, len(p)):
        if np.sqrt(((p[i] - last) ** 2).sum(-1)).max() >= min_change:
            kept.append(i)
            last = p[i]
    return np.asarray(kept, dtype=np.int64)


def rest_setup(rest_clip: Path, motion, target, preset: SkeletonPreset) -> TransferSetup:
    """The transfer set-up of `motion` with its rest taken from another clip of the same skeleton
    (that clip's preset `rest_frame`): for releases whose rest frame was cut from every clip, such
    as the 30 fps DAZ-friendly folder. ValueError naming both files when the skeletons differ."""
    rest, parents, names = target
    source = read_bvh(rest_clip)
    if source.names != motion.names:
        raise ValueError(f"{motion.source}: its rest is to come from {rest_clip}, but the two files have different "
                         f"joints ({len(motion.names)} and {len(source.names)}; they must be the same skeleton)")
    src_rest, src_rest_global = source_rest(source, preset)
    return build_transfer(preset, motion.names, src_rest, rest, parents, names, source_rest_global=src_rest_global)


def convert_file(path: Path, target, preset: SkeletonPreset, fps: float, min_change: float, fix_flips: bool = True,
                 rest_clip: Path | None = None) -> dict:
    """One BVH -> dict(poses (T, 3J) float64, trans (T, 3), source_frames, counts).
    rest_clip: take the preset's rest frame from this clip instead (`rest_setup`); every frame of
    `path` is then motion."""
    rest, parents, names = target
    motion = read_bvh(path)
    frames = subsample_indices(motion.num_frames, motion.fps, fps)
    setup = None
    if rest_clip is not None:
        setup = rest_setup(rest_clip, motion, target, preset)
    elif preset.rest_frame is not None:  # a synthetic rest pose, not motion
        frames = frames[frames != preset.rest_frame]
    result = retarget_bvh(motion, preset, rest, parents, names, frames=frames, setup=setup)
    local, flips = fix_twist_flips(result.local, names, parents, rest) if fix_flips else (result.local, 0)
    # Body-relative joints (root rotation and translation removed) for the near-duplicate test.
    body = [names.index(n) for n in SMPL_BODY_JOINT_NAMES if n in names]
    relative = local.clone()
    relative[:, int((parents < 0).nonzero()[0])] = torch.eye(3, dtype=local.dtype)
    joints, _ = skeleton_fk(relative, rest, parents)
    keep = keep_changed(joints[:, body], min_change)
    poses = matrix_to_axis_angle(local[keep])
    return {
        "poses": poses.reshape(len(keep), -1).numpy(),
        "trans": result.trans[keep].numpy(),
        "source_frames": frames[keep],
        "num_source": motion.num_frames,
        "num_subsampled": len(frames),
        "align_deg": result.setup.align_angles_deg(),
        "flips": flips,
    }


def find_mocap_files(paths: list[str], subjects: list[str] | None = None,
                     suffixes: tuple[str, ...] = (".bvh",)) -> list[Path]:
    """Folders (their files with these suffixes, not recursive), files and glob patterns, sorted.
    `subjects` keeps files named '<subject>_...' (CMU's naming). ValueError when nothing is found."""
    found: set[Path] = set()
    for item in paths:
        path = Path(item)
        if path.is_dir():
            found.update(p for p in path.iterdir() if p.suffix.lower() in suffixes)
        elif path.is_file():
            found.add(path)
        else:
            matches = [Path(p) for p in glob.glob(item)]
            if not matches:
                raise ValueError(f"{item}: no such file, folder or pattern match")
            found.update(p for p in matches if p.is_file())
    files = sorted(found)
    if subjects:
        wanted = {str(s) for s in subjects}
        files = [p for p in files if p.stem.split("_")[0] in wanted]
    if not files:
        raise ValueError(f"no {' or '.join(suffixes)} files in {' '.join(map(str, paths))}"
                         + (f" for subjects {' '.join(subjects)}" if subjects else ""))
    return files
