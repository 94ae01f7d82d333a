"""The IK objective: a list of residual terms over one parameter layout.

An objective is a list of terms. Each term gives, per frame, its cost, its residuals and their
analytic Jacobian over the unknowns of one `Layout`; the solvers (core.lm's batched LM, and LBFGS /
Adam on the batch-mean loss) only sum what the terms give. Adding an input type means adding a term.

Shapes: b frames are evaluated at once (a subset `rows` of the batch's B); N is the layout's number
of unknowns per frame; K the keypoints; M the joints whose rotation the unknowns move.

Layout (one per stage): the per-frame unknowns, blocks in the order of core.ik.UNKNOWNS:
    "orient" 3: the root's rotation as exp(h) R (a world-frame increment),
    "transl" 3,
    "pose": the prior's latent step (L), or 3 per live body joint as R exp(h) (raw rotations),
    "hands": 3 per live hand joint as R exp(h),
    "betas": model.num_betas.
    Pinned joints have no unknowns and keep their rotation exactly (pins are a matter of the layout,
    not a term). `moved(state, rows, step)` gives the frames' state moved by step (b, N).

Linearisation (`At`): what the terms read at b frames' points, computed once per evaluation:
    rows (b,), state (the frames' IKState), output (the body's forward), jacobian (bool);
    points (b, K, 3) keypoint positions, centred coordinates, and d_points (b, K, 3, N);
    body_joints (b, 22, 3) world positions of the body joints and d_body_joints (b, 22, 3, N);
    local (b, M, 3, N): each moving joint's angular velocity in its own frame per unknown;
    centre (b, 3): the frames' centres, which `points` are relative to (world = points + centre).
    The derivatives are None unless jacobian is True; points / body_joints only when a term
    `needs` them. A term consuming keypoint positions (3D targets; a 2D reprojection term would
    project `points` and chain its pixel Jacobian with `d_points`) adds no work to the body's.

Term: `name`; `needs` (a subset of {"points", "body_joints"}); `live_joints(model)` ((J,) bool of
    the joints whose local rotation the term depends on, or None for all: raw-rotation layouts give
    unknowns to live joints only); `value(at) -> TermValue`:
    cost (b,) float64, residuals (b, m), and jacobian (b, m, N) (None when at.jacobian is False).
    The cost's gradient must be J^T r: robust terms give IRLS-weighted residuals.
    A `coupled` term (smoothness) ties neighbouring frames: its value for some frames holds the
    others where they were last accepted (`start`, `accept`), `sequence_cost` gives the whole
    batch's cost for the first-order optimisers, and `coupling` its linearisation over the whole
    sequence (core.lm.Coupling) for LM, which then solves every frame together
    (core.lm.solve_coupled). Per-frame costs and retries leave coupled terms out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .body_model import BodyModel, BodyOutput
from .jacobians import KeptDecoderJacobians, body_jacobians, decoder_jacobian, rotation_tangents
from .keypoints import NUM_BODY_JOINTS, KeypointSet
from .lm import Coupling
from .rotations import axis_angle_to_matrix
from .vposer import VPoser

if TYPE_CHECKING:
    from .ik import IKState

BODY = slice(1, NUM_BODY_JOINTS)  # the 21 joints VPoser poses
UNKNOWNS = ("orient", "transl", "pose", "hands", "betas")
ROBUST = ("gm", "huber", "l2")
# (joint, axis of the local rotation, sign): the joint bends the wrong way when sign * w[axis] > 0,
# w being sin(angle) * axis of its local rotation (SMPL frames; SMPLify's angle prior, as a hinge).
HYPEREXTENSION = (("left_knee", 0, -1.0), ("right_knee", 0, -1.0), ("left_elbow", 1, 1.0), ("right_elbow", 1, -1.0))


@dataclass
class TermValue:
    """One term at b frames: cost (b,) float64, residuals (b, m) and Jacobian (b, m, N) (None
    unless asked for)."""

    cost: Tensor
    residuals: Tensor | None = None
    jacobian: Tensor | None = None


@dataclass
class At:
    """The intermediates every term may read at b frames' points (see the module docstring)."""

    rows: Tensor
    state: IKState
    output: BodyOutput
    jacobian: bool
    points: Tensor | None = None
    d_points: Tensor | None = None
    body_joints: Tensor | None = None
    d_body_joints: Tensor | None = None
    local: Tensor | None = None
    centre: Tensor | None = None  # (b, 3): add to `points` for world coordinates (a camera's)


