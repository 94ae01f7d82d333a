"""VPoser v2 network and its loaders: official key layout, safe checkpoint loading, sampling."""

from __future__ import annotations

import argparse
import collections
import logging
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from core import vposer as vposer_module
from core.errors import VPoserError
from core.rotations import axis_angle_to_matrix
from core.vposer import (
    VPoser,
    VPoserLoadError,
    default_vposer_path,
    load_default_vposer,
    load_vposer,
    save_vposer,
    whiten_latent,
)

EXPECTED_SHAPES = {
    "encoder_net.1.weight": (63,),
    "encoder_net.1.bias": (63,),
    "encoder_net.1.running_mean": (63,),
    "encoder_net.1.running_var": (63,),
    "encoder_net.1.num_batches_tracked": (),
    "encoder_net.2.weight": (512, 63),
    "encoder_net.2.bias": (512,),
    "encoder_net.4.weight": (512,),
    "encoder_net.4.bias": (512,),
    "encoder_net.4.running_mean": (512,),
    "encoder_net.4.running_var": (512,),
    "encoder_net.4.num_batches_tracked": (),
    "encoder_net.6.weight": (512, 512),
    "encoder_net.6.bias": (512,),
    "encoder_net.7.weight": (512, 512),
    "encoder_net.7.bias": (512,),
    "encoder_net.8.mu.weight": (32, 512),
    "encoder_net.8.mu.bias": (32,),
    "encoder_net.8.logvar.weight": (32, 512),
    "encoder_net.8.logvar.bias": (32,),
    "decoder_net.0.weight": (512, 32),
    "decoder_net.0.bias": (512,),
    "decoder_net.3.weight": (512, 512),
    "decoder_net.3.bias": (512,),
    "decoder_net.5.weight": (126, 512),
    "decoder_net.5.bias": (126,),
}

OFFICIAL_YAML = """\
---
general:
  expr_id: V02_05
  rnd_seed: 100
logging:
  best_model_fname: ${resolve_vposer_model_fname:${logging.work_dir}}
train_parms:
  gen_optimizer:
    type: Adam
model_params:
  num_neurons : 512
  latentD : 32
"""


# Objects a Lightning checkpoint may carry in its metadata ------------------------------------


class _Config:
    """Stands for a config object of the training code (not importable by a user)."""

    def __init__(self) -> None:
        self.expr_id = "V02_05"
        self.lr = 1e-3


class _Registry(dict):
    """A dict subclass: unpickled through NEWOBJ then SETITEMS."""


class _History(list):
    """A list subclass: unpickled through NEWOBJ then APPENDS."""


class _Slotted:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 3


def _write_marker(path: str) -> None:
    Path(path).write_text("code ran")


class _Payload:
    """Unpickling this with plain pickle calls _write_marker: a stand-in for malicious code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return _write_marker, (self.marker,)


# Helpers ---------------------------------------------------------------------------------------


def _random_model(seed: int) -> VPoser:
    """A VPoser with random weights and non-trivial BatchNorm statistics, in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    model = VPoser()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                tensor.fill_(1000 + seed)
            elif name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)
    return model.eval()


def _lightning_checkpoint(model: VPoser, epoch: int, extra: dict | None = None) -> dict:
    state_dict = {f"vp_model.{key}": value.clone() for key, value in model.state_dict().items()}
    state_dict["bm_train.v_template"] = torch.zeros(10, 3)  # the trainer's body model: ignored
    return {
        "epoch": epoch,
        "global_step": 1000 * epoch,
        "pytorch-lightning_version": "1.1.0",
        "state_dict": state_dict,
        "callbacks": {"ModelCheckpoint": {"best_model_score": torch.tensor(0.03)}},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-3}]}],
        "lr_schedulers": [{"patience": 5}],
        "hyper_parameters": {"expr_id": "V02_05", **(extra or {})},
    }


def _assert_same_outputs(a: VPoser, b: VPoser) -> None:
    pose = torch.randn(5, 63, generator=torch.Generator().manual_seed(7)) * 0.5
    z = torch.randn(5, 32, generator=torch.Generator().manual_seed(8))
    qa, qb = a.encode(pose), b.encode(pose)
    assert torch.equal(qa.mean, qb.mean) and torch.equal(qa.scale, qb.scale)
    assert torch.equal(a.decode_matrix(z), b.decode_matrix(z))


