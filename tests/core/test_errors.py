"""The project's errors: one base class for all of them, and inputs that used to end in a raw
Python error (a missing VPoser folder, PyYAML absent, an infinite IK target) refused with a message."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ik_testing import posed, small_body, targets_for

import core
from core.errors import VPoserError
from core.ik import IKError, IKSolver
from core.keypoints import KeypointSet
from core.vposer import VPoser, VPoserLoadError, load_vposer

REPO = Path(__file__).resolve().parents[2]
PROJECT_ERRORS = {"RetargetError", "BodyModelError", "C3DError", "BVHError", "KeypointError", "VPoserLoadError",
                  "IKError", "PoseFileError", "SkeletonPresetError", "InsufficientMemoryError"}


def test_every_error_class_of_the_core_derives_from_the_one_base():
    """Found by walking the package, so an error class added later is held to it as well."""
    classes = {}
    for info in pkgutil.walk_packages(core.__path__, "core."):
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (isinstance(value, type) and issubclass(value, Exception) and not issubclass(value, Warning)
                    and value.__module__ == module.__name__):
                classes[name] = value
    assert PROJECT_ERRORS <= set(classes)
    assert [name for name, value in classes.items() if not issubclass(value, VPoserError)] == []
    assert issubclass(VPoserError, ValueError)  # `except ValueError` written before the base still holds


def test_a_missing_vposer_folder_is_a_vposer_load_error(tmp_path):
    with pytest.raises(VPoserLoadError, match=r"VPoser weights not found: .*V02_05"):
        load_vposer(tmp_path / "V02_05")


def test_the_shipped_prior_loads_without_pyyaml():
    """PyYAML reads only the official release's config: a Python without it still runs the core."""
    code = ("import sys; sys.modules['yaml'] = None\n"  # `import yaml` now raises ImportError
            "from core.vposer import load_default_vposer\n"
            "print(load_default_vposer().latent_dim)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["32"]


def test_the_official_release_without_pyyaml_says_what_to_install(tmp_path, monkeypatch):
    folder = tmp_path / "V02_05"
    (folder / "snapshots").mkdir(parents=True)
    (folder / "V02_05.yaml").write_text("model_params:\n  num_neurons: 512\n  latentD: 32\n")
    state = {f"vp_model.{key}": value for key, value in VPoser().state_dict().items()}
    torch.save({"state_dict": state}, folder / "snapshots" / "V02_05_epoch=1.ckpt")
    assert load_vposer(folder).latent_dim == 32  # readable with PyYAML

    monkeypatch.setitem(sys.modules, "yaml", None)
    with pytest.raises(VPoserLoadError, match=r"V02_05\.yaml: reading the official release's config needs the "
                                              r"PyYAML package.*pip install pyyaml"):
        load_vposer(folder)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return small_body(tmp_path_factory.mktemp("body"))


@pytest.mark.parametrize("value", [float("inf"), float("-inf")])
def test_an_infinite_target_is_refused_by_name(model, value):
    """NaN marks a missing target; infinity is never a position (it used to give a 3.4e38 m error)."""
    joints = KeypointSet.named(model, "body22")
    rotations, _, transl = posed(model, None, 3, seed=2)
    targets = targets_for(joints, rotations, transl)
    targets[1, joints.names.index("right_wrist"), 0] = value
    targets[2, 3, 1] = value
    with pytest.raises(IKError, match=r"target 'right_wrist' is infinitely far away \(frame 1; 2 infinite "
                                      r"target\(s\) in all\).*NaN to leave it out"):
        IKSolver(model, joints, None).solve(targets)

    targets[1, :, :] = targets[0]
    targets[2, 3] = float("nan")  # missing, as before
    result = IKSolver(model, joints, None).solve(targets)
    assert result.errors[2, 3].isnan() and torch.isfinite(result.errors[:, :3]).all()