# --------------------------------------------------------------------------------------------
# The parameter layout


class Layout:
    """Where each unknown sits in a frame's vector of N, which joints they turn, and how a step
    moves a state. prior: the stage's prior (None: the body pose as raw rotations). live (J,) bool:
    joints that get raw-rotation unknowns. pins: joints (P,) held exactly at rotations (B, P, 3, 3).
    frames: the solve's frame count, for keeping each frame's decoder Jacobian between its
    linearisations (core.jacobians.KeptDecoderJacobians); None: recomputed every time."""

    def __init__(self, model: BodyModel, prior: VPoser | None, unknowns: tuple[str, ...], live: Tensor,
                 hand_joints: Tensor, pin_ids: Tensor, pin_rotations: Tensor, frames: int | None = None) -> None:
        self.model, self.prior = model, prior
        self.kept = None if prior is None or frames is None else KeptDecoderJacobians(prior, frames)
        self.pin_ids, self.pin_rotations = pin_ids, pin_rotations
        if len(pin_ids):
            live = live.clone()
            live[pin_ids] = False  # no unknowns: a pinned joint's rotation is fixed
        self.raw_joints = {"hands": hand_joints[live[hand_joints]]}
        if prior is None:
            self.raw_joints["pose"] = torch.nonzero(live[BODY]).squeeze(1) + BODY.start
        sizes = {"orient": 3, "transl": 3, "betas": model.num_betas,
                 **{name: 3 * len(joints) for name, joints in self.raw_joints.items()}}
        if prior is not None:
            sizes["pose"] = prior.latent_dim
        self.columns: dict[str, slice] = {}
        for name in UNKNOWNS:
            if name in unknowns:
                start = sum(s.stop - s.start for s in self.columns.values())
                self.columns[name] = slice(start, start + sizes[name])
        self.size = sum(s.stop - s.start for s in self.columns.values())
        self._moving_and_constant()

    def _moving_and_constant(self) -> None:
        """Joints whose rotation the unknowns move, and their local angular velocities where these do
        not depend on the point (identity blocks of raw rotations)."""
        columns, device, dtype = self.columns, self.model.device, self.model.dtype
        moving = []
        if "orient" in columns:
            moving.append(torch.zeros(1, dtype=torch.long, device=device))
        if "pose" in columns:
            moving.append(self.raw_joints.get("pose", torch.arange(BODY.start, BODY.stop, device=device)))
        if "hands" in columns:
            moving.append(self.raw_joints["hands"])
        self.moving = torch.cat(moving) if moving else torch.zeros(0, dtype=torch.long, device=device)
        self.position = torch.full((self.model.num_joints,), -1, dtype=torch.long, device=device)
        self.position[self.moving] = torch.arange(len(self.moving), device=device)
        pinned = self.position[self.pin_ids]
        self.pinned_positions = pinned[pinned >= 0]  # decoded by the prior, but held: no angular velocity
        first_body = 1 if "orient" in columns else 0
        self.body_positions = slice(first_body, first_body + NUM_BODY_JOINTS - 1)
        constant = torch.zeros(len(self.moving), 3, self.size, dtype=dtype, device=device)
        for name, joints in self.raw_joints.items():
            if name in columns:
                for k, joint in enumerate(joints.tolist()):
                    start = columns[name].start + 3 * k
                    constant[self.position[joint], :, start:start + 3] = torch.eye(3, dtype=dtype, device=device)
        self.constant_angular = constant

    def moved(self, base: IKState, rows: Tensor, step: Tensor) -> IKState:
        """The frames' state `base` (of frames `rows`) moved by step (b, N), differentiable in step."""
        from .ik import IKState

        columns = self.columns
        rotations, latent, transl, betas = base.rotations, base.latent, base.transl, base.betas
        if {"orient", "pose", "hands"} & set(columns):
            rotations = rotations.clone()
        if "orient" in columns:
            rotations[:, 0] = axis_angle_to_matrix(step[:, columns["orient"]]) @ base.rotations[:, 0]
        if "pose" in columns and self.prior is not None:
            latent = latent + step[:, columns["pose"]]
            rotations[:, BODY] = self.prior.decode_matrix(latent)
            if len(self.pin_ids):
                rotations[:, self.pin_ids] = self.pin_rotations[rows]
        for name, joints in self.raw_joints.items():
            if name in columns:
                increments = axis_angle_to_matrix(step[:, columns[name]].unflatten(1, (-1, 3)))
                rotations[:, joints] = base.rotations[:, joints] @ increments
        if "transl" in columns:
            transl = transl + step[:, columns["transl"]]
        if "betas" in columns:
            betas = betas + step[:, columns["betas"]]
        return IKState(rotations, transl, latent, betas)

    def local_angular(self, point: IKState, rows: Tensor | None = None) -> Tensor:
        """(b, M, 3, N): each moving joint's angular velocity in its own frame per unknown, at the
        state `point` of frames `rows`."""
        local = self.constant_angular.expand(point.rotations.shape[0], -1, -1, -1).clone()
        if "orient" in self.columns:  # exp(h) R = R exp(R^T h)
            local[:, 0, :, self.columns["orient"]] = point.rotations[:, 0].transpose(-1, -2)
        if "pose" in self.columns and self.prior is not None:
            local[:, self.body_positions, :, self.columns["pose"]] = _decoder_angular(self.prior, point.latent,
                                                                                     self.kept, rows)
            if len(self.pinned_positions):
                local[:, self.pinned_positions] = 0
        return local

    def select_angular(self, local: Tensor, joints: Tensor) -> Tensor:
        """Local angular velocities (b, n, 3, N) of some joints; zero for joints that do not move."""
        position = self.position[joints]
        if not len(self.moving):  # e.g. a pinned root in a stage that turns nothing else
            return local.new_zeros(local.shape[0], len(joints), 3, local.shape[-1])
        picked = local[:, position.clamp_min(0)]
        return picked * (position >= 0).to(local.dtype)[None, :, None, None]

    def linearise(self, keypoints: KeypointSet, rows: Tensor, point: IKState, jacobian: bool,
                  output: BodyOutput | None, needs: frozenset[str], centre: Tensor) -> At:
        """The intermediates at `point` (frames `rows`): the body's forward (given as `output`
        when already known), the keypoints, the body joints in world coordinates (centre (B, 3)
        added) when needed, and with jacobian=True their derivatives from one body_jacobians call."""
        model = self.model
        if output is None:
            output = model.forward_rotations(point.rotations, point.betas, None, point.transl,
                                             return_vertices=False, vertex_ids=keypoints.vertex_ids)
        at = At(rows, point, output, jacobian, centre=centre[rows])
        with_points, with_joints = "points" in needs, "body_joints" in needs
        if with_points:
            at.points = keypoints.points(output.joints, output.vertices, output.joint_rotations)
        if with_joints:
            at.body_joints = output.joints[:, :NUM_BODY_JOINTS] + centre[rows].unsqueeze(1)
        if not jacobian:
            return at
        at.local = self.local_angular(point, rows)
        if not (with_points or with_joints):
            return at
        world = output.joint_rotations[:, self.moving] @ at.local
        joint_ids = keypoints.joint_ids if with_points else keypoints.joint_ids[:0]
        levers = keypoints.joint_points(output.joints, output.joint_rotations)[:, : len(joint_ids)]
        if with_joints:
            joint_ids = torch.cat([joint_ids, torch.arange(NUM_BODY_JOINTS, device=model.device)])
            levers = torch.cat([levers, output.joints[:, :NUM_BODY_JOINTS]], dim=1)
        corners, corner_maps, corner_ids = None, None, None
        if with_points and not keypoints.only_joints:
            corners, corner_maps = keypoints.corner_vertices(output.vertices), keypoints.corner_maps(output.vertices)
            corner_ids = keypoints.corner_ids
        d_joints, d_corner_points = body_jacobians(
            model, point.rotations, output.joint_rotations, output.joints, point.betas, self.moving, world,
            num_columns=self.size, joint_ids=joint_ids, joint_points=levers, corner_ids=corner_ids,
            corner_vertices=corners, corner_maps=corner_maps, transl_columns=self.columns.get("transl"),
            betas_columns=self.columns.get("betas"))
        count = len(keypoints.joint_ids) if with_points else 0
        if with_points:
            at.d_points = keypoints.points_jacobian(d_joints[:, :count], d_corner_points)
        if with_joints:
            at.d_body_joints = d_joints[:, count:]
        return at


