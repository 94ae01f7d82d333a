"""Retarget imported mocap onto a body as a new action: a skeleton (an armature, e.g. from Blender's
own BVH importer) or marker empties (Import C3D Markers).

Sampling. The whole frame range is read at once from the source's action: an armature's bone
channels, with the forward kinematics done in numpy from the bones' rest matrices, and each marker
empty's location and visibility curves (bridge.sample_channels). Where the curves alone do not
tell where things are (constraints, drivers, NLA, a parent, an animated armature object, bones
that do not fully inherit their parent's transform), Blender evaluates the scene frame by frame
instead: exact, and about ten times slower (a 1,000-frame CMU skeleton: 1 s instead of 0.1 s).

Axes and units. The source goes into the body's model space through the inverse of the body rig's
matrix_world (scale included), so a skeleton preset's own file units and axes give way to metres
and SMPL's axes: the BVH importer's Scale already turned file units into Blender units. A skeleton
that is not 0.3-3 m tall there (a CMU file imported at Scale 1 is some 30 m tall) is refused with
the Scale to import it at.

Markers. The layout is calibrated to the subject first (core.markers, as MoSh++ does): each
marker's place on the body and distance off the skin, with the shape. The calibration (a layout
with the subject's shape, JSON) is stored on the new action as the custom property
"vposer_marker_calibration", so another take of the same subject can reuse it as it is (Reuse
Calibration). Markers the layout does not know are named in the report.

Running. execute solves every batch at once, with the window manager's progress; invoke (the UI)
solves one batch per timer event so Blender stays responsive and Esc cancels. Nothing in the scene
changes before the last batch is solved, so a failed or cancelled run leaves it as it was.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import bpy
import numpy as np
from bpy_extras.anim_utils import action_get_channelbag_for_slot

from ...core.errors import VPoserError
from .. import bridge
from ..preferences import resolve_device
from ..prior import load_prior
from ..properties import MAX_BETAS, active_body
from ..reporting import reports_errors
from .io import poll_body
from .markers import LABEL, VISIBLE
from ..stepping import ProgressSteps, end_modal, modal_step, run_all, start_modal

if TYPE_CHECKING:
    from collections.abc import Callable

    from ...core.body_model import BodyModel
    from ...core.mocap.skeletons import SkeletonPreset
    from ...core.retarget import ClipTargets, Retarget, RetargetOptions

PRESET_ITEMS = [
    ("CMU", "CMU", "CMU mocap converted to BVH (cgspeed names: Hips, LeftUpLeg, ...); import at Scale 0.05644"),
    ("CMU_DAZ", "CMU (DAZ)", "CMU in cgspeed's DAZ-friendly BVH (hip, lThigh, ...; frame 1 a T-pose); "
                             "import at Scale 0.01"),
    ("MIXAMO", "Mixamo", "A Mixamo rig (mixamorig:Hips, ...; any 'name:' prefix)"),
    ("SMPL_LIKE", "SMPL-like", "Bones named like SMPL-H joints (pelvis, left_hip, ...)"),
    ("CUSTOM", "Custom JSON", "A skeleton preset file (.json: joints, directions, landmarks, unit_scale, axes, "
                              "rest_frame; the user guide describes each)"),
]
PRESET_NAMES = {"CMU": "cmu", "CMU_DAZ": "cmu_daz", "MIXAMO": "mixamo", "SMPL_LIKE": "smpl_like"}
MARKER_LAYOUT = "markers_plugin_gait_open.json"  # shipped with core's data
CALIBRATION = "vposer_marker_calibration"  # an action's custom property: its markers' calibration (JSON)
BATCH_FRAMES = 100  # frames per solve step: progress and Esc are checked between steps
PLAUSIBLE_HEIGHT = (0.3, 3.0)  # metres: a rest skeleton outside this was imported at the wrong scale
TYPICAL_HEIGHT = 1.7  # metres, to suggest a scale


class SourceError(VPoserError):
    """The source cannot be read as asked; the message names it and says what was expected."""


FAILURE = "Cannot retarget onto {body}"  # how reports_errors introduces a refusal


class VPOSER_OT_retarget(bpy.types.Operator):
    """Retarget mocap onto the active body as a new action: a selected armature (e.g. an imported BVH) or a
    collection of marker empties (Import C3D Markers). Esc cancels"""

    bl_idname = "vposer.retarget"
    bl_label = "Retarget"
    bl_options = {"REGISTER", "UNDO"}

    source: bpy.props.EnumProperty(
        name="Source",
        items=[
            ("ARMATURE", "Armature", "The other selected armature (the body stays active)"),
            ("MARKERS", "Markers", "The marker empties of a collection (Import C3D Markers makes one)"),
        ],
        default="ARMATURE",
    )
    preset: bpy.props.EnumProperty(
        name="Skeleton", description="Which source bone drives which body joint", items=PRESET_ITEMS, default="CMU"
    )
    preset_path: bpy.props.StringProperty(
        name="Preset File", description="Skeleton preset (.json) for Custom JSON", subtype="FILE_PATH"
    )
    marker_collection: bpy.props.StringProperty(
        name="Markers", description="Collection holding the marker empties"
    )
    layout_path: bpy.props.StringProperty(
        name="Marker Layout",
        description="Where each marker label sits on the body (.json); empty: the shipped Plug-in Gait layout",
        subtype="FILE_PATH",
    )
    calibrate_markers: bpy.props.BoolProperty(
        name="Calibrate Markers",
        description="Fit each marker's place on the body and its distance off the skin to this subject, with the "
        "shape (as MoSh++ does); the calibration is stored with the new action",
        default=True,
    )
    calibration_action: bpy.props.StringProperty(
        name="Reuse Calibration",
        description="An action retargeted from markers before, whose calibration (marker places and shape) is used "
        "as it is: another take of the same subject. Empty: the layout, calibrated if asked",
    )
    use_scene_range: bpy.props.BoolProperty(
        name="Scene Frame Range",
        description="Retarget the scene's frame range (off: the frames the source's animation covers)",
        default=False,
    )
    fit_shape: bpy.props.BoolProperty(
        name="Fit Shape",
        description="Fit the body's shape to the source's proportions and set it on the body "
        "(off: keep the body's current shape)",
        default=True,
    )
    foot_lock: bpy.props.BoolProperty(
        name="Foot Lock",
        description="On a bound character: move its root so its feet stay put where the source's are planted "
        "(the character's legs are proportioned unlike the source's, so they would slide); off: the root follows "
        "the body's path, scaled",
        default=True,
    )

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        if not poll_body(cls, context):
            return False
        if context.mode not in {"OBJECT", "POSE"}:
            cls.poll_message_set("Switch to Object or Pose Mode")
            return False
        return True

    @reports_errors(FAILURE)
    def execute(self, context: bpy.types.Context) -> set[str]:
        job = self._prepare(context)
        run_all(context, job)
        return self._finish(job)

    @reports_errors(FAILURE)
    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        return start_modal(self, context, self._prepare(context))

    @reports_errors(FAILURE)
    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        """One batch per timer event; Esc stops before anything was written."""
        return modal_step(self, context, event, lambda: self._finish(self._job),
                          "Retarget cancelled: the scene is unchanged")

    def cancel(self, context: bpy.types.Context) -> None:
        """Blender calls this when it ends the modal run itself (e.g. a file is loaded)."""
        end_modal(self, context)

    def _prepare(self, context: bpy.types.Context) -> RetargetJob:
        """Sample the source and set up the solve; changes nothing (raises what reports_errors reports)."""
        rig = active_body(context)
        started = time.perf_counter()
        model = rig.vposer_body.body_model(resolve_device(context))
        if self.source == "ARMATURE":
            source = self._source_armature(context, rig)
            clip, frames = self._skeleton_targets(context, rig, source, model)
        else:
            source = self._marker_source(context)
            clip, frames = self._marker_targets(context, rig, source, model)
        options, betas, reused = self._options(rig, model)
        return RetargetJob(context, rig, model, source.name, clip, frames, options, betas, started, reused)

    def _options(self, rig: bpy.types.Object, model: BodyModel
                 ) -> tuple[RetargetOptions, np.ndarray | None, dict | None]:
        """The solve's options, the shape to hold (None: fit it) and a reused calibration if any."""
        from ...core.markers import read_calibration
        from ...core.retarget import RetargetOptions

        calibrate = self.source == "ARMATURE" or self.calibrate_markers
        if self.source == "MARKERS" and self.calibration_action:
            document = self._reused_calibration()
            betas = read_calibration(document, f"action '{self.calibration_action}'", model.num_betas)
            return RetargetOptions(batch_size=BATCH_FRAMES, fit_shape=False, calibrate=False), betas, document
        betas = None if self.fit_shape else rig.vposer_body.betas_array()
        return RetargetOptions(batch_size=BATCH_FRAMES, fit_shape=self.fit_shape, calibrate=calibrate), betas, None

    def _reused_calibration(self) -> dict:
        action = bpy.data.actions.get(self.calibration_action)
        if action is None:
            raise SourceError(f"no action named '{self.calibration_action}' to reuse a calibration from")
        try:
            document = json.loads(action[CALIBRATION])
        except (KeyError, TypeError, json.JSONDecodeError):
            raise SourceError(f"action '{action.name}' holds no marker calibration (a '{CALIBRATION}' property, as "
                              "Retarget from markers stores)") from None
        if not isinstance(document, dict):
            raise SourceError(f"action '{action.name}': '{CALIBRATION}' is not a calibration object")
        return document

    def _finish(self, job: RetargetJob) -> set[str]:
        report, warning = job.write()
        # read by character.drives_character when it writes the new action onto a bound character
        self._vposer_foot_contacts = job.foot_contacts() if self.foot_lock else None
        self.report({"WARNING"} if warning else {"INFO"}, report)
        return {"FINISHED"}

    def _source_armature(self, context: bpy.types.Context, rig: bpy.types.Object) -> bpy.types.Object:
        armatures = source_armatures(context, rig)
        if len(armatures) != 1:
            found = f" (selected: {', '.join(obj.name for obj in armatures)})" if armatures else ""
            raise SourceError(f"select one source armature as well as {rig.name}, keeping the body active{found}")
        return armatures[0]

    def _marker_source(self, context: bpy.types.Context) -> bpy.types.Collection:
        collection = bpy.data.collections.get(self.marker_collection)
        if collection is None:
            missing = f"no collection named '{self.marker_collection}'" if self.marker_collection else "no collection"
            raise SourceError(f"{missing}: pick the collection of marker empties (Import C3D Markers makes one)")
        return collection

    def _frames(self, context: bpy.types.Context, objects: list[bpy.types.Object], source: str) -> np.ndarray:
        """Whole scene frames to sample: the scene's range, or the span of the objects' actions."""
        if self.use_scene_range:
            return np.arange(context.scene.frame_start, context.scene.frame_end + 1)
        ranges = [span for span in map(_action_frames, objects) if span is not None]
        if not ranges:
            raise SourceError(f"{source} has no action to retarget: animate it, or turn on Scene Frame Range")
        return np.arange(min(start for start, _ in ranges), max(end for _, end in ranges) + 1)

    def _skeleton_targets(self, context: bpy.types.Context, rig: bpy.types.Object, armature: bpy.types.Object,
                          model: BodyModel) -> tuple[ClipTargets, np.ndarray]:
        """Keypoint targets and start poses from an armature's bones in model space, and the frames."""
        from ...core.retarget import skeleton_targets

        frames = self._frames(context, [armature], armature.name)
        preset = self._preset()
        names, rest, posed = sample_armature(context, armature, frames)
        if preset.rest_frame is not None:  # the clip's own rest frame (cgspeed DAZ files: a T-pose)
            span = _action_frames(armature)
            if span is None:
                raise SourceError(f"{armature.name} has no action: preset '{preset.name}' takes its rest from "
                                  f"the clip's frame {preset.rest_frame}")
            rest_frame = preset.rest_frame_index(span[1] - span[0] + 1, f"{armature.name}'s action")
            rest = sample_armature(context, armature, np.array([span[0] + rest_frame]))[2][0]
        to_model = np.linalg.inv(np.array(rig.matrix_world))
        rest_rotations, rest_heads = _rotations_and_positions(to_model @ rest)
        rotations, heads = _rotations_and_positions(to_model @ posed)
        _check_height(armature.name, rig.name, rest_heads, preset)
        clip = skeleton_targets(_in_model_space(preset, names), names, rest_heads, rest_rotations, rotations, heads,
                                model, bridge.scene_frame_rate(context.scene), np.arange(len(frames)), armature.name)
        return clip, frames

    def _marker_targets(self, context: bpy.types.Context, rig: bpy.types.Object, collection: bpy.types.Collection,
                        model: BodyModel) -> tuple[ClipTargets, np.ndarray]:
        """Keypoint targets from a collection's marker empties (NaN where a marker was not seen), and
        the frames."""
        from ...core.body_model import DATA_DIR
        from ...core.retarget import marker_targets

        markers = [obj for obj in collection.all_objects if LABEL in obj]
        if not markers:
            raise SourceError(f"collection '{collection.name}' holds no marker empties (objects with a "
                              f"'{LABEL}' label, as Import C3D Markers makes)")
        labels = [str(obj[LABEL]) for obj in markers]
        twice = sorted({label for label in labels if labels.count(label) > 1})
        if twice:
            raise SourceError(f"collection '{collection.name}' has more than one marker labelled {', '.join(twice)}")
        frames = self._frames(context, markers, f"collection '{collection.name}'")
        positions = sample_markers(context, markers, frames)
        to_model = np.linalg.inv(np.array(rig.matrix_world))
        positions = positions @ to_model[:3, :3].T + to_model[:3, 3]  # NaN stays NaN
        layout = bpy.path.abspath(self.layout_path) if self.layout_path else DATA_DIR / MARKER_LAYOUT
        if self.calibration_action:
            layout = self._reused_calibration()
        return marker_targets(model, layout, labels, positions, bridge.scene_frame_rate(context.scene),
                              f"collection '{collection.name}'"), frames

    def _preset(self) -> SkeletonPreset:
        from ...core.mocap.skeletons import get_preset, load_preset

        if self.preset != "CUSTOM":
            return get_preset(PRESET_NAMES[self.preset])
        if not self.preset_path:
            raise SourceError("Custom JSON needs a skeleton preset file")
        path = bpy.path.abspath(self.preset_path)
        try:
            return load_preset(path)
        except (ValueError, KeyError) as error:  # malformed JSON, preset keys or values; not a .json file
            raise SourceError(f"{path}: not a skeleton preset ({error.args[0] if error.args else error})") from None


