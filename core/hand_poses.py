"""Named hand poses (flat, relaxed, fist, point) for bodies with SMPL-H finger joints.

The poses are data (data/hand_poses.json, written by scripts/make_hand_poses.py): 15 local
axis-angle rotations of the LEFT hand's finger joints in SMPL-H order (model_files.HAND_JOINTS).
The right hand's pose is the left one mirrored across the body's mid-plane (x -> -x) by the
project's one mirror helper, so the two sides cannot drift apart. Reading the file needs no torch
(the add-on lists the pose names while drawing); mirroring does.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np

from .errors import VPoserError
from .model_files import HAND_JOINTS, LEFT_HAND_JOINTS, RIGHT_HAND_JOINTS

HAND_POSE_FILE = Path(__file__).resolve().parent / "data" / "hand_poses.json"
SIDES = ("left", "right")


class HandPoseError(VPoserError):
    """A hand pose file or a request for a pose is not what the hand poses expect."""


@cache
def hand_poses(path: Path = HAND_POSE_FILE) -> dict[str, tuple[str, np.ndarray]]:
    """Pose name -> (description, (15, 3) left-hand axis-angles), in the file's order; checked."""
    try:
        document = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise HandPoseError(f"{path}: cannot read the hand poses ({error})") from error
    if not isinstance(document, dict) or document.get("joints") != list(HAND_JOINTS) or document.get("side") != "left":
        raise HandPoseError(
            f"{path}: 'side' must be \"left\" and 'joints' the SMPL-H finger joints {list(HAND_JOINTS)}"
        )
    poses = document.get("poses")
    if not isinstance(poses, dict) or not poses:
        raise HandPoseError(f"{path}: 'poses' must map pose names to {{'description', 'axis_angle'}}")
    checked = {}
    for name, entry in poses.items():
        try:
            values = np.asarray(entry["axis_angle"], dtype=np.float64)
            description = str(entry["description"])
        except (TypeError, KeyError, ValueError) as error:
            raise HandPoseError(f"{path}: pose {name!r} needs 'description' and 'axis_angle' ({error})") from error
        if values.shape != (len(HAND_JOINTS), 3) or not np.isfinite(values).all():
            raise HandPoseError(f"{path}: pose {name!r}: 'axis_angle' must be {len(HAND_JOINTS)} finite [x, y, z] "
                                f"rows, got shape {values.shape}")
        checked[name] = (description, values)
    return checked


def hand_joint_names(side: str) -> tuple[str, ...]:
    """The body joints a side's hand pose rotates, in the pose's row order."""
    _check_side(side)
    return LEFT_HAND_JOINTS if side == "left" else RIGHT_HAND_JOINTS


def hand_pose(name: str, side: str) -> np.ndarray:
    """(15, 3) local axis-angles of `side`'s finger joints (rows as hand_joint_names(side))."""
    from .mocap.transfer import mirror_axis_angle

    _check_side(side)
    poses = hand_poses()
    if name not in poses:
        raise HandPoseError(f"unknown hand pose {name!r}; expected one of {list(poses)}")
    left = poses[name][1]
    if side == "left":
        return left.copy()
    both = np.concatenate([left, np.zeros_like(left)])[None]  # the left pose, mirrored onto the right joints
    return mirror_axis_angle(both, [*LEFT_HAND_JOINTS, *RIGHT_HAND_JOINTS])[0, len(HAND_JOINTS):]


def _check_side(side: str) -> None:
    if side not in SIDES:
        raise HandPoseError(f"unknown hand side {side!r}; expected one of {list(SIDES)}")