def _decoder_angular(prior: VPoser, latent: Tensor, kept: KeptDecoderJacobians | None = None,
                     rows: Tensor | None = None) -> Tensor:
    """The decoded rotations' angular velocities (b, 21, 3, L) per latent unit, exact at every
    linearisation: the decoder is piecewise linear, but its units switch often enough along an IK's
    steps that a secant-updated Jacobian costs more iterations than it saves; `kept` (with the
    frames' rows) updates each frame's last one for the units that switched since. A cold start has
    every frame at the same latent: one frame's Jacobian serves them all."""
    if bool((latent == latent[:1]).all()):
        return decoder_jacobian(prior, latent[:1])[1].expand(len(latent), -1, -1, -1)
    if kept is not None and rows is not None:
        return kept.angular(latent, rows)
    return decoder_jacobian(prior, latent)[1]


def strict_ancestors(model: BodyModel, joints: list[int]) -> Tensor:
    """(J,) bool: the joints above any of `joints` (not the joints themselves)."""
    live = torch.zeros(model.num_joints, dtype=torch.bool, device=model.device)
    parents = model.parents.tolist()
    for joint in joints:
        joint = parents[joint]
        while joint >= 0:
            live[joint] = True
            joint = parents[joint]
    return live


def keypoint_live_joints(model: BodyModel, keypoints: KeypointSet) -> Tensor | None:
    """(J,) bool: the joints whose rotation moves some keypoint of the set (None: any joint)."""
    if not keypoints.only_joints:  # skinned vertices: any joint may move them (pose correctives)
        return None
    # A joint keypoint rides on its parent's segment (see KeypointSet's `local`): strict ancestors move it.
    return strict_ancestors(model, keypoints.joint_ids.tolist())


