"""The IK objective's residual terms, one at a time, through IKSolver.objective.

Each term's analytic Jacobian is checked against central differences of its own residuals (robust
data terms: J^T r against differences of the cost, since their residuals carry IRLS weights held
at the point); the solver's linearisation is the terms' values stacked; and a term written outside
core (an orthographic 2D projection consuming the keypoint positions) plugs in as one more term.
"""

from __future__ import annotations

import pytest
import torch
from ik_testing import small_body, smooth_prior, targets_for

from core.ik import IKSolver, IKState, IKWeights, Stage
from core.ik_terms import At, Term, TermValue
from core.keypoints import KeypointSet, sample_surface
from core.rotations import axis_angle_to_matrix

STEP = 1e-6


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """An SMPL-X layout (test_ik's terms run on SMPL-H): hands, and a jaw and eyes no term reaches."""
    return small_body(tmp_path_factory.mktemp("body"), kind="smplx")


@pytest.fixture(scope="module")
def prior():
    return smooth_prior(seed=2)


def _start(model, prior, count: int, seed: int = 3) -> tuple[IKState, torch.Tensor]:
    """A random start: every joint turned (so the joint-limit hinges are active somewhere), with a
    prior a random latent whose decoding differs from the given body rotations (held joints are
    then held far from where the decoding puts them), and targets some 20 cm off the body's."""
    generator = torch.Generator().manual_seed(seed)
    rotations = axis_angle_to_matrix(0.8 * torch.randn(count, model.num_joints, 3, generator=generator,
                                                       dtype=model.dtype))
    transl = 0.3 * torch.randn(count, 3, generator=generator, dtype=model.dtype)
    latent = None if prior is None else torch.randn(count, prior.latent_dim, generator=generator, dtype=model.dtype)
    betas = 0.5 * torch.randn(count, model.num_betas, generator=generator, dtype=model.dtype)
    return IKState(rotations, transl, latent, betas), generator


def _objective(model, prior, keypoints, weights, count=2, stay=(), pins=(), unknowns=("orient", "transl", "pose",
                                                                                       "hands", "betas")):
    state, generator = _start(model, prior, count)
    targets = targets_for(keypoints, state.rotations, state.transl, state.betas)
    targets = targets + 0.2 * torch.randn(targets.shape, generator=generator, dtype=model.dtype)
    solver = IKSolver(model, keypoints, prior, weights=weights, unknowns=unknowns)
    return solver.objective(targets, init=state, stay=stay, pins=pins, stage=Stage(unknowns, prior=prior is not None))


def _differences(objective, rows: torch.Tensor, of_cost: bool = False) -> dict[str, torch.Tensor]:
    """Central differences of each term's residuals (b, m, N), or of its cost (b, N), at step 0."""
    columns: dict[str, list[torch.Tensor]] = {}
    for column in range(objective.size):
        step = torch.zeros(len(rows), objective.size, dtype=objective.model.dtype)
        step[:, column] = STEP
        ahead = objective.term_values(step, rows, jacobian=False)
        behind = objective.term_values(-step, rows, jacobian=False)
        for name in ahead:
            field = "cost" if of_cost else "residuals"
            difference = (getattr(ahead[name], field) - getattr(behind[name], field)) / (2 * STEP)
            columns.setdefault(name, []).append(difference)
    return {name: torch.stack(values, -1) for name, values in columns.items()}


def _check_terms(objective, names: set[str]) -> None:
    rows = torch.arange(objective.targets.shape[0])
    values = objective.term_values(rows=rows)
    assert set(values) == names
    numeric = _differences(objective, rows)
    for name, value in values.items():
        assert value.jacobian.shape == (*value.residuals.shape, objective.size), name
        assert bool(value.jacobian.abs().sum() > 0), f"{name}: an all-zero Jacobian tests nothing"
        torch.testing.assert_close(value.cost, 0.5 * (value.residuals ** 2).sum(-1), msg=name)
        torch.testing.assert_close(value.jacobian, numeric[name], atol=1e-7, rtol=0, msg=name)


def test_raw_rotation_terms_match_differences(model):
    """Data (plain squares, surface markers), shape prior, joint limits and stay over every
    unknown block, the body pose as raw rotations."""
    weights = IKWeights(robust="l2", betas=0.1, joint_limits=1.0, stay=1.0)
    objective = _objective(model, None, sample_surface(model, 30, offset=0.01), weights,
                           stay=("left_knee", "right_elbow", "left_wrist"))
    assert objective.layout.prior is None and "latent" not in objective.columns
    _check_terms(objective, {"data", "betas", "joint_limits", "stay"})


def test_prior_terms_match_differences(model, prior):
    """With the prior: the latent prior, and stay joints held far from the decoded pose."""
    weights = IKWeights(robust="l2", latent=0.1, joint_limits=1.0, stay=1.0)
    objective = _objective(model, prior, KeypointSet.named(model, "body22"), weights,
                           stay=("right_knee", "left_elbow", "spine2"), unknowns=("orient", "transl", "pose"))
    turn = objective.term_values()["stay"].residuals.abs().amax()
    assert turn > 0.5, "held joints should start far from the decoding"
    _check_terms(objective, {"data", "latent", "joint_limits", "stay"})


