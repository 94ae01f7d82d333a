"""Batched Levenberg-Marquardt where every frame is its own small least-squares problem.

Minimising one batch-mean loss couples the frames through the shared line search and stopping
test, so a batch converges like its worst frame. Here each frame has its own damping, its own
accept/reject and its own stopping test, and finished frames leave the batch, so the work shrinks as
frames converge and one hard frame never holds back or perturbs the others.

The solver knows nothing about bodies: a problem exposes `linearize`, `try_step` and `accept` over
a subset of frames (see `LeastSquaresProblem`). Steps solve the damped normal equations
(J^T J + mu D) h = -J^T r per frame (D: the clamped diagonal of J^T J, Marquardt's scaling) by
Cholesky in float64, and mu follows Nielsen's gain-ratio rule. Frames are linearised a chunk at a
time and only their normal equations are kept, so a large batch never holds all its Jacobians.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch
from torch import Tensor


class LeastSquaresProblem(Protocol):
    """What the solver needs; `frames` index the batch, the problem keeps each frame's point."""

    def linearize(self, frames: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """At the frames' current points: residuals (b, m), Jacobian (b, m, n) and cost (b,). The
        cost's gradient must be J^T r (for robust costs r may be IRLS-weighted)."""

    def try_step(self, frames: Tensor, step: Tensor) -> Tensor:
        """Cost (b,) at the frames' points moved by step (b, n); remembered until `accept`."""

    def accept(self, keep: Tensor) -> None:
        """Move the frames of the last `try_step` where keep (b,) is True to their trial points."""


@dataclass(frozen=True)
class LMOptions:
    """Stopping and damping. A frame stops when an accepted step lowers its cost by less than
    relative_tolerance * cost + absolute_tolerance, when a step's largest component is below
    step_tolerance (radians, metres or latent units), or when its gradient's largest component is
    below gradient_tolerance; or after max_iterations trial steps (not converged).

    absolute_tolerance is in the cost's units; its default suits the IK's squared metres. There a
    frame's cost near its optimum is mostly the prior's, and steps that lower it by less than
    1e-7 m^2 (each of 40 markers some 5 micrometres closer at sub-millimetre errors) only slide the
    pose along the prior's valley, kink by kink: on scripts/bench.py's 1,000 cold-started frames they
    were 7 % of all iterations with 40 markers, 17 % with the 22 joints, and changed the mean error
    by < 0.02 mm."""

    max_iterations: int = 30
    relative_tolerance: float = 1e-3
    absolute_tolerance: float = 1e-7
    step_tolerance: float = 1e-6
    gradient_tolerance: float = 1e-12
    initial_damping: float = 1e-3


@dataclass
class LMReport:
    """Per frame: trial steps taken, stopping test met, final cost."""

    iterations: Tensor
    converged: Tensor
    cost: Tensor


def levenberg_marquardt(
    problem: LeastSquaresProblem,
    frames: Tensor,
    options: LMOptions = LMOptions(),
    groups: list[Tensor] | None = None,
) -> LMReport:
    """Solve every frame in `frames` independently; reported per frame in the order of `frames`.

    groups (positions in `frames`) are for costs that couple neighbouring frames: the groups are
    solved in turn with all other frames held fixed (block-coordinate sweeps), so each group's
    frames are again independent; every frame is re-linearised at each visit and the solve ends when
    a whole sweep leaves every frame converged. max_iterations then counts sweeps.
    """
    if groups is None:
        return _independent(problem, frames, options)
    return _sweeps(problem, frames, groups, options)


@dataclass
class _Damping:
    """Per-frame Levenberg-Marquardt damping mu and its growth factor nu (Nielsen's rule)."""

    mu: Tensor
    nu: Tensor

    @classmethod
    def start(cls, count: int, options: LMOptions, device: torch.device) -> _Damping:
        return cls(torch.full((count,), options.initial_damping, dtype=torch.float64, device=device),
                   torch.full((count,), 2.0, dtype=torch.float64, device=device))

    def select(self, rows: Tensor) -> _Damping:
        return _Damping(self.mu[rows], self.nu[rows])


CPU_CHUNK = 128  # frames per `linearize` call and per step solve on the CPU: temporaries stay small and cache-resident


def _by_chunks(count: int, device: torch.device, work: Callable[[slice], tuple[Tensor, ...]]) -> tuple[Tensor, ...]:
    """work(part) over `count` frames, CPU_CHUNK at a time on the CPU (where fresh large temporaries
    cost page faults) and all at once elsewhere (where each call costs launches); the per-frame
    results joined in frame order."""
    chunk = CPU_CHUNK if device.type == "cpu" else max(count, 1)
    parts = [work(slice(start, start + chunk)) for start in range(0, max(count, 1), chunk)]
    return parts[0] if len(parts) == 1 else tuple(torch.cat(values) for values in zip(*parts))


@dataclass
class _Normal:
    """Per frame at its current point: J^T J (b, n, n), J^T r (b, n) and cost (b,) float64. Only these
    are kept: the Jacobians themselves never exist for more than one chunk of frames at a time, so
    large batches touch little fresh memory."""

    matrix: Tensor
    gradient: Tensor
    cost: Tensor

    def select(self, rows: Tensor) -> _Normal:
        return _Normal(self.matrix[rows], self.gradient[rows], self.cost[rows])

    def update(self, rows: Tensor, new: _Normal) -> None:
        """Take `rows` from `new`, in place."""
        self.matrix[rows], self.gradient[rows], self.cost[rows] = new.matrix, new.gradient, new.cost


def _linearize(problem: LeastSquaresProblem, frames: Tensor) -> _Normal:
    """The normal equations of `frames`, linearised a chunk at a time (see _by_chunks)."""

    def normal_equations(part: slice) -> tuple[Tensor, Tensor, Tensor]:
        residuals, jacobian, cost = problem.linearize(frames[part])
        transposed = jacobian.transpose(1, 2)
        return transposed @ jacobian, (transposed @ residuals.unsqueeze(-1)).squeeze(-1), cost.double()

    return _Normal(*_by_chunks(len(frames), frames.device, normal_equations))


def _iterate(
    problem: LeastSquaresProblem,
    frames: Tensor,
    normal: _Normal,
    damping: _Damping,
    options: LMOptions,
) -> tuple[Tensor, Tensor, Tensor, _Damping]:
    """One trial step for each of `frames`: (accepted, done, cost after, damping after)."""
    flat = normal.gradient.abs().amax(-1) <= options.gradient_tolerance
    step, predicted = _damped_step(normal.matrix, normal.gradient, damping.mu)
    trial_cost = problem.try_step(frames, step).double()
    decrease = normal.cost - trial_cost
    accept = (decrease > 0) & torch.isfinite(trial_cost) & (predicted > 0) & ~flat
    problem.accept(accept)
    ratio = decrease / predicted.clamp_min(1e-300)
    shrink = torch.clamp(1 - (2 * ratio - 1) ** 3, min=1 / 3)
    damping = _Damping(torch.where(accept, damping.mu * shrink, damping.mu * damping.nu),
                       torch.where(accept, torch.full_like(damping.nu, 2.0), damping.nu * 2))
    cost = torch.where(accept, trial_cost, normal.cost)
    small_decrease = accept & (decrease <= options.relative_tolerance * cost + options.absolute_tolerance)
    small_step = step.abs().amax(-1) <= options.step_tolerance
    return accept, flat | small_decrease | small_step, cost, damping


def _independent(problem: LeastSquaresProblem, frames: Tensor, options: LMOptions) -> LMReport:
    count, device = len(frames), frames.device
    report = LMReport(torch.zeros(count, dtype=torch.long, device=device),
                      torch.zeros(count, dtype=torch.bool, device=device),
                      torch.full((count,), float("nan"), dtype=torch.float64, device=device))
    active = torch.arange(count, device=device)  # positions in `frames` still being solved
    normal = _linearize(problem, frames)
    damping = _Damping.start(count, options, device)
    for iteration in range(options.max_iterations):
        accept, done, cost, damping = _iterate(problem, frames[active], normal, damping, options)
        normal.cost = cost
        report.iterations[active] += 1
        report.converged[active] = done
        report.cost[active] = cost
        keep = ~done
        if iteration + 1 == options.max_iterations or not bool(keep.any()):
            break
        # Finished frames leave the batch; rejected ones keep their linearisation and only raise mu.
        if not bool(keep.all()):
            active, damping, accept, normal = active[keep], damping.select(keep), accept[keep], normal.select(keep)
        if bool(accept.all()):
            normal = _linearize(problem, frames[active])
        elif bool(accept.any()):
            moved = torch.nonzero(accept).squeeze(1)
            normal.update(moved, _linearize(problem, frames[active[moved]]))
    return report


def _sweeps(problem: LeastSquaresProblem, frames: Tensor, groups: list[Tensor], options: LMOptions) -> LMReport:
    count, device = len(frames), frames.device
    report = LMReport(torch.zeros(count, dtype=torch.long, device=device),
                      torch.zeros(count, dtype=torch.bool, device=device),
                      torch.full((count,), float("nan"), dtype=torch.float64, device=device))
    damping = _Damping.start(count, options, device)
    for _ in range(options.max_iterations):
        for group in groups:
            _, done, cost, group_damping = _iterate(
                problem, frames[group], _linearize(problem, frames[group]), damping.select(group), options)
            damping.mu[group], damping.nu[group] = group_damping.mu, group_damping.nu
            report.iterations[group] += 1
            report.converged[group] = done
            report.cost[group] = cost
        if bool(report.converged.all()):
            break
    return report


def _damped_step(normal: Tensor, gradient: Tensor, damping: Tensor) -> tuple[Tensor, Tensor]:
    """Step h (b, n) from (J^T J + mu D) h = -g, and the decrease the linear model predicts, a chunk
    of frames at a time (see _by_chunks: a whole batch's float64 copies and factors are fresh pages)."""
    return _by_chunks(len(normal), normal.device,
                      lambda part: _damped_chunk(normal[part], gradient[part], damping[part]))


def _damped_chunk(normal: Tensor, gradient: Tensor, damping: Tensor) -> tuple[Tensor, Tensor]:
    """_damped_step for one chunk. An unknown no residual depends on gets a tiny positive D (clamped)
    and a zero gradient, so h = 0."""
    dtype = gradient.dtype
    normal = normal.to(torch.float64, copy=True)  # the caller's J^T J is kept for a retry with more damping
    gradient64 = gradient.double()
    diagonal = normal.diagonal(dim1=-2, dim2=-1)
    scale = diagonal.clamp_min(1e-9 * diagonal.amax(-1, keepdim=True).clamp_min(1e-30))
    diagonal += damping.unsqueeze(-1) * scale  # in place: normal becomes J^T J + mu D
    factor, info = torch.linalg.cholesky_ex(normal)
    step = -torch.cholesky_solve(gradient64.unsqueeze(-1), factor).squeeze(-1)
    step = torch.where((info == 0).unsqueeze(-1) & torch.isfinite(step), step, torch.zeros_like(step))
    # L(0) - L(h) = -g.h - h.(J^T J)h / 2 = h.(mu D h - g) / 2
    predicted = 0.5 * (step * (damping.unsqueeze(-1) * scale * step - gradient64)).sum(-1)
    return step.to(dtype), predicted