@pytest.fixture
def release(tmp_path: Path) -> tuple[Path, VPoser, Path]:
    """An official-style release folder: (folder, the epoch-13 model, marker path)."""
    folder = tmp_path / "V02_05"
    snapshots = folder / "snapshots"
    snapshots.mkdir(parents=True)
    (folder / "V02_05.yaml").write_text(OFFICIAL_YAML)
    marker = tmp_path / "marker.txt"
    best = _random_model(13)
    extra = {
        "config": _Config(),
        "args": argparse.Namespace(batch_size=256, gpus=1),
        "paths": {"work_dir": "/somewhere/V02_05", "dataset_id": "V02_03"},
        "containers": [_Registry(a=1), _History([1, 2]), _Slotted(), collections.defaultdict(list, b=[2])],
        "payload": _Payload(marker),
    }
    torch.save(_lightning_checkpoint(best, 13, extra), snapshots / "V02_05_epoch=13_val_loss=0.03.ckpt")
    # Older snapshots with other weights: one sorts after epoch=13 by name, one is the newest file.
    torch.save(_lightning_checkpoint(_random_model(9), 9), snapshots / "V02_05_epoch=9_val_loss=0.05.ckpt")
    older = snapshots / "V02_05_epoch=08_val_loss=0.03.ckpt"
    torch.save(_lightning_checkpoint(_random_model(8), 8, {"config": _Config()}), older)
    os.utime(older, (2e9, 2e9))
    return folder, best, marker


# Network ---------------------------------------------------------------------------------------


def test_parameter_count_and_state_dict_layout():
    model = VPoser()
    assert sum(p.numel() for p in model.parameters()) == 936_252
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == EXPECTED_SHAPES
    assert model.num_joints == 21 and model.config == {"num_neurons": 512, "latent_dim": 32}


def test_encode_decode_shapes_and_forward():
    model = _random_model(1)
    pose = torch.randn(4, 63) * 0.3
    q_z = model.encode(pose)
    assert isinstance(q_z, torch.distributions.Normal)
    assert q_z.mean.shape == (4, 32) and bool((q_z.scale > 0).all())
    assert torch.equal(model.encode(pose.view(4, 21, 3)).mean, q_z.mean)
    decoded = model.decode(q_z.mean)
    assert decoded["pose_body"].shape == (4, 63)
    assert decoded["pose_body_matrot"].shape == (4, 21, 3, 3)
    assert model.decode_axis_angle(q_z.mean).shape == (4, 63)
    out = model.train()(pose)
    assert set(out) == {"pose_body", "pose_body_matrot", "poZ_body_mean", "poZ_body_std", "q_z"}
    assert out["pose_body"].shape == (4, 63)


def test_decoded_rotations_are_proper_and_axis_angle_matches():
    model = _random_model(2)
    z = torch.randn(16, 32, generator=torch.Generator().manual_seed(0)) * 3
    decoded = model.decode(z)
    matrot = decoded["pose_body_matrot"].double()
    eye = torch.eye(3, dtype=torch.float64).expand_as(matrot)
    torch.testing.assert_close(matrot.transpose(-1, -2) @ matrot, eye, atol=1e-5, rtol=0)
    ones = torch.ones(16, 21, dtype=torch.float64)
    torch.testing.assert_close(torch.linalg.det(matrot), ones, atol=1e-5, rtol=0)
    rebuilt = axis_angle_to_matrix(decoded["pose_body"].view(16, 21, 3))
    torch.testing.assert_close(rebuilt, decoded["pose_body_matrot"], atol=1e-4, rtol=0)
    assert torch.equal(model.decode_matrix(z), decoded["pose_body_matrot"])


def test_gradients_flow_from_decoded_pose_to_latent(release):
    folder, _, _ = release
    model = load_vposer(folder)  # frozen weights, as the IK uses them
    z = torch.zeros(2, 32, requires_grad=True)
    target = axis_angle_to_matrix(torch.full((2, 21, 3), 0.3))
    loss = (model.decode_matrix(z) - target).square().sum() + model.decode_axis_angle(z).square().sum()
    loss.backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


# Sampling and interpolation --------------------------------------------------------------------


