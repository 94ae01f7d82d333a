"""The 2D fit (core.fit2d) and its IK term (core.reprojection.Reprojection2D): a known pose projected
exactly is recovered from two views and from one, the front/back ambiguity picks the right facing,
and the term's Jacobian through the public objective matches central differences. CPU only."""

from __future__ import annotations

import math

import pytest
import torch
from ik_testing import posed, small_body, smooth_prior

from core.cameras import Cameras
from core.fit2d import Fit2DError, Fit2DOptions, Fit2DRun, fit_2d, procrustes_errors

EXACT = Fit2DOptions(latent=1e-7)  # exact pixels: the prior only has to pick among exact fits
from core.ik import IKError, IKSolver, IKState, Stage
from core.keypoints import NUM_BODY_JOINTS, KeypointSet
from core.reprojection import Reprojection, Reprojection2D
from core.rotations import axis_angle_to_matrix

STEP = 1e-6


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return small_body(tmp_path_factory.mktemp("body"))


@pytest.fixture(scope="module")
def prior():
    return smooth_prior(seed=2, spread=0.3)


@pytest.fixture(scope="module")
def keypoints(model):
    return KeypointSet.from_joints(model, model.joint_names[:NUM_BODY_JOINTS])


def _truth(model, prior, keypoints, count: int, seed: int, heading: torch.Tensor | None = None):
    """Known poses (prior samples, upright, turned about Y by `heading` radians (default random))
    about 4 m in front of cameras at the origin, and their joints (T, K, 3)."""
    rotations, latent, _ = posed(model, prior, count, seed=seed, temperature=0.7)
    generator = torch.Generator().manual_seed(seed)
    if heading is None:
        heading = (torch.rand(count, generator=generator) * 2 - 1) * math.pi
    axis = torch.zeros(count, 3, dtype=model.dtype)
    axis[:, 1] = heading.to(model.dtype)
    rotations[:, 0] = axis_angle_to_matrix(axis)
    transl = torch.zeros(count, 3, dtype=model.dtype)
    with torch.no_grad():
        points = keypoints.evaluate(rotations, None, transl)
    return IKState(rotations, transl, latent), points


def _cameras(eyes) -> Cameras:
    eyes = torch.as_tensor(eyes, dtype=torch.float64)
    return Cameras.look_at(eyes, torch.zeros_like(eyes), 1500.0, (1920, 1080))


def test_two_views_recover_a_known_pose(model, prior, keypoints):
    _, truth = _truth(model, prior, keypoints, 4, seed=5)
    cameras = _cameras([[0.0, 0.3, 4.0], [4.0, 0.3, 0.0]])  # 90 degrees apart
    pixels = cameras.project(truth.unsqueeze(1))  # (T, 2, K, 2)
    fit = fit_2d(IKSolver(model, keypoints, prior), cameras, pixels, options=EXACT)
    errors = (fit.result.points - truth).norm(dim=-1)
    assert float(errors.max()) < 0.005
    assert float(fit.reproj_px.max()) < 0.5


def test_one_view_fits_the_pixels_and_a_sensible_body(model, prior, keypoints):
    _, truth = _truth(model, prior, keypoints, 4, seed=7)
    cameras = _cameras([0.0, 0.3, 4.0])
    pixels = cameras.project(truth)
    fit = fit_2d(IKSolver(model, keypoints, prior), cameras, pixels, options=EXACT)
    assert float(fit.reproj_px.max()) < 1.0
    assert float(procrustes_errors(fit.result.points, truth).mean(1).max()) < 0.05
    assert fit.poses.shape == (4, 3 * model.num_joints) and fit.transl.shape == (4, 3)


@pytest.mark.parametrize("heading", [math.pi, 0.5 * math.pi - 0.15, -0.5 * math.pi + 0.15])
def test_front_back_ambiguity_picks_the_right_facing(model, prior, keypoints, heading):
    """Turned away, or nearly edge-on to the camera at +Z: the fitted body faces where the truth does."""
    state, truth = _truth(model, prior, keypoints, 1, seed=11, heading=torch.tensor([heading]))
    cameras = _cameras([0.0, 0.2, 4.0])
    fit = fit_2d(IKSolver(model, keypoints, prior), cameras, cameras.project(truth), options=EXACT)
    front = fit.result.rotations[0, 0, :, 2]  # the body's +Z (its front) in the world
    expected = state.rotations[0, 0, :, 2]
    assert float(front @ expected) > math.cos(math.radians(30))
    assert float(fit.reproj_px.max()) < 1.0


