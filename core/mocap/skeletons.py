"""Skeleton presets: which source (mocap) joint drives which SMPL joint.

A preset is plain data:

* ``joints``: SMPL joint name -> source joint name, or a tuple of source joint names when one SMPL
  segment spans several source bones (their global rotations are averaged, see
  `core.mocap.transfer`). SMPL joints not listed stay at identity (zero pose).
* ``directions``: SMPL joint name -> the source joint whose position, seen from the (first) mapped
  source joint, gives the bone direction used to align the two rest poses. The target direction
  is the segment from the SMPL joint to its child in `TARGET_DIRECTION_CHILD`. Joints absent here
  (or whose target has no such child) inherit their parent's alignment (identity at the root).
* ``segments``: SMPL joint name -> the bone whose own rest head -> tail is the segment that joint
  turns (joint -> its child in `TARGET_DIRECTION_CHILD`, the pelvis -> spine1), for character rigs whose controls turn
  about a pivot away from the segment they move (a generated Rigify rig's FK spine turns about the
  torso pivot: spine_fk.001 starts there, while the lower back it moves hangs below it). Used by
  `core.character`'s rest alignment instead of "first head -> next mapped joint's first head".
* ``landmarks``: the SMPL joints whose (first) source joint sits where the SMPL joint does, so
  its position can be a keypoint target for the IK (None: every mapped joint). Rotations of the
  others still transfer; only their positions are left out, where the two skeletons place the
  joint differently (CMU's root sits ~10 cm above its hip joints, the open body's pelvis level
  with them).
* ``unit_scale``: metres per source unit, where known.
* ``axes``: how SMPL's axes read in the source's, e.g. ("+x", "+y", "+z") for a Y-up source that
  faces +Z with its left at +X (SMPL's own), ("+x", "+z", "-y") for a Z-up source facing -Y. None:
  infer from the rest skeleton (`core.mocap.transfer.infer_axes`).
* ``rest_frame``: the frame whose pose is the source's rest (cgspeed's DAZ-friendly files start
  with a synthetic T-pose); it is left out of the motion. None: the zero-rotation (OFFSET) pose.

Custom presets come from a dict or a JSON file with the same keys (`SkeletonPreset.from_dict`,
`load_preset`; docs/user_guide.md documents each key with an example). Unknown keys, joint names
that are not SMPL-family joints, values of the wrong kind and (once the clip is known) a rest
frame outside it are refused with SkeletonPresetError, listing what is allowed.

A preset is also a *bone map* (`BoneMap` is the same class): the character rigs below (Rigify,
Unreal, Character Creator, DAZ Genesis, VRM, MakeHuman) are presets like the mocap skeletons, and
one registry (PRESETS) and one detection function (`detect_preset`, by bone names) serve both the
mocap retarget and `core.character`. Names may give alternatives ("lThighBend|lThigh") and
a tuple is a chain of bones sharing one body joint: the mocap transfer averages their rotations;
a character binding spreads the joint's rotation along the chain (see `core.character`).
`SkeletonPreset.resolve` makes a preset concrete for one skeleton's bone names.
"""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping

from ..errors import VPoserError
from ..model_files import KINDS, LEFT_HAND_JOINTS, RIGHT_HAND_JOINTS, SMPL_BODY_JOINTS, SMPL_BODY_PARENTS

__all__ = [
    "SMPL_BODY_JOINT_NAMES",
    "SMPL_HAND_JOINT_NAMES",
    "SMPLH_JOINT_NAMES",
    "SMPL_JOINT_NAMES",
    "SMPLX_JOINT_NAMES",
    "SMPL_BODY_PARENTS",
    "TARGET_DIRECTION_CHILD",
    "default_target_names",
    "PRESET_JOINT_NAMES",
    "SkeletonPreset",
    "SkeletonPresetError",
    "PRESETS",
    "get_preset",
    "load_preset",
    "BoneMap",
    "BoneMapError",
    "PRESET_ALIASES",
    "REQUIRED_JOINTS",
    "missing_required",
    "check_required",
    "detect_preset",
]

# --------------------------------------------------------------------------------------------
# SMPL-family joint names (DESIGN.md order)

SMPL_BODY_JOINT_NAMES = list(SMPL_BODY_JOINTS)
SMPL_HAND_JOINT_NAMES = {"left": list(LEFT_HAND_JOINTS), "right": list(RIGHT_HAND_JOINTS)}
SMPLH_JOINT_NAMES = list(KINDS["smplh"].joint_names)
SMPL_JOINT_NAMES = list(KINDS["smpl"].joint_names)
SMPLX_JOINT_NAMES = list(KINDS["smplx"].joint_names)
_FINGERS = ("index", "middle", "pinky", "ring", "thumb")


def default_target_names(num_joints: int) -> list[str]:
    """SMPL-family joint names for a joint count: 22 body, 24 SMPL, 52 SMPL-H, 55 SMPL-X."""
    table = {22: SMPL_BODY_JOINT_NAMES, 24: SMPL_JOINT_NAMES, 52: SMPLH_JOINT_NAMES, 55: SMPLX_JOINT_NAMES}
    if num_joints not in table:
        raise ValueError(f"no default SMPL joint names for {num_joints} joints; pass target_names")
    return list(table[num_joints])


