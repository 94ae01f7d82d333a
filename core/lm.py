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

Frames tied by a term of the sequence (smoothness) are solved together by `solve_coupled`: the
same per-frame linearisations plus the coupled term's (`Coupling`), one step for the whole
sequence from its block-banded normal equations (`solve_block_banded`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Generator, Protocol, TypeVar

import torch
from torch import Tensor

Result = TypeVar("Result")


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


def levenberg_marquardt(problem: LeastSquaresProblem, frames: Tensor, options: LMOptions = LMOptions()) -> LMReport:
    """Solve every frame in `frames` independently; reported per frame in the order of `frames`.
    (Frames coupled by a term of the sequence: solve_coupled.)"""
    return _independent(problem, frames, options)


@dataclass
class Coupling:
    """A term that ties neighbouring frames, linearised over a whole sequence of T frames: its
    residuals are a fixed stencil over per-frame features f_t (m,) (e.g. body joint positions),

        r_k = root * sum_s coefficients[s] * f_{k+s},   k = 0 .. T-S   (S = len(coefficients)),

    so its Jacobian is the stencil applied to the features' Jacobians F_t = d f_t / d h_t. Kept
    as F (T, m, n) and the stencil, never as a (T m) x (T n) matrix. residuals (T-S+1, m); cost
    0.5 * ||r||^2 (float64 scalar)."""

    features: Tensor
    coefficients: tuple[float, ...]
    root: float
    residuals: Tensor | None
    cost: Tensor | None

    @property
    def reach(self) -> int:
        """How many frames apart two frames can share a residual."""
        return len(self.coefficients) - 1

    def stencil(self, values: Tensor) -> Tensor:
        """(T, ...) per-frame values -> (T-S+1, ...) root * sum_s c_s values[k+s]."""
        count = values.shape[0] - self.reach
        return self.root * sum(c * values[s:s + count] for s, c in enumerate(self.coefficients))

    def adjoint(self, values: Tensor) -> Tensor:
        """The stencil's transpose: (T-S+1, ...) -> (T, ...)."""
        count = values.shape[0]
        out = values.new_zeros(count + self.reach, *values.shape[1:])
        for s, c in enumerate(self.coefficients):
            out[s:s + count] += (self.root * c) * values
        return out

    def gradient(self) -> Tensor:
        """J^T r (T, n)."""
        return torch.einsum("tmn,tm->tn", self.features, self.adjoint(self.residuals))

    def diagonal_blocks(self) -> Tensor:
        """The diagonal (n, n) blocks of J^T J: (T, n, n)."""
        return self._pair_weights(0)[:, None, None] * self.features.transpose(1, 2) @ self.features

    def off_diagonal_blocks(self, distance: int) -> Tensor:
        """The (n, n) blocks of J^T J between frames t and t + distance: (T - distance, n, n)."""
        return (self._pair_weights(distance)[:, None, None]
                * self.features[:-distance].transpose(1, 2) @ self.features[distance:])

    def _pair_weights(self, distance: int) -> Tensor:
        """(T - distance,): for frames t and t + distance, root^2 sum_k c_(t-k) c_(t+distance-k) over the
        residual rows k both enter."""
        rows, frames = self.residuals.shape[0], self.features.shape[0]
        weights = self.features.new_zeros(frames - distance)
        for s, c in enumerate(self.coefficients[:len(self.coefficients) - distance]):
            weights[s:s + rows] += self.root ** 2 * c * self.coefficients[s + distance]
        return weights


class CoupledProblem(LeastSquaresProblem, Protocol):
    """A problem whose cost is the sum of per-frame costs (`linearize` and `try_step` leave the
    coupled terms out) and of coupled terms over the whole sequence."""

    def coupling(self) -> list[Coupling]:
        """The coupled terms linearised at the current points (each frame's last `linearize`)."""

    def trial_coupling_cost(self, keep: Tensor) -> Tensor:
        """The coupled terms' cost (float64 scalar) with the frames where keep (b,) is True at their
        points of the last `try_step`, the others at their current points."""


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


def solve_coupled(problem: CoupledProblem, frames: Tensor, options: LMOptions = LMOptions()) -> LMReport:
    """LM over the whole sequence at once (coupled_steps, run to its end)."""
    return finish(coupled_steps(problem, frames, options))


def coupled_steps(problem: CoupledProblem, frames: Tensor, options: LMOptions = LMOptions()
                  ) -> Generator[int, None, LMReport]:
    """LM over the whole sequence at once, for the sum of every frame's cost and the coupled terms'.

    The normal matrix is block-banded (each frame with its stencils' neighbours): the damped step
    is solved exactly by a block-banded Cholesky (solve_block_banded), and an iteration costs about
    one linearisation of every frame. Each step moves every frame knowing how its neighbours
    move (solving frames in turn with their neighbours held, as block-coordinate sweeps do, needs
    many more linearisations: docs/benchmarks.md).

    Damping stays per frame, as in the independent solver: where the whole step does not lower the
    total, the frames whose own cost it lowered are moved alone if that lowers the total (the
    coupled cost of any mix of old and new points is cheap to evaluate); the other frames are damped
    more. Only moved frames are linearised again. max_iterations counts trial steps; the report
    gives every frame the sequence's iterations and stopping test, and its own cost without the
    coupled terms.

    A generator, so that a caller can show progress and stop between steps (a long video's whole
    solve is many seconds): it yields the trial steps taken so far after each one and returns the
    report. Closed early, it leaves the problem at its last accepted point."""
    count, device = len(frames), frames.device
    normal = _linearize(problem, frames)
    couplings = problem.coupling()
    reach = max(c.reach for c in couplings)
    total = normal.cost.sum() + sum((c.cost for c in couplings), normal.cost.new_zeros(()))
    damping = _Damping.start(count, options, device)
    everything = torch.ones(count, dtype=torch.bool, device=device)
    iterations, converged = 0, False
    system = _coupled_system(normal, couplings, reach, count)
    for _ in range(options.max_iterations):
        gradient, blocks, upper, scale = system
        if float(gradient.abs().amax()) <= options.gradient_tolerance:
            converged = True
            break
        damped = damping.mu[:, None] * scale
        blocks = blocks.clone()
        blocks.diagonal(dim1=-2, dim2=-1).add_(damped)
        step = solve_block_banded(blocks, upper, -gradient)
        iterations += 1
        accepted, keep = False, torch.zeros(count, dtype=torch.bool, device=device)
        if step is not None and bool(torch.isfinite(step).all()):
            # L(0) - L(h) = -g.h - h.(J^T J)h / 2 = h.(mu D h - g) / 2 for the exact damped step
            predicted = 0.5 * (step * (damped * step - gradient)).sum()
            trial = problem.try_step(frames, step.to(normal.gradient.dtype)).double()
            keep = everything
            trial_total = trial.sum() + problem.trial_coupling_cost(keep)
            if not bool(trial_total < total):  # move only the frames the step helped, if that helps
                keep = trial < normal.cost
                if bool(keep.any()):
                    trial_total = torch.where(keep, trial, normal.cost).sum() + problem.trial_coupling_cost(keep)
            decrease = total - trial_total
            accepted = bool(decrease > 0) and bool(torch.isfinite(trial_total)) and bool(predicted > 0)
        if not accepted:
            keep = torch.zeros_like(keep)
        ratio = float(decrease / predicted) if accepted else 0.0
        shrink = max(1 / 3, 1 - (2 * ratio - 1) ** 3)
        damping = _Damping(torch.where(keep, damping.mu * shrink, damping.mu * damping.nu),
                           torch.where(keep, torch.full_like(damping.nu, 2.0), damping.nu * 2))
        if accepted:
            problem.accept(keep)
            total = trial_total
            normal.cost = torch.where(keep, trial, normal.cost)  # the report's, should the solve stop here
            if float(decrease) <= options.relative_tolerance * float(total) + options.absolute_tolerance * count:
                converged = True
                break
            moved = torch.nonzero(keep).squeeze(1)
            normal.update(moved, _linearize(problem, frames[moved]))
            couplings = problem.coupling()
            system = _coupled_system(normal, couplings, reach, count)  # a rejected step reuses it
        if step is not None and float(step.abs().amax()) <= options.step_tolerance:
            converged = True
            break
        yield iterations
    return LMReport(torch.full((count,), iterations, dtype=torch.long, device=device),
                    torch.full((count,), converged, dtype=torch.bool, device=device), normal.cost)


def finish(steps: Generator[Any, None, Result]) -> Result:
    """Run a generator of steps (coupled_steps, IKSolver.solve_steps) to its end: its return value."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value


def inference_steps(steps: Generator[Any, None, Result]) -> Generator[Any, None, Result]:
    """steps run under torch.inference_mode, entered anew for each of them: a mode entered once
    around a generator would stay on in the caller's code between its steps. Closing it closes steps."""
    try:
        while True:
            with torch.inference_mode():
                try:
                    progress = next(steps)
                except StopIteration as stop:
                    return stop.value
            yield progress
    finally:
        steps.close()


def map_steps(steps: Generator[Any, None, Result], progress: Callable[[Any], Any]) -> Generator[Any, None, Result]:
    """steps with each yield passed through `progress` (e.g. a stage's trial steps turned into a
    caller's count); returns their result. Closing it closes steps."""
    try:
        while True:
            try:
                value = next(steps)
            except StopIteration as stop:
                return stop.value
            yield progress(value)
    finally:
        steps.close()


def counted_on(steps: Generator[int, None, Result], earlier: int) -> Generator[int, None, tuple[Result, int]]:
    """steps that yield their trial steps so far, yielding `earlier` more (the steps of stages
    before them); returns their result and their own last count. Closing it closes steps."""
    taken = 0

    def count(steps_so_far: int) -> int:
        nonlocal taken
        taken = steps_so_far
        return earlier + steps_so_far

    result = yield from map_steps(steps, count)
    return result, taken


def _coupled_system(normal: _Normal, couplings: list[Coupling], reach: int, count: int
                    ) -> tuple[Tensor, Tensor, list[Tensor], Tensor]:
    """The whole sequence's undamped normal equations at the current points, float64: gradient
    (T, n), diagonal blocks (T, n, n), the blocks above them (see solve_block_banded) and Marquardt's
    scale (T, n), the clamped diagonal."""
    gradient = normal.gradient.double() + sum(c.gradient().double() for c in couplings)
    blocks = normal.matrix.double() + sum(c.diagonal_blocks().double() for c in couplings)
    upper = [sum(c.off_diagonal_blocks(d).double() for c in couplings if d <= c.reach)
             for d in range(1, min(reach, count - 1) + 1)]
    diagonal = blocks.diagonal(dim1=-2, dim2=-1)
    scale = diagonal.clamp_min(1e-9 * diagonal.amax(-1, keepdim=True).clamp_min(1e-30))
    return gradient, blocks, upper, scale


def solve_block_banded(diagonal: Tensor, upper: list[Tensor], rhs: Tensor) -> Tensor | None:
    """x (T, n) with H x = rhs for a symmetric positive definite H given by its diagonal blocks
    (T, n, n) and its blocks above them, upper[d - 1] (T - d, n, n) = H[t, t + d] for d = 1..D;
    None where H is not positive definite. Frames are grouped by D into super-blocks, which makes
    H block-tridiagonal; its block Cholesky factor is built and applied one super-block at a time
    (2 T / D small dense steps), in H's dtype."""
    frames, size = rhs.shape
    reach = max(1, len(upper))
    groups = -(-frames // reach)
    padded = groups * reach
    # per-frame blocks padded to whole super-blocks (padding frames: identity, uncoupled, x = 0)
    padded_diagonal = torch.eye(size, dtype=diagonal.dtype, device=diagonal.device).repeat(padded, 1, 1)
    padded_diagonal[:frames] = diagonal
    padded_upper = []  # padded_upper[d - 1][t] = H[t, t + d]
    for d, blocks in enumerate(upper, start=1):
        full = diagonal.new_zeros(padded, size, size)
        full[:max(0, frames - d)] = blocks[:max(0, frames - d)]
        padded_upper.append(full)
    zero = diagonal.new_zeros(groups, size, size)

    def block(row: int, column: int) -> Tensor:  # H[row + i reach, column + i reach] for every super-block i
        offset = column - row
        if offset == 0:
            return padded_diagonal[row::reach]
        if 0 < offset <= len(upper):
            return padded_upper[offset - 1][row::reach][:groups]
        if 0 < -offset <= len(upper):
            return padded_upper[-offset - 1][column::reach][:groups].mT
        return zero

    def grid(first_row: int) -> Tensor:  # (groups, reach n, reach n): rows first_row + a, columns b
        blocks = torch.stack([torch.stack([block(first_row + a, b) for b in range(reach)], 1) for a in range(reach)], 1)
        return blocks.permute(0, 1, 3, 2, 4).reshape(groups, reach * size, reach * size)

    # super-block i holds frames i * reach + a, a < reach; within[i] its (reach n)^2 block, below[i] the
    # block of super-block i + 1's rows and i's columns (rows past the end: zero)
    within, below = grid(0), grid(reach)
    right = rhs.new_zeros(padded, size)
    right[:frames] = rhs
    right = right.view(groups, reach * size, 1)
    # factor and forward substitution together: L_i L_i^T = within_i - C_i C_i^T, C_i = below_{i-1} L_{i-1}^-T
    factors, couplings, forward, failed = [], [None], [], []
    for i in range(groups):
        matrix, value = within[i], right[i]
        if i:
            coupling = torch.linalg.solve_triangular(factors[-1], below[i - 1].mT, upper=False).mT
            couplings.append(coupling)
            matrix = torch.addmm(matrix, coupling, coupling.mT, alpha=-1)
            value = torch.addmm(value, coupling, forward[-1], alpha=-1)
        factor, info = torch.linalg.cholesky_ex(matrix)
        failed.append(info)
        factors.append(factor)
        forward.append(torch.linalg.solve_triangular(factor, value, upper=False))
    if bool(torch.stack(failed).any()):
        return None
    solution = [None] * groups
    for i in reversed(range(groups)):
        value = forward[i] if i == groups - 1 else torch.addmm(forward[i], couplings[i + 1].mT, solution[i + 1],
                                                                 alpha=-1)
        solution[i] = torch.linalg.solve_triangular(factors[i].mT, value, upper=True)
    return torch.cat(solution).view(padded, size)[:frames]
