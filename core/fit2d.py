"""Fit a body to 2D keypoints seen by one or several fixed cameras (SMPLify-style, with the LM IK).

Start: the prior's mean pose, turned to face the first camera upright (its image up = the body's
up), at the depth where its torso (shoulder-hip lengths) has the length it has in pixels
(core.cameras.initial_translation). Facing: a body seen from the front shows its left shoulder on
the image's right; the sign of (left - right) along the image's x over shoulders and hips picks the
facing. Where the shoulders are nearly edge-on (their image width below `edge_on` times the torso's
pixel length) that sign means little: both facings are fitted and the lower cost kept. Then the
IK (core.ik, batched LM) solves orientation and translation, then the pose through the prior, with
the reprojection term (core.reprojection.Reprojection2D) in place of 3D targets.

Pixel residuals are scaled per frame by depth / focal (metres per pixel at the body), so the prior's
weights keep their meaning from the 3D IK (1 px ~ a few mm). A sequence (`sequence=True`) is one
batch of short per-frame fits (enough to pick each frame's facing: `sequence_orient_iterations`,
`sequence_pose_iterations`) followed by the main pose stage with the temporal term (joint
accelerations), warm-started from them, so that the limbs' depth, which one view leaves open, is
chosen consistently across frames. That stage is one LM over the whole sequence (core.lm.solve_coupled:
the frames' block-banded normal equations solved exactly at each step), which converges in far fewer
linearisations than solving frames with their neighbours held; its first steps weigh the temporal
term more (a continuation: the depth settled over longer stretches before each frame is fitted closely).
LM only walks downhill, and a limb whose depth one view leaves open has two valleys (the elbow
nearer the camera or farther, same pixels): after those first steps, one view's frames take, limb
by limb, the depth twin the prior finds likelier (core.limb_flips), re-encoded, and the rest of the
stage goes on from there (a photo is fitted again from them and keeps the fit of lower objective). With
several views a last stage of raw rotations refines the pose beyond the prior's reach (in a
sequence, after the temporal stage and with its term).

Unknown focal length (a photo without metadata): `estimate_focal` is a 1-D search, not a joint
unknown of the LM (a per-frame solver cannot share one focal across a video's frames, and the
layout has no camera block yet). It fits the body once at the start focal, then warm-starts one fit
per candidate focal (0.5x..2x, log-spaced) from that fit with the body slid along the camera rays in
proportion (so its picture barely changes), and keeps the candidate whose objective (pixels plus
a weakened prior, summed over up to `max_frames` frames) is lowest, refined by a parabola in log focal. A single
view shows the focal only through perspective (near parts larger than far ones): the minimum is
shallow, and a known focal (--focal, or the photo's lens) is always better.

Shapes: T frames, K keypoints (the solver's keypoint set), C views. pixels (T, K, 2) with cameras
of batch () or (T,), or (T, C, K, 2) with cameras (C,) or (T, C); confidence the same without the
last axis; NaN pixels or confidence 0 = missing.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from .cameras import Cameras, initial_translation
from .errors import VPoserError
from .ik import IKResult, IKSolver, IKState, Stage
from .keypoints import NUM_BODY_JOINTS
from .keypoints2d import TORSO
from .limb_flips import LIMBS, likeliest_twins
from .lm import counted_on, finish, map_steps
from .reprojection import Reprojection, Reprojection2D
from .rotations import axis_angle_to_matrix


class Fit2DError(VPoserError):
    """The 2D fit cannot run on these inputs; the message says why."""


@dataclass(frozen=True)
class Fit2DOptions:
    """orient_iterations: the orientation + translation stage; pose_iterations: the per-frame prior
    stage; sequence_orient_iterations, sequence_pose_iterations: the same for a sequence with a
    temporal stage after them (they only pick each frame's facing and a start);
    latent: the prior's weight (IKWeights.latent); robust_scale: Geman-McClure scale in pixels;
    both None: chosen by the number of views (`for_views`);
    edge_on: shoulder width / torso length (pixels) below which both facings are tried;
    smoothness: the temporal term's weight for sequences (0: none; per frame: its units are metres
    per frame^2, so a video at twice the frame rate wants about 16 times the weight);
    smooth_iterations its stage (LM steps over the whole sequence, in all); the first
    `coarse_iterations` of them with `coarse_smoothness` times the weight: a continuation, the
    limbs' depth chosen over longer stretches of frames before each frame is fitted closely
    (tuned on training subjects 02 13 and 03 05 14: 5 steps at 3x took single-view PA-MPJPE from
    24.8 / 51.2 to 24.0 / 47.6 mm at the same number of steps; the same two stages at 1x gave
    24.8 / 51.5, docs/benchmarks.md);
    limb_twins: one view with the prior: after the coarse steps, each frame's limbs set to their
    depth twins the prior finds likelier (core.limb_flips), then the rest of the temporal stage
    (training subjects, single-view PA-MPJPE: 02 13 24.1 -> 21.1, 03 05 14 47.5 -> 46.2, and 09 16
    93, not used in tuning before, 34.6 -> 30.2 mm at the same number of steps; ~15 % more time:
    the re-encoded poses' decoder Jacobians are computed afresh; docs/benchmarks.md); a photo (one
    view, no temporal stage) is also fitted from its twins (`twin_iterations` LM iterations with
    the prior) and each frame keeps the fit of lower objective (02 13 / 03 05 14: 38.2 / 61.7 ->
    36.4 / 58.4 mm; 20 more iterations without the twins: no better, docs/benchmarks.md);
    refine_iterations: with several views, a last stage of raw joint rotations (no prior: views
    that pin the depth leave the prior's reach as the largest error)."""

    orient_iterations: int = 10
    pose_iterations: int = 20
    sequence_orient_iterations: int = 5
    sequence_pose_iterations: int = 1
    latent: float | None = None
    robust_scale: float | None = None
    edge_on: float = 0.35
    smoothness: float = 1.0
    smooth_iterations: int = 16
    coarse_iterations: int = 5
    coarse_smoothness: float = 3.0
    limb_twins: bool = True
    twin_iterations: int = 20
    refine_iterations: int = 10

    # (latent, robust_scale) by views. One view leaves each limb's depth open: a stronger prior and a
    # tighter robust scale (detector outliers are the rest of the error) fit better, tuned on training
    # subjects 02 and 13 (checked on 03, 05, 14). Several views pin the depth: the weaker prior and the
    # wider scale keep the raw-rotation refinement free to reach the keypoints. A sequence's temporal
    # term does part of the prior's work: one view's sequence fits best with a weaker prior. The
    # weights suit the shipped prior, whose latent is its data's standard normal (whitened: its
    # ||z||^2 weighs unlikely directions more than the unwhitened one's did, so the weights are a
    # half to a third of those tuned before; docs/benchmarks.md).
    SINGLE_VIEW: ClassVar[tuple[float, float]] = (1e-3, 30.0)
    SEVERAL_VIEWS: ClassVar[tuple[float, float]] = (3e-4, 100.0)
    SEQUENCE_LATENT: ClassVar[float] = 3e-4

    def for_views(self, single: bool, temporal: bool = False) -> Fit2DOptions:
        """These options with the prior weight and robust scale left as None filled for one view
        (single=True) or several, and for a sequence with the temporal stage (temporal=True): its
        prior weight, and its shorter per-frame stages (orient / pose iterations) in place of a
        photo's."""
        latent, scale = self.SINGLE_VIEW if single else self.SEVERAL_VIEWS
        if temporal:
            latent = min(latent, self.SEQUENCE_LATENT)
        options = replace(self, latent=latent if self.latent is None else self.latent,
                          robust_scale=scale if self.robust_scale is None else self.robust_scale)
        if temporal:
            options = replace(options, orient_iterations=self.sequence_orient_iterations,
                              pose_iterations=self.sequence_pose_iterations)
        return options

    def temporal(self, frames: int) -> bool:
        """Whether a sequence of `frames` gets the temporal stage."""
        return self.smoothness > 0 and frames >= 3


@dataclass
class Fit2DResult:
    """result: the IK's outcome (world coordinates); poses (T, 3J) axis-angle of every joint (AMASS
    'poses'); transl (T, 3); reproj_px (T,) mean pixel error over the seen keypoints; flipped (T,)
    bool: the frames whose kept facing was the second one tried."""

    result: IKResult
    poses: Tensor
    transl: Tensor
    reproj_px: Tensor
    flipped: Tensor


@dataclass(frozen=True)
class FocalSearch:
    """The focal search of `estimate_focal`: `candidates` focals log-spaced over low..high times the
    start camera's; `iterations` LM iterations per candidate (warm-started) with the prior's weight
    `latent` (weaker than the fit's: the prior's taste for some poses otherwise outweighs the little
    the pixels say about the focal; with the unwhitened prior, on 10 synthetic single photos 1e-4 put
    7 within 15 % of the true focal, 1e-3 only 4, and on mocap clips seen with 2 px noise 1e-5 did
    worse again; with the whitened prior, 3e-4 did best of 1e-5 to 1e-3: judged on 20 frames of each
    clip of training subjects 02 13, 39 % within 15 % (median error 20.5 %), on 1-3 frames of each
    clip of 02 03 05 13 14, 29 % (33.9 %), and the synthetic photo of tests/core/test_fit_2d_cli.py
    within 15 % where 1e-4 and 3e-5 missed it); `max_frames`
    frames of a video (evenly spread) judge it (more frames, better: 20 against 8 took the median
    error on mocap clips from 32 % to 24 %, docs/benchmarks.md)."""

    low: float = 0.5
    high: float = 2.0
    candidates: int = 11
    iterations: int = 20
    max_frames: int = 30
    latent: float = 3e-4


@dataclass
class FocalEstimate:
    """focal: the estimated focal length in pixels (fx; fy keeps the start camera's ratio);
    candidates (N,) the focals tried (pixels); costs (N,) the objective at each (lower is better);
    camera: the start camera with that focal."""

    focal: float
    candidates: Tensor
    costs: Tensor
    camera: Cameras


def torso_pairs(names: Sequence[str]) -> list[tuple[int, int]]:
    """Shoulder-hip pairs as indices into `names` (the keypoint set's)."""
    return [(names.index(a), names.index(b)) for a, b in TORSO if a in names and b in names]


def fit_2d(solver: IKSolver, cameras: Cameras, pixels, confidence=None, *, sequence: bool = False,
           options: Fit2DOptions = Fit2DOptions(), betas=None) -> Fit2DResult:
    """Fit the solver's body to 2D keypoints (see the module docstring for shapes). betas
    (num_betas,): the body's shape, held fixed (None: the mean shape)."""
    model, keypoints = solver.model, solver.keypoints
    pixels, confidence = _inputs(model, pixels, confidence)
    single = pixels.dim() == 3
    if pixels.dim() not in (3, 4) or pixels.shape[-1] != 2 or pixels.shape[-2] != len(keypoints):
        raise Fit2DError(f"2D fit: pixels of shape {tuple(pixels.shape)}; expected (frames, {len(keypoints)}, 2) or "
                         f"(frames, views, {len(keypoints)}, 2) for the solver's keypoints")
    frames = pixels.shape[0]
    if frames == 0:
        raise Fit2DError("2D fit: no frames")
    cameras = cameras.to(model.dtype)
    empty = torch.nonzero((confidence.reshape(frames, -1) > 0).sum(1) < 3).squeeze(1).tolist()
    if empty:
        raise Fit2DError(f"2D fit: {len(empty)} frame(s) show fewer than 3 keypoints (first: frame {empty[0]}); "
                         "drop or interpolate them")
    pairs = torso_pairs(keypoints.names)
    if not pairs:
        raise Fit2DError("2D fit: the keypoints include no shoulder-hip pair to judge the depth from")

    temporal = sequence and options.temporal(frames)
    options = options.for_views(single, temporal)
    result, flipped = _per_frame(solver, cameras, pixels, confidence, single, pairs, options, betas,
                                 refine=not temporal)
    if temporal:
        result = finish(_smooth(solver, cameras, pixels, confidence, single, result, options))
    elif _twins(solver, single, options) and options.twin_iterations:
        result = _photo_twins(solver, cameras, pixels, confidence, result, options)
    error = _pixel_error(cameras, pixels, confidence, single, result)
    return Fit2DResult(result, result.full_pose(), result.transl, error, flipped)


def _per_frame(solver: IKSolver, cameras: Cameras, pixels: Tensor, confidence: Tensor, single: bool,
               pairs: list[tuple[int, int]], options: Fit2DOptions, betas, refine: bool = True
               ) -> tuple[IKResult, Tensor]:
    """Every frame fitted on its own (orientation and translation, then the pose; refined without
    the prior with several views), both facings where the shoulders are edge-on: the result and
    (T,) which frames kept their second facing. `options` as for_views gives them."""
    frames = pixels.shape[0]
    first, first_pixels, first_confidence = _first_view(cameras, pixels, confidence, single, frames)
    facing = _facing(first, frames)
    sign = _front_sign(first_pixels, first_confidence, solver.keypoints.names, pairs)
    ambiguous = sign.abs() < options.edge_on
    back = sign < 0
    # Rows to fit: every frame with its likelier facing, then the ambiguous ones turned around.
    rows = torch.cat([torch.arange(frames), torch.nonzero(ambiguous).squeeze(1)])
    turned = torch.cat([back, ~back[ambiguous]])
    start = _start(solver, facing[rows], turned, first[rows] if first.batch_shape else first,
                   first_pixels[rows], first_confidence[rows], pairs, betas)
    term = _term(solver, cameras, pixels, confidence, rows, single, start, options)
    stages = [Stage(("orient", "transl"), options.orient_iterations, prior=False),
              Stage(("orient", "transl", "pose"), options.pose_iterations)]
    weights = {"latent": options.latent}
    if refine and not single and options.refine_iterations:
        stages.append(Stage(("orient", "transl", "pose"), options.refine_iterations, prior=False))
    stages = [Stage(s.unknowns, s.max_iterations, weights, s.prior) for s in stages]
    result = solver.solve(None, init=start, stages=stages, terms=[term])
    keep = torch.arange(frames)
    if len(rows) > frames:
        other = torch.arange(frames, len(rows))
        better = result.loss[other] < result.loss[rows[other]]
        keep[rows[other][better]] = other[better]
    return _select(result, keep), keep >= frames


def _inputs(model, pixels, confidence) -> tuple[Tensor, Tensor]:
    """pixels and confidence as the model's dtype, confidence 0 where a pixel is not finite."""
    pixels = torch.as_tensor(np.asarray(pixels, dtype=np.float64)).to(model.dtype)
    if confidence is None:
        confidence = torch.ones(pixels.shape[:-1], dtype=model.dtype)
    confidence = torch.as_tensor(np.asarray(confidence, dtype=np.float64)).to(model.dtype)
    return pixels, torch.where(torch.isfinite(pixels).all(-1), torch.nan_to_num(confidence),
                               torch.zeros_like(confidence))


def _smooth(solver: IKSolver, cameras: Cameras, pixels: Tensor, confidence: Tensor, single: bool,
            result: IKResult, options: Fit2DOptions) -> Generator[int, None, IKResult]:
    """The temporal stage over all frames, warm-started from their per-frame fits (its first steps
    with the stiffer temporal term of options.coarse_smoothness; for one view, the limbs' likelier
    depth twins taken before its last stage, options.limb_twins); with several
    views, then the raw-rotation refinement, still with the temporal term (refined before it, the
    pose would be re-encoded into the prior's latent and the refinement lost). Yields the trial
    steps of its stages so far, as IKSolver.solve_steps."""
    term = _term(solver, cameras, pixels, confidence, torch.arange(pixels.shape[0]), single, result.state, options)
    weights = {"latent": options.latent, "smoothness": options.smoothness}
    coarse = min(options.coarse_iterations, options.smooth_iterations)
    stages = [Stage(("orient", "transl", "pose"), coarse, {**weights, "smoothness": options.smoothness *
                                                           options.coarse_smoothness})] if coarse else []
    if options.smooth_iterations > coarse or not stages:
        stages.append(Stage(("orient", "transl", "pose"), options.smooth_iterations - coarse, weights))
    if not single and options.refine_iterations:
        stages.append(Stage(("orient", "transl", "pose"), options.refine_iterations, weights, prior=False))
    if not _twins(solver, single, options):
        return (yield from solver.solve_steps(None, init=result, stages=stages, terms=[term]))
    # the twins before the last stage: after the coarse steps, or first when there are none
    split, taken = len(stages) - 1, 0
    if split:
        result, taken = yield from counted_on(solver.solve_steps(None, init=result, stages=stages[:split],
                                                                 terms=[term]), 0)
    start = _twin_start(solver, cameras, result.state)
    later, _ = yield from counted_on(solver.solve_steps(None, init=start, stages=stages[split:], terms=[term]), taken)
    if split:
        later.iterations += result.iterations
    return later


def _twins(solver: IKSolver, single: bool, options: Fit2DOptions) -> bool:
    """Whether the fit tries the limbs' depth twins: one view (several pin the depth), options.limb_twins,
    a prior (it tells the twins apart; the pixels cannot) and a body with core.limb_flips' limbs."""
    names = solver.model.joint_names[:NUM_BODY_JOINTS]
    return single and options.limb_twins and solver.prior is not None and \
        all(name in names for limb in LIMBS for name in limb)


def _photo_twins(solver: IKSolver, camera: Cameras, pixels: Tensor, confidence: Tensor, result: IKResult,
                 options: Fit2DOptions) -> IKResult:
    """One view's frames fitted without the temporal stage (photos) tried from their limbs' depth
    twins (options.twin_iterations LM iterations with the prior), each frame keeping whichever fit
    has the lower objective: nothing couples the frames, and a re-encoded pose may need more
    iterations than that to fit its pixels as closely again."""
    frames = pixels.shape[0]
    term = _term(solver, camera, pixels, confidence, torch.arange(frames), True, result.state, options)
    stage = Stage(("orient", "transl", "pose"), options.twin_iterations, {"latent": options.latent})
    twin = solver.solve(None, init=_twin_start(solver, camera, result.state), stages=[stage], terms=[term])
    twin.iterations = twin.iterations + result.iterations
    keep = torch.arange(frames) + frames * (twin.loss < result.loss)
    return _select(_cat_results([result, twin]), keep)


def _twin_start(solver: IKSolver, camera: Cameras, state: IKState) -> IKState:
    """`state` (one view) with each frame's limbs set to their likeliest depth twins, the pose
    left for the solver to re-encode (re-encoding every frame, not only the changed ones, fitted
    better on the training subjects: docs/benchmarks.md)."""
    eye = camera.centre.to(state.rotations)  # the state's dtype and device
    rotations = likeliest_twins(solver.model, solver.prior, state.rotations, state.transl, eye)
    return IKState(rotations, state.transl, None, state.betas)


class Fit2DRun:
    """A one-view sequence fit as steps, so callers can show progress and cancel between them (the
    add-on's modal Fit):

        run = Fit2DRun(solver, camera, pixels, confidence)
        for done, total in run: ...   # steps done: frames fitted, then the temporal stage's LM steps
        run.result()

    Frames are fitted `batch_size` at a time (each frame is its own problem, so the chunks give
    what one batch would), then, for 3 or more frames with options.smoothness > 0, the temporal
    stage runs over all of them at once, as `fit_2d(..., sequence=True)` does, one step per LM
    trial step (up to options.smooth_iterations; a solve that converges sooner jumps to the total).
    One fixed camera (batch shape ()); pixels (T, K, 2), confidence (T, K); betas (num_betas,) or None."""

    def __init__(self, solver: IKSolver, camera: Cameras, pixels, confidence=None,
                 options: Fit2DOptions = Fit2DOptions(), betas=None, batch_size: int = 25) -> None:
        if camera.batch_shape != ():
            raise Fit2DError(f"Fit2DRun: one fixed camera, got a batch of shape {tuple(camera.batch_shape)}")
        if batch_size < 1:
            raise Fit2DError(f"Fit2DRun: batch_size must be positive, got {batch_size}")
        self.pixels, self.confidence = _inputs(solver.model, pixels, confidence)
        if self.pixels.dim() != 3:
            raise Fit2DError(f"Fit2DRun: pixels of shape {tuple(self.pixels.shape)}; expected (frames, keypoints, 2)")
        self.solver, self.camera, self.betas = solver, camera.to(solver.model.dtype), betas
        self.batch_size = batch_size
        self.frames = self.pixels.shape[0]
        self.smooth = options.temporal(self.frames)
        # the chunks' per-frame fits as a sequence's (filled options are kept by fit_2d; the twins
        # come in the temporal stage, when there is one)
        self.options = options.for_views(True, self.smooth)
        self._chunk_options = replace(self.options, limb_twins=False) if self.smooth else self.options
        self.total = self.frames + (self.options.smooth_iterations if self.smooth else 0)
        self._parts: list[Fit2DResult] = []
        self._result: Fit2DResult | None = None
        self._done = 0

    def __iter__(self) -> Iterator[tuple[int, int]]:
        while self._done < self.frames:
            rows = slice(self._done, min(self.frames, self._done + self.batch_size))
            self._parts.append(fit_2d(self.solver, self.camera, self.pixels[rows], self.confidence[rows],
                                      options=self._chunk_options, betas=self.betas))
            self._done = rows.stop
            yield self._done, self.total
        if self._result is None:
            fit = _concatenate(self._parts)
            if self.smooth:
                steps = _smooth(self.solver, self.camera, self.pixels, self.confidence, True, fit.result, self.options)
                last = self.options.smooth_iterations - 1  # the total is the end
                result = yield from map_steps(steps, lambda taken: (self.frames + min(taken, last), self.total))
                error = _pixel_error(self.camera, self.pixels, self.confidence, True, result)
                fit = Fit2DResult(result, result.full_pose(), result.transl, error, fit.flipped)
            self._result = fit
            yield self.total, self.total

    def result(self) -> Fit2DResult:
        if self._result is None:
            if self._done == self.frames:
                raise Fit2DError("the 2D fit stopped in its temporal stage")
            raise Fit2DError(f"the 2D fit stopped after {self._done} of {self.frames} frames")
        return self._result


def _concatenate(parts: Sequence[Fit2DResult]) -> Fit2DResult:
    """One result of the frames of several (in order)."""
    return Fit2DResult(_cat_results([part.result for part in parts]), _cat([p.poses for p in parts]),
                       _cat([p.transl for p in parts]), _cat([p.reproj_px for p in parts]),
                       _cat([p.flipped for p in parts]))


def _cat(values: Sequence[Tensor | None]) -> Tensor | None:
    return None if any(value is None for value in values) else torch.cat(list(values))


def _cat_results(results: Sequence[IKResult]) -> IKResult:
    """One IK result of the frames of several (in order)."""
    states = [result.state for result in results]
    state = IKState(_cat([s.rotations for s in states]), _cat([s.transl for s in states]),
                    _cat([s.latent for s in states]), _cat([s.betas for s in states]))
    return IKResult(state=state, points=_cat([r.points for r in results]), errors=_cat([r.errors for r in results]),
                    loss=_cat([r.loss for r in results]), smoothness=sum(r.smoothness for r in results),
                    iterations=_cat([r.iterations for r in results]), converged=_cat([r.converged for r in results]),
                    method=results[0].method, retried=_cat([r.retried for r in results]))


def fill_from_nearest(values: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """values (T, ...) with the rows where usable (T,) is False copied from the nearest usable row
    (frames with too few keypoints to fit take a fitted neighbour's pose)."""
    index = np.flatnonzero(usable)
    nearest = index[np.abs(np.arange(len(usable))[:, None] - index[None, :]).argmin(1)]
    return values[nearest]


def estimate_focal(solver: IKSolver, camera: Cameras, pixels, confidence=None, *,
                   options: Fit2DOptions = Fit2DOptions(), search: FocalSearch = FocalSearch()) -> FocalEstimate:
    """The focal length of one fixed camera (batch ()) that best explains a single view's keypoints
    pixels (T, K, 2) (confidence (T, K)), by the search the module docstring describes; the start
    camera's focal is the middle of the range (e.g. Cameras.for_image's max(W, H)). The search's
    first fit leaves out the limbs' depth twins: it was tuned without them, and a twin taken there
    moves the shallow minimum (the synthetic photo of tests/core/test_fit_2d_cli.py: 3518 px found
    for 1500 with them)."""
    options = replace(options.for_views(True), limb_twins=False)
    if camera.batch_shape != ():
        raise Fit2DError(f"focal search: one camera (batch shape ()), got {tuple(camera.batch_shape)}")
    if not 0 < search.low < 1 < search.high or search.candidates < 3:
        raise Fit2DError(f"focal search: expected low < 1 < high and 3 or more candidates, got {search}")
    dtype = solver.model.dtype
    pixels = torch.as_tensor(np.asarray(pixels, dtype=np.float64)).to(dtype)
    if pixels.dim() != 3:
        raise Fit2DError(f"focal search: pixels of shape (frames, keypoints, 2) for one view, got "
                         f"{tuple(pixels.shape)}")
    confidence = torch.ones(pixels.shape[:-1], dtype=dtype) if confidence is None else \
        torch.as_tensor(np.asarray(confidence, dtype=np.float64)).to(dtype)
    picked = torch.as_tensor(np.unique(np.linspace(0, len(pixels) - 1, min(len(pixels), search.max_frames)).round()
                                       .astype(np.int64)))
    pixels, confidence, camera = pixels[picked], confidence[picked], camera.to(dtype)
    first = fit_2d(solver, camera, pixels, confidence, options=options)
    frames = len(picked)
    ratios = torch.as_tensor(np.geomspace(search.low, search.high, search.candidates), dtype=dtype)
    ratio = ratios.repeat_interleave(frames)  # rows: candidate-major, frames inside
    frame = torch.arange(frames).repeat(search.candidates)
    cameras = Cameras.create(camera.focal * ratio[:, None], camera.image_size, camera.principal, camera.rotation,
                             camera.translation, dtype=dtype)
    # Slide each body along the camera's rays: its centroid's offset from the camera centre scaled by
    # the focal ratio keeps its picture (nearly) where it was.
    start = first.result.state.select(frame)
    centroid = first.result.points[frame].mean(1)
    start.transl = start.transl + (ratio[:, None] - 1) * (centroid - camera.centre)
    rows = torch.arange(len(ratio))
    term = _term(solver, cameras, pixels[frame], confidence[frame], rows, True, start, options)
    stage = Stage(("orient", "transl", "pose"), search.iterations, {"latent": search.latent})
    result = solver.solve(None, init=start, stages=[stage], terms=[term])
    costs = result.loss.view(search.candidates, frames).sum(1)
    best = _parabola_minimum(torch.log(ratios).double(), costs.double())
    focal = camera.focal * math.exp(best)
    return FocalEstimate(float(focal[0]), camera.focal[0] * ratios, costs,
                         Cameras.create(focal, camera.image_size, camera.principal, camera.rotation,
                                        camera.translation, dtype=dtype))


def _parabola_minimum(x: Tensor, y: Tensor) -> float:
    """The x of the lowest y, refined by the parabola through it and its two neighbours (kept
    between them); an end point stays as it is."""
    i = int(torch.argmin(y))
    if i == 0 or i == len(x) - 1:
        return float(x[i])
    (x0, x1, x2), (y0, y1, y2) = x[i - 1:i + 2].tolist(), y[i - 1:i + 2].tolist()
    denominator = (x0 - x1) * (x0 - x2) * (x1 - x2)
    a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / denominator
    b = (x2 * x2 * (y0 - y1) + x1 * x1 * (y2 - y0) + x0 * x0 * (y1 - y2)) / denominator
    return float(x1) if a <= 0 else min(max(-b / (2 * a), x0), x2)


# --------------------------------------------------------------------------------------------- start


def _first_view(cameras: Cameras, pixels: Tensor, confidence: Tensor, single: bool, frames: int
                ) -> tuple[Cameras, Tensor, Tensor]:
    """The first view's cameras (batch () or (T,)), pixels (T, K, 2) and confidence (T, K)."""
    if single:
        return cameras, pixels, confidence
    camera = cameras[:, 0] if len(cameras.batch_shape) == 2 else cameras[0]
    return camera, pixels[:, 0], confidence[:, 0]


def _facing(cameras: Cameras, frames: int) -> Tensor:
    """(T, 3, 3) a global orientation that stands the body upright in the camera's image and turns
    its front (+Z) towards the camera: columns camera right, up (-down), backwards (-forward)."""
    rotation = cameras.rotation.expand(frames, 3, 3)
    return rotation.transpose(-1, -2) @ torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=rotation.dtype))


