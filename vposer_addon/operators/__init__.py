"""Operators, one module per user job."""

from __future__ import annotations

from .. import character as _character
from . import body, character, floor, generate, hands, io, markers, pictures, pose, retarget

# The jobs that write a body's pose or keys: on a bound character's body they write the character too.
for _job in (pose.VPOSER_OT_solve_pose, retarget.VPOSER_OT_retarget, generate.VPOSER_OT_sample_poses,
             generate.VPOSER_OT_inbetweens, io.VPOSER_OT_import_poses, floor.VPOSER_OT_snap_to_floor,
             hands.VPOSER_OT_set_hand_pose, pictures.VPOSER_OT_fit_picture):
    _character.drives_character(_job)

CLASSES: tuple[type, ...] = (*body.CLASSES, *floor.CLASSES, *io.CLASSES, *pose.CLASSES, *retarget.CLASSES,
                             *markers.CLASSES, *generate.CLASSES, *hands.CLASSES, *character.CLASSES,
                             *pictures.CLASSES)