def _sided(table: Mapping) -> dict:
    """Expand keys/values holding "{s}" (left/right), "{S}" (Left/Right), "{c}" (l/r) or "{L}" (L/R) into both
    sides.

    Values may be a name, a tuple of names or None.
    """

    def sub(value, side: str):
        if value is None:
            return None
        if isinstance(value, tuple):
            return tuple(sub(v, side) for v in value)
        return (value.replace("{s}", side).replace("{S}", side.capitalize()).replace("{c}", side[0])
                .replace("{L}", side[0].upper()))

    out = {}
    for key, value in table.items():
        if "{s}" in key:
            for side in ("left", "right"):
                out[sub(key, side)] = sub(value, side)
        else:
            out[key] = value
    return out


# The SMPL child whose position defines each SMPL joint's rest bone direction.
TARGET_DIRECTION_CHILD: dict[str, str] = _sided(
    {
        "spine1": "spine2", "spine2": "spine3", "spine3": "neck", "neck": "head",
        "{s}_hip": "{s}_knee", "{s}_knee": "{s}_ankle", "{s}_ankle": "{s}_foot",
        "{s}_collar": "{s}_shoulder", "{s}_shoulder": "{s}_elbow", "{s}_elbow": "{s}_wrist",
        "{s}_wrist": "{s}_middle1",
        **{f"{{s}}_{f}1": f"{{s}}_{f}2" for f in _FINGERS},
        **{f"{{s}}_{f}2": f"{{s}}_{f}3" for f in _FINGERS},
    }
)  # fmt: skip


# --------------------------------------------------------------------------------------------
# Presets


class SkeletonPresetError(VPoserError):
    """A skeleton preset that cannot be used (unknown keys or joint names, a bad value, a rest frame
    the clip lacks); the message lists what is allowed."""


