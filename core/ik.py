"""Batched inverse kinematics: body parameters whose keypoints reach given 3D targets.

Unknowns per frame: global orientation, translation, the body pose through VPoser's latent (or raw
per-joint rotations when no prior is given), optionally betas and the hand joints. The objective
(`Objective`, one per stage) is a list of residual terms over one parameter layout (core.ik_terms,
where the term interface and its shapes are described): robust distances to the targets, the latent
prior ||z||^2, a shape prior ||betas||^2, knee/elbow hyperextension, a soft hold of some joints'
rotations, and optionally the joints' acceleration over a sequence. Every optimiser sums the same
terms; adding an input type means adding a term. Pinned joints are no term but part of the layout:
their rotations are fixed exactly (the prior's decoding is overridden there, and they have no
unknowns). IKSolver.objective builds a stage's objective without solving, to inspect or check it.

The default optimiser is a batched Levenberg-Marquardt (core.lm) on each frame's small parameter
vector with analytic Jacobians (core.jacobians), so every frame converges on its own and finished
frames stop costing anything. LBFGS with a strong-Wolfe line search and Adam on the batch-mean loss,
as the original VPoser IK does, are offered for comparison.

Rotations move by small increments about the current point (the root by exp(h) R in the world, other
joints by R exp(h) in their own frame), so no unknown sits at a singularity of its parameterisation.
Targets are solved relative to each frame's target centroid, so scenes far from the origin keep
their precision; results are given back in the targets' own coordinates. Frames that a solve leaves
far from a target are solved again from other starts (see Retry).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .body_model import BodyModel, BodyOutput
from .errors import VPoserError
from .ik_terms import (
    BODY,
    ROBUST,
    UNKNOWNS,
    At,
    IdentityPrior,
    JointLimits,
    Layout,
    PointTargets,
    Smoothness,
    Stay,
    Term,
    TermValue,
)
from .keypoints import NUM_BODY_JOINTS, KeypointSet
from .lm import (Coupling, LMOptions, LMReport, counted_on, coupled_steps, finish, inference_steps,
                 levenberg_marquardt)
from .rotations import axis_angle_to_matrix, matrix_to_axis_angle
from .vposer import VPoser

METHODS = ("lm", "lbfgs", "adam")
LIVE_ITERATIONS = 4  # LM iterations per live-posing update, warm-started: the next update goes on from there
LIVE_DAMPING = 1e-2  # LM's initial damping for those updates (see live_lm_options)


def live_lm_options() -> LMOptions:
    """A Live Posing update's LM options: LIVE_ITERATIONS iterations from damping LIVE_DAMPING.

    A warm start sits next to the new optimum, where the default damping (1e-3, for cold starts)
    takes nearly Gauss-Newton first steps that overshoot the prior decoder's kinks: a third of a
    live update's trial steps were rejected. From 1e-2, 88 % are accepted, and 4 iterations land
    closer than 5 did (eval_ik's interactive_error_mm 1.78 -> 0.70 mm; docs/benchmarks.md)."""
    return LMOptions(max_iterations=LIVE_ITERATIONS, initial_damping=LIVE_DAMPING)


class IKError(VPoserError):
    """The IK cannot run on these inputs; the message names the problem."""


class IKWarning(UserWarning):
    """The IK runs, but something about the inputs deserves a look."""


@dataclass(frozen=True)
class IKWeights:
    """Weights of the objective, per frame: 0.5 * sum of

    data * confidence_k * rho(|point_k - target_k|^2)  with rho from `robust` at `robust_scale` metres
        ("gm": Geman-McClure, "huber": smooth-L1, "l2": plain squares; all ~ d^2 for small d),
    latent * ||z||^2, betas * ||betas||^2,
    joint_limits * (knee/elbow hyperextension as sin(angle))^2,
    stay * ||R_j - R_j(start)||^2 over the joints a solve is asked to hold (`stay`; pins are exact,
        no term), and over a sequence
    smoothness * ||joint acceleration (metres per frame^2)||^2 summed over the 22 body joints.
    Distances are in metres, so 1e-4 is the cost of one target 1 cm off.
    """

    data: float = 1.0
    robust: str = "gm"
    robust_scale: float = 0.2
    latent: float = 1e-5
    betas: float = 1e-5
    joint_limits: float = 1e-2
    stay: float = 1.0
    smoothness: float = 0.0


@dataclass(frozen=True)
class Stage:
    """One solve over some unknowns ("orient", "transl", "pose", "hands", "betas"), the rest fixed.
    `weights` overrides fields of the solver's IKWeights for this stage only. prior=False solves the
    body pose as raw joint rotations even when the solver has a prior: a cheap first pass, since
    the prior's Jacobian dominates an iteration's cost; a later stage with the prior starts from
    the encoding of that pose."""

    unknowns: tuple[str, ...] = ("orient", "transl", "pose")
    max_iterations: int = 30
    weights: dict[str, float] = field(default_factory=dict)
    prior: bool = True


@dataclass(frozen=True)
class Retry:
    """More tries for frames that a solve leaves far from a target (LM, frames not coupled by
    smoothness). A robust data term barely pulls on a target far beyond its scale, and a few
    rejected first steps leave LM with large damping: it can meet its stopping test with a target a
    hand's width away that the next solve from there reaches. A frame whose worst usable target
    ends more than `distance` metres away is solved again, in turn: on from where it stopped (fresh
    damping, `iterations` LM iterations), from the prior's mean pose, and from `restarts` latent
    points drawn from the prior (generator seeded with `seed`, so solves repeat exactly). Each
    attempt runs on the frames still far only, and every frame keeps the attempt with the lowest
    objective. Frames that land cost nothing more than the check."""

    distance: float = 0.05
    iterations: int = 60
    restarts: int = 2
    seed: int = 0


@dataclass
class _Held:
    """Joints (P,) whose local rotations are held, and the rotations (B, P, 3, 3) they are held at."""

    ids: Tensor
    rotations: Tensor

    def select(self, rows: Tensor) -> _Held:
        return _Held(self.ids, self.rotations[rows])


@dataclass
class IKState:
    """Body parameters of B frames: local rotations of all joints (B, J, 3, 3) (the root's is the
    global orientation), translation (B, 3), VPoser's latent (B, L) when the pose comes from the
    prior, betas (B, num_betas) when the shape is set or solved."""

    rotations: Tensor
    transl: Tensor
    latent: Tensor | None = None
    betas: Tensor | None = None

    def select(self, rows: Tensor) -> IKState:
        def pick(value: Tensor | None) -> Tensor | None:
            return None if value is None else value[rows]

        return IKState(self.rotations[rows], self.transl[rows], pick(self.latent), pick(self.betas))

    def clone(self) -> IKState:
        def copy(value: Tensor | None) -> Tensor | None:
            return None if value is None else value.detach().clone()

        return IKState(copy(self.rotations), copy(self.transl), copy(self.latent), copy(self.betas))


@dataclass
class IKResult:
    """A solve's outcome per frame. `errors` (B, K) are distances to the targets in metres (NaN where
    a target was missing); `loss` (B,) is each frame's objective without the smoothness terms, which
    frames share and which `smoothness` sums (the whole objective is loss.sum() + smoothness);
    `iterations` sums all stages and retries; `converged` says the last stage met its stopping
    test; `retried` (B,) marks the frames that were solved again (see Retry)."""

    state: IKState
    points: Tensor
    errors: Tensor
    loss: Tensor
    smoothness: float
    iterations: Tensor
    converged: Tensor
    method: str
    retried: Tensor | None = None

    @property
    def rotations(self) -> Tensor:
        return self.state.rotations

    @property
    def transl(self) -> Tensor:
        return self.state.transl

    @property
    def latent(self) -> Tensor | None:
        return self.state.latent

    @property
    def betas(self) -> Tensor | None:
        return self.state.betas

    @property
    def global_orient(self) -> Tensor:
        """(B, 3) axis-angle."""
        return matrix_to_axis_angle(self.state.rotations[:, 0])

    @property
    def body_pose(self) -> Tensor:
        """(B, 63) axis-angle of the 21 body joints, VPoser's and BodyModel.forward's layout."""
        return matrix_to_axis_angle(self.state.rotations[:, BODY]).flatten(1)

    def full_pose(self) -> Tensor:
        """(B, 3 * J) axis-angle of every joint's local rotation (as AMASS 'poses')."""
        return matrix_to_axis_angle(self.state.rotations).flatten(1)


@dataclass
class _Run:
    """Stages run over some frames (centred coordinates): the final state, its keypoints (b, K, 3)
    and objective (b,) float64 (without smoothness), the sequence's smoothness cost, LM iterations
    (b,) and the last stage's stopping test (b,)."""

    state: IKState
    points: Tensor
    cost: Tensor
    smoothness: float
    iterations: Tensor
    converged: Tensor

    def take(self, rows: Tensor, other: _Run, chosen: Tensor) -> None:
        """Frames `rows[chosen]` take `other`'s outcome (other ran on `rows`), in place."""
        mine, theirs = rows[chosen], chosen.nonzero().squeeze(1)
        self.state.rotations[mine] = other.state.rotations[theirs]
        self.state.transl[mine] = other.state.transl[theirs]
        for name in ("latent", "betas"):  # both runs end in the same stage: both have them or neither
            value, given = getattr(self.state, name), getattr(other.state, name)
            if value is not None and given is not None:
                value[mine] = given[theirs]
        self.points[mine], self.cost[mine] = other.points[theirs], other.cost[theirs]
        self.converged[mine] = other.converged[theirs]


@dataclass(frozen=True)
class FirstOrderOptions:
    """LBFGS (strong-Wolfe line search) and Adam on the batch-mean loss: iterations per stage
    replace Stage.max_iterations; LBFGS stops early when the loss changes by < tolerance_change."""

    lbfgs_iterations: int = 100
    lbfgs_history: int = 20
    tolerance_change: float = 1e-12
    adam_iterations: int = 300
    adam_lr: float = 0.02


class IKSolver:
    """Fits body parameters to keypoint targets for one body model, keypoint set and prior.

    prior=None solves raw joint rotations (no learned prior); method is "lm" (default), "lbfgs" or
    "adam"; unknowns are what the last stage solves ("hands" and "betas" are opt-in). retry: how
    frames left far from a target are solved again (None: never). For live posing, warm-start each
    update from the last result with lm_options=live_lm_options() and retry=None: the next
    update goes on from where this one stopped, and a full solve finishes once the target stops.
    """

    def __init__(
        self,
        model: BodyModel,
        keypoints: KeypointSet,
        prior: VPoser | None = None,
        *,
        weights: IKWeights = IKWeights(),
        unknowns: Sequence[str] = ("orient", "transl", "pose"),
        method: str = "lm",
        lm_options: LMOptions | None = None,
        first_order: FirstOrderOptions = FirstOrderOptions(),
        retry: Retry | None = Retry(),
    ) -> None:
        if keypoints.model is not model:
            raise IKError("the keypoint set was built for a different body model")
        if not set(model.joint_names[:NUM_BODY_JOINTS]) >= {"pelvis", "left_wrist", "right_ankle"}:
            raise IKError(f"IK needs a body model (SMPL, SMPL-H, SMPL-X or the open body), not {model.kind.name}")
        if method not in METHODS:
            raise IKError(f"unknown method {method!r}; expected one of {METHODS}")
        _check_weights(weights)
        _check_unknowns(unknowns, model)
        if retry is not None and not (retry.distance > 0 and retry.iterations >= 1 and retry.restarts >= 0):
            raise IKError(f"retry needs a positive distance, at least 1 iteration and restarts >= 0, got {retry}")
        if prior is not None:
            parameter = next(prior.parameters())
            if parameter.device != model.device or parameter.dtype != model.dtype:
                raise IKError(f"the prior is on {parameter.device} / {parameter.dtype} but the body model on "
                              f"{model.device} / {model.dtype}: move one, e.g. prior.to(model.v_template)")
            if prior.training:
                raise IKError("the prior is in training mode (dropout on): call prior.eval()")
        self.model, self.keypoints, self.prior = model, keypoints, prior
        self.weights, self.unknowns, self.method = weights, tuple(unknowns), method
        self.lm_options, self.first_order, self.retry = lm_options or LMOptions(), first_order, retry
        self.hand_joints = torch.tensor(_hand_joints(model), dtype=torch.long, device=model.device)

    # ----------------------------------------------------------------- public API
    def solve(self, targets: Tensor | np.ndarray, confidence: Tensor | np.ndarray | None = None,
              **options: Any) -> IKResult:
        """options: init, betas, pins, stay, stages, align, terms (keywords; typed in solve_steps).

        targets (B, K, 3) or (K, 3) in metres, NaN where missing; confidence (B, K) or (K,)
        (0 = ignore). init: a previous result or state to start from (warm start), else the
        T-pose (prior: its mean pose, z = 0) rigidly aligned to the targets. betas: a fixed shape
        (the start value when "betas" is solved). pins: joints whose local rotation stays exactly as
        at the start (as given in `init`, not the prior's decoding of its latent). stay: joints held
        near their start rotation by the soft `IKWeights.stay` term. stages: default one stage over
        `unknowns`, preceded on a cold start by an orientation + translation stage. align: also move
        a given start rigidly onto the targets (a cold start always is), in closed form.
        terms: more residual terms (core.ik_terms.Term, e.g. core.fit2d.Reprojection2D) added to
        every stage's objective, beside the 3D targets or in their place: targets=None then needs
        `init` (the start, in world coordinates; no alignment), and `errors` are all NaN. Frames
        are not retried when terms are given (a term's per-frame data follows the whole batch)."""
        return finish(self.solve_steps(targets, confidence, **options))

    def solve_steps(
        self,
        targets: Tensor | np.ndarray,
        confidence: Tensor | np.ndarray | None = None,
        *,
        init: IKState | IKResult | None = None,
        betas: Tensor | np.ndarray | None = None,
        pins: Sequence[str] = (),
        stay: Sequence[str] = (),
        stages: Sequence[Stage] | None = None,
        align: bool = False,
        terms: Sequence[Term] = (),
    ) -> Generator[int, None, IKResult]:
        """`solve` as a generator, for callers that show progress and may stop: the same arguments and
        result (its return value), and a yield after each trial step of a stage whose frames
        smoothness couples (the trial steps of such stages so far, counted on from one of them to
        the next; a whole sequence's solve takes seconds). Other stages run whole between yields.
        Closed early, it gives no result."""
        model = self.model
        targets, confidence, centre, state, pinned, held = self._prepare(targets, confidence, init, betas, pins, stay,
                                                                         align, terms)
        batch = targets.shape[0]
        if stages is None:
            final = Stage(self.unknowns, max_iterations=self.lm_options.max_iterations)
            stages = [final] if init is not None else [Stage(("orient", "transl"), max_iterations=3), final]
        start_betas = None if state.betas is None else state.betas.clone()
        run = yield from self._run(targets, confidence, centre, state, stages, pinned, held, tuple(terms))
        retried = torch.zeros(batch, dtype=torch.bool, device=model.device)
        if self.retry is not None and self.method == "lm" and not self._smooth(stages, batch) and not terms:
            retried = self._retry(run, targets, confidence, centre, stages, pinned, held, start_betas)
        errors = (run.points - targets).norm(dim=-1)
        errors = torch.where(confidence > 0, errors, torch.full_like(errors, float("nan")))
        state = run.state.clone()
        state.transl = state.transl + centre
        return IKResult(state=state, points=run.points + centre.unsqueeze(1), errors=errors, loss=run.cost,
                        smoothness=run.smoothness, iterations=run.iterations, converged=run.converged,
                        method=self.method, retried=retried)

    def objective(self, targets: Tensor | np.ndarray, confidence: Tensor | np.ndarray | None = None, *,
                  stage: Stage | None = None, terms: Sequence[Term] = (), **start) -> Objective:
        """The objective one stage of `solve` would minimise (default stage: over `unknowns`), at
        its start point: its layout, its terms, and their values (Objective.term_values), without
        solving anything. start: init, betas, pins, stay and align, as for `solve`. Coordinates
        are centred on each frame's target centroid, as the solver works."""
        targets, confidence, centre, state, pinned, held = self._prepare(targets, confidence, terms=terms, **start)
        stage = stage or Stage(self.unknowns)
        return Objective(self, targets, confidence, centre, state, stage, self._stage_weights(stage), pinned, held,
                         tuple(terms))

    def _stage_weights(self, stage: Stage) -> IKWeights:
        """The weights of a stage (the solver's, with the stage's overrides), its unknowns checked."""
        _check_unknowns(stage.unknowns, self.model)
        weights = dataclasses.replace(self.weights, **stage.weights)
        _check_weights(weights)
        return weights

    def _prepare(self, targets, confidence, init: IKState | IKResult | None = None, betas=None,
                 pins: Sequence[str] = (), stay: Sequence[str] = (), align: bool = False,
                 terms: Sequence[Term] = ()) -> tuple[Tensor, Tensor, Tensor, IKState, _Held, _Held]:
        """Checked inputs in centred coordinates: targets (B, K, 3), confidence (B, K), the centre
        (B, 3), the start state, and the pinned and held joints at their start rotations."""
        model = self.model
        if targets is None:
            if not terms or init is None:
                raise IKError("targets=None needs other terms (e.g. a 2D reprojection term) and a start (init)")
            if align:
                raise IKError("align needs 3D targets to align to")
            start = init.state if isinstance(init, IKResult) else init
            batch = start.transl.shape[0]
            targets = torch.zeros(batch, len(self.keypoints), 3, dtype=model.dtype, device=model.device)
            confidence = torch.zeros(batch, len(self.keypoints), dtype=model.dtype, device=model.device)
            centre = start.transl.detach().to(model.v_template).clone()  # solve about the start's root
        else:
            targets, confidence = _check_targets(targets, confidence, self.keypoints)
            batch = targets.shape[0]
            centre = (confidence.unsqueeze(-1) * targets).sum(1) / confidence.sum(1, keepdim=True)
        _warn_far(centre, model.dtype)
        targets = targets - centre.unsqueeze(1)
        with torch.no_grad():
            state = self._start(init, betas, batch, centre)
            if init is None:
                _check_scale(self.keypoints, state, targets, confidence)
            if init is None or align:
                _align(self.keypoints, state, targets, confidence)
        start = state.rotations
        if init is not None:  # pins keep the rotations as given, not the prior's re-encoding of a pose made elsewhere
            given = init.state if isinstance(init, IKResult) else init
            start = _broadcast(given.rotations, batch, "init rotations").to(model.v_template)
        held = {}
        for kind, names in (("pin", pins), ("hold", stay)):
            ids = torch.tensor([_joint_index(model, name, kind) for name in names], dtype=torch.long,
                               device=model.device)
            held[kind] = _Held(ids, start[:, ids].clone())
        return targets, confidence, centre, state, held["pin"], held["hold"]

    def _smooth(self, stages: Sequence[Stage], batch: int) -> bool:
        """Whether the last stage couples frames through smoothness (no per-frame retries then)."""
        weights = dataclasses.replace(self.weights, **stages[-1].weights)
        return weights.smoothness > 0 and batch >= 3

    def _run(self, targets: Tensor, confidence: Tensor, centre: Tensor, state: IKState, stages: Sequence[Stage],
             pins: _Held, stay: _Held, terms: tuple[Term, ...] = ()) -> Generator[int, None, _Run]:
        """The stages in turn from `state` (centred coordinates), and the final point's evaluation;
        yields as Objective.lm_steps does, counting on over the coupled stages (the trial steps of
        all of them so far)."""
        model, batch = self.model, targets.shape[0]
        iterations = torch.zeros(batch, dtype=torch.long, device=model.device)
        converged = torch.zeros(batch, dtype=torch.bool, device=model.device)
        problem = None
        earlier = 0  # trial steps of the coupled stages before this one
        for stage in stages:
            problem = Objective(self, targets, confidence, centre, state, stage, self._stage_weights(stage), pins, stay,
                                terms)
            if self.method == "lm":
                options = dataclasses.replace(self.lm_options, max_iterations=stage.max_iterations)
                report, taken = yield from counted_on(inference_steps(problem.lm_steps(options)), earlier)
                earlier += taken
                iterations += report.iterations
                converged = report.converged.clone()  # a normal tensor: retries update it in place
            else:
                steps, done = problem.solve_first_order(self.method, self.first_order)
                iterations += steps
                converged = torch.full_like(converged, done)
            state = problem.state
        with torch.no_grad():
            every = torch.arange(batch, device=model.device)
            final = problem.evaluate(every, state, jacobian=False, output=problem.known_output(every))
        smoothness = float(problem.sequence_cost(final.at)) if problem.smooth else 0.0
        return _Run(state, final.points, final.cost, smoothness, iterations, converged)

    # ----------------------------------------------------------------- retries
    def _far(self, points: Tensor, targets: Tensor, confidence: Tensor) -> Tensor:
        """(b,) bool: frames with a usable target more than Retry.distance from its keypoint."""
        errors = (points - targets).norm(dim=-1)
        return ((errors > self.retry.distance) & (confidence > 0)).any(1)

    def _retry(self, run: _Run, targets: Tensor, confidence: Tensor, centre: Tensor, stages: Sequence[Stage],
               pins: _Held, stay: _Held, start_betas: Tensor | None) -> Tensor:
        """Solve the frames of `run` left far from a target again (see Retry), keeping each frame's
        best attempt by the objective, in place; (B,) bool, the frames retried."""
        far = self._far(run.points, targets, confidence)
        retried = far.clone()
        if not bool(far.any()):
            return retried
        final = stages[-1]
        generator = torch.Generator().manual_seed(self.retry.seed)
        restarts = self.retry.restarts if self.prior is not None and final.prior else 0
        attempts = ["continue", "mean"] + ["sample"] * restarts
        for attempt in attempts:
            rows = torch.nonzero(far).squeeze(1)
            if not len(rows):
                break
            if attempt == "continue":
                state = run.state.select(rows).clone()
                attempt_stages = [dataclasses.replace(final, max_iterations=self.retry.iterations)]
            else:
                latent = None
                if attempt == "sample":
                    latent = torch.randn(len(rows), self.prior.latent_dim, generator=generator).to(self.model.v_template)
                betas = None if start_betas is None else start_betas[rows]
                with torch.no_grad():
                    state = self._rest_state(len(rows), betas, latent)
                    _align(self.keypoints, state, targets[rows], confidence[rows])
                attempt_stages = [Stage(("orient", "transl"), max_iterations=3), final]
            trial = finish(self._run(targets[rows], confidence[rows], centre[rows], state, attempt_stages,
                                     pins.select(rows), stay.select(rows)))
            run.iterations[rows] += trial.iterations
            run.take(rows, trial, trial.cost < run.cost[rows])
            far[rows] = self._far(run.points[rows], targets[rows], confidence[rows])
        return retried

    # ----------------------------------------------------------------- start point
    def _start(self, init: IKState | IKResult | None, betas, batch: int, centre: Tensor) -> IKState:
        """The state to start from, in centred coordinates, with batch B."""
        model = self.model
        shape = _check_betas(betas, model, batch)
        if init is None:
            state = self._rest_state(batch, shape)
            rotations, transl, latent = state.rotations, state.transl, state.latent
        else:
            start = init.state if isinstance(init, IKResult) else init
            rotations, transl = _broadcast(start.rotations, batch, "init rotations"), _broadcast(start.transl, batch, "init transl")
            if rotations.shape[1:] != (model.num_joints, 3, 3) or transl.shape[1:] != (3,):
                raise IKError(f"init has rotations {tuple(start.rotations.shape)} and transl {tuple(start.transl.shape)}; "
                              f"expected (B, {model.num_joints}, 3, 3) and (B, 3)")
            rotations, transl = rotations.to(model.v_template).clone(), transl.to(model.v_template) - centre
            latent = None
            if self.prior is not None:
                if start.latent is not None:
                    latent = _broadcast(start.latent, batch, "init latent").to(model.v_template).clone()
                    rotations[:, BODY] = self.prior.decode_matrix(latent)
                else:  # a pose from elsewhere
                    latent = _encode(self.prior, rotations)
            if shape is None and start.betas is not None:
                shape = _broadcast(start.betas, batch, "init betas").to(model.v_template).clone()
        if shape is None and "betas" in self.unknowns:
            shape = torch.zeros(batch, model.num_betas, dtype=model.dtype, device=model.device)
        return IKState(rotations, transl, latent, shape)

    def _rest_state(self, batch: int, betas: Tensor | None, latent: Tensor | None = None) -> IKState:
        """B frames at the origin in the T-pose, or with a prior at the decoding of `latent` (B, L)
        (default its mean, z = 0)."""
        model = self.model
        rotations = axis_angle_to_matrix(model.full_pose({}, 1).view(1, -1, 3)).expand(batch, -1, -1, -1).clone()
        if self.prior is not None:
            if latent is None:
                latent = torch.zeros(batch, self.prior.latent_dim, dtype=model.dtype, device=model.device)
            rotations[:, BODY] = self.prior.decode_matrix(latent)
        transl = torch.zeros(batch, 3, dtype=model.dtype, device=model.device)
        return IKState(rotations, transl, latent, betas)


@dataclass
class _Evaluation:
    cost: Tensor  # (b,) float64, without coupled terms (smoothness) unless asked for
    points: Tensor  # (b, K, 3)
    at: At  # the intermediates the terms read (the body's forward, keypoints, their derivatives)
    residuals: Tensor | None = None  # (b, m)
    jacobian: Tensor | None = None  # (b, m, N)

    @property
    def output(self) -> BodyOutput:
        return self.at.output

    @property
    def body_joints(self) -> Tensor | None:
        return self.at.body_joints


class Objective:
    """One stage's objective: its parameter layout, its list of residual terms (core.ik_terms), and
    the frames' current points; LM's protocol (linearize, try_step, accept) and the first-order
    optimisers' loss both sum the same terms. Build one with IKSolver.objective()."""

    def __init__(self, solver: IKSolver, targets: Tensor, confidence: Tensor, centre: Tensor, state: IKState,
                 stage: Stage, weights: IKWeights, pins: _Held, stay: _Held, extra: tuple[Term, ...] = ()) -> None:
        model, unknowns = solver.model, stage.unknowns
        if bool((pins.ids == 0).any()):  # a pinned root: the global orientation is fixed
            unknowns = tuple(name for name in unknowns if name != "orient")
        self.solver, self.model, self.keypoints = solver, model, solver.keypoints
        self.prior = solver.prior if stage.prior else None
        self.targets, self.centre, self.weights = targets, centre, weights
        self.state = state.clone()
        if "pose" in unknowns and solver.prior is not None:
            if self.prior is None:  # raw rotations: the latent no longer describes the pose
                self.state.latent = None
            elif self.state.latent is None:
                with torch.no_grad():
                    self.state.latent = _encode(self.prior, self.state.rotations)
        self.pins, self.stay = pins, stay
        if len(pins.ids):  # a start decoded from a latent shows the pinned joints as they were given
            self.state.rotations[:, pins.ids] = pins.rotations
        self.smooth = weights.smoothness > 0 and targets.shape[0] >= 3
        self.terms = self._terms(confidence, unknowns, extra)
        # Kept decoder Jacobians pay off over batches; one frame's update costs what its recomputation does
        kept = targets.shape[0] if targets.shape[0] > 1 else None
        self.layout = Layout(model, self.prior, unknowns, self._live_joints(), solver.hand_joints, pins.ids,
                             pins.rotations, frames=kept)
        for term in self.terms:
            term.layout = self.layout
        self.columns, self.size = self.layout.columns, self.layout.size
        self.cost = torch.full((targets.shape[0],), float("nan"), dtype=torch.float64, device=model.device)
        self.outputs: BodyOutput | None = None  # the body's forward at accepted points, per frame
        self.known = torch.zeros(targets.shape[0], dtype=torch.bool, device=model.device)
        every = torch.arange(targets.shape[0], device=model.device)
        coupled = [term for term in self.terms if term.coupled]
        if coupled:
            with torch.no_grad():
                at = self.layout.linearise(self.keypoints, every, self.state, False, None, self.needs, centre)
            for term in coupled:
                term.start(at)
        self._trial: tuple[Tensor, IKState, _Evaluation] | None = None
        self._d_body_joints: Tensor | None = None  # (B, 22, 3, N) at the accepted points, for `coupling`

    @property
    def needs(self) -> frozenset[str]:
        """The intermediates (see core.ik_terms.At) some term reads."""
        return frozenset().union(*(term.needs for term in self.terms))

    def _terms(self, confidence: Tensor, unknowns: tuple[str, ...], extra: tuple[Term, ...]) -> list[Term]:
        """The objective's terms for these weights, in the order their residuals are stacked (the
        3D targets left out when none is usable: the `extra` terms, which follow them, fit alone)."""
        weights, state = self.weights, self.state
        terms: list[Term] = []
        if bool((confidence > 0).any()):
            terms.append(PointTargets(self.keypoints, self.targets, confidence * weights.data, weights.robust,
                                      weights.robust_scale))
        terms.extend(extra)
        if state.latent is not None and weights.latent > 0:
            terms.append(IdentityPrior("latent", "latent", "pose", weights.latent))
        if "betas" in unknowns and weights.betas > 0:
            terms.append(IdentityPrior("betas", "betas", "betas", weights.betas))
        if weights.joint_limits > 0:
            terms.append(JointLimits(self.model, weights.joint_limits))
        if len(self.stay.ids) and weights.stay > 0:
            terms.append(Stay(self.stay.ids, self.stay.rotations, weights.stay))
        if self.smooth:
            terms.append(Smoothness(weights.smoothness))
        return terms

    def _live_joints(self) -> Tensor:
        """(J,) bool: the joints whose rotation changes some term of the objective. Raw rotations
        get unknowns only there: a joint with no target below it (a wrist when the hands carry no
        target) would only add columns of zeros, which cost time in every product and factorisation."""
        live = torch.zeros(self.model.num_joints, dtype=torch.bool, device=self.model.device)
        for term in self.terms:
            joints = term.live_joints(self.model)
            if joints is None:
                return ~live
            live |= joints
        return live

    # ----------------------------------------------------------------- the objective
    def moved(self, rows: Tensor, step: Tensor) -> IKState:
        """The frames' points moved by step (b, N), differentiable in step."""
        return self.layout.moved(self.state.select(rows), rows, step)

    def evaluate(self, rows: Tensor, point: IKState, jacobian: bool, output: BodyOutput | None = None
                 ) -> _Evaluation:
        """Per-frame cost at `point` (the state of frames `rows`), coupled terms left out; with
        jacobian=True also the stacked residuals and their Jacobian. `output`: the body's forward at
        `point` when already known."""
        at = self.layout.linearise(self.keypoints, rows, point, jacobian, output, self.needs, self.centre)
        cost, residuals, jacobians = None, [], []
        for term in self.terms:
            if term.coupled:
                continue
            value = term.value(at)
            cost = value.cost if cost is None else cost + value.cost
            if jacobian:
                residuals.append(value.residuals)
                jacobians.append(value.jacobian)
        evaluation = _Evaluation(cost, at.points, at)
        if jacobian:
            evaluation.residuals, evaluation.jacobian = torch.cat(residuals, 1), torch.cat(jacobians, 1)
        return evaluation

    def term_values(self, step: Tensor | None = None, rows: Tensor | None = None, jacobian: bool = True
                    ) -> dict[str, TermValue]:
        """Each term's value at the frames `rows` (default all) moved by step (b, N) (default 0),
        the others held: for checking and inspecting terms one at a time."""
        if rows is None:
            rows = torch.arange(self.targets.shape[0], device=self.model.device)
        point = self.state.select(rows) if step is None else self.moved(rows, step)
        at = self.layout.linearise(self.keypoints, rows, point, jacobian, None, self.needs, self.centre)
        return {term.name: term.value(at) for term in self.terms}

    def sequence_cost(self, at: At) -> Tensor:
        """The coupled terms' cost over the whole batch (a scalar; `at` at every frame)."""
        total = at.output.joints.new_zeros(())
        for term in self.terms:
            if term.coupled:
                total = total + term.sequence_cost(at.body_joints)
        return total

    # ----------------------------------------------------------------- LM protocol
    def known_output(self, rows: Tensor) -> BodyOutput | None:
        """The body's forward at the frames' current points if every one is remembered, else None."""
        if self.outputs is None or not bool(self.known[rows].all()):
            return None
        vertices = None if self.outputs.vertices is None else self.outputs.vertices[rows]
        return BodyOutput(self.outputs.joints[rows], vertices, self.outputs.joint_rotations[rows])

    def _remember(self, rows: Tensor, output: BodyOutput) -> None:
        if self.outputs is None:
            size = self.targets.shape[0]
            self.outputs = BodyOutput(*(None if value is None else value.new_zeros(size, *value.shape[1:])
                                        for value in (output.joints, output.vertices, output.joint_rotations)))
        self.outputs.joints[rows] = output.joints
        self.outputs.joint_rotations[rows] = output.joint_rotations
        if output.vertices is not None:
            self.outputs.vertices[rows] = output.vertices
        self.known[rows] = True

    def linearize(self, rows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        output = self.known_output(rows)  # accepted trial points need no new forward
        evaluation = self.evaluate(rows, self.state.select(rows), jacobian=True, output=output)
        if output is None:
            self._remember(rows, evaluation.output)
        if self.smooth:  # the coupled terms' linearisation is built from these (see `coupling`)
            if self._d_body_joints is None:
                d = evaluation.at.d_body_joints
                self._d_body_joints = d.new_zeros(self.targets.shape[0], *d.shape[1:])
            self._d_body_joints[rows] = evaluation.at.d_body_joints
        self.cost[rows] = evaluation.cost
        return evaluation.residuals, evaluation.jacobian, evaluation.cost

    def try_step(self, rows: Tensor, step: Tensor) -> Tensor:
        point = self.moved(rows, step)
        evaluation = self.evaluate(rows, point, jacobian=False)
        self._trial = (rows, point, evaluation)
        return evaluation.cost

    def coupling(self) -> list[Coupling]:
        """The coupled terms over every frame, linearised at the accepted points (joint LM)."""
        return [term.coupling(self._d_body_joints) for term in self.terms if term.coupled]

    def trial_coupling_cost(self, keep: Tensor) -> Tensor:
        """The coupled terms' cost with the last trial's frames where keep (b,) is True at their
        trial points, every other frame at its accepted point (joint LM)."""
        rows, _, evaluation = self._trial
        total = torch.zeros((), dtype=torch.float64, device=self.model.device)
        for term in self.terms:
            if term.coupled:
                joints = term.world.index_copy(0, rows[keep], evaluation.at.body_joints[keep])
                total = total + term.sequence_cost(joints).double()
        return total

    def accept(self, keep: Tensor) -> None:
        rows, point, evaluation = self._trial
        chosen = rows[keep]
        output = evaluation.output
        vertices = None if output.vertices is None else output.vertices[keep]
        self._remember(chosen, BodyOutput(output.joints[keep], vertices, output.joint_rotations[keep]))
        self.state.rotations[chosen] = point.rotations[keep]
        self.state.transl[chosen] = point.transl[keep]
        if point.latent is not None:
            self.state.latent[chosen] = point.latent[keep]
        if point.betas is not None and "betas" in self.columns:
            self.state.betas[chosen] = point.betas[keep]
        for term in self.terms:
            if term.coupled:
                term.accept(chosen, evaluation.at, keep)

    def lm_steps(self, options: LMOptions) -> Generator[int, None, LMReport]:
        """The stage's LM; where smoothness couples the frames, one LM over the whole sequence that
        yields after each trial step (core.lm.coupled_steps); else every frame on its own, no yield."""
        frames = torch.arange(self.targets.shape[0], device=self.model.device)
        if not self.smooth:
            return levenberg_marquardt(self, frames, options)
        try:
            return (yield from coupled_steps(self, frames, options))
        finally:
            self._d_body_joints = None

    # ----------------------------------------------------------------- first-order optimisers
    def solve_first_order(self, method: str, options: FirstOrderOptions) -> tuple[int, bool]:
        """LBFGS or Adam on the batch-mean loss over all frames; (iterations, stopped early)."""
        batch = self.targets.shape[0]
        rows = torch.arange(batch, device=self.model.device)
        step = torch.zeros(batch, self.size, dtype=self.model.dtype, device=self.model.device, requires_grad=True)

        def loss() -> Tensor:
            evaluation = self.evaluate(rows, self.moved(rows, step), jacobian=False)
            return (evaluation.cost.sum().to(step.dtype) + self.sequence_cost(evaluation.at)) / batch

        if method == "lbfgs":
            optimiser = torch.optim.LBFGS([step], lr=1.0, max_iter=options.lbfgs_iterations,
                                          history_size=options.lbfgs_history, line_search_fn="strong_wolfe",
                                          tolerance_grad=1e-12, tolerance_change=options.tolerance_change)

            def closure() -> Tensor:
                value = loss()
                step.grad = torch.autograd.grad(value, step)[0]
                return value

            optimiser.step(closure)
            iterations = int(optimiser.state[step]["n_iter"])
            stopped = iterations < options.lbfgs_iterations
        else:
            optimiser = torch.optim.Adam([step], lr=options.adam_lr)
            for _ in range(options.adam_iterations):
                step.grad = torch.autograd.grad(loss(), step)[0]
                optimiser.step()
            iterations, stopped = options.adam_iterations, False
        with torch.no_grad():
            self.state = self.moved(rows, step.detach()).clone()
        return iterations, stopped


_Problem = Objective  # the name the tests of the stay and pin Jacobians know


# --------------------------------------------------------------------------------------------
# Robust losses, start alignment


def _encode(prior: VPoser, rotations: Tensor) -> Tensor:
    """The latent whose decoding is nearest the body pose in `rotations` (the encoder's mean), and
    that decoding written into `rotations` in place."""
    latent = prior.encode_matrix(rotations[:, BODY])
    rotations[:, BODY] = prior.decode_matrix(latent)
    return latent


def _align(keypoints: KeypointSet, state: IKState, targets: Tensor, confidence: Tensor) -> None:
    """Rigidly move the start pose onto the targets (weighted Kabsch), in place; frames with fewer
    than three targets are only translated."""
    points = keypoints.evaluate(state.rotations, state.betas, state.transl)
    weights = confidence / confidence.sum(1, keepdim=True)
    mean_points = (weights.unsqueeze(-1) * points).sum(1)
    mean_targets = (weights.unsqueeze(-1) * targets).sum(1)
    covariance = ((weights.unsqueeze(-1) * (points - mean_points.unsqueeze(1))).transpose(1, 2)
                  @ (targets - mean_targets.unsqueeze(1))).double()
    u, _, vh = torch.linalg.svd(covariance)
    flip = torch.ones_like(u[:, 0])
    flip[:, 2] = torch.sign(torch.linalg.det(vh.transpose(1, 2) @ u.transpose(1, 2)))
    rotation = (vh.transpose(1, 2) @ torch.diag_embed(flip) @ u.transpose(1, 2)).to(points.dtype)
    rotation = torch.where(((confidence > 0).sum(1) >= 3)[:, None, None], rotation, torch.eye(3).to(rotation))
    root = keypoints.model.rest_joints(state.betas)[:, 0].expand(len(points), 3) + state.transl
    # Global orientation turns the body about its root joint: p' = R (p - root) + root + t'.
    state.rotations[:, 0] = rotation @ state.rotations[:, 0]
    state.transl += mean_targets - (rotation @ (mean_points - root).unsqueeze(-1)).squeeze(-1) - root


# --------------------------------------------------------------------------------------------
# Input checks


def _check_targets(targets, confidence, keypoints: KeypointSet) -> tuple[Tensor, Tensor]:
    """(B, K, 3) targets with missing ones (NaN) zeroed, and (B, K) confidence with them at 0.
    An infinite coordinate is refused (IKError naming the target), not taken as missing."""
    model = keypoints.model
    targets = torch.as_tensor(targets).to(dtype=model.dtype, device=model.device)
    if targets.ndim == 2:
        targets = targets.unsqueeze(0)
    count = len(keypoints)
    if targets.ndim != 3 or targets.shape[1:] != (count, 3):
        raise IKError(f"targets have shape {tuple(targets.shape)}; expected (B, {count}, 3) or ({count}, 3) "
                      f"for the {count} keypoints")
    if targets.shape[0] == 0:
        raise IKError(f"targets have shape {tuple(targets.shape)}: no frames to solve")
    if confidence is None:
        confidence = torch.ones(targets.shape[:2], dtype=model.dtype, device=model.device)
    confidence = torch.as_tensor(confidence).to(dtype=model.dtype, device=model.device)
    if confidence.ndim == 1:
        confidence = confidence.unsqueeze(0)
    if confidence.ndim != 2 or confidence.shape[1] != count or confidence.shape[0] not in (1, targets.shape[0]):
        raise IKError(f"confidence has shape {tuple(confidence.shape)}; expected ({targets.shape[0]}, {count}) "
                      f"or ({count},)")
    confidence = confidence.expand(targets.shape[0], -1)
    if not torch.isfinite(confidence).all():
        frame, target = torch.nonzero(~torch.isfinite(confidence))[0].tolist()
        raise IKError(f"confidence is NaN or infinite (first at frame {frame}, target {keypoints.names[target]!r}); "
                      f"use 0 for targets to ignore")
    if (confidence < 0).any():
        frame, target = torch.nonzero(confidence < 0)[0].tolist()
        raise IKError(f"confidence is negative (first at frame {frame}, target {keypoints.names[target]!r})")
    infinite = torch.isinf(targets).any(-1)
    if infinite.any():  # NaN marks a missing target; an infinite one is a mistake, never a position
        frame, target = torch.nonzero(infinite)[0].tolist()
        raise IKError(f"target {keypoints.names[target]!r} is infinitely far away (frame {frame}; "
                      f"{int(infinite.sum())} infinite target(s) in all): give it a finite position, or NaN to "
                      "leave it out")
    confidence = torch.where(torch.isfinite(targets).all(-1), confidence, torch.zeros_like(confidence))
    empty = torch.nonzero((confidence > 0).sum(1) == 0).squeeze(1).tolist()
    if empty:
        shown = ", ".join(map(str, empty[:10])) + (", ..." if len(empty) > 10 else "")
        raise IKError(f"{len(empty)} frame(s) have no usable target (all missing or zero confidence): frames "
                      f"{shown}; drop or interpolate them")
    return torch.where((confidence > 0).unsqueeze(-1), targets, torch.zeros_like(targets)), confidence


def _check_scale(keypoints: KeypointSet, state: IKState, targets: Tensor, confidence: Tensor) -> None:
    """Refuse targets whose spread is far from the body's: wrong units, or the wrong keypoint set."""
    points = keypoints.evaluate(state.rotations, state.betas, state.transl)
    weights = ((confidence > 0).to(points.dtype) / (confidence > 0).sum(1, keepdim=True)).unsqueeze(-1)

    def spread(values: Tensor) -> Tensor:  # RMS distance of the usable points from their centroid
        centred = values - (weights * values).sum(1, keepdim=True)
        return (weights * centred * centred).sum((1, 2)).sqrt()

    body, target = spread(points), spread(targets)
    usable = ((confidence > 0).sum(1) >= 3) & (body > 0.05)
    ratio = torch.where(usable, target / body.clamp_min(1e-9), torch.ones_like(body))
    for frames, too_big in ((torch.nonzero(ratio > 8).squeeze(1), True), (torch.nonzero(ratio < 1 / 8).squeeze(1), False)):
        if len(frames):
            frame = int(frames[0])
            factor = float(ratio[frame])
            if too_big:
                units = min({"millimetres": 1000, "centimetres": 100, "inches": 39.37, "feet": 3.281}.items(),
                            key=lambda item: abs(np.log(factor / item[1])))[0]
                hint = f"are they in {units}? IK targets are in metres"
            else:
                hint = "are they in kilometres, or for a different keypoint set? IK targets are in metres"
            raise IKError(f"targets spread {factor:.3g} times as far as the body's keypoints (frame {frame}, "
                          f"{len(frames)} frame(s) affected): {hint}")


def _warn_far(centre: Tensor, dtype: torch.dtype) -> None:
    distance = float(centre.norm(dim=-1).max())
    resolution = torch.finfo(dtype).eps * distance
    if resolution > 1e-5:
        warnings.warn(f"targets lie up to {distance:.4g} m from the origin, where {dtype} resolves only "
                      f"{resolution * 1000:.2g} mm; move them nearer the origin or use a float64 model",
                      IKWarning, stacklevel=3)


def _check_weights(weights: IKWeights) -> None:
    if weights.robust not in ROBUST:
        raise IKError(f"unknown robust loss {weights.robust!r}; expected one of {ROBUST}")
    numbers = {f.name: getattr(weights, f.name) for f in dataclasses.fields(weights) if f.name != "robust"}
    bad = {name: value for name, value in numbers.items() if not np.isfinite(value) or value < 0}
    if bad or weights.robust_scale <= 0:
        raise IKError(f"IK weights must be finite and non-negative (robust_scale positive): {bad or numbers}")


def _check_unknowns(unknowns: Sequence[str], model: BodyModel) -> None:
    wrong = [name for name in unknowns if name not in UNKNOWNS]
    if wrong:
        raise IKError(f"unknown IK unknowns {wrong}; expected some of {UNKNOWNS}")
    if "hands" in unknowns and not _hand_joints(model):
        raise IKError(f"a {model.kind.name} model has no hand joints to solve")
    if "betas" in unknowns and not model.num_betas:
        raise IKError("the body model has no shape components to solve")


def _check_betas(betas, model: BodyModel, batch: int) -> Tensor | None:
    if betas is None:
        return None
    betas = torch.as_tensor(betas).to(dtype=model.dtype, device=model.device)
    betas = betas.unsqueeze(0) if betas.ndim == 1 else betas
    if betas.ndim != 2 or betas.shape[1] != model.num_betas or betas.shape[0] not in (1, batch):
        raise IKError(f"betas have shape {tuple(betas.shape)}; expected ({model.num_betas},) or "
                      f"({batch}, {model.num_betas})")
    if not torch.isfinite(betas).all():
        raise IKError("betas contain NaN or infinite values")
    return betas.expand(batch, -1).clone()


def _broadcast(value: Tensor, batch: int, name: str) -> Tensor:
    if value.shape[0] == batch:
        return value
    if value.shape[0] == 1:
        return value.expand(batch, *value.shape[1:])
    raise IKError(f"{name} has batch {value.shape[0]}, but the targets have {batch} frames")


def _joint_index(model: BodyModel, name: str, verb: str) -> int:
    if name not in model.joint_names:
        raise IKError(f"cannot {verb} {name!r}: no such joint in a {model.kind.name} model")
    return model.joint_names.index(name)


def _hand_joints(model: BodyModel) -> list[int]:
    joints, start = [], 0
    for part, count in model.kind.pose_parts:
        if part in ("left_hand_pose", "right_hand_pose"):
            joints.extend(range(start, start + count))
        start += count
    return joints