def _joint_mask(model: BodyModel, joints: Tensor) -> Tensor:
    live = torch.zeros(model.num_joints, dtype=torch.bool, device=model.device)
    live[joints] = True
    return live


# --------------------------------------------------------------------------------------------
# Terms


class Term:
    """A residual term (see the module docstring for the interface and shapes)."""

    name = "term"
    needs: frozenset[str] = frozenset()
    coupled = False

    def __init__(self, layout: Layout | None = None) -> None:
        self.layout = layout  # set by the objective once every term's live joints are known

    def live_joints(self, model: BodyModel) -> Tensor | None:
        return torch.zeros(model.num_joints, dtype=torch.bool, device=model.device)

    def value(self, at: At) -> TermValue:
        raise NotImplementedError


def _squares(residuals: Tensor) -> Tensor:
    """0.5 * ||r||^2 per frame, float64."""
    return 0.5 * (residuals * residuals).sum(-1).double()


class PointTargets(Term):
    """3D keypoint targets: 0.5 sum_k c_k rho(|p_k - t_k|^2) with rho from `robust` at `scale`
    metres; targets (B, K, 3), confidence (B, K) (the data weight folded in). Residuals (b, 3K) are
    IRLS-weighted: sqrt(c_k rho'_k) (p_k - t_k)."""

    name = "data"
    needs = frozenset({"points"})

    def __init__(self, keypoints: KeypointSet, targets: Tensor, confidence: Tensor, robust: str, scale: float) -> None:
        super().__init__()
        self.keypoints, self.targets, self.confidence = keypoints, targets, confidence
        self.robust, self.scale = robust, scale

    def live_joints(self, model: BodyModel) -> Tensor | None:
        return keypoint_live_joints(model, self.keypoints)

    def value(self, at: At) -> TermValue:
        error = at.points - self.targets[at.rows]
        rho, irls = robust_loss(self.robust, self.scale, (error * error).sum(-1))
        confidence = self.confidence[at.rows]
        root = (confidence * irls).sqrt()
        jacobian = (root[..., None, None] * at.d_points).flatten(1, 2) if at.jacobian else None
        return TermValue(0.5 * (confidence * rho).sum(-1).double(), (root.unsqueeze(-1) * error).flatten(1), jacobian)


class IdentityPrior(Term):
    """weight * ||x||^2 of one block of the state (the latent: VPoser's prior; betas: the shape
    prior): residuals sqrt(weight) x (b, n), Jacobian sqrt(weight) I on the block's columns (zero
    where the block is not an unknown of the stage)."""

    def __init__(self, name: str, field: str, column: str, weight: float) -> None:
        super().__init__()
        self.name, self.field, self.column, self.weight = name, field, column, weight

    def value(self, at: At) -> TermValue:
        value = getattr(at.state, self.field)
        root = self.weight ** 0.5
        residuals = root * value
        derivative = None
        if at.jacobian:
            columns = self.layout.columns
            derivative = value.new_zeros(value.shape[0], value.shape[1], self.layout.size)
            if self.column in columns:
                derivative[:, :, columns[self.column]] = root * torch.eye(value.shape[1], dtype=value.dtype,
                                                                          device=value.device)
        return TermValue(_squares(residuals), residuals, derivative)