@dataclass(frozen=True)
class SkeletonPreset:
    name: str
    joints: Mapping[str, str | tuple[str, ...]]
    directions: Mapping[str, str] = field(default_factory=dict)
    unit_scale: float | None = None
    axes: tuple[str, str, str] | None = None
    description: str = ""
    landmarks: tuple[str, ...] | None = None
    rest_frame: int | None = None
    segments: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self):
        # Empty joints are allowed here: `resolve` may find none of a preset's bones in a skeleton
        # (`missing_required` then names them); a preset read from a file must map some (from_dict).
        if not isinstance(self.joints, Mapping):
            raise SkeletonPresetError(f"preset {self.name!r}: 'joints' must map SMPL joint names to source joint "
                                      f"names, got {self.joints!r}")
        for smpl, src in self.joints.items():
            if isinstance(src, list):
                object.__setattr__(self, "joints", {**self.joints, smpl: tuple(src)})
        for smpl, src in self.joints.items():
            if not (_is_name(src) or (isinstance(src, tuple) and src and all(map(_is_name, src)))):
                raise SkeletonPresetError(f"preset {self.name!r}: 'joints' maps {smpl!r} to {src!r}; expected a "
                                          "source joint name or a list of them")
        _check_joint_names(self.name, "joints", self.joints)
        bad = [k for k in self.directions if k not in self.joints]
        if bad:
            raise SkeletonPresetError(f"preset {self.name!r}: directions for unmapped SMPL joints {bad}")
        wrong = {k: v for k, v in self.directions.items() if not _is_name(v)}
        if wrong:
            raise SkeletonPresetError(f"preset {self.name!r}: 'directions' must map SMPL joints to one source joint "
                                      f"name each, got {wrong}")
        for key in ("segments",):
            table = getattr(self, key)
            if not isinstance(table, Mapping) or not all(k in self.joints and _is_name(v) for k, v in table.items()):
                raise SkeletonPresetError(f"preset {self.name!r}: '{key}' must map mapped SMPL joints to one bone "
                                          f"name each, got {table!r}")
        if self.axes is not None:
            _check_axes(self.axes)
        if self.landmarks is not None:
            object.__setattr__(self, "landmarks", tuple(self.landmarks))
            _check_joint_names(self.name, "landmarks", self.landmarks)
            unmapped = [k for k in self.landmarks if k not in self.joints]
            if unmapped:
                raise SkeletonPresetError(f"preset {self.name!r}: landmarks name unmapped SMPL joints {unmapped}")
        if self.unit_scale is not None and not (_is_number(self.unit_scale) and 0 < self.unit_scale < math.inf):
            raise SkeletonPresetError(f"preset {self.name!r}: 'unit_scale' must be a positive number of metres per "
                                      f"source unit (0.01 for centimetres), got {self.unit_scale!r}")
        if self.rest_frame is not None and not (isinstance(self.rest_frame, int) and not isinstance(self.rest_frame, bool)
                                                and self.rest_frame >= 0):
            raise SkeletonPresetError(f"preset {self.name!r}: 'rest_frame' must be a frame index of the clip, 0 or "
                                      f"more (0 is its first frame), got {self.rest_frame!r}")

    def rest_frame_index(self, num_frames: int, source: str) -> int | None:
        """The clip frame (0 = its first) whose pose is the rest, or None for the zero-rotation pose.
        Refused (SkeletonPresetError) when a clip of `num_frames` frames has no such frame: the
        rest would otherwise come from wherever the reader clamps to."""
        if self.rest_frame is None:
            return None
        if self.rest_frame >= num_frames:
            raise SkeletonPresetError(
                f"{source}: preset {self.name!r} takes the rest pose from frame {self.rest_frame} ('rest_frame'), but "
                f"the clip has {num_frames} frame{'s' * (num_frames != 1)}: valid rest frames are 0-{num_frames - 1} "
                "(0 is the clip's first frame), or leave 'rest_frame' out to use the zero-rotation pose")
        return self.rest_frame

    def landmark_joints(self) -> list[str]:
        """SMPL joints whose source position is a keypoint target, in the preset's order."""
        return [name for name in self.joints if self.landmarks is None or name in self.landmarks]

    def sources(self, smpl_name: str) -> tuple[str, ...]:
        """Source joint names driving an SMPL joint (empty when unmapped)."""
        src = self.joints.get(smpl_name)
        if src is None:
            return ()
        return (src,) if isinstance(src, str) else tuple(src)

    def source_names(self) -> list[str]:
        """Every source joint name the preset refers to."""
        names = [n for smpl in self.joints for n in self.sources(smpl)]
        names += [d for d in self.directions.values() if d]
        names += [d for d in self.segments.values() if d]
        return list(dict.fromkeys(names))

    def resolve(self, bone_names) -> "SkeletonPreset":
        """This preset made concrete for one skeleton's bone names: each name's first present
        alternative ("lThighBend|lThigh"), matched with or without a "prefix:" on either side
        ("mixamorig1:Hips" for "mixamorig:Hips"); bones the skeleton lacks leave their chains, and a
        joint with none left is unmapped (see `missing_required`)."""
        one = _matcher(bone_names)
        joints: dict[str, str | tuple[str, ...]] = {}
        for smpl in self.joints:
            chain = tuple(dict.fromkeys(b for b in map(one, self.sources(smpl)) if b is not None))
            if chain:
                joints[smpl] = chain[0] if len(chain) == 1 else chain
        directions = {k: one(v) for k, v in self.directions.items() if k in joints and one(v) is not None}
        segments = {k: one(v) for k, v in self.segments.items() if k in joints and one(v) is not None}
        landmarks = None if self.landmarks is None else tuple(k for k in self.landmarks if k in joints)
        return replace(self, joints=joints, directions=directions, landmarks=landmarks, segments=segments)

    def absent_bones(self, bone_names) -> list[str]:
        """The names (with their alternatives) this preset gives that match no bone of a skeleton."""
        one = _matcher(bone_names)
        return [name for name in self.source_names() if one(name) is None]

    def with_prefix(self, prefix: str, old_prefix: str = "") -> "SkeletonPreset":
        """The same preset with source names re-prefixed (e.g. Mixamo's "mixamorig1:")."""

        def fix(n: str) -> str:
            return prefix + (n[len(old_prefix):] if old_prefix and n.startswith(old_prefix) else n)

        joints = {k: (fix(v) if isinstance(v, str) else tuple(fix(x) for x in v)) for k, v in self.joints.items()}
        directions = {k: fix(v) for k, v in self.directions.items()}
        segments = {k: fix(v) for k, v in self.segments.items()}
        return replace(self, joints=joints, directions=directions, segments=segments)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "joints": {k: (v if isinstance(v, str) else list(v)) for k, v in self.joints.items()},
            "directions": dict(self.directions),
            "unit_scale": self.unit_scale,
            "axes": list(self.axes) if self.axes else None,
            "description": self.description,
            "landmarks": list(self.landmarks) if self.landmarks is not None else None,
            "rest_frame": self.rest_frame,
            "segments": dict(self.segments),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> "SkeletonPreset":
        """From a dict with keys joints (required), directions, unit_scale, axes, name, description, landmarks,
        rest_frame (the user guide describes each). Unknown keys and joint names are refused, listing
        the allowed ones."""
        if not isinstance(data, Mapping):
            raise SkeletonPresetError(f"a skeleton preset is a JSON object with the keys {', '.join(PRESET_KEYS)}, "
                                      f"not a {type(data).__name__}")
        if "joints" not in data:
            raise SkeletonPresetError("a skeleton preset needs a 'joints' mapping (SMPL name -> source name)")
        unknown = set(data) - set(PRESET_KEYS)
        if unknown:
            raise SkeletonPresetError(f"unknown preset keys {sorted(unknown)}; the keys are {', '.join(PRESET_KEYS)}")
        name = data.get("name", "custom")
        for key, kind in (("joints", Mapping), ("directions", Mapping), ("segments", Mapping), ("axes", list),
                          ("landmarks", list)):
            if data.get(key) is not None and not isinstance(data[key], kind):
                expected = "an object" if kind is Mapping else "a list"
                raise SkeletonPresetError(f"preset {name!r}: '{key}' must be {expected}, got {data[key]!r}")
        if not data["joints"]:
            raise SkeletonPresetError(f"preset {name!r}: 'joints' must map SMPL joint names to source joint "
                                      f"names, got {data['joints']!r}")
        joints = {k: (v if isinstance(v, str) else tuple(v) if isinstance(v, list) else v)
                  for k, v in data["joints"].items()}
        axes = data.get("axes")
        return cls(
            name=name,
            joints=joints,
            directions=dict(data.get("directions") or {}),
            unit_scale=data.get("unit_scale"),
            axes=tuple(axes) if axes else None,
            description=data.get("description", ""),
            landmarks=tuple(data["landmarks"]) if data.get("landmarks") is not None else None,
            rest_frame=data.get("rest_frame"),
            segments=dict(data.get("segments") or {}),
        )


PRESET_KEYS = ("name", "description", "joints", "directions", "segments", "landmarks", "unit_scale", "axes",
               "rest_frame")
# Every SMPL-family joint name a preset may map: SMPL's 24, SMPL-H's fingers, SMPL-X's jaw and eyes.
PRESET_JOINT_NAMES = tuple(dict.fromkeys(SMPL_JOINT_NAMES + SMPLH_JOINT_NAMES + SMPLX_JOINT_NAMES))