def test_seeded_sampling_is_deterministic_and_leaves_global_rng_alone():
    model = _random_model(3)
    torch.manual_seed(1)
    state = torch.get_rng_state()
    a = model.sample(6, seed=42)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(999)
    b = model.sample(6, seed=42)
    assert a.shape == (6, 63) and torch.equal(a, b)
    assert not torch.allclose(a, model.sample(6, seed=43))
    assert torch.equal(model.sample_latent(6, seed=42), model.sample_latent(6, seed=42))
    zero = model.decode_axis_angle(torch.zeros(3, 32))
    torch.testing.assert_close(model.sample(3, seed=5, temperature=0.0), zero)
    assert not model.sample(2).requires_grad


def test_interpolate_is_spherical_with_exact_ends():
    z0 = torch.randn(32, generator=torch.Generator().manual_seed(0))
    z1 = torch.randn(32, generator=torch.Generator().manual_seed(1))
    z1 = z1 * (z0.norm() / z1.norm())
    path = VPoser.interpolate(z0, z1, 7)
    assert path.shape == (7, 32)
    torch.testing.assert_close(path[0], z0)
    torch.testing.assert_close(path[-1], z1)
    torch.testing.assert_close(path.norm(dim=-1), z0.norm().expand(7))  # no sag towards the mean
    batched = VPoser.interpolate(torch.stack([z0, z0]), torch.stack([z1, 2 * z0]), 5)
    assert batched.shape == (5, 2, 32)
    torch.testing.assert_close(batched[:, 1], torch.stack([(1 + t) * z0 for t in torch.linspace(0, 1, 5)]))
    from_zero = VPoser.interpolate(torch.zeros(32), z1, 3)  # degenerate: linear
    torch.testing.assert_close(from_zero[1], z1 / 2)
    with pytest.raises(ValueError):
        VPoser.interpolate(z0, z1, 1)


# Loading the official layout -------------------------------------------------------------------


def test_official_folder_loads_highest_epoch_without_running_code(release, caplog):
    folder, best, marker = release
    ckpt = folder / "snapshots" / "V02_05_epoch=13_val_loss=0.03.ckpt"
    with pytest.raises(pickle.UnpicklingError):  # so the restricted unpickler is what loads it
        torch.load(ckpt, weights_only=True)

    with caplog.at_level(logging.INFO, logger="core.vposer"):
        model = load_vposer(folder)
    assert Path(model.source) == ckpt
    assert "V02_05_epoch=13_val_loss=0.03.ckpt" in caplog.text
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    _assert_same_outputs(model, best)
    assert torch.equal(model.state_dict()["encoder_net.4.num_batches_tracked"], torch.tensor(1013))

    direct = load_vposer(ckpt)
    _assert_same_outputs(direct, best)
    assert not marker.exists()

    # The payload is live: plain unpickling does run it.
    torch.load(ckpt, weights_only=False)
    assert marker.read_text() == "code ran"


def test_ckpt_outside_release_folder_infers_sizes(release, tmp_path):
    folder, best, _ = release
    loose = tmp_path / "loose.ckpt"
    shutil.copy(folder / "snapshots" / "V02_05_epoch=13_val_loss=0.03.ckpt", loose)
    _assert_same_outputs(load_vposer(loose), best)


def test_unprefixed_ckpt_and_raw_state_dict(tmp_path):
    model = _random_model(4)
    ckpt = tmp_path / "plain.ckpt"
    torch.save({"epoch": 3, "state_dict": model.state_dict(), "hyper_parameters": {"a": "b"}}, ckpt)
    _assert_same_outputs(load_vposer(ckpt), model)
    raw = tmp_path / "raw.pt"
    torch.save(model.state_dict(), raw)
    _assert_same_outputs(load_vposer(raw), model)


def test_other_sizes_load_from_yaml_and_from_shapes(tmp_path):
    model = VPoser(num_neurons=64, latent_dim=8).eval()
    folder = tmp_path / "small"
    (folder / "snapshots").mkdir(parents=True)
    (folder / "small.yaml").write_text("model_params:\n  num_neurons: 64\n  latentD: 8\n")
    torch.save(_lightning_checkpoint(model, 1), folder / "snapshots" / "small_epoch=01.ckpt")
    loaded = load_vposer(folder)
    assert loaded.config == {"num_neurons": 64, "latent_dim": 8}
    z = torch.randn(2, 8)
    assert torch.equal(loaded.decode_matrix(z), model.decode_matrix(z))
    (folder / "small.yaml").write_text("model_params:\n  num_neurons: 512\n  latentD: 32\n")
    with pytest.raises(VPoserLoadError, match=r"expected \(512, 63\)"):
        load_vposer(folder)


