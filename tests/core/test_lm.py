"""core.lm's solver over coupled frames: the block-banded solve against a dense one, a coupled
term's blocks against its dense Jacobian, and the coupled LM against the closed-form minimum of a
linear least-squares sequence, whole or a step at a time."""

import pytest
import torch

from core.lm import Coupling, LMOptions, counted_on, coupled_steps, solve_block_banded, solve_coupled


def banded(frames: int, size: int, reach: int, seed: int) -> torch.Tensor:
    """A random symmetric positive definite (frames * size)^2 matrix whose (size, size) blocks vanish
    more than `reach` frames from the diagonal."""
    generator = torch.Generator().manual_seed(seed)
    factor = torch.randn(frames * size, frames * size, generator=generator, dtype=torch.float64)
    near = (torch.arange(frames)[:, None] - torch.arange(frames)[None, :]).abs() <= reach
    mask = near.repeat_interleave(size, 0).repeat_interleave(size, 1)
    return (factor @ factor.T) * mask + frames * size * torch.eye(frames * size, dtype=torch.float64)


def blocks_of(matrix: torch.Tensor, frames: int, size: int, reach: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    view = matrix.view(frames, size, frames, size)
    diagonal = torch.stack([view[t, :, t] for t in range(frames)])
    upper = [torch.stack([view[t, :, t + d] for t in range(frames - d)]) if frames > d
             else matrix.new_zeros(0, size, size) for d in range(1, reach + 1)]
    return diagonal, upper


@pytest.mark.parametrize("frames, size, reach", [(7, 4, 2), (10, 3, 1), (9, 5, 3), (40, 6, 2), (1, 4, 2), (2, 3, 2)])
def test_the_block_banded_solve_equals_a_dense_solve(frames, size, reach):
    matrix = banded(frames, size, reach, seed=frames + size)
    rhs = torch.randn(frames, size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    solution = solve_block_banded(*blocks_of(matrix, frames, size, reach), rhs)
    expected = torch.linalg.solve(matrix, rhs.flatten()).view(frames, size)
    assert torch.allclose(solution, expected, atol=1e-12, rtol=0)


def test_the_block_banded_solve_refuses_a_matrix_that_is_not_positive_definite():
    matrix = banded(6, 3, 2, seed=0)
    matrix[4, 4] = -1.0
    diagonal, upper = blocks_of(matrix, 6, 3, 2)
    assert solve_block_banded(diagonal, upper, torch.ones(6, 3, dtype=torch.float64)) is None


@pytest.mark.parametrize("coefficients", [(1.0, -2.0, 1.0), (-1.0, 1.0), (0.5, 0.0, -1.0, 2.0)])
def test_a_couplings_blocks_are_those_of_its_dense_jacobian(coefficients):
    """residuals r_k = root * sum_s c_s f_{k+s}, features f_t = F_t h_t: J is built entry by entry."""
    frames, features, size, root = 9, 5, 4, 0.7
    generator = torch.Generator().manual_seed(3)
    jacobians = torch.randn(frames, features, size, generator=generator, dtype=torch.float64)
    values = torch.randn(frames, features, generator=generator, dtype=torch.float64)
    coupling = Coupling(jacobians, coefficients, root, None, None)
    coupling.residuals = coupling.stencil(values)
    rows = frames - len(coefficients) + 1
    dense = torch.zeros(rows, features, frames, size, dtype=torch.float64)
    expected_residuals = torch.zeros(rows, features, dtype=torch.float64)
    for k in range(rows):
        for s, c in enumerate(coefficients):
            dense[k, :, k + s] += root * c * jacobians[k + s]
            expected_residuals[k] += root * c * values[k + s]
    dense = dense.reshape(rows * features, frames * size)
    normal = (dense.T @ dense).view(frames, size, frames, size)
    assert torch.allclose(coupling.residuals, expected_residuals, atol=1e-12)
    assert torch.allclose(coupling.gradient().flatten(), dense.T @ expected_residuals.flatten(), atol=1e-12)
    assert torch.allclose(coupling.diagonal_blocks(), torch.stack([normal[t, :, t] for t in range(frames)]), atol=1e-12)
    for distance in range(1, coupling.reach + 1):
        expected = torch.stack([normal[t, :, t + distance] for t in range(frames - distance)])
        assert torch.allclose(coupling.off_diagonal_blocks(distance), expected, atol=1e-12)
    assert coupling.reach == len(coefficients) - 1


class LinearSequence:
    """0.5 sum_t |A_t x_t - b_t|^2 + 0.5 w sum_k |accel_k(C x)|^2 over frames x_t (n,): the protocol
    of core.lm.CoupledProblem, for a problem whose minimum is known in closed form."""

    def __init__(self, frames: int, size: int, weight: float, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.a = torch.randn(frames, size + 2, size, generator=generator, dtype=torch.float64)
        self.b = torch.randn(frames, size + 2, generator=generator, dtype=torch.float64)
        self.c = torch.randn(frames, 3, size, generator=generator, dtype=torch.float64)
        self.root = weight ** 0.5
        self.x = torch.zeros(frames, size, dtype=torch.float64)
        self.trial = None

    def own(self, rows, x):
        residuals = (self.a[rows] @ x.unsqueeze(-1)).squeeze(-1) - self.b[rows]
        return residuals, 0.5 * (residuals * residuals).sum(-1)

    def features(self, x):
        return (self.c @ x.unsqueeze(-1)).squeeze(-1)

    def linearize(self, rows):
        residuals, cost = self.own(rows, self.x[rows])
        return residuals, self.a[rows], cost

    def try_step(self, rows, step):
        self.trial = (rows, self.x[rows] + step)
        return self.own(rows, self.trial[1])[1]

    def accept(self, keep):
        rows, x = self.trial
        self.x[rows[keep]] = x[keep]

    def coupling(self):
        coupling = Coupling(self.c, (1.0, -2.0, 1.0), self.root, None, None)
        coupling.residuals = coupling.stencil(self.features(self.x))
        coupling.cost = 0.5 * (coupling.residuals ** 2).sum()
        return [coupling]

    def trial_coupling_cost(self, keep):
        rows, x = self.trial
        mixed = self.x.clone()
        mixed[rows[keep]] = x[keep]
        residuals = self.coupling()[0].stencil(self.features(mixed))
        return 0.5 * (residuals ** 2).sum()

    def minimum(self):
        frames, size = self.x.shape
        rows = []
        for t in range(frames):
            row = torch.zeros(self.a.shape[1], frames, size, dtype=torch.float64)
            row[:, t] = self.a[t]
            rows.append(row.flatten(1))
        for k in range(frames - 2):
            row = torch.zeros(3, frames, size, dtype=torch.float64)
            for s, c in enumerate((1.0, -2.0, 1.0)):
                row[:, k + s] = self.root * c * self.c[k + s]
            rows.append(row.flatten(1))
        jacobian = torch.cat(rows)
        rhs = torch.cat([self.b.flatten(), torch.zeros(3 * (frames - 2), dtype=torch.float64)])
        return torch.linalg.lstsq(jacobian, rhs).solution.view(frames, size)


def test_the_coupled_lm_reaches_the_minimum_of_a_linear_sequence():
    """On a linear problem the damped Gauss-Newton steps converge to the exact minimum of frames'
    own costs plus the coupled term: the block-banded solve, the coupling's blocks and the damping
    all have to be right."""
    problem = LinearSequence(frames=11, size=4, weight=3.0, seed=5)
    options = LMOptions(max_iterations=30, relative_tolerance=1e-14, absolute_tolerance=0.0, step_tolerance=1e-12)
    frames = torch.arange(11)
    report = solve_coupled(problem, frames, options)
    assert torch.allclose(problem.x, problem.minimum(), atol=1e-7)
    assert report.converged.all() and int(report.iterations[0]) < 30


def test_the_coupled_lm_in_steps_counts_its_steps_and_stops_where_it_is_closed():
    """coupled_steps yields after each trial step (1, 2, ...) and returns what solve_coupled
    returns; closed after two steps, the problem stays at the point the second step left."""
    options = LMOptions(max_iterations=30, relative_tolerance=1e-14, absolute_tolerance=0.0, step_tolerance=1e-12)
    frames = torch.arange(9)
    whole = LinearSequence(frames=9, size=3, weight=2.0, seed=7)
    report = solve_coupled(whole, frames, options)
    stepped = LinearSequence(frames=9, size=3, weight=2.0, seed=7)
    steps = coupled_steps(stepped, frames, options)
    taken = []
    while True:
        try:
            taken.append(next(steps))
        except StopIteration as stop:
            stepped_report = stop.value
            break
    assert taken == list(range(1, len(taken) + 1)) and len(taken) >= int(report.iterations[0]) - 1
    assert torch.equal(stepped_report.iterations, report.iterations)
    assert torch.equal(stepped.x, whole.x)

    stopped = LinearSequence(frames=9, size=3, weight=2.0, seed=7)
    steps = coupled_steps(stopped, frames, options)
    next(steps), next(steps)
    steps.close()
    two = LinearSequence(frames=9, size=3, weight=2.0, seed=7)
    solve_coupled(two, frames, LMOptions(max_iterations=2, relative_tolerance=1e-14, absolute_tolerance=0.0,
                                         step_tolerance=1e-12))
    assert torch.equal(stopped.x, two.x)
    assert not torch.allclose(stopped.x, whole.x, atol=1e-7)  # stopped short of the minimum


def test_a_later_stage_s_steps_count_on_from_the_earlier_ones_and_closing_closes_them():
    """counted_on adds the steps of earlier stages to a stage's own count, returns the stage's
    result with its own last count, and, closed early, closes the stage's steps."""
    options = LMOptions(max_iterations=30, relative_tolerance=1e-14, absolute_tolerance=0.0, step_tolerance=1e-12)
    frames = torch.arange(9)
    alone = LinearSequence(frames=9, size=3, weight=2.0, seed=7)
    report = solve_coupled(alone, frames, options)
    counted = LinearSequence(frames=9, size=3, weight=2.0, seed=7)
    steps = counted_on(coupled_steps(counted, frames, options), 5)
    taken = []
    while True:
        try:
            taken.append(next(steps))
        except StopIteration as stop:
            stage_report, own = stop.value
            break
    assert taken == list(range(6, 6 + len(taken))) and own == len(taken)
    assert torch.equal(stage_report.iterations, report.iterations) and torch.equal(counted.x, alone.x)

    closed = []

    def stage():
        try:
            yield 1
            yield 2
        finally:
            closed.append(True)
        return "unreached"

    steps = counted_on(stage(), 3)
    assert next(steps) == 4
    steps.close()
    assert closed == [True]