def _is_name(value) -> bool:
    return isinstance(value, str) and bool(value)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _allowed_joint_names() -> str:
    """The joint names a preset may map, grouped so the list stays readable."""
    body = set(SMPL_BODY_JOINT_NAMES)
    smpl_hands = [n for n in SMPL_JOINT_NAMES if n not in body]
    face = [n for n in SMPLX_JOINT_NAMES if n not in SMPLH_JOINT_NAMES]
    return (f"the body joints {', '.join(SMPL_BODY_JOINT_NAMES)}; SMPL's {', '.join(smpl_hands)}; the fingers "
            f"left_ or right_ + {', '.join(_FINGERS)} + 1, 2 or 3 (e.g. left_index1); SMPL-X's {', '.join(face)}")


def _check_joint_names(preset: str, key: str, names) -> None:
    """Refuse names that are not SMPL-family joints, with the closest names and the allowed list."""
    unknown = [name for name in names if name not in PRESET_JOINT_NAMES]
    if not unknown:
        return
    shown = []
    for name in unknown:
        close = difflib.get_close_matches(str(name), PRESET_JOINT_NAMES, n=1)
        shown.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise SkeletonPresetError(f"preset {preset!r}: '{key}' names unknown SMPL joint{'s' * (len(unknown) > 1)} "
                              f"{', '.join(shown)}; a preset names the body's joints by their SMPL names: "
                              f"{_allowed_joint_names()}")


def _matcher(bone_names):
    """name spec -> the skeleton's bone it names (first alternative present, "prefix:" ignored) or None."""
    names = list(bone_names)
    lookup: dict[str, str] = {n: n for n in names}
    for n in names:
        lookup.setdefault(_bare(n), n)

    def one(spec: str) -> str | None:
        for alt in spec.split("|"):
            found = lookup.get(alt) or lookup.get(_bare(alt))
            if found is not None:
                return found
        return None

    return one


def _bare(name: str) -> str:
    """A bone name without its "namespace:" prefix (Mixamo's "mixamorig:", FBX namespaces)."""
    return name.rsplit(":", 1)[-1]


def _check_axes(axes) -> None:
    if len(axes) != 3 or any(not isinstance(a, str) or len(a) != 2 or a[0] not in "+-" or a[1] not in "xyz"
                             for a in axes):
        raise SkeletonPresetError(f"axes must be three of '+x', '-y', ..., got {axes!r}")
    if sorted(a[1] for a in axes) != ["x", "y", "z"]:
        raise SkeletonPresetError(f"axes must use x, y and z once each, got {axes!r}")


# CMU main set (cgspeed MotionBuilder-style names, from the CMU ASF bones). Decisions, checked on
# the data:
# * spine1/spine2/spine3 = LowerBack/Spine/Spine1 (CMU's three back bones lowerback, upperback,
#   thorax). Spine1 is the parent of the neck and both clavicles, like SMPL's spine3, so the chest
#   orientation transfers exactly.
# * neck = mean of Neck and Neck1 (lowerneck, upperneck): SMPL has one neck segment where CMU has
#   two that often bend in opposite directions; their mean rotation follows the Neck->Head line to
#   0.5 deg on average, either bone alone to 12 deg. head = Head.
# * CMU's "LeftHand" joint is the start of the ASF `lwrist` bone, whose only DOF is a twist about
#   the forearm axis (pronation); it sits ~9.5 cm before the anatomical wrist, and the wrist's
#   flexion/deviation is on `lhand` = LeftFingerBase. So SMPL's elbow (the forearm segment) takes
#   the mean of LeftForeArm and LeftHand (half the forearm twist) and SMPL's wrist takes
#   LeftFingerBase (the hand's orientation), which leaves the other half of the twist on the wrist.
# * LeftShoulder (clavicle) drives the collar; its rotation is zero in every take of the main set.
# * Zero-rotation rest of this skeleton: Y up, toes towards +Z, left hip/arm at +X, i.e. SMPL's
#   axes.
# * Rest alignment only where the CMU rest direction is a convention rather than the subject's
#   calibrated anatomy: the ASF femur and tibia point exactly 20 deg outwards (standing frames show
#   ~0 deg in the pelvis frame, so the splay must be removed), the humerus and radius exactly along
#   +X. The feet, toes and hands inherit their limb's alignment: standing frames show the CMU foot
#   frame rolled by the same ~20 deg as the thigh, so the foot's rest frame is part of the splayed
#   convention. The back, neck, head and clavicles keep A = I: their directions are measured per
#   subject in an upright pose, as the body's rest is, and aligning them to SMPL's differently
#   placed landmarks (its head joint sits forward of its neck joint) would bake a constant bend
#   into every pose.
# * 1 unit = 1/0.45 inch = 56.44 mm (ASF ":units length 0.45").
# * Landmarks (joints whose position is an IK target): the limbs and the head. The root sits ~10 cm
#   above the hip joints, LowerBack/Spine/Spine1 start at the root / mid-back / chest where SMPL's
#   spine joints are spaced differently, Neck starts at the base of the neck and the clavicles at
#   the sternum: fitted on held-out takes those keep 30-70 mm apart whatever the pose, the limb
#   joints and head 3-15 mm.
CMU = SkeletonPreset(
    name="cmu",
    description="CMU ASF/AMC converted to BVH with cgspeed MotionBuilder-style names (31 joints)",
    unit_scale=0.05644,
    axes=("+x", "+y", "+z"),
    joints=_sided(
        {
            "pelvis": "Hips",
            "spine1": "LowerBack", "spine2": "Spine", "spine3": "Spine1",
            "neck": ("Neck", "Neck1"), "head": "Head",
            "{s}_hip": "{S}UpLeg", "{s}_knee": "{S}Leg", "{s}_ankle": "{S}Foot", "{s}_foot": "{S}ToeBase",
            "{s}_collar": "{S}Shoulder", "{s}_shoulder": "{S}Arm",
            "{s}_elbow": ("{S}ForeArm", "{S}Hand"), "{s}_wrist": "{S}FingerBase",
        }
    ),
    directions=_sided(
        {
            "{s}_hip": "{S}Leg", "{s}_knee": "{S}Foot", "{s}_shoulder": "{S}ForeArm", "{s}_elbow": "{S}FingerBase",
        }
    ),
    landmarks=tuple(f"{side}_{joint}" for side in ("left", "right")
                    for joint in ("hip", "knee", "ankle", "foot", "shoulder", "elbow", "wrist")) + ("head",),
)  # fmt: skip