class RetargetJob(ProgressSteps):
    """A prepared retarget: the solve as steps (step), then the result written onto the body (write)."""

    def __init__(self, context: bpy.types.Context, rig: bpy.types.Object, model: BodyModel, source: str,
                 clip: ClipTargets, frames: np.ndarray, options: RetargetOptions, betas: np.ndarray | None,
                 started: float, reused: dict | None = None) -> None:
        """betas: the shape to hold (None: fitted); reused: a calibration used as it is (its shape is set)."""
        from ...core.retarget import Retarget

        prior = load_prior(context, like=model) if clip.init is None else None  # only markers need it
        self.run: Retarget = Retarget(model, clip, prior, options, betas=betas)
        self.rig, self.source, self.started, self.reused = rig, source, started, reused
        self.set_shape = options.fit_shape or reused is not None
        self.unused_labels = clip.unused_labels
        self.clip = clip
        self.frames = frames[clip.source_frames]  # marker frames with too few markers are left out
        self.skipped = len(frames) - len(self.frames)
        super().__init__(self.run, len(self.frames))  # step(): solve the next batch

    def foot_contacts(self):
        """The source's foot contacts, a row per solved frame (core.foot_contact.FootContacts), or
        "body" (detected on the solved body) for markers, whose labels are no joints."""
        from ...core.foot_contact import source_contacts

        names = self.clip.keypoints.names
        if not any(name.endswith("_ankle") for name in names):
            return "body"
        positions = self.clip.positions.detach().cpu().double()
        return source_contacts(names, positions, self.clip.fps)

    def write(self) -> tuple[str, bool]:
        """Key the result as a new action (the previous one kept), set the shape; returns the report
        and whether it warns of a poor fit (see core.retarget.RetargetResult.fit_warning)."""
        from ...core.retarget import MIN_MARKERS
        from ...core.rotations import axis_angle_to_quaternion

        result = self.run.result()
        rig, body = self.rig, self.rig.vposer_body
        names = body.joint_names()
        quaternions = axis_angle_to_quaternion(result.poses.detach().cpu().double().view(self.total, -1, 3)).numpy()
        previous = bridge.keep_current_action(rig)
        action, _ = bridge.new_action(rig, f"{self.source} on {rig.name}")
        bridge.insert_keys(rig, names, bridge.continuous_quaternions(quaternions),
                           result.transl.detach().cpu().double().numpy(), self.frames)
        calibration = result.calibration or self.reused
        if calibration is not None:
            action[CALIBRATION] = json.dumps(calibration)
        if self.set_shape:
            betas = np.zeros(MAX_BETAS)
            betas[: body.num_betas] = result.betas.detach().cpu().numpy()[: body.num_betas]
            body.betas = betas  # one assignment, one reshape
        worst = max(result.per_keypoint_mm().items(), key=lambda item: item[1])
        kept = f"; the previous action '{previous.name}' is kept with a fake user" if previous else ""
        skipped = (f" ({self.skipped} frame{'s' * (self.skipped > 1)} with fewer than {MIN_MARKERS} markers "
                   "left out)" if self.skipped else "")
        warning = result.fit_warning()
        unknown = (f"; not in the layout, so not fitted: {', '.join(self.unused_labels)}"
                   if self.unused_labels else "")
        calibrated = ""
        if result.calibration is not None:
            slides = [entry["slide_mm"] for entry in result.calibration["calibration"].values()]
            calibrated = (f"; markers calibrated (moved {np.mean(slides):.0f} mm on average, stored with the action "
                          f"as '{CALIBRATION}')")
        report = (f"Retargeted {self.total} frames of {self.source} onto {rig.name}{skipped} in "
                  f"{time.perf_counter() - self.started:.1f} s as action '{action.name}': mean error "
                  f"{result.mpjpe_mm:.1f} mm, worst {worst[0]} {worst[1]:.1f} mm{calibrated}{unknown}{kept}")
        return (f"{report}. {warning[0].upper()}{warning[1:]}" if warning else report), warning is not None