@pytest.mark.parametrize("robust", ["gm", "huber"])
def test_robust_data_gradient_matches_differences(model, robust):
    """A robust data term's J^T r is its cost's gradient (IRLS), targets beyond the loss's scale included."""
    objective = _objective(model, None, KeypointSet.named(model, "body22"),
                           IKWeights(robust=robust, robust_scale=0.1), unknowns=("orient", "transl", "pose"))
    rows = torch.arange(2)
    value = objective.term_values(rows=rows)["data"]
    points = objective.evaluate(rows, objective.state, jacobian=False).points
    assert bool(((points - objective.targets).norm(dim=-1) > 0.2).any()), "no target beyond the loss's scale"
    gradient = (value.jacobian.transpose(1, 2) @ value.residuals.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(gradient, _differences(objective, rows, of_cost=True)["data"], atol=1e-7, rtol=0)


def test_smoothness_term_matches_differences_and_accelerations(model, prior):
    """Over five frames, each frame's smoothness residuals (its neighbours held) are the body joints'
    accelerations centred at it and its neighbours (from the model's own forward), and their
    Jacobian matches differences moving that frame alone."""
    weights = IKWeights(smoothness=4.0)
    objective = _objective(model, prior, KeypointSet.named(model, "body22"), weights, count=5,
                           unknowns=("orient", "transl", "pose"))
    state = objective.state
    joints = model.forward_rotations(state.rotations, state.betas, None, state.transl).joints[:, :22]
    joints = joints + objective.centre.unsqueeze(1)  # world coordinates: the frames' centres differ
    acceleration = joints[:-2] - 2 * joints[1:-1] + joints[2:]  # centred at frames 1, 2, 3
    for frame in range(5):
        rows = torch.tensor([frame])
        value = objective.term_values(rows=rows)["smoothness"]
        blocks = value.residuals.view(3, 22, 3)  # centred at frame - 1, frame, frame + 1
        for offset in range(3):
            centre = frame - 1 + offset
            expected = 2.0 * acceleration[centre - 1] if 1 <= centre <= 3 else torch.zeros(22, 3, dtype=model.dtype)
            torch.testing.assert_close(blocks[offset], expected)
        torch.testing.assert_close(value.jacobian, _differences(objective, rows)["smoothness"], atol=1e-7, rtol=0)
    whole = objective.terms[-1].sequence_cost(joints)
    torch.testing.assert_close(whole, 0.5 * 4.0 * (acceleration ** 2).sum())


def test_linearisation_stacks_the_terms(model, prior):
    """What LM is given is the terms' residuals stacked in order and their costs summed."""
    weights = IKWeights(latent=0.1, joint_limits=1.0, stay=1.0)
    objective = _objective(model, prior, sample_surface(model, 20), weights, stay=("left_knee",),
                           unknowns=("orient", "transl", "pose"))
    rows = torch.arange(2)
    residuals, jacobian, cost = objective.linearize(rows)
    values = list(objective.term_values(rows=rows).values())
    torch.testing.assert_close(residuals, torch.cat([value.residuals for value in values], 1))
    torch.testing.assert_close(jacobian, torch.cat([value.jacobian for value in values], 1))
    torch.testing.assert_close(cost, sum(value.cost for value in values))


class _Orthographic(Term):
    """A 2D term written outside core: the keypoints seen along -z (pixels = metres * scale)."""

    name = "image"
    needs = frozenset({"points"})

    def __init__(self, pixels: torch.Tensor, scale: float) -> None:
        super().__init__()
        self.pixels, self.scale = pixels, scale

    def value(self, at: At) -> TermValue:
        residuals = (self.scale * at.points[..., :2] - self.pixels[at.rows]).flatten(1)
        jacobian = None if not at.jacobian else (self.scale * at.d_points[:, :, :2]).flatten(1, 2)
        return TermValue(0.5 * (residuals ** 2).sum(-1).double(), residuals, jacobian)


def test_a_term_consuming_keypoint_positions_plugs_in(model, prior):
    """A term reading the shared keypoint positions and their Jacobian needs no change to the
    objective: its Jacobian matches differences, and the linearisation includes it."""
    objective = _objective(model, prior, sample_surface(model, 20), IKWeights(),
                           unknowns=("orient", "transl", "pose"))
    pixels = torch.randn(2, 20, 2, generator=torch.Generator().manual_seed(8), dtype=model.dtype)
    objective.terms.append(_Orthographic(pixels, 10.0))
    rows = torch.arange(2)
    value = objective.term_values(rows=rows)["image"]
    torch.testing.assert_close(value.jacobian, _differences(objective, rows)["image"], atol=1e-6, rtol=0)
    residuals, _, cost = objective.linearize(rows)
    assert residuals.shape[1] == sum(v.residuals.shape[1] for v in objective.term_values(rows=rows).values())
    assert bool((cost >= value.cost).all())


def test_layout_leaves_pinned_joints_out(model):
    """Pinned joints get no unknowns (raw rotations); held joints and limit joints do."""
    weights = IKWeights(joint_limits=1.0, stay=1.0)
    objective = _objective(model, None, KeypointSet.named(model, "effectors"), weights,
                           stay=("left_wrist",), pins=("pelvis", "left_knee"),
                           unknowns=("orient", "transl", "pose"))
    layout = objective.layout
    turned = set(layout.moving.tolist())
    names = model.joint_names
    assert names.index("left_knee") not in turned and "orient" not in layout.columns
    assert {names.index("left_wrist"), names.index("right_knee"), names.index("spine1")} <= turned
    assert layout.size == 3 + 3 * len(layout.raw_joints["pose"])