def test_reprojection_term_jacobian_matches_finite_differences(model, prior, keypoints):
    state, truth = _truth(model, prior, keypoints, 2, seed=13)
    generator = torch.Generator().manual_seed(0)
    cameras = _cameras([[0.5, 0.3, 4.0], [3.0, 1.0, -2.0]])
    pixels = cameras.project(truth.unsqueeze(1)) + 40 * torch.randn(2, 2, len(keypoints), 2, generator=generator,
                                                                      dtype=torch.float64)
    start = IKState(state.rotations.clone(), state.transl + torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64),
                    state.latent + 0.3)
    solver = IKSolver(model, keypoints, prior)
    rows = torch.arange(2)
    for robust in ("l2", "gm"):
        term = Reprojection2D(keypoints, cameras, Reprojection(pixels, robust=robust, scale=30.0, weight=1e-5))
        objective = solver.objective(None, init=start, terms=[term], stage=Stage(("orient", "transl", "pose")))
        value = objective.term_values(rows=rows)["reprojection"]
        numeric_cost, numeric_residuals = [], []
        for column in range(objective.size):
            step = torch.zeros(2, objective.size, dtype=torch.float64)
            step[:, column] = STEP
            ahead = objective.term_values(step, rows, jacobian=False)["reprojection"]
            behind = objective.term_values(-step, rows, jacobian=False)["reprojection"]
            numeric_cost.append((ahead.cost - behind.cost) / (2 * STEP))
            numeric_residuals.append((ahead.residuals - behind.residuals) / (2 * STEP))
        assert float(value.jacobian.abs().sum()) > 0
        gradient = torch.einsum("bmn,bm->bn", value.jacobian, value.residuals)
        torch.testing.assert_close(gradient, torch.stack(numeric_cost, -1), atol=1e-7, rtol=1e-5)
        if robust == "l2":  # plain squares: the residuals themselves differentiate to the Jacobian
            torch.testing.assert_close(value.jacobian, torch.stack(numeric_residuals, -1), atol=1e-7, rtol=1e-5)


def test_bad_inputs_are_refused(model, prior, keypoints):
    solver = IKSolver(model, keypoints, prior)
    cameras = _cameras([0.0, 0.3, 4.0])
    with pytest.raises(Fit2DError, match="expected"):
        fit_2d(solver, cameras, torch.zeros(2, 5, 2))
    few = torch.full((1, len(keypoints), 2), float("nan"))
    few[0, :2] = 900.0
    with pytest.raises(Fit2DError, match="fewer than 3"):
        fit_2d(solver, cameras, few)
    with pytest.raises(IKError, match="targets=None"):
        solver.solve(None)


def test_several_views_of_a_sequence_keep_the_refinement_beyond_the_prior(model, prior, keypoints):
    """Two views pin every joint: the raw-rotation refinement reaches a pose the prior cannot
    decode (an elbow turned off its decoding), and the sequence's temporal stage must not undo it."""
    heading = torch.linspace(0.2, 0.4, 5)
    state, _ = _truth(model, prior, keypoints, 5, seed=29, heading=heading)
    state.rotations[:, 1:] = state.rotations[:1, 1:]  # one body pose, turning slowly
    elbow = model.joint_names.index("left_elbow")
    state.rotations[:, elbow] = state.rotations[:, elbow] @ axis_angle_to_matrix(
        torch.tensor([0.0, 0.0, 0.8], dtype=model.dtype))
    with torch.no_grad():
        truth = keypoints.evaluate(state.rotations, None, state.transl)
    cameras = _cameras([[0.0, 0.3, 4.0], [4.0, 0.3, 0.0]])
    fit = fit_2d(IKSolver(model, keypoints, prior), cameras, cameras.project(truth.unsqueeze(1)), sequence=True)
    assert fit.result.smoothness > 0
    assert float((fit.result.points - truth).norm(dim=-1).max()) < 0.005