# Mixamo rigs (names as exported by Mixamo, prefix "mixamorig:"; some downloads use "mixamorig1:",
# see SkeletonPreset.with_prefix). Mixamo characters are Y-up, face +Z, T-pose bind pose, and are
# usually in centimetres (unit_scale 0.01; check a file's hip height). As for CMU, only the limbs
# (legs, arms, hands, fingers), whose bind directions are a T-pose convention, are rest-aligned.
_MIXAMO_FINGERS = {"index": "Index", "middle": "Middle", "pinky": "Pinky", "ring": "Ring", "thumb": "Thumb"}
MIXAMO = SkeletonPreset(
    name="mixamo",
    description="Mixamo rig (mixamorig:Hips, ...), fingers included",
    unit_scale=0.01,
    axes=("+x", "+y", "+z"),
    joints=_sided(
        {
            "pelvis": "mixamorig:Hips",
            "spine1": "mixamorig:Spine", "spine2": "mixamorig:Spine1", "spine3": "mixamorig:Spine2",
            "neck": "mixamorig:Neck", "head": "mixamorig:Head",
            "{s}_hip": "mixamorig:{S}UpLeg", "{s}_knee": "mixamorig:{S}Leg",
            "{s}_ankle": "mixamorig:{S}Foot", "{s}_foot": "mixamorig:{S}ToeBase",
            "{s}_collar": "mixamorig:{S}Shoulder", "{s}_shoulder": "mixamorig:{S}Arm",
            "{s}_elbow": "mixamorig:{S}ForeArm", "{s}_wrist": "mixamorig:{S}Hand",
            **{f"{{s}}_{f}{k}": f"mixamorig:{{S}}Hand{m}{k}" for f, m in _MIXAMO_FINGERS.items() for k in (1, 2, 3)},
        }
    ),
    directions=_sided(
        {
            "{s}_hip": "mixamorig:{S}Leg", "{s}_knee": "mixamorig:{S}Foot",
            "{s}_shoulder": "mixamorig:{S}ForeArm",
            "{s}_elbow": "mixamorig:{S}Hand", "{s}_wrist": "mixamorig:{S}HandMiddle1",
            **{f"{{s}}_{f}{k}": f"mixamorig:{{S}}Hand{m}{k + 1}" for f, m in _MIXAMO_FINGERS.items() for k in (1, 2)},
        }
    ),
)  # fmt: skip

# CMU's cgspeed "DAZ-friendly" BVH release (Poser/DAZ names, 43 joints; the extra training set).
# Checked on the data: Y up, faces +Z, left at +X, centimetres; frame 0 of every file is a synthetic
# T-pose (the rest); every other joint uses Z-X-Y Euler channels. Two back bones (abdomen, chest)
# for SMPL's three: spine2 takes their mean, so the back's bend spreads as SMPL's would. No toe
# joint: SMPL's feet stay at rest. Buttocks, collars and eyes never rotate in the release. As for
# CMU, only the limbs are rest-aligned (the T-pose's legs and arms against the body's).
CMU_DAZ = SkeletonPreset(
    name="cmu_daz",
    description='CMU in the cgspeed "DAZ-friendly" BVH release (hip, abdomen, chest, lThigh, ...; 43 joints)',
    unit_scale=0.01,
    axes=("+x", "+y", "+z"),
    rest_frame=0,
    joints=_sided(
        {
            "pelvis": "hip",
            "spine1": "abdomen", "spine2": ("abdomen", "chest"), "spine3": "chest",
            "neck": "neck", "head": "head",
            "{s}_hip": "{c}Thigh", "{s}_knee": "{c}Shin", "{s}_ankle": "{c}Foot",
            "{s}_collar": "{c}Collar", "{s}_shoulder": "{c}Shldr", "{s}_elbow": "{c}ForeArm", "{s}_wrist": "{c}Hand",
        }
    ),
    directions=_sided(
        {"{s}_hip": "{c}Shin", "{s}_knee": "{c}Foot", "{s}_shoulder": "{c}ForeArm", "{s}_elbow": "{c}Hand"}
    ),
    landmarks=tuple(f"{side}_{joint}" for side in ("left", "right")
                    for joint in ("hip", "knee", "ankle", "shoulder", "elbow", "wrist")) + ("head",),
)  # fmt: skip

# A source whose joints carry SMPL(-H) names (e.g. a BVH exported from an SMPL armature), in metres.
# Its rest is SMPL's T-pose, so rotations copy over unchanged (no rest alignment): SMPL pose
# parameters do not depend on the body shape.
SMPL_LIKE = SkeletonPreset(
    name="smpl_like",
    description="source joints named like SMPL-H joints (pelvis, left_hip, ...), metres, SMPL axes",
    unit_scale=1.0,
    axes=("+x", "+y", "+z"),
    joints={n: n for n in SMPLH_JOINT_NAMES},
    directions={},
)

