"""Mocap clip -> body poses: keypoint targets from the source, one body shape fitted to the clip,
then per-frame IK in batches.

A skeleton clip (BVH) carries rotations as well as positions: the rotation transfer
(core.mocap.transfer) gives every frame a close start, twist about the bones included, and the IK
only closes the gap between the source's joint positions and the body's, solving raw joint
rotations (the prior would only pull a pose the data already determines). A marker clip (C3D) has
positions only: it is solved through the prior, every 8th frame from the prior's mean pose and the
others from the nearest of those frames' solutions (RetargetOptions.key_stride).

Sources and bodies differ in proportions, so the shape (betas) is first solved on a spread of
frames, under a prior that keeps it natural, and its mean then held fixed for the whole clip: one
body, as the user would build it. Skeletons also place their joints differently (a CMU hip joint
sits wider than SMPL's): each joint landmark is calibrated on the same frames as a constant offset
along its parent segment, as mocap solvers calibrate markers, so those differences neither show as
error nor bend the poses. A marker layout is calibrated likewise, as MoSh++ does (core.markers):
each marker's place on the body and its distance off the skin, together with the shape.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .body_model import BodyModel
from .errors import VPoserError
from .ik import IKResult, IKSolver, IKState, IKWeights, Stage
from .keypoints import NUM_BODY_JOINTS, KeypointSet
from .lm import LMOptions
from .markers import (CalibrationOptions, MarkerPlacement, calibration_document, place_markers, surface_keypoints,
                      unposed_targets, with_placements)
from .mocap.bvh import BVHMotion, forward_kinematics
from .mocap.skeletons import SMPL_BODY_JOINT_NAMES, SkeletonPreset, detect_preset, load_preset
from .mocap.transfer import build_transfer, source_rest, transfer_rotations, transfer_translation
from .vposer import VPoser

POSE = ("orient", "transl", "pose")
WARM_ITERATIONS = 3  # from the rotation transfer, a few steps reach the targets
WARM_ITERATIONS_PRIOR = 8  # from a previous solve of the same frames, before its markers moved
NEIGHBOUR_ITERATIONS = 15  # from a nearby key frame's solve (see Retarget._solve_frames)


class RetargetError(VPoserError):
    """The clip cannot be retargeted as asked; the message says why."""


@dataclass
class ClipTargets:
    """What to fit: keypoints on the body, their target positions per frame (T, K, 3) in model
    space metres (NaN where missing), and where available a start state per frame."""

    keypoints: KeypointSet
    positions: Tensor
    fps: float
    init: IKState | None = None
    source_frames: np.ndarray | None = None  # the source frame of each row
    unused_labels: tuple[str, ...] = ()  # source markers the layout does not know (not fitted)


def bvh_targets(motion: BVHMotion, preset: SkeletonPreset | str | dict, model: BodyModel,
                frames: np.ndarray | None = None) -> ClipTargets:
    """Targets from a BVH clip (its rest as the preset says, see source_rest), see skeleton_targets.
    preset "auto": the built-in preset found from the joint names (core.mocap.skeletons.detect_preset)."""
    preset = _preset_for(preset, motion.names, motion.source)
    frames = np.arange(motion.num_frames) if frames is None else np.asarray(frames)
    if len(frames) == 0:
        raise RetargetError(f"{motion.source}: the clip has no frames")
    rotations, positions = forward_kinematics(motion, frames=frames)
    rest, rest_rotations = source_rest(motion, preset)
    return skeleton_targets(preset, motion.names, rest, rest_rotations, rotations, positions, model,
                            motion.fps, frames, motion.source)


def skeleton_targets(preset: SkeletonPreset | str | dict, names: list[str], rest: Tensor | np.ndarray,
                     rest_rotations: Tensor | np.ndarray | None, rotations: Tensor, positions: Tensor,
                     model: BodyModel, fps: float, frames: np.ndarray | None = None,
                     source: str = "skeleton") -> ClipTargets:
    """Targets from any animated skeleton (a BVH, an armature sampled in Blender): the preset's
    landmark joints (body joints only) at their source joints' positions, and the rotation transfer
    of every frame as the start. Source data in its own units and axes (the preset's): joint names,
    rest positions (Js, 3) and world rotations at rest (Js, 3, 3) (None: identity, as BVH's
    zero-rotation pose), and per frame world rotations (T, Js, 3, 3) and positions (T, Js, 3)."""
    preset = _preset_for(preset, names, source)
    _require_body(model, source)
    body_names = list(model.joint_names)
    with torch.no_grad():
        body_rest = model.rest_joints()[0].double().cpu()
    rotations = torch.as_tensor(np.asarray(rotations), dtype=torch.float64)
    positions = torch.as_tensor(np.asarray(positions), dtype=torch.float64)
    missing = [hip for hip in ("left_hip", "right_hip") if not preset.sources(hip)]
    if missing:  # the body is placed by its hips (transfer_translation's anchor "hips")
        raise RetargetError(f"{source}: preset {preset.name!r} maps no {' and no '.join(missing)}; the body is "
                            "placed at the midpoint of the source's hips, so a skeleton preset must map both "
                            "left_hip and right_hip")
    try:
        setup = build_transfer(preset, list(names), rest, body_rest, model.parents.cpu(), body_names,
                               source_rest_global=rest_rotations)
    except (KeyError, ValueError) as error:
        raise RetargetError(f"{source}: {error.args[0]}") from None
    local, world = transfer_rotations(setup, rotations)
    transl = transfer_translation(setup, positions[:, setup.root_source], "hips", positions,
                                  world[:, body_names.index("pelvis")])
    body = set(body_names[:NUM_BODY_JOINTS])
    landmarks = [name for name in preset.landmark_joints() if name in body]
    if len(landmarks) < 3:
        raise RetargetError(f"{source}: preset {preset.name!r} gives {len(landmarks)} body landmark(s); "
                            f"the IK needs at least 3")
    sources = [setup.sources[body_names.index(name)][0] for name in landmarks]
    like = {"dtype": model.dtype, "device": model.device}
    targets = setup.scale * positions[:, sources] @ setup.axes.T
    init = IKState(local.to(**like), transl.to(**like))
    return ClipTargets(KeypointSet.from_joints(model, landmarks), targets.to(**like), fps, init, frames)


def _require_body(model: BodyModel, source: str) -> None:
    """Mocap drives a whole body: a hand model (MANO) has none of its joints."""
    if not set(SMPL_BODY_JOINT_NAMES) <= set(model.joint_names):
        raise RetargetError(f"{source}: mocap is retargeted onto a body model (SMPL, SMPL-H, SMPL-X or the open "
                            f"body), and a {model.kind.name} hand model has no body joints")


def _preset_for(preset: SkeletonPreset | str | dict, names, source: str) -> SkeletonPreset:
    """A preset as given, or for "auto" the one detected from the skeleton's joint names."""
    if isinstance(preset, str) and preset == "auto":
        try:
            return detect_preset(names, source)
        except ValueError as error:
            raise RetargetError(str(error)) from None
    return load_preset(preset)


MIN_MARKERS = 6  # visible markers a frame needs to be solved
# Fit errors (mm) above which a retarget is reported as suspect: the mean over all keypoints, or
# one keypoint's mean over the clip. A well-mapped skeleton fits its landmarks to ~2 mm after
# calibration (CMU clips: worst joint ~3 mm, docs/benchmarks.md) and synthetic marker trials to
# ~1 mm; a wrong rest pose or a swapped joint leaves tens of millimetres and a twisted body (the
# CMU walk with its elbows swapped: mean 14 mm, wrists 54-70 mm; shoulders swapped: mean 109 mm).
FIT_WARNING_MM = 30.0
FIT_WARNING_WORST_MM = 60.0


def marker_targets(model: BodyModel, layout: str | Path | Mapping, labels: Sequence[str], positions: np.ndarray,
                   fps: float, source: str = "markers") -> ClipTargets:
    """Targets from marker trajectories already in model space (T, M, 3) metres, NaN where a marker
    was not seen, and a layout (a JSON file, see core.keypoints, or its document as a dict, e.g. a
    calibration) naming where each label sits on the body. Markers the layout does not know are
    not fitted and are listed in `unused_labels`; frames with fewer than MIN_MARKERS visible
    layout markers are left out (`source_frames` keeps the others' indices)."""
    _require_body(model, source)
    if isinstance(layout, Mapping):
        name = str(layout.get("description", "<layout>"))[:40]
        if not isinstance(layout.get("markers"), Mapping):
            raise RetargetError(f"{source}: the layout {name!r} has no 'markers' object")
        full = KeypointSet.from_dict(model, layout["markers"], source=name)
    else:
        name = Path(layout).name
        full = KeypointSet.from_json(model, layout)
    entries = full.to_dict()
    known = [label for label in full.names if label in set(labels)]
    if len(known) < MIN_MARKERS:
        raise RetargetError(f"{source}: only {len(known)} of its markers are in the layout {name} "
                            f"(it names {', '.join(full.names[:8])}, ...); a layout for this marker set is needed "
                            "(scripts/make_marker_layout.py --trial starts one from a take)")
    columns = [list(labels).index(label) for label in known]
    chosen = np.asarray(positions, dtype=np.float64)[:, columns]
    visible = np.isfinite(chosen).all(-1).sum(1)
    frames = np.flatnonzero(visible >= MIN_MARKERS)
    if not len(frames):
        raise RetargetError(f"{source}: no frame shows {MIN_MARKERS} or more of the layout's markers")
    keypoints = KeypointSet.from_dict(model, {label: entries[label] for label in known}, source=name)
    like = {"dtype": model.dtype, "device": model.device}
    unused = tuple(label for label in labels if label not in set(known))
    return ClipTargets(keypoints, torch.as_tensor(chosen[frames]).to(**like), fps, None, frames, unused)


@dataclass(frozen=True)
class RetargetOptions:
    """batch_size: frames per solve (progress is reported per batch); fit_shape: solve one shape
    for the clip on `shape_frames` spread frames first; max_iterations: LM iterations per frame
    (None: 3 from a start state, which is close, and 30 from the prior's mean pose).
    key_stride: marker frames (no start state) are solved from the prior's mean pose only every
    key_stride-th frame, the others from the nearest of those (1: every frame cold).
    shape_prior weighs ||betas||^2 in the shape fit (as IKWeights.betas): strong enough to keep a
    natural body, which no skeleton's landmarks should talk out of its proportions.
    calibrate: for joint landmarks, also find where each source joint sits relative to the body's
    (a constant offset along the parent segment per landmark, as mocap solvers calibrate markers):
    skeletons place joints differently (CMU's shoulder sits above SMPL's), and without it those
    constant differences would show as error or bend every pose. For surface markers, likewise:
    each marker's place on the body and distance off the skin are fitted with the shape on the
    same frames (core.markers, `marker_calibration` its options).
    The prior is used only for frames without a start state (markers). With a start state,
    `stay` weighs each joint's rotation change from it (as IKWeights.stay): positions leave some
    rotations free (twist about a bone, how a spine without targets bends), and those keep the
    source's."""

    batch_size: int = 1000
    key_stride: int = 8
    fit_shape: bool = True
    shape_frames: int = 32
    shape_prior: float = 1e-4
    calibrate: bool = True
    max_iterations: int | None = None
    stay: float = 1e-4
    weights: IKWeights = field(default_factory=IKWeights)
    marker_calibration: CalibrationOptions = field(default_factory=CalibrationOptions)


@dataclass
class RetargetResult:
    """Per frame: every joint's local rotation as axis-angle (T, 3 J) ('poses', AMASS layout),
    root translation (T, 3), the clip's shape (num_betas,), distances to the targets (T, K) in
    metres (NaN where missing), LM iterations (T,)."""

    poses: Tensor
    transl: Tensor
    betas: Tensor
    errors: Tensor
    iterations: Tensor
    keypoint_names: tuple[str, ...]
    fps: float
    seconds: float
    offsets: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # calibrated, metres
    calibration: dict | None = None  # calibrated surface markers (core.markers.calibration_document)
    skeleton: bool = True  # targets from a skeleton's joints (False: markers)

    @property
    def mpjpe_mm(self) -> float:
        return float(self.errors.nanmean()) * 1000

    def per_keypoint_mm(self) -> dict[str, float]:
        return {name: float(value) * 1000 for name, value in zip(self.keypoint_names, self.errors.nanmean(0))}

    def fit_warning(self, worst: int = 3) -> str | None:
        """None for a plausible fit; else a warning that the fit is far worse than a well-mapped
        source allows (mean above FIT_WARNING_MM, or a keypoint above FIT_WARNING_WORST_MM), naming
        the `worst` keypoints and the likely cause."""
        mean = self.mpjpe_mm
        ranked = sorted(self.per_keypoint_mm().items(), key=lambda item: -item[1])[:worst]
        if not (mean > FIT_WARNING_MM or ranked[0][1] > FIT_WARNING_WORST_MM):
            return None
        named = ", ".join(f"{name} {value:.0f} mm" for name, value in ranked)
        if self.skeleton:
            cause = ("the source's rest pose is not the pose the preset's mapping assumes (set the preset's "
                     "'rest_frame' to a frame where the source stands in that pose, e.g. its T-pose), or a joint "
                     "is mapped to the wrong source bone (check the 'joints' entries of the worst joints)")
        else:
            cause = ("the marker layout does not match the trial (check the worst markers' labels and where the "
                     "layout puts them), or the lab's up axis or units are wrong")
        return (f"poor fit (mean error {mean:.0f} mm, worst {named}; a well-mapped source stays under "
                f"{FIT_WARNING_MM:.0f} mm, each joint under {FIT_WARNING_WORST_MM:.0f} mm): likely {cause}")


class Retarget:
    """A clip's retarget as steps, so callers can show progress and cancel between batches:

        run = Retarget(model, targets, prior)
        for done, total in run: ...   # frames solved so far
        run.result()

    The shape fit, when asked for, happens in the first step; without it the clip is solved with
    `betas` (the shape the body already has; None: the mean shape, zeros)."""

    def __init__(self, model: BodyModel, targets: ClipTargets, prior: VPoser | None = None,
                 options: RetargetOptions = RetargetOptions(), betas: Tensor | None = None) -> None:
        if targets.init is None and prior is None:
            raise RetargetError("a clip without start poses (markers) needs the prior")
        if options.batch_size < 1 or (options.max_iterations is not None and options.max_iterations < 1):
            raise RetargetError(f"batch_size and max_iterations must be positive, got {options}")
        self.model, self.targets, self.prior, self.options = model, targets, prior, options
        self.keypoints = targets.keypoints  # calibration replaces it; the caller's targets stay as given
        frames = targets.positions.shape[0]
        self.poses = torch.zeros(frames, 3 * model.num_joints, dtype=model.dtype, device=model.device)
        self.transl = torch.zeros(frames, 3, dtype=model.dtype, device=model.device)
        self.errors = torch.full((frames, len(targets.keypoints)), float("nan"), dtype=model.dtype, device=model.device)
        self.iterations = torch.zeros(frames, dtype=torch.long, device=model.device)
        self.betas: Tensor | None = None
        self._fixed_betas = (torch.zeros(model.num_betas, dtype=model.dtype, device=model.device) if betas is None
                             else torch.as_tensor(betas, dtype=model.dtype, device=model.device).reshape(model.num_betas))
        self.seconds = 0.0
        self._done = 0
        self.placements: list[MarkerPlacement] = []

    def __iter__(self) -> Iterator[tuple[int, int]]:
        total = self.targets.positions.shape[0]
        while self._done < total:
            start = time.perf_counter()
            if self.betas is None and self.options.calibrate and surface_keypoints(self.keypoints):
                self._calibrate_markers()  # the shape with the markers' places
            elif self.betas is None:
                self.betas = self._fit_shape()
                if self.options.calibrate and self.keypoints.only_joints:
                    self._calibrate()
            rows = torch.arange(self._done, min(total, self._done + self.options.batch_size), device=self.model.device)
            result = self._solve_frames(rows, self.betas)
            self.poses[rows] = result.full_pose()
            self.transl[rows] = result.transl
            self.errors[rows] = result.errors
            self.iterations[rows] = result.iterations
            self._done = int(rows[-1]) + 1
            self.seconds += time.perf_counter() - start
            yield self._done, total

    def result(self) -> RetargetResult:
        if self._done < self.targets.positions.shape[0]:
            raise RetargetError(f"the retarget stopped after {self._done} of {self.targets.positions.shape[0]} frames")
        offsets = {point.name: point.local for point in self.keypoints.keypoints if any(point.local)}
        calibration = (calibration_document(self.keypoints, self.betas, self.placements)
                       if self.placements else None)
        return RetargetResult(self.poses, self.transl, self.betas, self.errors, self.iterations,
                              self.keypoints.names, self.targets.fps, self.seconds, offsets, calibration,
                              skeleton=self.targets.init is not None)

    def _fit_shape(self) -> Tensor:
        """The mean of per-frame shapes solved on spread frames (the fixed shape when not asked for)."""
        if not self.options.fit_shape or not self.model.num_betas:
            return self._fixed_betas
        return self._shape_and_poses()[0]

    def _shape_and_poses(self, previous: IKResult | None = None, betas: Tensor | None = None
                         ) -> tuple[Tensor, IKResult]:
        """The spread frames solved with a shape per frame, from `betas` (default the mean shape) and
        `previous` (a solve of the same frames) if given: (the shapes' mean, the solve). Without a
        shape fit, the frames are solved with the fixed shape, which is returned."""
        model, rows = self.model, self._spread_rows()
        if not self.options.fit_shape or not model.num_betas:
            return self._fixed_betas, self._solve(rows, self._fixed_betas, previous=previous)
        start = torch.zeros(model.num_betas, dtype=model.dtype, device=model.device) if betas is None else betas
        result = self._solve(rows, start.expand(len(rows), -1), solve_betas=True, previous=previous)
        usable = torch.isfinite(result.errors).any(1)
        return result.betas[usable].mean(0), result

    def _spread_rows(self) -> Tensor:
        total = self.targets.positions.shape[0]
        count = min(total, self.options.shape_frames)
        return torch.as_tensor(np.unique(np.linspace(0, total - 1, count).round().astype(np.int64)),
                               device=self.model.device)

    def _calibrate(self, rounds: int = 2) -> None:
        """Move each landmark keypoint by the mean offset, in its parent segment's frame, between
        the body's joint and the source's on spread frames; re-solve those frames and repeat."""
        model, keypoints = self.model, self.keypoints
        rows = self._spread_rows()
        targets = self.targets.positions[rows]
        parents = model.parents[keypoints.joint_ids].clamp_min(0)
        locals_ = torch.tensor([point.local for point in keypoints.keypoints], dtype=model.dtype, device=model.device)
        movable = (model.parents[keypoints.joint_ids] >= 0).unsqueeze(-1)
        for _ in range(rounds):
            result = self._solve(rows, self.betas)
            with torch.no_grad():
                output = model.forward_rotations(result.rotations, self.betas.expand(len(rows), -1), None,
                                                 result.transl, return_vertices=False)
                points = keypoints.points(output.joints, None, output.joint_rotations)
                frames = output.joint_rotations[:, parents]  # (t, K, 3, 3)
                gap = (frames.transpose(-1, -2) @ (targets - points).unsqueeze(-1)).squeeze(-1)
                locals_ = locals_ + torch.where(movable, gap.nanmean(0), torch.zeros_like(locals_))
            keypoints = KeypointSet(model, [dataclasses.replace(point, local=tuple(map(float, local)))
                                            for point, local in zip(keypoints.keypoints, locals_.tolist())],
                                    source="calibrated landmarks")
            self.keypoints = keypoints

    def _calibrate_markers(self) -> None:
        """MoSh-style: on spread frames, alternately solve the poses with the shape (one per frame,
        their mean kept) and move each surface marker to where the frames put it on the rest body
        (core.markers.place_markers); then the shape once more with the markers' last places."""
        options = self.options.marker_calibration
        rows = self._spread_rows()
        targets = self.targets.positions[rows]
        guesses = surface_keypoints(self.targets.keypoints)
        column = [self.keypoints.names.index(point.name) for point in guesses]
        result, betas = None, None
        for _ in range(options.rounds):  # after the first, each solve goes on from the last one's poses
            betas, result = self._shape_and_poses(result, betas)
            frame_betas = betas if result.betas is None else result.betas
            unposed = unposed_targets(self.model, surface_keypoints(self.keypoints), result.rotations, frame_betas,
                                      result.transl, targets[:, column], rest_betas=betas)
            self.placements = place_markers(self.model, surface_keypoints(self.keypoints), guesses, betas,
                                            unposed, options)
            self.keypoints = with_placements(self.keypoints, self.placements)
        self.betas = self._shape_and_poses(result, betas)[0]

    def _solve_frames(self, rows: Tensor, betas: Tensor) -> IKResult:
        """Every row of a batch. Marker frames without a start state: every KEY_STRIDE-th frame is
        solved from the prior's mean pose, then each frame goes on from its nearest such key frame,
        rigidly aligned to its own targets (mocap frames that near differ little: fewer iterations
        than a cold start, and each frame still converges on its own). `iterations` counts the
        frame's own solve."""
        if self.targets.init is not None or self.options.key_stride < 2 or len(rows) < 2 * self.options.key_stride:
            return self._solve(rows, betas)
        keys = torch.unique(torch.cat([rows[::self.options.key_stride], rows[-1:]]))
        cold = self._solve(keys, betas)
        nearest = (rows.unsqueeze(1) - keys.unsqueeze(0)).abs().argmin(1)
        return self._solve(rows, betas, previous=cold.state.select(nearest), align=True,
                           iterations=NEIGHBOUR_ITERATIONS)

    def _solve(self, rows: Tensor, betas: Tensor, solve_betas: bool = False, previous: IKResult | IKState | None = None,
               align: bool = False, iterations: int = WARM_ITERATIONS_PRIOR) -> IKResult:
        """Solve the rows: from the clip's start states (skeletons), from `previous` (a solve of
        the same rows through the prior, or of frames near them: `iterations` at most, moved rigidly
        onto the targets first if `align`) or from the prior's mean."""
        unknowns = POSE + ("betas",) if solve_betas else POSE
        keypoints, init, targets = self.keypoints, self.targets.init, self.targets.positions[rows]
        iterations = self.options.max_iterations or (WARM_ITERATIONS if init is not None else LMOptions.max_iterations)
        lm = LMOptions(max_iterations=iterations)
        weights = self.options.weights
        if solve_betas:
            weights = dataclasses.replace(weights, betas=self.options.shape_prior)
        if init is not None:  # a close start: raw rotations only, held near it where the targets allow
            weights = dataclasses.replace(weights, stay=self.options.stay)
            # No retries: a frame far off its transferred start means a mismapped source, which
            # fit_warning names; re-solving it far from the source's rotations would hide that.
            solver = IKSolver(self.model, keypoints, None, weights=weights, unknowns=unknowns, lm_options=lm,
                              retry=None)
            # Aligned rigidly first: a start off by a rigid shift would otherwise be taken up by the joints.
            return solver.solve(targets, init=init.select(rows), betas=betas, stay=_moving_joints(keypoints),
                                stages=[Stage(unknowns, iterations, prior=False)], align=True)
        if previous is not None:
            lm = LMOptions(max_iterations=self.options.max_iterations or iterations)
        solver = IKSolver(self.model, keypoints, self.prior, weights=weights, unknowns=unknowns,
                          lm_options=lm)
        return solver.solve(targets, betas=betas, init=previous, align=align)


def _moving_joints(keypoints: KeypointSet) -> tuple[str, ...]:
    """Body joints below the root whose rotation moves a keypoint joint (its strict ancestors)."""
    model = keypoints.model
    parents = model.parents.tolist()
    moving = set()
    for joint in keypoints.joint_ids.tolist():
        joint = parents[joint]
        while joint > 0:
            moving.add(joint)
            joint = parents[joint]
    return tuple(model.joint_names[joint] for joint in sorted(moving))


def retarget(model: BodyModel, targets: ClipTargets, prior: VPoser | None = None,
             options: RetargetOptions = RetargetOptions(),
             progress: Callable[[int, int], None] | None = None) -> RetargetResult:
    """Run a whole retarget, calling progress(frames done, total) after each batch."""
    run = Retarget(model, targets, prior, options)
    for done, total in run:
        if progress is not None:
            progress(done, total)
    return run.result()