# Errors ----------------------------------------------------------------------------------------


def test_corrupt_file_names_the_file(tmp_path):
    path = tmp_path / "corrupt.ckpt"
    noise = torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    path.write_bytes(noise.numpy().tobytes())
    with pytest.raises(VPoserLoadError, match="corrupt.ckpt"):
        load_vposer(path)


def test_missing_key_names_key_and_shape(tmp_path):
    checkpoint = _lightning_checkpoint(_random_model(5), 1)
    del checkpoint["state_dict"]["vp_model.decoder_net.3.weight"]
    path = tmp_path / "missing.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(VPoserLoadError) as info:
        load_vposer(path)
    message = str(info.value)
    assert "missing.ckpt" in message and "decoder_net.3.weight" in message and "(512, 512)" in message


def test_wrong_shape_names_key_and_shapes(tmp_path):
    checkpoint = _lightning_checkpoint(_random_model(5), 1)
    checkpoint["state_dict"]["vp_model.decoder_net.5.bias"] = torch.zeros(120)
    path = tmp_path / "shape.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(VPoserLoadError) as info:
        load_vposer(path)
    message = str(info.value)
    assert "shape.ckpt" in message and "decoder_net.5.bias" in message
    assert "(120,)" in message and "expected (126,)" in message


def test_unexpected_vp_model_keys_are_named(tmp_path):
    checkpoint = _lightning_checkpoint(_random_model(5), 1)
    checkpoint["state_dict"]["vp_model.decoder_net.9.weight"] = torch.zeros(3)
    path = tmp_path / "extra.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(VPoserLoadError, match=r"extra\.ckpt.*decoder_net\.9\.weight"):
        load_vposer(path)


def test_folder_without_snapshots(tmp_path):
    folder = tmp_path / "V02_05"
    folder.mkdir()
    (folder / "V02_05.yaml").write_text(OFFICIAL_YAML)
    with pytest.raises(VPoserLoadError, match=r"no snapshots/\*\.ckpt in folder .*V02_05"):
        load_vposer(folder)


def test_not_a_vposer_checkpoint(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"state_dict": {"layer.weight": torch.zeros(2)}}, path)
    with pytest.raises(VPoserLoadError, match=r"not a VPoser checkpoint: .*other\.pt"):
        load_vposer(path)
    torch.save([torch.zeros(2)], path)
    with pytest.raises(VPoserLoadError, match=r"not a VPoser checkpoint: .*other\.pt"):
        load_vposer(path)
    with pytest.raises(VPoserLoadError, match=r"VPoser weights not found: .*absent\.pt"):
        load_vposer(tmp_path / "absent.pt")


# Our own format --------------------------------------------------------------------------------


def test_own_format_round_trip(tmp_path):
    model = _random_model(6)
    path = tmp_path / "vposer_open.pt"
    metadata = {"source": "CMU mocap", "epochs": 40, "val_loss": 0.125, "mirrored": True}
    save_vposer(model, path, metadata)
    stored = torch.load(path, weights_only=True)
    assert stored["format"] == "vposer-v2" and stored["config"] == {"num_neurons": 512, "latent_dim": 32}
    loaded = load_vposer(path)
    assert loaded.metadata == metadata and loaded.source == str(path)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    _assert_same_outputs(loaded, model)
    with pytest.raises(TypeError):
        save_vposer(model, path, {"tensor": torch.zeros(1)})


def test_default_weights_path_and_missing_message(tmp_path, monkeypatch):
    assert default_vposer_path().parts[-3:] == ("core", "data", "vposer_open.pt")
    monkeypatch.setattr(vposer_module, "default_vposer_path", lambda: tmp_path / "vposer_open.pt")
    with pytest.raises(VPoserLoadError, match="train_vposer"):
        load_default_vposer()