# --------------------------------------------------------------------------------------------
# Character rigs. The same data drives `core.character` (posing a user's armature from the body)
# and, where a clip uses one of these skeletons, the mocap transfer: a preset IS a bone map. Names
# may list alternatives ("lThighBend|lThigh": the first the rig has) and chains of bones that share
# one body joint (spine and neck chains, limb segments split for twist); `SkeletonPreset.resolve`
# turns a preset into the concrete map of one rig (absent bones dropped, "prefix:" ignored).
# The rigs' own rests (A-pose, rolled bones, Z-up, centimetres) need nothing here: the character
# binding aligns each bone from the rest positions. Only the limbs are listed in `landmarks`
# (where the rig's joints sit where the body's do); spines are placed differently by every rig.

_LIMB_LANDMARKS = tuple(f"{side}_{joint}" for side in ("left", "right")
                        for joint in ("hip", "knee", "ankle", "shoulder", "elbow", "wrist")) + ("head",)


def _finger_map(pattern: str, names: Mapping[str, str], numbers=("1", "2", "3")) -> dict:
    """{s}_<finger><k> -> pattern.format(finger=rig name, k=rig number), e.g. "f_{finger}.0{k}.{L}"."""
    return {f"{{s}}_{finger}{k}": pattern.replace("{finger}", rig).replace("{k}", num)
            for finger, rig in names.items() for k, num in zip((1, 2, 3), numbers)}


def _rigify_fingers(prefix: str) -> dict:
    return {**_finger_map(prefix + "f_{finger}.0{k}.{L}", {"index": "index", "middle": "middle", "ring": "ring",
                                                           "pinky": "pinky"}),
            **_finger_map(prefix + "thumb.0{k}.{L}", {"thumb": ""})}


RIGIFY = SkeletonPreset(
    name="rigify",
    description="Rigify human metarig (spine, spine.001, ..., thigh.L, upper_arm.L, ...)",
    joints=_sided({
        "pelvis": "spine", "spine1": "spine.001", "spine2": "spine.002", "spine3": "spine.003",
        "neck": ("spine.004", "spine.005"), "head": "spine.006",
        "{s}_hip": "thigh.{L}", "{s}_knee": "shin.{L}", "{s}_ankle": "foot.{L}", "{s}_foot": "toe.{L}",
        "{s}_collar": "shoulder.{L}", "{s}_shoulder": "upper_arm.{L}", "{s}_elbow": "forearm.{L}",
        "{s}_wrist": "hand.{L}", **_rigify_fingers(""),
    }),
    landmarks=_LIMB_LANDMARKS,
)  # fmt: skip

# A generated Rigify rig is posed through its FK controls, with every IK/FK switch at FK (1.0).
RIGIFY_FK = SkeletonPreset(
    name="rigify_fk",
    description="generated Rigify rig, FK controls (torso, spine_fk.001, thigh_fk.L, upper_arm_fk.L, ...); "
                "set the limbs' IK/FK switches to FK",
    joints=_sided({
        "pelvis": ("torso", "spine_fk"), "spine1": "spine_fk.001", "spine2": "spine_fk.002",
        "spine3": "spine_fk.003", "neck": "neck", "head": "head",
        "{s}_hip": "thigh_fk.{L}", "{s}_knee": "shin_fk.{L}", "{s}_ankle": "foot_fk.{L}",
        "{s}_foot": "toe_fk.{L}|toe.{L}",
        "{s}_collar": "shoulder.{L}", "{s}_shoulder": "upper_arm_fk.{L}", "{s}_elbow": "forearm_fk.{L}",
        "{s}_wrist": "hand_fk.{L}", **_rigify_fingers(""),
    }),
    # Rigify's lower spine turns about the torso pivot (torso -> spine_fk.001 -> spine_fk, inverted):
    # spine_fk.001 and .002 start at the pivot, spine_fk above the hips; each lies parallel to the
    # segment it moves (ORG-spine.001, ORG-spine), so its own head -> tail is that segment's direction.
    segments={"pelvis": "spine_fk", "spine1": "spine_fk.001"},
    landmarks=_LIMB_LANDMARKS,
)  # fmt: skip

# The deform bones of a generated Rigify rig, for a rig whose controls were removed: the metarig's
# names with "DEF-", the upper and lower limbs split in two segments (thigh.L, thigh.L.001).
_RIGIFY_SPLIT = {f"{side}_{joint}" for side in ("left", "right") for joint in ("hip", "knee", "shoulder", "elbow")}
RIGIFY_DEF = SkeletonPreset(
    name="rigify_def",
    description="generated Rigify rig without controls: its DEF- bones (DEF-spine, DEF-thigh.L, ...)",
    joints={joint: ("DEF-" + bones, f"DEF-{bones}.001") if joint in _RIGIFY_SPLIT
            else ("DEF-" + bones if isinstance(bones, str) else tuple("DEF-" + b for b in bones))
            for joint, bones in RIGIFY.joints.items()},
    landmarks=_LIMB_LANDMARKS,
)

