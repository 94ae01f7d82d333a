"""VPoser training loop: a short run on synthetic poses and a tiny synthetic body."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from core import train as train_module
from core.rotations import axis_angle_to_matrix
from core.synthetic_models import write_model
from core.train import (
    BODY_PARTS,
    TrainConfig,
    Trainer,
    geodesic_mean,
    load_pose_folder,
    mix_parts,
    noise_scales,
    pick_vertices,
    rotation_noise,
)
from core.vposer import load_vposer


def _write_poses(folder, files: int, frames: int, seed: int) -> None:
    """Poses on a 4-dimensional manifold (plus a little noise), like correlated joint motion."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(99).normal(0, 0.25, (4, 63))
    for i in range(files):
        z = rng.normal(size=(frames, 4))
        poses = np.zeros((frames, 156))
        poses[:, 3:66] = z @ basis + rng.normal(0, 0.01, (frames, 63))
        poses[:, :3] = rng.normal(0, 1, 3)  # global orientation: ignored by training
        np.savez(folder / f"clip_{i}.npz", poses=poses, trans=np.zeros((frames, 3)), betas=np.zeros(16),
                 mocap_framerate=30.0)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks: one thread is fastest, and the test runner already runs workers in parallel."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    _write_poses(root / "train", files=3, frames=100, seed=0)
    _write_poses(root / "val", files=1, frames=60, seed=1)
    body = write_model(root / "body.npz", "smplh", num_vertices=300, num_faces=500)
    return root, body


def _config(root, body, out, **overrides) -> TrainConfig:
    options = dict(
        train_dir=str(root / "train"), val_dir=str(root / "val"), out_dir=str(out), body=str(body),
        epochs=3, batch_size=32, num_neurons=64, latent_dim=8, train_vertices=100, extra_terms_until_epoch=2,
        val_max_frames=50, progress=False, plot=False, seed=0,
    )
    options.update(overrides)
    return TrainConfig(**options)


def test_load_pose_folder_takes_body_joints(setup):
    root, _ = setup
    data = load_pose_folder(root / "train")
    assert data.poses.shape == (300, 63) and data.frames_per_file == [100, 100, 100]
    assert load_pose_folder(root / "train", frame_stride=4).poses.shape == (75, 63)
    with np.load(root / "train" / "clip_0.npz") as npz:
        np.testing.assert_allclose(data.poses[:100].numpy(), npz["poses"][:, 3:66], atol=1e-6)


def test_vertex_pick_is_fixed_and_distinct():
    a, b = pick_vertices(1000, 50, seed=3), pick_vertices(1000, 50, seed=3)
    assert torch.equal(a, b) and len(set(a.tolist())) == 50
    assert torch.equal(pick_vertices(10, 50), torch.arange(10))


def test_body_parts_cover_every_body_joint_once():
    assert sorted(j for part in BODY_PARTS for j in part) == list(range(21))
    assert BODY_PARTS[1] == (2, 5, 8, 11, 14)  # spine1 spine2 spine3 neck head (SMPL index - 1)


def test_mix_parts_takes_whole_parts_from_poses_of_the_batch():
    poses = torch.arange(40 * 63, dtype=torch.float32).view(40, 63)  # every value unique
    mixed = mix_parts(poses, 1.0, torch.Generator().manual_seed(3)).view(40, 21, 3)
    source = poses.view(40, 21, 3)
    swapped = 0
    for i in range(40):
        for part in BODY_PARTS:
            joints = list(part)
            donors = [k for k in range(40) if torch.equal(mixed[i, joints], source[k, joints])]
            assert len(donors) == 1  # the part is one pose's part, whole
            swapped += donors[0] != i
    assert 40 < swapped < 120  # about half of the 160 parts (a partner may be the pose itself)
    assert torch.equal(mix_parts(poses, 0.0, torch.Generator().manual_seed(3)), poses)
    again = mix_parts(poses, 1.0, torch.Generator().manual_seed(3)).view(40, 21, 3)
    assert torch.equal(again, mixed)