def test_a_whitened_latent_is_the_data_standard_normal_and_decodes_the_same():
    """whiten_latent: the same pose for the same input (encoder mean -> decode), u = L^-1 (z - m)
    decodes as z does, and the training poses' latent means have mean 0 and covariance I."""
    torch.manual_seed(4)
    model = VPoser(num_neurons=48, latent_dim=6).eval()
    poses = torch.randn(400, 63) * 0.4
    whitened, eigenvalues = whiten_latent(model, poses)
    assert eigenvalues.shape == (6,) and bool((eigenvalues[:-1] >= eigenvalues[1:]).all())
    with torch.no_grad():
        torch.testing.assert_close(whitened.decode_matrix(whitened.encode(poses).mean),
                                   model.decode_matrix(model.encode(poses).mean), atol=1e-5, rtol=0)
        means = model.encode(poses).mean.double()
        u = whitened.encode(poses).mean.double()
        torch.testing.assert_close(u.mean(0), torch.zeros(6, dtype=torch.float64), atol=1e-5, rtol=0)
        torch.testing.assert_close(torch.cov(u.T), torch.eye(6, dtype=torch.float64), atol=1e-4, rtol=0)
        # any u: the unwhitened decoder at z = m + L u, with m and C = L L^T from the means themselves
        draws = torch.randn(5, 6, dtype=torch.float64)
        values, vectors = torch.linalg.eigh(torch.cov(means.T))
        z = means.mean(0) + draws @ (vectors * values.sqrt()).T
        torch.testing.assert_close(whitened.decode_matrix(draws.float()), model.decode_matrix(z.float()),
                                   atol=1e-5, rtol=0)
    assert model.decoder_net[0].weight is not whitened.decoder_net[0].weight  # the original untouched
    with pytest.raises(VPoserError, match="more than 6 poses"):
        whiten_latent(model, poses[:6])


def test_whiten_script_writes_loadable_weights_with_its_provenance(tmp_path):
    """scripts/whiten_vposer.py on a folder of pose files: weights that load, the sample figures of
    the source dropped (reconstruction's kept), the whitening and extra metadata added."""
    import importlib.util

    import numpy as np

    torch.manual_seed(5)
    model = VPoser(num_neurons=32, latent_dim=4).eval()
    source = tmp_path / "trained.pt"
    save_vposer(model, source, {"eval_val_recon_v2v_mm": 20.0, "eval_val_sample_to_data_mm": 99.0,
                                "eval_val_data_to_sample_mm": 98.0})
    folder = tmp_path / "train"
    folder.mkdir()
    for index in range(2):
        poses = np.zeros((40, 156))
        poses[:, 3:66] = np.random.default_rng(index).normal(scale=0.3, size=(40, 63))
        np.savez(folder / f"clip{index}.npz", poses=poses, trans=np.zeros((40, 3)), mocap_framerate=30.0)
    spec = importlib.util.spec_from_file_location("whiten_vposer", Path(__file__).parents[2] / "scripts" / "whiten_vposer.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "whitened.pt"
    assert script.main([str(folder), "--weights", str(source), "--out", str(out), "--metadata", "note=x",
                        "--metadata", "eval_val_sample_to_data_mm=90.5"]) == 0
    loaded = load_vposer(out)
    assert loaded.metadata["eval_val_recon_v2v_mm"] == 20.0 and "eval_val_data_to_sample_mm" not in loaded.metadata
    assert "80 poses" in loaded.metadata["latent_whitening"] and loaded.metadata["note"] == "x"
    assert loaded.metadata["eval_val_sample_to_data_mm"] == 90.5  # a number, as the trainer writes figures
    assert len(loaded.metadata["latent_eigenvalues"].split()) == 4
    assert str(tmp_path) not in loaded.metadata["whitening_command"] + loaded.metadata["latent_whitening"]


def test_the_shipped_prior_states_its_data_licence_and_latent_refit():
    """The committed open prior carries its provenance (data, licence, model card) and the refit of
    its latent (what, on how many poses, the 32 eigenvalues it removed, largest first)."""
    metadata = load_default_vposer().metadata
    assert "CMU" in metadata["data_source"] and "commercial" in metadata["data_licence"]
    assert metadata["model_card"] == "core/data/vposer_open.md"
    assert "56838 poses" in metadata["latent_whitening"] and "01ae3c3" in metadata["whitened_from"]
    eigenvalues = [float(value) for value in metadata["latent_eigenvalues"].split()]
    assert len(eigenvalues) == 32 and eigenvalues == sorted(eigenvalues, reverse=True) and eigenvalues[-1] > 0
    assert metadata["eval_val_sample_to_data_mm"] == pytest.approx(97.98)