# Unreal Engine mannequin (UE4; UE5's Manny adds spine_04/05 and neck_02, taken as chains).
UNREAL = SkeletonPreset(
    name="unreal",
    description="Unreal Engine mannequin (pelvis, spine_01, thigh_l, upperarm_l, ...; UE4 and UE5)",
    joints=_sided({
        "pelvis": "pelvis", "spine1": "spine_01", "spine2": "spine_02", "spine3": ("spine_03", "spine_04", "spine_05"),
        "neck": ("neck_01", "neck_02"), "head": "head",
        "{s}_hip": "thigh_{c}", "{s}_knee": "calf_{c}", "{s}_ankle": "foot_{c}", "{s}_foot": "ball_{c}",
        "{s}_collar": "clavicle_{c}", "{s}_shoulder": "upperarm_{c}", "{s}_elbow": "lowerarm_{c}",
        "{s}_wrist": "hand_{c}",
        **_finger_map("{finger}_0{k}_{c}", {f: f for f in _FINGERS}),
    }),
    landmarks=_LIMB_LANDMARKS,
)  # fmt: skip

# Character Creator / iClone (CC3, CC4). CC_Base_Hip carries the whole body (CC_Base_Pelvis, its
# child, only the legs); twist bones (..._UpperarmTwist01, ...) are left to follow their limb.
CHARACTER_CREATOR = SkeletonPreset(
    name="character_creator",
    description="Character Creator / iClone (CC_Base_Hip, CC_Base_Waist, CC_Base_L_Thigh, ...)",
    joints=_sided({
        "pelvis": "CC_Base_Hip", "spine1": "CC_Base_Waist", "spine2": "CC_Base_Spine01", "spine3": "CC_Base_Spine02",
        "neck": ("CC_Base_NeckTwist01", "CC_Base_NeckTwist02"), "head": "CC_Base_Head",
        "{s}_hip": "CC_Base_{L}_Thigh", "{s}_knee": "CC_Base_{L}_Calf", "{s}_ankle": "CC_Base_{L}_Foot",
        "{s}_foot": "CC_Base_{L}_ToeBase", "{s}_collar": "CC_Base_{L}_Clavicle",
        "{s}_shoulder": "CC_Base_{L}_Upperarm", "{s}_elbow": "CC_Base_{L}_Forearm", "{s}_wrist": "CC_Base_{L}_Hand",
        **_finger_map("CC_Base_{L}_{finger}{k}", {"thumb": "Thumb", "index": "Index", "middle": "Mid",
                                                  "ring": "Ring", "pinky": "Pinky"}),
    }),
    landmarks=_LIMB_LANDMARKS,
)  # fmt: skip

# DAZ Genesis 3/8 (bend/twist pairs, two-bone abdomen, chest and neck) and Genesis 1/2 names.
DAZ_GENESIS = SkeletonPreset(
    name="daz_genesis",
    description="DAZ Genesis figures (hip, pelvis, abdomenLower, lThighBend, lShldrBend, ...; Genesis 1-2 names too)",
    joints=_sided({
        "pelvis": "hip", "spine1": "abdomenLower|abdomen", "spine2": "abdomenUpper|abdomen2",
        "spine3": ("chestLower|chest", "chestUpper"), "neck": ("neckLower|neck", "neckUpper"), "head": "head",
        "{s}_hip": ("{c}ThighBend|{c}Thigh", "{c}ThighTwist"), "{s}_knee": "{c}Shin", "{s}_ankle": "{c}Foot",
        "{s}_foot": "{c}Toe", "{s}_collar": "{c}Collar", "{s}_shoulder": ("{c}ShldrBend|{c}Shldr", "{c}ShldrTwist"),
        "{s}_elbow": ("{c}ForearmBend|{c}ForeArm", "{c}ForearmTwist"), "{s}_wrist": "{c}Hand",
        **_finger_map("{c}{finger}{k}", {"thumb": "Thumb", "index": "Index", "middle": "Mid", "ring": "Ring",
                                         "pinky": "Pinky"}),
    }),
    landmarks=_LIMB_LANDMARKS,
)  # fmt: skip

# VRoid Studio / VRM avatars as exported (J_Bip_C_Hips, ...).
VRM = SkeletonPreset(
    name="vrm",
    description="VRoid / VRM avatar (J_Bip_C_Hips, J_Bip_C_Spine, J_Bip_L_UpperArm, ...)",
    joints=_sided({
        "pelvis": "J_Bip_C_Hips", "spine1": "J_Bip_C_Spine", "spine2": "J_Bip_C_Chest", "spine3": "J_Bip_C_UpperChest",
        "neck": "J_Bip_C_Neck", "head": "J_Bip_C_Head",
        "{s}_hip": "J_Bip_{L}_UpperLeg", "{s}_knee": "J_Bip_{L}_LowerLeg", "{s}_ankle": "J_Bip_{L}_Foot",
        "{s}_foot": "J_Bip_{L}_ToeBase", "{s}_collar": "J_Bip_{L}_Shoulder", "{s}_shoulder": "J_Bip_{L}_UpperArm",
        "{s}_elbow": "J_Bip_{L}_LowerArm", "{s}_wrist": "J_Bip_{L}_Hand",
        **_finger_map("J_Bip_{L}_{finger}{k}", {"thumb": "Thumb", "index": "Index", "middle": "Middle",
                                                "ring": "Ring", "pinky": "Little"}),
    }),
    landmarks=_LIMB_LANDMARKS,
)  # fmt: skip