def _front_sign(pixels: Tensor, confidence: Tensor, names: Sequence[str],
                pairs: list[tuple[int, int]]) -> Tensor:
    """(T,) (left - right) image x of the shoulders and hips over the mean torso pixel length:
    about +0.7 facing the camera, -0.7 turned away, near 0 edge-on (or unknown)."""
    seen = torch.isfinite(pixels).all(-1) & (confidence > 0)
    clean = torch.nan_to_num(pixels)
    width, count = torch.zeros(pixels.shape[0], dtype=pixels.dtype), torch.zeros(pixels.shape[0], dtype=pixels.dtype)
    for part in ("shoulder", "hip"):
        if f"left_{part}" in names and f"right_{part}" in names:
            left, right = names.index(f"left_{part}"), names.index(f"right_{part}")
            both = (seen[:, left] & seen[:, right]).to(pixels.dtype)
            width += both * (clean[:, left, 0] - clean[:, right, 0])
            count += both
    lengths = torch.stack([(clean[:, a] - clean[:, b]).norm(dim=-1) * (seen[:, a] & seen[:, b]) for a, b in pairs], 1)
    seen_pairs = torch.stack([seen[:, a] & seen[:, b] for a, b in pairs], 1).sum(1)
    torso = lengths.sum(1) / seen_pairs.clamp_min(1)
    return torch.where((count > 0) & (torso > 0), width / count.clamp_min(1) / torso.clamp_min(1e-9),
                       torch.zeros_like(torso))


