"""Write the named hand poses (core/data/hand_poses.json) from per-finger flexion angles.

A pose is 15 local axis-angle rotations for the LEFT hand in SMPL-H's finger order (index1-3,
middle1-3, pinky1-3, ring1-3, thumb1-3); core.hand_poses mirrors them for the right hand. The
rest hand of the SMPL family is flat, palm down (-Y), fingers along +X; joint frames are
world-aligned at rest, so a finger flexes about the axis `direction x palm normal` of its rest
bone (taken from the open adult body), the same axis at all three of its joints. The thumb's
first joint also swings the thumb across the palm (about the palm normal's axis, Y) and under it
(about the hand's long axis, X). Angles are in degrees: (joint1, joint2, joint3) per finger;
thumb: (across, under, flexion) at thumb1, then flexion at thumb2 and thumb3. The fist's thumb
angles were chosen so its tip lies on the curled index and middle fingers.

    python scripts/make_hand_poses.py
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from core.body_model import BodyModel  # noqa: E402
from core.hand_poses import HAND_POSE_FILE  # noqa: E402
from core.model_files import HAND_JOINTS  # noqa: E402
from core.rotations import axis_angle_to_matrix, matrix_to_axis_angle  # noqa: E402

FINGERS = ("index", "middle", "pinky", "ring")
PALM_NORMAL = np.array([0.0, -1.0, 0.0])  # the rest palm faces down
LONG_AXIS = np.array([1.0, 0.0, 0.0])  # the left hand points along +X
ACROSS_AXIS = np.array([0.0, 1.0, 0.0])  # turns the left thumb (+X, +Z) towards the little finger (-Z)

POSES = {
    "flat": ("Fingers straight: the model's rest hand", {}, (0, 0, 0, 0, 0)),
    "relaxed": (
        "Fingers and thumb gently curled, as a hand hangs at rest",
        {"index": (10, 15, 10), "middle": (15, 20, 10), "ring": (20, 25, 15), "pinky": (25, 30, 15)},
        (10, 10, 5, 10, 10),
    ),
    "fist": (
        "Fingers curled into the palm, the thumb across them",
        {finger: (80, 90, 45) for finger in FINGERS},
        (40, 20, 0, 15, 45),
    ),
    "point": (
        "The index finger straight, the others curled into the palm",
        {"index": (0, 0, 0), "middle": (80, 90, 45), "ring": (80, 90, 45), "pinky": (80, 90, 45)},
        (40, 20, 0, 15, 45),
    ),
}


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def _rotation(axis: np.ndarray, degrees: float) -> torch.Tensor:
    return axis_angle_to_matrix(torch.from_numpy(axis * math.radians(degrees)))


def main() -> None:
    model = BodyModel.open_default("adult", dtype=torch.float64)
    rest = model.rest_joints()[0].numpy()
    index = {name: i for i, name in enumerate(model.joint_names)}

    def flexion_axis(finger: str) -> np.ndarray:
        direction = rest[index[f"left_{finger}3"]] - rest[index[f"left_{finger}1"]]
        return _unit(np.cross(_unit(direction), PALM_NORMAL))

    poses = {}
    for name, (description, fingers, thumb) in POSES.items():
        rotations = {}
        for finger in FINGERS:
            for joint, degrees in zip((1, 2, 3), fingers.get(finger, (0, 0, 0))):
                rotations[f"{finger}{joint}"] = _rotation(flexion_axis(finger), degrees)
        across, under, *flexion = thumb
        thumb_axis = flexion_axis("thumb")
        rotations["thumb1"] = (_rotation(ACROSS_AXIS, across) @ _rotation(LONG_AXIS, under)
                               @ _rotation(thumb_axis, flexion[0]))
        rotations["thumb2"] = _rotation(thumb_axis, flexion[1])
        rotations["thumb3"] = _rotation(thumb_axis, flexion[2])
        axis_angles = matrix_to_axis_angle(torch.stack([rotations[joint] for joint in HAND_JOINTS]))
        poses[name] = {"description": description,
                       "axis_angle": [[round(float(v), 5) + 0.0 for v in row] for row in axis_angles]}

    document = {
        "about": "Hand poses for SMPL-H / SMPL-X layouts: local axis-angle rotations (radians) of the LEFT "
                 "hand's finger joints in SMPL-H order; the right hand is mirrored (x -> -x). Written by "
                 "scripts/make_hand_poses.py.",
        "side": "left",
        "joints": list(HAND_JOINTS),
        "poses": poses,
    }
    text = json.dumps(document, indent=1)
    # One line per [x, y, z] row.
    text = re.sub(r"\[\s+([-\d.e,\s]+?)\s+\]", lambda match: "[" + " ".join(match[1].split()) + "]", text)
    HAND_POSE_FILE.write_text(text + "\n")
    print(f"wrote {HAND_POSE_FILE}")


if __name__ == "__main__":
    main()