# MakeHuman / MPFB default rig (the rig the open body was built from; see DESIGN.md).
MAKEHUMAN = SkeletonPreset(
    name="makehuman",
    description="MakeHuman / MPFB default rig (root, spine05..01, upperleg01.L, upperarm01.L, ...)",
    joints=_sided({
        "pelvis": "root", "spine1": ("spine04", "spine03"), "spine2": "spine02", "spine3": "spine01",
        "neck": ("neck01", "neck02", "neck03"), "head": "head",
        "{s}_hip": ("upperleg01.{L}", "upperleg02.{L}"), "{s}_knee": ("lowerleg01.{L}", "lowerleg02.{L}"),
        "{s}_ankle": "foot.{L}", "{s}_collar": ("clavicle.{L}", "shoulder01.{L}"),
        "{s}_shoulder": ("upperarm01.{L}", "upperarm02.{L}"), "{s}_elbow": ("lowerarm01.{L}", "lowerarm02.{L}"),
        "{s}_wrist": "wrist.{L}",
        **_finger_map("finger{finger}-{k}.{L}", {"thumb": "1", "index": "2", "middle": "3", "ring": "4", "pinky": "5"}),
    }),
    landmarks=_LIMB_LANDMARKS,
)  # fmt: skip

PRESETS: dict[str, SkeletonPreset] = {
    p.name: p for p in (CMU, CMU_DAZ, MIXAMO, SMPL_LIKE, RIGIFY, RIGIFY_FK, RIGIFY_DEF, UNREAL, CHARACTER_CREATOR,
                        DAZ_GENESIS, VRM, MAKEHUMAN)
}
PRESET_ALIASES = {"body": "smpl_like", "mpfb": "makehuman", "cc": "character_creator", "daz": "daz_genesis",
                  "vroid": "vrm", "ue": "unreal", "mannequin": "unreal"}

# Body joints a rig must map to be posed as a humanoid: (name shown in errors, joints any of which will do).
REQUIRED_JOINTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("pelvis", ("pelvis",)), ("spine", ("spine1", "spine2", "spine3")), ("head", ("head",)),
    *((f"{side}_{joint}", (f"{side}_{joint}",)) for side in ("left", "right")
      for joint in ("hip", "knee", "ankle", "shoulder", "elbow", "wrist")),
)
MIN_HUMANOID = 8  # required joints a preset must find before a rig counts as humanoid at all


class BoneMapError(SkeletonPresetError):
    """A rig cannot be mapped to the body: the message names the missing joints or why."""


def missing_required(preset: SkeletonPreset) -> list[str]:
    """The REQUIRED_JOINTS a (resolved) preset leaves unmapped."""
    return [name for name, joints in REQUIRED_JOINTS if not any(preset.sources(j) for j in joints)]


def detect_preset(bone_names, source: str = "armature", candidates=None) -> SkeletonPreset:
    """The built-in preset that maps the most required joints of a rig, resolved to its bone names
    (then the most body joints, then the most joints, fingers included).

    Ties go to the earlier preset in PRESETS (the mocap presets first: a cgspeed DAZ clip is
    `cmu_daz`, not `daz_genesis`; a generated Rigify rig's FK controls before its DEF bones).
    Raises BoneMapError naming the missing required joints when the best preset misses some, and
    refusing the rig as not humanoid when no preset finds MIN_HUMANOID of them."""
    names = list(bone_names)
    best, best_key = None, None
    for preset in (candidates or PRESETS.values()):
        resolved = preset.resolve(names)
        body = sum(1 for k in SMPL_BODY_JOINT_NAMES if resolved.sources(k))
        key = (len(REQUIRED_JOINTS) - len(missing_required(resolved)), body, len(resolved.joints))
        if best_key is None or key > best_key:
            best, best_key = resolved, key
    if best is None or best_key[0] < MIN_HUMANOID:
        shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
        raise BoneMapError(f"{source}: not a humanoid armature (no built-in bone map finds more than "
                           f"{best_key[0] if best_key else 0} of the {len(REQUIRED_JOINTS)} required joints "
                           f"among its bones {shown}); give a bone map JSON")
    return check_required(best, source)


def check_required(preset: SkeletonPreset, source: str = "armature") -> SkeletonPreset:
    """The (resolved) preset, or BoneMapError naming the REQUIRED_JOINTS it leaves unmapped."""
    missing = missing_required(preset)
    if missing:
        raise BoneMapError(f"{source}: bone map {preset.name!r} finds no bone for the required joint(s) "
                           f"{', '.join(missing)}; map them in a bone map JSON")
    return preset


def get_preset(name: str) -> SkeletonPreset:
    """A built-in preset by name (see PRESETS; PRESET_ALIASES such as "body" for "smpl_like")."""
    try:
        return PRESETS[PRESET_ALIASES.get(name, name)]
    except KeyError:
        raise KeyError(f"unknown skeleton preset {name!r}; built-in: {sorted(PRESETS)}") from None


def load_preset(spec: "str | Path | Mapping | SkeletonPreset") -> SkeletonPreset:
    """A preset from a built-in name, a JSON file path, a dict or a preset (returned as is)."""
    if isinstance(spec, SkeletonPreset):
        return spec
    if isinstance(spec, Mapping):
        return SkeletonPreset.from_dict(spec)
    if isinstance(spec, str) and PRESET_ALIASES.get(spec, spec) in PRESETS:
        return PRESETS[PRESET_ALIASES.get(spec, spec)]
    path = Path(spec)
    if path.suffix.lower() == ".json" or path.exists():
        with open(path, encoding="utf-8") as f:
            return SkeletonPreset.from_dict(json.load(f))
    raise KeyError(f"unknown skeleton preset {spec!r}; built-in: {sorted(PRESETS)}, or a .json file")


BoneMap = SkeletonPreset  # a bone map (body joint -> character bones) is a skeleton preset
