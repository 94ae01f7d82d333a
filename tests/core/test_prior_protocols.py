"""The pose-prior protocols (core/prior_protocols.py) on hand-computable cases, and their use in
scripts/eval_prior.py and scripts/eval_ik.py."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from core.body_model import BodyModel
from core.ik import IKWeights
from core.prior_protocols import (
    LEFT_LEG,
    RIGHT_ARM,
    ProtocolError,
    average_pairwise_distance,
    body_joints,
    complete,
    denoise,
    expected_noise_mpjpe,
    geodesic_error,
    mean_part_completion,
    moved_joints,
)
from core.rotations import axis_angle_to_matrix
from core.synthetic_models import write_model
from core.vposer import VPoser

EXACT = IKWeights(latent=0.0, joint_limits=0.0)  # nothing but the data: an exact pose is an exact minimum
SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A small synthetic body and a small random prior (a known, fixed decoder)."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("protocols")
    body = BodyModel.from_file(write_model(folder / "b.npz", "smplh", num_vertices=200, num_faces=300))
    body = body.eval().requires_grad_(False)
    torch.manual_seed(0)
    prior = VPoser(num_neurons=32, latent_dim=4).eval().requires_grad_(False)
    return body, prior


def _prior_poses(prior: VPoser, n: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    return prior.decode_matrix(prior.sample_latent(n, seed=seed) * scale)


def test_average_pairwise_distance_of_a_known_set():
    # One joint per pose at 0, (0.3, 0, 0) and (0, 0.4, 0): pair distances 0.3, 0.4, 0.5 -> mean 0.4.
    joints = torch.tensor([[[0.0, 0.0, 0.0]], [[0.3, 0.0, 0.0]], [[0.0, 0.4, 0.0]]])
    assert average_pairwise_distance(joints) == pytest.approx(0.4)
    assert average_pairwise_distance(joints, chunk=1) == pytest.approx(0.4)
    # Two joints: the per-pair value is the mean joint distance; identical poses add nothing.
    two = torch.tensor([[[0.0, 0, 0], [0, 0, 0]], [[0.2, 0, 0], [0, 0, 0]]])
    assert average_pairwise_distance(two) == pytest.approx(0.1)
    assert average_pairwise_distance(torch.zeros(5, 22, 3)) == 0.0
    with pytest.raises(ProtocolError, match="at least 2 poses, got 1"):
        average_pairwise_distance(joints[:1])


def test_geodesic_error_of_known_rotations():
    x = torch.tensor([1.0, 0, 0])
    a = axis_angle_to_matrix(torch.stack([x * math.radians(10), x * math.radians(70)]))
    b = axis_angle_to_matrix(torch.stack([x * math.radians(40), torch.tensor([0, 0, math.radians(25)])]))
    angles = torch.rad2deg(geodesic_error(a, b))
    assert angles[0] == pytest.approx(30.0, abs=1e-3)
    # Rx(70) against Rz(25): cos(theta) = (trace(Rx(70)^T Rz(25)) - 1) / 2.
    c70, c25 = math.cos(math.radians(70)), math.cos(math.radians(25))
    expected = math.degrees(math.acos((c25 + c25 * c70 + c70 - 1) / 2))
    assert angles[1] == pytest.approx(expected, abs=1e-3)


def test_moved_joints_are_the_descendants_of_the_hidden_rotations():
    assert moved_joints(LEFT_LEG) == [4, 7, 10]  # left knee, ankle, foot: not the left hip joint itself
    assert moved_joints(RIGHT_ARM) == [17, 19, 21]  # right shoulder, elbow, wrist
    assert moved_joints(["spine3"]) == [12, 13, 14, 15, 16, 17, 18, 19, 20, 21]
    assert moved_joints(["left_foot"]) == []
    with pytest.raises(ProtocolError, match="unknown body joints \\['left_toe'\\]"):
        moved_joints(["left_toe"])


def test_completion_with_nothing_hidden_is_the_fit_reconstruction(setup):
    body, prior = setup
    truth = body_joints(body, _prior_poses(prior, 8, seed=3))
    result = complete(body, prior, truth, (), starts=2, seed=2, weights=EXACT)  # starts: seeds 2 and 3
    assert result.scored == tuple(body.joint_names[:22])
    # Every joint is seen: from the true latent (seed 3) the fit stays exact, so the best start
    # reconstructs every pose; the other start may end in a local minimum of this small random decoder.
    assert float(result.best.max()) < 1e-4
    assert torch.all(result.best <= result.mean + 1e-9)


def test_completion_from_the_true_latent_keeps_the_hidden_leg(setup):
    body, prior = setup
    # The poses are the prior's decodes of the very latents the first seeded start draws: the
    # start is the answer, the visible joints hold it there, so the hidden leg stays right.
    truth = body_joints(body, _prior_poses(prior, 6, seed=11))
    result = complete(body, prior, truth, LEFT_LEG, starts=1, seed=11, weights=EXACT)
    assert result.scored == ("left_knee", "left_ankle", "left_foot")
    assert float(result.mean.max()) < 2e-3
    # Other starts see the same visible joints but a different leg: the mean gets worse, best does not.
    several = complete(body, prior, truth, LEFT_LEG, starts=3, seed=9, weights=EXACT)  # seeds 9, 10, 11
    assert float(several.best.max()) < 2e-3 < float(several.mean.mean())


def test_completion_by_the_mean_part_scores_the_hidden_joints_only(setup):
    """Reference poses that all share one left leg: a pose with that leg is completed exactly, a pose
    whose leg differs is off by exactly what that leg moves (the rest untouched, the knee, ankle and
    foot scored); with hips bent +-0.4 rad about x in the reference, the mean is the straight hip."""
    body, prior = setup
    poses = _prior_poses(prior, 6, seed=5)
    leg = [body.joint_names.index(name) - 1 for name in LEFT_LEG]
    reference = _prior_poses(prior, 10, seed=6)
    reference[:, leg] = poses[0, leg]
    errors = mean_part_completion(body, poses, reference, LEFT_LEG)
    moved = poses.clone()
    moved[:, leg] = poses[0, leg]
    scored = moved_joints(LEFT_LEG)
    expected = (body_joints(body, moved) - body_joints(body, poses))[:, scored].norm(dim=-1).mean(-1)
    torch.testing.assert_close(errors, expected)
    assert float(errors[0]) < 1e-6 and float(errors[1:].min()) > 1e-3
    bent = reference[:2].clone()
    hip = leg[0]
    bent[:, hip] = axis_angle_to_matrix(torch.tensor([[0.4, 0.0, 0.0], [-0.4, 0.0, 0.0]]))
    straight = poses[:1].clone()
    straight[:, hip] = torch.eye(3)
    straight[:, leg[1:]] = bent[0, leg[1:]]
    assert float(mean_part_completion(body, straight, bent, LEFT_LEG)[0]) < 1e-6
    with pytest.raises(ProtocolError, match="moves no body joint"):
        mean_part_completion(body, poses, reference, ("left_foot",))


def test_denoising_error_against_the_clean_joints(setup):
    body, prior = setup
    truth = body_joints(body, _prior_poses(prior, 40, seed=2, scale=0.5))
    fitted, noisy = denoise(body, prior, truth, sigma=0.0, weights=EXACT)
    assert float(noisy.max()) == 0.0  # no noise: the fit (cold start) is exact but for the odd local minimum
    assert float(fitted.median()) < 1e-4 and float(fitted.max()) < 0.05
    fitted, noisy = denoise(body, prior, truth, sigma=0.04, seed=1)
    # 40 x 22 noisy 3D points: their mean distance is close to the Maxwell mean 2 sqrt(2 / pi) sigma.
    assert float(noisy.mean()) == pytest.approx(expected_noise_mpjpe(0.04), rel=0.05)
    assert expected_noise_mpjpe(1.0) == pytest.approx(1.5958, abs=1e-4)
    assert float(fitted.mean()) < float(noisy.mean())  # a body cannot follow every noisy joint
    again, _ = denoise(body, prior, truth, sigma=0.04, seed=1)
    torch.testing.assert_close(again, fitted)  # seeded


def test_eval_prior_reports_the_protocols(setup):
    body, prior = setup
    eval_prior = _script("eval_prior")
    poses = prior.sample(30, seed=4).numpy()
    metrics = eval_prior.evaluate(prior, body, poses, samples=30, seed=4)
    # The samples are the data: the same 30 poses, so the same pairwise distance.
    assert metrics["apd_mm"] == pytest.approx(metrics["data_apd_mm"], rel=1e-5)
    assert metrics["apd_mm"] > 0
    protocols = eval_prior.evaluate_protocols(prior, body, poses, count=5, starts=2, seed=7)
    for key in ("completion_leg_mm", "completion_leg_best_of_10_mm", "completion_arm_mm", "completion_arm_best_of_10_mm",
                "denoise_40_mm", "denoise_100_mm"):
        assert math.isfinite(protocols[key]) and protocols[key] >= 0, key
    assert protocols["completion_leg_best_of_10_mm"] <= protocols["completion_leg_mm"] + 1e-6
    info = protocols["protocols"]
    assert info["poses"] == 5 and info["completion_seeds"] == [7, 8] and info["denoise_seed"] == 7
    assert info["completion_leg_scored"] == ["left_knee", "left_ankle", "left_foot"]
    assert protocols["denoise_40_input_mm"] == pytest.approx(1000 * expected_noise_mpjpe(0.04), rel=0.25)
    assert "reference_completion_leg_mm" not in protocols
    # The reference is the data: every pose's leg is the data's mean leg only where all legs agree.
    same = eval_prior.evaluate_protocols(prior, body, np.repeat(poses[:1], 5, 0), count=5, starts=1, seed=7,
                                         reference=np.repeat(poses[:1], 3, 0), noise_mm=())
    assert same["reference_completion_leg_mm"] < 1e-3 and same["reference_completion_arm_mm"] < 1e-3  # float32 poses
    other = eval_prior.evaluate_protocols(prior, body, poses, count=5, starts=1, seed=7, reference=poses[5:], noise_mm=())
    assert other["reference_completion_leg_mm"] > 1.0


def test_protocol_baselines_recover_what_the_training_poses_hold(setup):
    """Held-out poses that are training poses: the nearest neighbour (k = 1) completes the hidden
    part exactly; every estimator's error is finite and the noisy input's is about 1.6 sigma."""
    body, prior = setup
    script = _script("protocol_baselines")
    poses = prior.sample(40, seed=8).numpy().astype(np.float64)
    result = script.baselines(body, poses[:10], poses, count=10, neighbours=1, epochs=1, seed=3)
    assert result["poses"] == 10 and result["train_poses"] == 40 and result["completion_leg_mlp_train_mm"] >= 0
    assert result["completion_leg_knn_mm"] < 1e-3 and result["completion_arm_knn_mm"] < 1e-3
    for key in ("completion_leg_mean_part_mm", "completion_leg_ridge_mm", "completion_leg_mlp_mm",
                "completion_arm_mlp_mm", "denoise_40_mlp_mm"):
        assert math.isfinite(result[key]) and result[key] >= 0, key
    assert result["denoise_40_input_mm"] == pytest.approx(1000 * expected_noise_mpjpe(0.04), rel=0.25)
    # ridge on a part that is an exact linear function of what is seen: exact
    seen = torch.randn(30, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    hidden = seen @ torch.tensor([[1.0, -2.0, 0.5], [0.0, 1.0, 1.0], [3.0, 0.0, -1.0], [0.2, 0.2, 0.2]],
                                 dtype=torch.float64) + 0.7
    torch.testing.assert_close(script.ridge(seen, hidden, seen[:5], 0.0), hidden[:5])


def test_eval_ik_body_geodesic_ignores_the_root():
    eval_ik = _script("eval_ik")
    truth = torch.eye(3).expand(2, 52, 3, 3).clone()
    solved = truth.clone()
    solved[:, 0] = axis_angle_to_matrix(torch.tensor([0.0, math.pi / 2, 0.0]))  # the root: not scored
    solved[0, 5] = axis_angle_to_matrix(torch.tensor([0.0, 0.0, math.radians(42.0)]))
    solved[1, 30] = axis_angle_to_matrix(torch.tensor([math.radians(50.0), 0.0, 0.0]))  # a finger: not scored
    angles = eval_ik.body_geodesic_deg(solved, truth)
    np.testing.assert_allclose(angles.numpy(), [42.0 / 21, 0.0], atol=1e-3)