def _start(solver: IKSolver, facing: Tensor, turned: Tensor, cameras: Cameras, pixels: Tensor,
           confidence: Tensor, pairs: list[tuple[int, int]], betas=None) -> IKState:
    """The start states (R,): the prior's mean pose (T-pose without a prior), facing the camera or
    turned around (`turned`), translated to the torso's depth; the shape `betas` (num_betas,) if given."""
    model, batch = solver.model, facing.shape[0]
    if betas is not None:
        betas = torch.as_tensor(np.asarray(betas, dtype=np.float64), dtype=model.dtype, device=model.device)
        betas = betas.reshape(1, model.num_betas).expand(batch, -1).clone()
    state = solver._rest_state(batch, betas)
    half_turn = axis_angle_to_matrix(torch.tensor([0.0, math.pi, 0.0], dtype=model.dtype))
    orient = torch.where(turned[:, None, None], facing @ half_turn, facing)
    state.rotations[:, 0] = orient @ state.rotations[:, 0]
    with torch.no_grad():
        points = solver.keypoints.evaluate(state.rotations, state.betas, state.transl)
    state.transl = initial_translation(cameras, points, pixels, confidence, pairs)
    if solver.prior is None:
        state.latent = None
    return state


def _term(solver: IKSolver, cameras: Cameras, pixels: Tensor, confidence: Tensor, rows: Tensor, single: bool,
          start: IKState, options: Fit2DOptions) -> Reprojection2D:
    """The reprojection term over the frames `rows`, its pixels weighted by (depth / focal)^2 at the
    start, so that one pixel costs about what its size at the body would in metres."""
    per_frame = len(cameras.batch_shape) == (1 if single else 2)
    picked = cameras[rows] if per_frame else cameras
    with torch.no_grad():
        points = solver.keypoints.evaluate(start.rotations, start.betas, start.transl)
    view = (picked if single else (picked[:, 0] if per_frame else picked[0]))
    depth = view.to_camera(points)[..., 2].mean(-1).clamp_min(0.1)
    scale = (depth / view.focal.mean(-1).expand_as(depth)) ** 2
    weight = confidence[rows] * (scale.view(-1, 1) if single else scale.view(-1, 1, 1))
    reprojection = Reprojection(pixels[rows], weight, scale=options.robust_scale)
    return Reprojection2D(solver.keypoints, picked, reprojection)