def test_a_smooth_sequence_is_fitted_with_the_temporal_term(model, prior, keypoints):
    """One pose turning slowly: the sequence's temporal stage runs (its cost is reported) and the
    fit still lands on the pixels."""
    heading = torch.linspace(0.2, 0.5, 6)
    state, truth = _truth(model, prior, keypoints, 6, seed=17, heading=heading)
    state.rotations[:, 1:] = state.rotations[:1, 1:]  # the same body pose in every frame
    with torch.no_grad():
        truth = keypoints.evaluate(state.rotations, None, state.transl)
    cameras = _cameras([0.0, 0.3, 4.0])
    options = Fit2DOptions(latent=1e-7, smoothness=0.02)
    fit = fit_2d(IKSolver(model, keypoints, prior), cameras, cameras.project(truth), sequence=True, options=options)
    assert fit.result.smoothness > 0
    assert float(fit.reproj_px.max()) < 1.0
    assert float(procrustes_errors(fit.result.points, truth).mean(1).max()) < 0.05


def test_a_sequence_s_first_temporal_steps_use_the_stiffer_term(model, prior, keypoints):
    """The temporal stage's first coarse_iterations steps weigh the temporal term coarse_smoothness
    times: run alone, a stiff one smooths the joints' jitter that noisy pixels leave, a factor 1
    does not."""
    heading = torch.linspace(0.2, 0.5, 8)
    state, truth = _truth(model, prior, keypoints, 8, seed=23, heading=heading)
    state.rotations[:, 1:] = state.rotations[:1, 1:]  # one pose turning slowly: hardly any acceleration
    with torch.no_grad():
        truth = keypoints.evaluate(state.rotations, None, state.transl)
    cameras = _cameras([0.0, 0.3, 4.0])
    pixels = cameras.project(truth) + 4.0 * torch.randn(truth.shape[:-1] + (2,), generator=torch.Generator().manual_seed(3),
                                                         dtype=truth.dtype)
    solver = IKSolver(model, keypoints, prior)

    def jitter(factor: float) -> float:
        options = Fit2DOptions(latent=1e-7, smoothness=0.02, smooth_iterations=4, coarse_iterations=4,
                               coarse_smoothness=factor)
        points = fit_2d(solver, cameras, pixels, sequence=True, options=options).result.points
        return float((points[2:] - 2 * points[1:-1] + points[:-2]).norm(dim=-1).mean())

    true_jitter = float((truth[2:] - 2 * truth[1:-1] + truth[:-2]).norm(dim=-1).mean())
    plain, stiff = jitter(1.0), jitter(1e4)
    assert stiff < 0.3 * plain
    assert abs(stiff - true_jitter) < 0.1 * abs(plain - true_jitter)  # near the truth's smooth motion


def test_a_sequence_in_steps_gives_what_one_fit_gives(model, prior, keypoints):
    """Fit2DRun (the add-on's modal Fit) in chunks of 2 frames: one step per chunk, then one per LM
    step of the temporal stage, and the same poses as fit_2d over the whole sequence at once."""
    heading = torch.linspace(0.2, 0.5, 5)
    state, truth = _truth(model, prior, keypoints, 5, seed=19, heading=heading)
    cameras = _cameras([0.0, 0.3, 4.0])
    options = Fit2DOptions(latent=1e-7, smoothness=0.02)
    solver = IKSolver(model, keypoints, prior)
    whole = fit_2d(solver, cameras, cameras.project(truth), sequence=True, options=options)
    run = Fit2DRun(solver, cameras, cameras.project(truth), options=options, batch_size=2)
    with pytest.raises(Fit2DError, match="stopped after 0 of 5"):
        run.result()
    steps = list(run)
    total = 5 + options.smooth_iterations
    assert steps[:3] == [(2, total), (4, total), (5, total)] and steps[-1] == (total, total)
    temporal = [done for done, _ in steps[3:-1]]
    assert temporal == list(range(6, 6 + len(temporal))) and 1 <= len(temporal) < options.smooth_iterations
    stepped = run.result()
    assert stepped.result.smoothness > 0
    assert torch.allclose(stepped.poses, whole.poses, atol=1e-5)
    assert torch.allclose(stepped.transl, whole.transl, atol=1e-6)


def test_a_sequence_stopped_in_its_temporal_stage_gives_no_result(model, prior, keypoints):
    """Stopping a Fit2DRun during the temporal stage (the add-on's Esc) leaves it without a result."""
    state, truth = _truth(model, prior, keypoints, 5, seed=19, heading=torch.linspace(0.2, 0.5, 5))
    cameras = _cameras([0.0, 0.3, 4.0])
    run = Fit2DRun(IKSolver(model, keypoints, prior), cameras, cameras.project(truth),
                   options=Fit2DOptions(latent=1e-7, smoothness=0.02), batch_size=5)
    steps = iter(run)
    assert next(steps) == (5, run.total) and next(steps) == (6, run.total)  # the first temporal step
    steps.close()
    with pytest.raises(Fit2DError, match="stopped in its temporal stage"):
        run.result()