def source_armatures(context: bpy.types.Context, rig: bpy.types.Object) -> list[bpy.types.Object]:
    """The selected armatures other than the body: the candidates for an armature source."""
    return [obj for obj in context.selected_objects if obj.type == "ARMATURE" and obj != rig
            and obj.vposer_character.body != rig]  # a character bound to the body is no source


def preset_unit_scale(preset: str) -> float | None:
    """Metres per file unit of a built-in preset's skeletons (the BVH importer's Scale for them);
    None for a custom preset."""
    from ...core.mocap.skeletons import get_preset

    return get_preset(PRESET_NAMES[preset]).unit_scale if preset in PRESET_NAMES else None


def _action_frames(obj: bpy.types.Object) -> tuple[int, int] | None:
    """The whole frames an object's action spans (its first: frame 0 of an imported file), or None."""
    action = obj.animation_data.action if obj.animation_data else None
    if action is None:
        return None
    start, end = action.frame_range
    return int(np.ceil(start)), int(np.floor(end))


def sample_armature(context: bpy.types.Context, armature: bpy.types.Object,
                    frames: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Bone names, their rest world matrices (B, 4, 4) and posed world matrices per frame
    (T, B, 4, 4) (head position and bone orientation in Blender world, the object's scale included)."""
    bones = armature.data.bones
    names = [bone.name for bone in bones]
    world = np.array(armature.matrix_world)
    rest = world @ bridge.matrix_array(bones, "matrix_local")
    if _curves_alone_move(armature) and _bone_channels_alone_move(armature):
        posed = world @ _pose_matrices(armature, frames)
    else:
        posed = _evaluated_by_blender(context, frames, lambda: np.array(armature.matrix_world)
                                      @ bridge.matrix_array(armature.pose.bones, "matrix"))
    return names, rest, posed


def sample_markers(context: bpy.types.Context, markers: list[bpy.types.Object], frames: np.ndarray) -> np.ndarray:
    """(T, M, 3) marker positions in Blender world, NaN where its 'vposer_visible' is 0."""
    if all(_curves_alone_move(obj) for obj in markers):
        columns = [_marker_channels(obj, frames) for obj in markers]
        positions = np.stack([column[:, :3] for column in columns], axis=1)
        visible = np.stack([column[:, 3] for column in columns], axis=1)
    else:
        sampled = _evaluated_by_blender(context, frames, lambda: np.array(
            [(*obj.matrix_world.translation, obj.get(VISIBLE, 1)) for obj in markers]))
        positions, visible = sampled[..., :3], sampled[..., 3]
    positions[visible < 0.5] = np.nan
    return positions


def _marker_channels(empty: bpy.types.Object, frames: np.ndarray) -> np.ndarray:
    """(T, 4): an unparented empty's world location (location + delta location) and visibility."""
    channels = [(path, axis, getattr(empty, path)[axis]) for path in ("location", "delta_location")
                for axis in range(3)]
    values = bridge.sample_channels(empty, [*channels, (f'["{VISIBLE}"]', 0, float(empty.get(VISIBLE, 1)))], frames)
    return np.column_stack([values[:, :3] + values[:, 3:6], values[:, 6]])


def _curves_alone_move(obj: bpy.types.Object) -> bool:
    """Whether the object's assigned action is all that moves it (no parent, constraints, drivers
    or NLA), so sampling its curves is what Blender would evaluate."""
    animation_data = obj.animation_data
    if obj.parent is not None or obj.constraints:
        return False
    if animation_data is None:
        return True
    return (not animation_data.drivers and not any(not track.mute for track in animation_data.nla_tracks)
            and animation_data.action_influence == 1.0 and animation_data.action_blend_type == "REPLACE")


def _bone_channels_alone_move(armature: bpy.types.Object) -> bool:
    """Whether the bones' channels alone give the pose (no bone constraints, full inheritance of the
    parent's transform, local locations) and the armature object's own transform is not animated."""
    for pose_bone in armature.pose.bones:
        bone = pose_bone.bone
        if pose_bone.constraints or not (bone.use_inherit_rotation and bone.inherit_scale == "FULL"
                                         and bone.use_local_location and not bone.use_relative_parent):
            return False
    animation_data = armature.animation_data
    if animation_data is None or animation_data.action is None:
        return True
    channelbag = action_get_channelbag_for_slot(animation_data.action, animation_data.action_slot)
    return channelbag is None or all(curve.data_path.startswith("pose.bones[") for curve in channelbag.fcurves)


def _pose_matrices(armature: bpy.types.Object, frames: np.ndarray) -> np.ndarray:
    """(T, B, 4, 4) pose matrices (armature space) from the bones' channels, as Blender chains them:
    pose = parent's pose @ parent's rest^-1 @ rest @ basis, basis = location @ rotation @ scale."""
    bones = armature.data.bones
    rest = bridge.matrix_array(bones, "matrix_local")
    index = {bone.name: i for i, bone in enumerate(bones)}
    pose = np.empty((len(frames), len(bones), 4, 4))
    for bone in _parents_first(bones):
        i = index[bone.name]
        basis = _basis_matrices(armature.pose.bones[bone.name], armature, frames)
        if bone.parent is None:
            pose[:, i] = rest[i] @ basis
        else:
            p = index[bone.parent.name]
            pose[:, i] = pose[:, p] @ (np.linalg.inv(rest[p]) @ rest[i]) @ basis
    return pose


def _basis_matrices(pose_bone: bpy.types.PoseBone, armature: bpy.types.Object, frames: np.ndarray) -> np.ndarray:
    """(T, 4, 4) a pose bone's local transform (its matrix_basis) per frame, from its curves."""
    import torch

    from ...core.rotations import axis_angle_to_matrix, euler_to_matrix, quaternion_to_matrix

    mode = pose_bone.rotation_mode
    rotation = {"QUATERNION": "rotation_quaternion", "AXIS_ANGLE": "rotation_axis_angle"}.get(mode, "rotation_euler")
    props = ("location", rotation, "scale")
    channels = [(pose_bone.path_from_id(prop), i, value) for prop in props
                for i, value in enumerate(getattr(pose_bone, prop))]
    values = torch.from_numpy(bridge.sample_channels(armature, channels, frames))
    location, angles, scale = values[:, :3], values[:, 3:-3], values[:, -3:]
    if mode == "QUATERNION":
        matrix = quaternion_to_matrix(angles / angles.norm(dim=-1, keepdim=True))
    elif mode == "AXIS_ANGLE":  # (angle, x, y, z)
        axis = angles[:, 1:] / angles[:, 1:].norm(dim=-1, keepdim=True).clamp_min(1e-12)
        matrix = axis_angle_to_matrix(axis * angles[:, :1])
    else:  # Blender's 'XYZ' turns about X first: R = Rz Ry Rx, core's order "ZYX"
        order = mode[::-1]
        matrix = euler_to_matrix(angles[:, ["XYZ".index(axis) for axis in order]], order)
    basis = np.zeros((len(frames), 4, 4))
    basis[:, :3, :3] = (matrix * scale[:, None, :]).numpy()
    basis[:, :3, 3] = location.numpy()
    basis[:, 3, 3] = 1.0
    return basis


def _parents_first(bones: bpy.types.ArmatureBones) -> list[bpy.types.Bone]:
    """The bones ordered so each comes after its parent."""
    ordered = [bone for bone in bones if bone.parent is None]
    for bone in ordered:  # grows while it is walked
        ordered.extend(bone.children)
    return ordered


def _evaluated_by_blender(context: bpy.types.Context, frames: np.ndarray,
                          read: Callable[[], np.ndarray]) -> np.ndarray:
    """read() at every frame after Blender evaluates the scene there; the current frame is restored."""
    scene = context.scene
    current, subframe = scene.frame_current, scene.frame_subframe
    try:
        samples = []
        for frame in frames:
            scene.frame_set(int(frame))
            samples.append(read())
    finally:
        scene.frame_set(current, subframe=subframe)
    return np.stack(samples)


def _rotations_and_positions(matrices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(..., 3, 3) rotations (the columns' scale divided out) and (..., 3) positions of (..., 4, 4)."""
    linear = matrices[..., :3, :3]
    return linear / np.linalg.norm(linear, axis=-2, keepdims=True), matrices[..., :3, 3]


def _in_model_space(preset: SkeletonPreset, names: list[str]) -> SkeletonPreset:
    """The preset in model space (metres, SMPL's axes), its source names re-prefixed when the bones
    carry another 'name:' prefix than the preset's (Mixamo downloads use mixamorig:, mixamorig1:, ...)."""
    import dataclasses

    root = preset.sources("pelvis")[0] if preset.sources("pelvis") else ""
    old_prefix, _, base = root.rpartition(":")
    if old_prefix and root not in names:
        matches = [name for name in names if name.rpartition(":")[2] == base and ":" in name]
        if len(matches) == 1:
            preset = preset.with_prefix(matches[0].rpartition(":")[0] + ":", old_prefix + ":")
    return dataclasses.replace(preset, unit_scale=1.0, axes=("+x", "+y", "+z"))


def _check_height(source: str, body: str, rest_heads: np.ndarray, preset: SkeletonPreset) -> None:
    """Refuse a skeleton imported at the wrong scale, saying which Scale fixes it."""
    height = float(np.ptp(rest_heads, axis=0).max())
    low, high = PLAUSIBLE_HEIGHT
    if low <= height <= high:
        return
    file_scale = preset.unit_scale
    if file_scale and low <= height * file_scale <= high:
        advice = f"re-import it with Scale {file_scale:g} (metres per unit of {preset.name} files)"
    else:
        advice = f"scale the armature object by about {TYPICAL_HEIGHT / height:.3g} (or re-import it at that Scale)"
    raise SourceError(f"{source}'s skeleton is {height:.3g} m tall in {body}'s space, not a body's "
                      f"{low:g}-{high:g} m: {advice}")


CLASSES: tuple[type, ...] = (VPOSER_OT_retarget,)