def test_joint_noise_perturbs_only_the_named_joints_by_their_scale():
    scales = noise_scales(0.0, {"left_wrist": 20.0})
    assert scales[19] == pytest.approx(math.radians(20)) and scales.count_nonzero() == 1
    poses = 0.3 * torch.randn(4000, 63, generator=torch.Generator().manual_seed(0))
    noisy = rotation_noise(poses, scales, torch.Generator().manual_seed(1)).view(-1, 21, 3)
    still = [j for j in range(21) if j != 19]
    torch.testing.assert_close(noisy[:, still], poses.view(-1, 21, 3)[:, still], atol=1e-5, rtol=0)
    # the wrist's change is a rotation by exp(N(0, sigma^2 I)): its angle has mean sigma * sqrt(8 / pi)
    change = axis_angle_to_matrix(poses.view(-1, 21, 3)[:, 19]).transpose(-1, -2) @ axis_angle_to_matrix(noisy[:, 19])
    angle = torch.acos(((change.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1))
    assert float(angle.mean()) == pytest.approx(math.radians(20) * math.sqrt(8 / math.pi), rel=0.05)
    with pytest.raises(ValueError, match="wrist"):
        noise_scales(5.0, {"wrist": 10.0})


def test_geodesic_mean_is_the_rotation_angle():
    angles = torch.tensor([0.0, 0.1, 1.0, 3.0])
    axis = torch.nn.functional.normalize(torch.tensor([[1.0, 2.0, -0.5]]), dim=-1)
    a = axis_angle_to_matrix(torch.randn(4, 3) * 0.7)
    b = a @ axis_angle_to_matrix(axis * angles[:, None])
    for i, angle in enumerate(angles):
        assert float(geodesic_mean(a[i:i + 1], b[i:i + 1])) == pytest.approx(float(angle), abs=1e-3)
    b.requires_grad_(True)
    geodesic_mean(a, b).backward()
    assert torch.isfinite(b.grad).all()


def test_training_lowers_loss_writes_outputs_and_resumes(setup, tmp_path):
    root, body = setup
    out = tmp_path / "run"
    summary = train_module.train(_config(root, body, out, epochs=3, plot=True, reset_at_switch=True))
    assert summary["epochs"] == 3
    for name in ("best.pt", "last_state.pt", "history.json", "loss_curves.png"):
        assert (out / name).is_file(), name
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["loss_kl"] + history[-1]["loss_mesh_rec"] < history[0]["loss_kl"] + history[0]["loss_mesh_rec"]
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    assert all(math.isfinite(h["val_recon_v2v_mm"]) for h in history)
    assert history[0]["matrot"] > 0 and history[2]["matrot"] == 0  # extra terms only before epoch 2
    assert summary["best_epoch"] == 3  # model selection restarts when the objective changes

    model = load_vposer(out / "best.pt")
    assert model.latent_dim == 8 and model.metadata["train_frames"] == 300
    assert model.metadata["epoch"] == summary["best_epoch"]
    state = torch.load(out / "last_state.pt", weights_only=True)
    assert state["epoch"] == 3 and len(state["history"]) == 3

    # Resume for two more epochs: the history continues from the saved epoch.
    resumed = train_module.train(_config(root, body, out, epochs=5, resume=str(out / "last_state.pt"),
                                         reset_at_switch=True))
    assert resumed["epochs"] == 5
    history2 = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history2] == [1, 2, 3, 4, 5]
    assert history2[:3] == history


def test_resume_matches_an_uninterrupted_run(setup, tmp_path):
    root, body = setup
    straight = train_module.train(_config(root, body, tmp_path / "a", epochs=2))
    train_module.train(_config(root, body, tmp_path / "b", epochs=1))
    resumed = train_module.train(_config(root, body, tmp_path / "b", epochs=2,
                                         resume=str(tmp_path / "b" / "last_state.pt")))
    a = json.loads((tmp_path / "a" / "history.json").read_text())
    b = json.loads((tmp_path / "b" / "history.json").read_text())
    assert b[1]["loss_total"] == pytest.approx(a[1]["loss_total"], rel=1e-4)
    assert resumed["best_val_loss"] == pytest.approx(straight["best_val_loss"], rel=1e-4)


def test_time_budget_sizes_epochs(setup, tmp_path):
    root, body = setup
    trainer = Trainer(_config(root, body, tmp_path / "c", epochs=2, max_minutes=0.002, min_epochs=2, batch_size=16,
                              rotation_noise_deg=2.0, part_mix=0.5))
    trainer.run()
    assert trainer.samples_per_epoch is not None and trainer.samples_per_epoch < 300


@pytest.mark.parametrize("kind", ["smplh", "smplx", "smpl"])
def test_body_poser_matches_forward_rotations(tmp_path, kind):
    from core.body_model import BodyModel
    from core.train import BodyPoser, full_rotations

    body = BodyModel.from_file(write_model(tmp_path / f"{kind}.npz", kind, num_vertices=200, num_faces=300))
    ids = pick_vertices(body.num_vertices, 60, seed=1)
    matrices = axis_angle_to_matrix(torch.randn(5, 21, 3, generator=torch.Generator().manual_seed(0)) * 0.6)
    reference = body.forward_rotations(full_rotations(matrices, body.num_joints), vertex_ids=ids,
                                       return_vertices=False)
    vertices, joints = BodyPoser(body, ids)(matrices)
    torch.testing.assert_close(vertices, reference.vertices, atol=1e-5, rtol=0)
    torch.testing.assert_close(joints, reference.joints, atol=1e-5, rtol=0)
    full_vertices, _ = BodyPoser(body)(matrices)
    torch.testing.assert_close(full_vertices[:, ids], vertices, atol=1e-5, rtol=0)


def test_eval_prior_metrics(tmp_path):
    import importlib.util
    from pathlib import Path

    from core.body_model import BodyModel
    from core.vposer import VPoser

    script = Path(__file__).resolve().parents[2] / "scripts" / "eval_prior.py"
    spec = importlib.util.spec_from_file_location("eval_prior", script)
    eval_prior = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(eval_prior)

    body = BodyModel.from_file(write_model(tmp_path / "b.npz", "smplh", num_vertices=200, num_faces=300))
    torch.manual_seed(0)
    model = VPoser(num_neurons=32, latent_dim=4).eval()
    samples = model.sample(50, seed=5).numpy()
    metrics = eval_prior.evaluate(model, body, samples, samples=50, seed=5)
    assert set(metrics) >= {"frames", "recon_v2v_mm", "recon_mpjpe_mm", "sample_to_data_mm", "data_to_sample_mm"}
    assert metrics["frames"] == 50 and math.isfinite(metrics["recon_v2v_mm"])
    # The data are the samples themselves: every sample has an exact twin and vice versa.
    assert metrics["sample_to_data_mm"] < 1e-3 and metrics["data_to_sample_mm"] < 1e-3