def test_the_shape_given_is_the_shape_fitted(model, prior, keypoints):
    """A body of another shape seen exactly: given its betas, the fit lands on the pixels with them."""
    betas = torch.linspace(-1.0, 1.0, model.num_betas, dtype=model.dtype)
    state, _ = _truth(model, prior, keypoints, 2, seed=23)
    with torch.no_grad():
        truth = keypoints.evaluate(state.rotations, betas.expand(2, -1), state.transl)
    cameras = _cameras([0.0, 0.3, 4.0])
    fit = fit_2d(IKSolver(model, keypoints, prior), cameras, cameras.project(truth), options=EXACT, betas=betas)
    assert torch.equal(fit.result.state.betas, betas.expand(2, -1))
    assert float(fit.reproj_px.max()) < 1.0


def test_the_focal_search_finds_a_video_s_focal_length(model, prior, keypoints):
    """Four frames seen at 1500 px in a 1920 x 1080 image, searched from the default guess (1920 px):
    the estimate lands within 15 % (one view shows the focal only through perspective), and the
    camera it returns is the start camera with that focal."""
    from core.fit2d import FocalSearch, estimate_focal

    _, truth = _truth(model, prior, keypoints, 4, seed=23)
    truth = truth + torch.tensor([0.0, 0.0, -3.5], dtype=truth.dtype)
    pixels = Cameras.for_image(1920, 1080, focal=1500.0).project(truth)
    start = Cameras.for_image(1920, 1080)
    estimate = estimate_focal(IKSolver(model, keypoints, prior), start, pixels, options=EXACT)
    assert abs(estimate.focal - 1500.0) < 0.15 * 1500.0, estimate.focal
    assert estimate.candidates.shape == estimate.costs.shape == (FocalSearch.candidates,)
    assert float(estimate.candidates.min()) == pytest.approx(0.5 * 1920) and \
        float(estimate.candidates.max()) == pytest.approx(2.0 * 1920)
    assert torch.allclose(estimate.camera.focal, torch.full((2,), estimate.focal, dtype=torch.float64))
    assert torch.equal(estimate.camera.rotation, start.rotation.to(estimate.camera.rotation.dtype))
    with pytest.raises(Fit2DError, match="one camera"):
        estimate_focal(IKSolver(model, keypoints, prior), _cameras([[0.0, 0.3, 4.0], [4.0, 0.3, 0.0]]), pixels)
    with pytest.raises(Fit2DError, match="low < 1 < high"):
        estimate_focal(IKSolver(model, keypoints, prior), start, pixels, search=FocalSearch(low=1.2))


def test_prior_weight_and_robust_scale_follow_the_number_of_views_unless_given():
    single, several = Fit2DOptions().for_views(True), Fit2DOptions().for_views(False)
    assert (single.latent, single.robust_scale) == Fit2DOptions.SINGLE_VIEW
    assert (several.latent, several.robust_scale) == Fit2DOptions.SEVERAL_VIEWS
    assert single.latent > several.latent and single.robust_scale < several.robust_scale  # one view leans on the prior
    given = Fit2DOptions(latent=5e-4, robust_scale=70.0)
    assert given.for_views(True) == given.for_views(False) == given


def test_photos_keep_the_better_of_their_fit_and_their_limbs_twins_fit(model, prior, keypoints):
    """Photos (no temporal stage) are fitted again from their limbs' depth twins: each keeps
    whichever fit has the lower objective, so none ends worse than without the twins, and some
    end better (exact pixels of random poses, one camera)."""
    state, truth = _truth(model, prior, keypoints, 8, seed=29)
    cameras = _cameras([0.0, 0.3, 4.0])
    solver = IKSolver(model, keypoints, prior)
    def loss(**options) -> torch.Tensor:
        return fit_2d(solver, cameras, cameras.project(truth), options=Fit2DOptions(**options)).result.loss

    without, with_twins = loss(limb_twins=False), loss()
    assert bool((with_twins <= without + 1e-12).all())
    assert bool((with_twins < 0.9 * without).any())
