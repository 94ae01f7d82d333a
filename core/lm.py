"""Batched Levenberg-Marquardt where every frame is its own small least-squares problem.

Minimising one batch-mean loss couples the frames through the shared line search and stopping
test, so a batch converges like its worst frame. Here each frame has its own damping, its own
accept/reject and its own stopping test, and finished frames leave the batch, so the work shrinks as
frames converge and one hard frame never holds back or perturbs the others.

The solver knows nothing about bodies: a problem exposes `linearize`, `try_step` and `accept` over
a subset of frames (see `LeastSquaresProblem`). Steps solve the damped normal equations
(J^T J + mu D) h = -J^T r per frame (D: the clamped diagonal of J^T J, Marquardt's scaling) by
Cholesky in float64, and mu follows Nielsen's gain-ratio rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor


class LeastSquaresProblem(Protocol):
    """What the solver needs; `frames` index the batch, the problem keeps each frame's point."""

    def linearize(self, frames: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """At the frames' current points: residuals (b, m), Jacobian (b, m, n), cost (b,), and
        whether the Jacobian is exact (b,) rather than a cheaper approximation (e.g. a secant
        update). The exact cost's gradient must be J^T r (for robust costs r may be IRLS-weighted).
        A frame only stops on an exact linearisation; an approximate one is redone after a
        rejected step, and the problem should make it exact when steps become small."""

    def try_step(self, frames: Tensor, step: Tensor) -> Tensor:
        """Cost (b,) at the frames' points moved by step (b, n); remembered until `accept`."""

    def accept(self, keep: Tensor) -> None:
        """Move the frames of the last `try_step` where keep (b,) is True to their trial points."""


@dataclass(frozen=True)
class LMOptions:
    """Stopping and damping. A frame stops when an accepted step lowers its cost by less than
    relative_tolerance * cost + absolute_tolerance, when a step's largest component is below
    step_tolerance (radians, metres or latent units), or when its gradient's largest component is
    below gradient_tolerance; or after max_iterations trial steps (not converged)."""

    max_iterations: int = 30
    relative_tolerance: float = 1e-3
    absolute_tolerance: float = 1e-10
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


def _iterate(
    problem: LeastSquaresProblem,
    frames: Tensor,
    residuals: Tensor,
    jacobian: Tensor,
    cost: Tensor,
    exact: Tensor,
    damping: _Damping,
    options: LMOptions,
) -> tuple[Tensor, Tensor, Tensor, _Damping]:
    """One trial step for each of `frames`: (accepted, done, cost after, damping after)."""
    gradient = (jacobian.transpose(1, 2) @ residuals.unsqueeze(-1)).squeeze(-1)
    flat = gradient.abs().amax(-1) <= options.gradient_tolerance
    step, predicted = _damped_step(jacobian, gradient, damping.mu)
    trial_cost = problem.try_step(frames, step).double()
    decrease = cost - trial_cost
    accept = (decrease > 0) & torch.isfinite(trial_cost) & (predicted > 0) & ~flat
    problem.accept(accept)
    ratio = decrease / predicted.clamp_min(1e-300)
    shrink = torch.clamp(1 - (2 * ratio - 1) ** 3, min=1 / 3)
    damping = _Damping(torch.where(accept, damping.mu * shrink, damping.mu * damping.nu),
                       torch.where(accept, torch.full_like(damping.nu, 2.0), damping.nu * 2))
    cost = torch.where(accept, trial_cost, cost)
    small_decrease = accept & (decrease <= options.relative_tolerance * cost + options.absolute_tolerance)
    small_step = step.abs().amax(-1) <= options.step_tolerance
    return accept, (flat | small_decrease | small_step) & exact, cost, damping


def _independent(problem: LeastSquaresProblem, frames: Tensor, options: LMOptions) -> LMReport:
    count, device = len(frames), frames.device
    report = LMReport(torch.zeros(count, dtype=torch.long, device=device),
                      torch.zeros(count, dtype=torch.bool, device=device),
                      torch.full((count,), float("nan"), dtype=torch.float64, device=device))
    active = torch.arange(count, device=device)  # positions in `frames` still being solved
    residuals, jacobian, cost, exact = problem.linearize(frames)
    cost = cost.double()
    damping = _Damping.start(count, options, device)
    for iteration in range(options.max_iterations):
        accept, done, cost, damping = _iterate(problem, frames[active], residuals, jacobian, cost, exact, damping,
                                               options)
        report.iterations[active] += 1
        report.converged[active] = done
        report.cost[active] = cost
        keep = ~done
        if iteration + 1 == options.max_iterations or not bool(keep.any()):
            break
        # Finished frames leave the batch; rejected ones keep an exact linearisation and only raise mu.
        if not bool(keep.all()):
            active, damping, accept = active[keep], damping.select(keep), accept[keep]
            residuals, jacobian, cost, exact = residuals[keep], jacobian[keep], cost[keep], exact[keep]
        redo = accept | ~exact
        if bool(redo.all()):
            residuals, jacobian, cost, exact = problem.linearize(frames[active])
            cost = cost.double()
        elif bool(redo.any()):
            moved = torch.nonzero(redo).squeeze(1)
            new_residuals, new_jacobian, new_cost, new_exact = problem.linearize(frames[active[moved]])
            residuals, jacobian, cost, exact = residuals.clone(), jacobian.clone(), cost.clone(), exact.clone()
            residuals[moved], jacobian[moved], cost[moved] = new_residuals, new_jacobian, new_cost.double()
            exact[moved] = new_exact
    return report


def _sweeps(problem: LeastSquaresProblem, frames: Tensor, groups: list[Tensor], options: LMOptions) -> LMReport:
    count, device = len(frames), frames.device
    report = LMReport(torch.zeros(count, dtype=torch.long, device=device),
                      torch.zeros(count, dtype=torch.bool, device=device),
                      torch.full((count,), float("nan"), dtype=torch.float64, device=device))
    damping = _Damping.start(count, options, device)
    for _ in range(options.max_iterations):
        for group in groups:
            residuals, jacobian, cost, exact = problem.linearize(frames[group])
            _, done, cost, group_damping = _iterate(
                problem, frames[group], residuals, jacobian, cost.double(), exact, damping.select(group), options)
            damping.mu[group], damping.nu[group] = group_damping.mu, group_damping.nu
            report.iterations[group] += 1
            report.converged[group] = done
            report.cost[group] = cost
        if bool(report.converged.all()):
            break
    return report


def _damped_step(jacobian: Tensor, gradient: Tensor, damping: Tensor) -> tuple[Tensor, Tensor]:
    """Step h (b, n) from (J^T J + mu D) h = -g, and the decrease the linear model predicts. An
    unknown no residual depends on gets a tiny positive D (clamped) and a zero gradient, so h = 0."""
    normal = (jacobian.transpose(1, 2) @ jacobian).double()
    gradient64 = gradient.double()
    diagonal = normal.diagonal(dim1=-2, dim2=-1)
    scale = diagonal.clamp_min(1e-9 * diagonal.amax(-1, keepdim=True).clamp_min(1e-30))
    diagonal += damping.unsqueeze(-1) * scale  # in place: normal becomes J^T J + mu D
    factor, info = torch.linalg.cholesky_ex(normal)
    step = -torch.cholesky_solve(gradient64.unsqueeze(-1), factor).squeeze(-1)
    step = torch.where((info == 0).unsqueeze(-1) & torch.isfinite(step), step, torch.zeros_like(step))
    # L(0) - L(h) = -g.h - h.(J^T J)h / 2 = h.(mu D h - g) / 2
    predicted = 0.5 * (step * (damping.unsqueeze(-1) * scale * step - gradient64)).sum(-1)
    return step.to(jacobian.dtype), predicted
