"""Bad input and broken set-ups in real Blender: every operator reports the project's errors
through one mechanism (a message, never a traceback) and leaves the scene as it was; a retarget
that runs but fits badly says so and why."""

from __future__ import annotations

import importlib
import json
import math
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import bpy
import numpy as np
import pytest

from core.mocap.skeletons import get_preset
from core.pose_files import PoseSequence, save_pose_file
from core.synthetic_models import write_model
from tests.core.pose_file_testing import write_declared_pose_file

REPO = Path(__file__).resolve().parents[2]
WALK = REPO / "examples" / "cmu_02_01_walk.bvh"  # CMU 02_01, 343 frames
CMU_SCALE = get_preset("cmu").unit_scale


def refused(operator, match: str, **properties) -> str:
    """Run an operator that must refuse: its ERROR report (bpy.ops raises it as RuntimeError) must
    match and must not be a Python traceback. Returns the message."""
    with pytest.raises(RuntimeError) as caught:
        operator(**properties)
    message = str(caught.value)
    assert "Traceback" not in message and "Error: Python:" not in message, message
    assert re.search(match, message), message
    return message


@pytest.fixture
def preferences(addon):
    """The add-on's preferences; the paths a test sets are put back afterwards."""
    prefs = bpy.context.preferences.addons[addon.__name__].preferences
    kept = (prefs.vposer_path, prefs.model_path)
    yield prefs
    prefs.vposer_path, prefs.model_path = kept


@pytest.fixture
def rig(addon, empty_scene):
    assert bpy.ops.vposer.add_body() == {"FINISHED"}
    return bpy.context.active_object


def _pose(rig) -> np.ndarray:
    return np.array([tuple(bone.rotation_quaternion) + tuple(bone.location) for bone in rig.pose.bones])


def _with_targets(rig) -> list[bpy.types.Object]:
    assert bpy.ops.vposer.add_targets(preset="EFFECTORS") == {"FINISHED"}
    bpy.context.view_layer.objects.active = rig
    return [obj for obj in bpy.context.scene.objects if obj.vposer_target.body == rig]


# --------------------------------------------------------------------------------------------
# One mechanism


def test_every_operator_reports_errors_through_the_one_mechanism(addon):
    operators = importlib.import_module(f"{addon.__name__}.vposer_addon.operators")
    errors = importlib.import_module(f"{addon.__name__}.core.errors")
    for cls in operators.CLASSES:  # execute, and invoke and modal where a job runs in steps
        for name in ("execute", "invoke", "modal") if "modal" in vars(cls) else ("execute",):
            assert getattr(vars(cls)[name], "reports_errors", None), f"{cls.__name__}.{name}"
    for module, name in (("vposer_addon.targets", "TargetError"), ("vposer_addon.operators.retarget", "SourceError"),
                         ("vposer_addon.preferences", "DeviceError")):
        assert issubclass(getattr(importlib.import_module(f"{addon.__name__}.{module}"), name), errors.VPoserError)


# --------------------------------------------------------------------------------------------
# Item 1: raw tracebacks


def test_solve_pose_with_a_missing_vposer_folder_is_reported(rig, preferences, tmp_path):
    _with_targets(rig)
    before = _pose(rig)
    preferences.vposer_path = str(tmp_path / "V02_05")
    refused(bpy.ops.vposer.solve_pose, r"Cannot solve Body: cannot load the pose prior \(the VPoser Folder set in "
                                       r"the preferences\): VPoser weights not found: .*V02_05")
    refused(bpy.ops.vposer.sample_poses, r"Cannot sample poses for Body: cannot load the pose prior \(the VPoser "
                                         r"Folder set in the preferences\)")
    np.testing.assert_array_equal(_pose(rig), before)
    assert rig.animation_data is None


def _select_source(rig, source) -> None:
    for obj in bpy.context.scene.objects:
        obj.select_set(obj in (rig, source))
    bpy.context.view_layer.objects.active = rig


@pytest.fixture
def walk(rig):
    """The CMU walk imported as Blender does it, selected with the body active."""
    assert bpy.ops.import_anim.bvh(filepath=str(WALK), global_scale=CMU_SCALE) == {"FINISHED"}
    source = bpy.context.active_object
    _select_source(rig, source)
    return source


def _custom(tmp_path, name: str, **changes) -> str:
    """The CMU preset as a custom JSON file, with some keys replaced."""
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(get_preset("cmu").to_dict() | {"name": name} | changes))
    return str(path)


def _retarget_refused(rig, match: str, preset_path: str) -> str:
    actions = len(bpy.data.actions)
    message = refused(bpy.ops.vposer.retarget, match, source="ARMATURE", preset="CUSTOM", preset_path=preset_path)
    assert len(bpy.data.actions) == actions and rig.animation_data is None and not any(rig.vposer_body.betas)
    return message