def _select(result: IKResult, keep: Tensor) -> IKResult:
    """The result's frames `keep`."""
    def pick(value):
        return None if value is None else value[keep]

    return IKResult(state=result.state.select(keep), points=result.points[keep], errors=result.errors[keep],
                    loss=result.loss[keep], smoothness=result.smoothness, iterations=result.iterations[keep],
                    converged=result.converged[keep], method=result.method, retried=pick(result.retried))


def _pixel_error(cameras: Cameras, pixels: Tensor, confidence: Tensor, single: bool,
                 result: IKResult) -> Tensor:
    """(T,) pixel distance over the seen keypoints of every view, weighted by their confidence as
    the fit weighs them: a detector's guesses for parts the picture cuts off (a portrait's legs,
    visibility ~0) would otherwise dominate a mean of plain distances."""
    projected = cameras.project(result.points if single else result.points.unsqueeze(1))
    error = (projected - pixels).norm(dim=-1)
    seen = (confidence > 0) & torch.isfinite(error)
    weight = torch.where(seen, confidence, torch.zeros_like(confidence)).reshape(len(error), -1)
    error = torch.where(seen, error, torch.zeros_like(error)).reshape(len(error), -1)
    return (weight * error).sum(1) / weight.sum(1).clamp_min(1e-12)


def procrustes_errors(predicted: Tensor, truth: Tensor) -> Tensor:
    """(T, K) joint distances after each frame's best similarity transform of `predicted` (T, K, 3)
    onto `truth` (T, K, 3): the PA-MPJPE of monocular fits, which leave scale and rotation open."""
    a, b = predicted - predicted.mean(1, keepdim=True), truth - truth.mean(1, keepdim=True)
    u, s, vh = torch.linalg.svd(a.transpose(1, 2) @ b)
    sign = torch.sign(torch.linalg.det(vh.transpose(1, 2) @ u.transpose(1, 2)))
    flip = torch.diag_embed(torch.stack([torch.ones_like(sign), torch.ones_like(sign), sign], -1))
    rotation = vh.transpose(1, 2) @ flip @ u.transpose(1, 2)
    scale = (s * flip.diagonal(dim1=1, dim2=2)).sum(1) / (a * a).sum((1, 2))
    return (scale[:, None, None] * a @ rotation.transpose(1, 2) - b).norm(dim=-1)