class JointLimits(Term):
    """Knee and elbow hyperextension (HYPEREXTENSION): weight * (sin of the wrong-way bend)^2 per
    joint, a hinge active beyond 1e-9; residuals (b, n)."""

    name = "joint_limits"

    def __init__(self, model: BodyModel, weight: float) -> None:
        super().__init__()
        limits = [(model.joint_names.index(name), axis, sign)
                  for name, axis, sign in HYPEREXTENSION if name in model.joint_names]
        self.joints, self.axes, self.signs = (torch.tensor(values, device=model.device) for values in zip(*limits))
        self.signs = self.signs.to(model.dtype)
        self.weight = weight

    def live_joints(self, model: BodyModel) -> Tensor | None:
        return _joint_mask(model, self.joints)

    def value(self, at: At) -> TermValue:
        ids, axes, signs = self.joints, self.axes, self.signs
        rotations = at.state.rotations[:, ids]
        batch = rotations.shape[0]
        bend = signs * skew_part(rotations).gather(-1, axes.view(1, -1, 1).expand(batch, -1, 1)).squeeze(-1)
        # Active beyond a hair, so that round-off at a straight joint (the T-pose) never decides it.
        active = (bend > 1e-9).to(rotations.dtype)
        root = self.weight ** 0.5
        derivative = None
        if at.jacobian and not bool(active.any()):  # no joint bent the wrong way (the usual case)
            derivative = at.local.new_zeros(batch, len(ids), at.local.shape[-1])
        elif at.jacobian:  # d w / d w_local via dR = R [e_c]x
            slopes = skew_part(rotation_tangents(rotations)).gather(
                -1, axes.view(1, -1, 1, 1).expand(batch, -1, 3, 1)).squeeze(-1)  # (b, n, 3)
            derivative = root * (signs.unsqueeze(-1) * slopes * active.unsqueeze(-1)).unsqueeze(-2)
            derivative = (derivative @ self.layout.select_angular(at.local, ids)).squeeze(-2)
        residuals = root * bend * active
        return TermValue(_squares(residuals), residuals, derivative)


class Stay(Term):
    """weight * ||R_j - R_j(start)||^2 over held joints (P,) at rotations (B, P, 3, 3): per joint 3
    residuals 2 sqrt(2 weight) sin(angle / 2) * axis of its turn from the start, whose squares add up
    to the Frobenius distance and grow all the way to 180 degrees; residuals (b, 3P)."""

    name = "stay"

    def __init__(self, ids: Tensor, rotations: Tensor, weight: float) -> None:
        super().__init__()
        self.ids, self.rotations, self.weight = ids, rotations, weight

    def live_joints(self, model: BodyModel) -> Tensor | None:
        return _joint_mask(model, self.ids)

    def value(self, at: At) -> TermValue:
        turn = self.rotations[at.rows].transpose(-1, -2) @ at.state.rotations[:, self.ids]
        sine = skew_part(turn)  # sin(angle) * axis
        cosine = 0.5 * (1 + turn.diagonal(dim1=-2, dim2=-1).sum(-1)).clamp_min(1e-12).sqrt()  # cos(angle / 2)
        root = (8 * self.weight) ** 0.5
        derivative = None
        if at.jacobian:  # d sine / d w_local, and d cos(angle / 2) / d w_local = -sine / (4 cos)
            slopes = skew_part(rotation_tangents(turn)).transpose(-1, -2)  # (b, P, 3, 3)
            half = (slopes / (2 * cosine[..., None, None])
                    + sine.unsqueeze(-1) * sine.unsqueeze(-2) / (8 * cosine[..., None, None] ** 3))
            derivative = root * (half @ self.layout.select_angular(at.local, self.ids)).flatten(1, 2)
        residuals = root * (sine / (2 * cosine.unsqueeze(-1))).flatten(1)
        return TermValue(_squares(residuals), residuals, derivative)