def test_a_custom_skeleton_without_both_hips_is_reported(rig, walk, tmp_path):
    cmu = get_preset("cmu").to_dict()
    joints = {name: source for name, source in cmu["joints"].items() if not name.endswith("_hip")}
    directions = {name: source for name, source in cmu["directions"].items() if name in joints}
    landmarks = [name for name in cmu["landmarks"] if name in joints]
    path = _custom(tmp_path, "nohips", joints=joints, directions=directions, landmarks=landmarks)
    _retarget_refused(rig, r"Cannot retarget onto Body: cmu_02_01_walk: preset 'nohips' maps no left_hip and no "
                           r"right_hip; the body is placed at the midpoint of the source's hips", path)


def test_import_poses_refuses_a_file_declaring_more_frames_than_blender_has(rig, tmp_path):
    path = write_declared_pose_file(tmp_path / "huge.npz", 2_000_000)
    refused(bpy.ops.vposer.import_poses, r"Cannot import poses onto Body: .*huge\.npz: 2,000,000 frames from frame 1 "
                                         r"would end on frame 2,000,000, past Blender's last frame 1,048,574: split "
                                         r"the file \(at most 1,048,574 frames fit from here\)", filepath=str(path))
    assert rig.animation_data is None and not bpy.data.actions


def test_import_poses_refuses_a_file_whose_keys_would_not_fit_in_memory(addon, rig, tmp_path, monkeypatch):
    resources = importlib.import_module(f"{addon.__name__}.core.resources")
    path = tmp_path / "long.npz"
    save_pose_file(path, PoseSequence(poses=np.zeros((1000, 156)), trans=np.zeros((1000, 3))))
    # 1,000 frames x (4 x 52 + 3) curves x 104 bytes, plus the file's arrays (0.6 MB)
    monkeypatch.setattr(resources, "available_memory", lambda: 10**6)
    refused(bpy.ops.vposer.import_poses, r"Cannot import poses onto Body: .*long\.npz: keying 1,000 frames of 52 joints "
                                         r"needs about 22\.6 MB of memory, but only 1\.0 MB is free", filepath=str(path))
    assert rig.animation_data is None and not bpy.data.actions
    monkeypatch.undo()
    assert bpy.ops.vposer.import_poses(filepath=str(path)) == {"FINISHED"}  # with the machine's memory it fits