class Smoothness(Term):
    """weight * ||body joint acceleration (metres per frame^2)||^2 over a sequence's 22 body joints,
    coupling neighbouring frames. LM takes it over the whole sequence (`coupling`); `value` gives a
    frame's share with its neighbours held at their accepted points (the three accelerations
    centred at frames i-1, i, i+1, residuals (b, 3 * 66): for inspecting terms one at a time); the
    whole batch's cost by `sequence_cost` (first-order optimisers, and LM's trial steps)."""

    name = "smoothness"
    needs = frozenset({"body_joints"})
    coupled = True

    def __init__(self, weight: float) -> None:
        super().__init__()
        self.weight = weight
        self.world: Tensor | None = None  # (B, 22, 3) body joints at the accepted points

    def live_joints(self, model: BodyModel) -> Tensor | None:
        return strict_ancestors(model, list(range(NUM_BODY_JOINTS)))

    def start(self, at: At) -> None:
        self.world = at.body_joints

    def accept(self, rows: Tensor, at: At, keep: Tensor) -> None:
        self.world[rows] = at.body_joints[keep]

    def value(self, at: At) -> TermValue:
        rows, body_joints = at.rows, at.body_joints
        count = self.world.shape[0]
        world = self.world.index_copy(0, rows, body_joints)
        acceleration = world[:-2] - 2 * world[1:-1] + world[2:]  # centred at frames 1..count-2
        offsets = torch.tensor([-1, 0, 1], device=rows.device)
        centres = rows.unsqueeze(1) + offsets  # (b, 3)
        valid = ((centres >= 1) & (centres <= count - 2)).to(body_joints.dtype)
        root = self.weight ** 0.5
        value = root * acceleration[(centres - 1).clamp(0, count - 3)] * valid[..., None, None]  # (b, 3, 22, 3)
        derivative = None
        if at.jacobian:
            coefficient = torch.tensor([1.0, -2.0, 1.0], dtype=body_joints.dtype, device=rows.device)
            derivative = root * (coefficient * valid)[..., None, None, None] * at.d_body_joints.unsqueeze(1)
            derivative = derivative.flatten(1, 3)
        return TermValue(0.5 * (value * value).flatten(1).sum(-1).double(), value.flatten(1), derivative)

    def sequence_cost(self, body_joints: Tensor) -> Tensor:
        """The whole sequence's cost (a scalar) from its body joints (B, 22, 3)."""
        acceleration = body_joints[:-2] - 2 * body_joints[1:-1] + body_joints[2:]
        return 0.5 * self.weight * (acceleration * acceleration).sum()

    def coupling(self, d_body_joints: Tensor) -> Coupling:
        """The term over the whole sequence at the accepted points, for LM's joint solve:
        d_body_joints (B, 22, 3, N) at those points."""
        coupling = Coupling(d_body_joints.flatten(1, 2), (1.0, -2.0, 1.0), self.weight ** 0.5, None, None)
        coupling.residuals = coupling.stencil(self.world.flatten(1))
        coupling.cost = 0.5 * (coupling.residuals * coupling.residuals).sum().double()
        return coupling


# --------------------------------------------------------------------------------------------
# Helpers


def robust_loss(kind: str, scale: float, squared: Tensor) -> tuple[Tensor, Tensor]:
    """rho(d^2) ~ d^2 near 0, and the IRLS weight rho'(d^2) that makes the weighted squares'
    gradient equal rho's."""
    if kind == "l2":
        return squared, torch.ones_like(squared)
    scale2 = scale * scale
    if kind == "gm":  # Geman-McClure: bounded influence, ignores outliers beyond a few scales
        return scale2 * squared / (scale2 + squared), (scale2 / (scale2 + squared)) ** 2
    distance = squared.clamp_min(1e-30).sqrt()  # smooth-L1 (Huber): quadratic inside, linear beyond
    inside = squared <= scale2
    return (torch.where(inside, squared, 2 * scale * distance - scale2),
            torch.where(inside, torch.ones_like(squared), scale / distance))


def skew_part(rotations: Tensor) -> Tensor:
    """(..., 3, 3) -> (..., 3): sin(angle) * axis, the vector of (R - R^T) / 2."""
    return 0.5 * torch.stack([rotations[..., 2, 1] - rotations[..., 1, 2],
                              rotations[..., 0, 2] - rotations[..., 2, 0],
                              rotations[..., 1, 0] - rotations[..., 0, 1]], dim=-1)