def test_solve_and_sample_run_without_pyyaml(tmp_path):
    """A PyTorch folder without PyYAML: Add Body always worked, Solve Pose and Sample Poses failed on
    "No module named 'yaml'". Run in a fresh Blender, where `import yaml` fails from the start."""
    script = textwrap.dedent(f"""
        import os, sys, tempfile, importlib, json
        sys.modules["yaml"] = None  # `import yaml` raises ImportError from here on
        os.environ["BLENDER_USER_RESOURCES"] = tempfile.mkdtemp()
        import bpy
        sys.path.insert(0, {str(tmp_path)!r})
        os.symlink({str(REPO)!r}, os.path.join({str(tmp_path)!r}, "vposer"))
        package = importlib.import_module("vposer")
        package.register()
        bpy.context.preferences.addons.new().module = "vposer"
        bpy.ops.wm.read_homefile(use_empty=True)
        results = [bpy.ops.vposer.add_body()]
        rig = bpy.context.active_object
        results.append(bpy.ops.vposer.add_targets(preset="EFFECTORS"))
        bpy.context.view_layer.objects.active = rig
        results += [bpy.ops.vposer.solve_pose(), bpy.ops.vposer.sample_poses(count=2)]
        print("RESULTS", json.dumps([sorted(result) for result in results]))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULTS"))
    assert json.loads(line.split(" ", 1)[1]) == [["FINISHED"]] * 4


def test_a_missing_required_package_is_named_by_the_polls(addon, empty_scene, monkeypatch):
    dependencies = importlib.import_module(f"{addon.__name__}.vposer_addon.dependencies")
    monkeypatch.setattr(dependencies, "REQUIRED", dependencies.REQUIRED + (("no_such_module_here", "Something"),))
    refused(bpy.ops.vposer.add_body, r"Something is missing: the VPoser tab says how to install it")
    assert not bpy.data.objects


# --------------------------------------------------------------------------------------------
# Item 4: bad values


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_a_target_at_a_non_finite_location_is_refused_by_name(rig, value):
    targets = _with_targets(rig)
    before = _pose(rig)
    wrist = next(obj for obj in targets if obj.vposer_target.joint == "right_wrist")
    wrist.location.x = value
    shown = {math.inf: "inf", -math.inf: "-inf"}.get(value, "nan")  # Blender stores inf as the largest float
    refused(bpy.ops.vposer.solve_pose, rf"Cannot solve Body: target 'Body_right_wrist' is at \({shown}, [-\d.e]+, "
                                       r"[-\d.e]+\), not a finite location: move it back into the scene")
    np.testing.assert_array_equal(_pose(rig), before)


def test_custom_skeleton_json_with_unknown_joints_is_refused_with_the_allowed_names(rig, walk, tmp_path):
    joints = get_preset("cmu").to_dict()["joints"] | {"left_elbw": "LeftForeArm"}
    message = _retarget_refused(rig, r"Cannot retarget onto Body: .*typo\.json: not a skeleton preset \(preset 'typo': "
                                     r"'joints' names unknown SMPL joint 'left_elbw' \(did you mean 'left_elbow'\?\)",
                                _custom(tmp_path, "typo", joints=joints))
    assert "the body joints pelvis, left_hip, right_hip" in message and "right_wrist" in message


def test_custom_skeleton_json_with_a_rest_frame_past_the_clip_is_refused_with_the_valid_range(rig, walk, tmp_path):
    _retarget_refused(rig, r"Cannot retarget onto Body: cmu_02_01_walk's action: preset 'far' takes the rest pose from "
                           r"frame 99999 \('rest_frame'\), but the clip has 343 frames: valid rest frames are 0-342",
                      _custom(tmp_path, "far", rest_frame=99999))


# --------------------------------------------------------------------------------------------
# Item 5: a broken retarget says so


def test_a_mismapped_custom_skeleton_is_keyed_with_a_warning_naming_the_cause(rig, walk, tmp_path, capfd):
    joints = get_preset("cmu").to_dict()["joints"]
    joints["left_shoulder"], joints["right_shoulder"] = joints["right_shoulder"], joints["left_shoulder"]
    capfd.readouterr()

    result = bpy.ops.vposer.retarget(source="ARMATURE", preset="CUSTOM",
                                     preset_path=_custom(tmp_path, "swapped", joints=joints))

    assert result == {"FINISHED"} and rig.animation_data.action.name == "cmu_02_01_walk on Body"
    report = next(line for line in capfd.readouterr().out.splitlines() if "Retargeted 343 frames" in line)
    assert report.startswith("Warning: ")  # reported as a warning, not as plain information
    assert re.search(r"Poor fit \(mean error \d+ mm, worst left_wrist \d+ mm, .* mm\; a well-mapped source stays "
                     r"under 30 mm, each joint under 60 mm\): likely the source's rest pose is not the pose the "
                     r"preset's mapping assumes \(set the preset's 'rest_frame' .*check the 'joints' entries of the "
                     r"worst joints", report), report


def test_a_well_mapped_retarget_reports_no_warning(rig, walk, capfd):
    capfd.readouterr()
    assert bpy.ops.vposer.retarget(source="ARMATURE", preset="CMU") == {"FINISHED"}
    report = next(line for line in capfd.readouterr().out.splitlines() if "Retargeted 343 frames" in line)
    assert report.startswith("Info: ") and "Poor fit" not in report


# --------------------------------------------------------------------------------------------
# Item 8: messages name the real problem


@pytest.mark.parametrize("preset", ["EFFECTORS", "BODY"])
def test_add_targets_on_a_hand_model_says_it_has_no_body_joints(addon, empty_scene, preferences, tmp_path, preset):
    preferences.model_path = str(write_model(tmp_path / "mano.npz", "mano"))
    assert bpy.ops.vposer.add_body(source="USER_FILE", name="Hand") == {"FINISHED"}
    objects = len(bpy.data.objects)
    refused(bpy.ops.vposer.add_targets, r"Cannot add targets to Hand: Hand is a hand model: it has no body joints "
                                        r"to target", preset=preset)
    assert len(bpy.data.objects) == objects


def test_retarget_onto_a_hand_model_says_it_has_no_body_joints(addon, empty_scene, preferences, tmp_path):
    preferences.model_path = str(write_model(tmp_path / "mano.npz", "mano"))
    assert bpy.ops.vposer.add_body(source="USER_FILE", name="Hand") == {"FINISHED"}
    hand = bpy.context.active_object
    assert bpy.ops.import_anim.bvh(filepath=str(WALK), global_scale=CMU_SCALE) == {"FINISHED"}
    _select_source(hand, bpy.context.active_object)
    refused(bpy.ops.vposer.retarget, r"Cannot retarget onto Hand: cmu_02_01_walk: mocap is retargeted onto a body "
                                     r"model \(SMPL, SMPL-H, SMPL-X or the open body\), and a mano hand model has no "
                                     r"body joints", source="ARMATURE", preset="CMU")
    assert hand.animation_data is None


def test_sample_poses_with_a_missing_body_model_file_names_the_file(addon, empty_scene, preferences, tmp_path):
    model = write_model(tmp_path / "my_smplh.npz", "smplh")
    preferences.model_path = str(model)
    assert bpy.ops.vposer.add_body(source="USER_FILE") == {"FINISHED"}
    model.unlink()  # moved away since
    message = refused(bpy.ops.vposer.sample_poses, r"Cannot sample poses for Body: cannot load the body model file: "
                                                   r".*my_smplh\.npz: no such model file")
    assert "prior" not in message
    refused(bpy.ops.vposer.import_poses, r"Cannot import poses onto Body: cannot load the body model file: "
                                         r".*my_smplh\.npz", filepath=str(REPO / "examples" / "cmu_02_01_walk.npz"))
    assert not bpy.data.actions
