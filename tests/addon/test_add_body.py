"""Add Body and the shape sliders in real Blender: what gets built, that skinning stays exact after
a reshape, undo, and a clean refusal on bad model files."""

from __future__ import annotations

import importlib
import sys

import bpy
import numpy as np
import pytest
import torch

from core.body_model import BodyModel
from core.rotations import axis_angle_to_matrix, axis_angle_to_quaternion


@pytest.fixture
def preferences(addon):
    prefs = bpy.context.preferences.addons[addon.__name__].preferences
    saved = {name: getattr(prefs, name) for name in ("default_body", "model_path", "extra_site_packages")}
    yield prefs
    for name, value in saved.items():
        setattr(prefs, name, value)


def _add_body(**options) -> bpy.types.Object:
    assert bpy.ops.vposer.add_body(**options) == {"FINISHED"}
    return bpy.context.active_object


def test_add_body_builds_a_skinned_rig(addon, empty_scene, adult):
    rig = _add_body(name="Alice")

    assert rig.type == "ARMATURE" and rig.name == "Alice"
    assert len(rig.data.bones) == 52
    body = rig.vposer_body
    assert body.is_body and body.source == "ADULT" and body.num_betas == 16
    assert body.joint_names() == list(adult.joint_names)
    skin = body.mesh
    assert skin.parent == rig and skin.modifiers["Armature"].object == rig
    assert len(skin.data.vertices) == adult.num_vertices == 13718
    assert set(empty_scene.objects) == {rig, skin}
    assert rig.select_get() and not skin.select_get()


def test_all_ages_source_builds_that_model(addon, empty_scene):
    rig = _add_body(source="ALL_AGES")
    expected = BodyModel.open_default("all_ages").v_template.numpy()
    mesh = rig.vposer_body.mesh.data
    coordinates = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
    mesh.vertices.foreach_get("co", coordinates)
    assert rig.vposer_body.source == "ALL_AGES"
    np.testing.assert_allclose(coordinates.reshape(-1, 3), expected, atol=1e-6)


def test_betas_move_mesh_and_bones_and_skinning_stays_exact(addon, empty_scene, adult):
    rig = _add_body()
    bridge = importlib.import_module(f"{addon.__name__}.vposer_addon.bridge")
    generator = torch.Generator().manual_seed(3)
    betas = torch.randn(1, 16, generator=generator, dtype=torch.float64) * 1.5
    rig.vposer_body.betas = betas[0].tolist()  # the slider's update callback reshapes the body

    joints = adult.rest_joints(betas)[0].numpy()
    for index, name in enumerate(adult.joint_names):
        np.testing.assert_allclose(np.array(rig.data.bones[name].head_local), joints[index], atol=1e-5)
    pose = torch.randn(1, 52, 3, generator=generator, dtype=torch.float64) * 0.4
    transl = torch.randn(1, 3, generator=generator, dtype=torch.float64) * 0.3
    expected = adult.forward_rotations(axis_angle_to_matrix(pose), betas=betas, transl=transl).vertices[0].numpy()
    bridge.set_pose(rig, list(adult.joint_names), axis_angle_to_quaternion(pose[0]).numpy(), transl[0].numpy())
    bpy.context.view_layer.update()
    deformed = bridge.evaluated_vertices(rig.vposer_body.mesh, bpy.context.evaluated_depsgraph_get())

    assert np.abs(adult.v_template.numpy() - adult.shaped_vertices(betas)[0].numpy()).max() > 0.01  # it did move
    assert np.abs(deformed - expected).max() < 1e-4  # 0.1 mm


def test_reshape_in_pose_mode_returns_to_pose_mode(addon, empty_scene, adult):
    rig = _add_body()
    bpy.ops.object.mode_set(mode="POSE")
    assert not bpy.ops.vposer.add_body.poll()  # adding needs Object Mode
    rig.vposer_body.betas[0] = 2.0
    assert rig.mode == "POSE" and bpy.context.active_object == rig
    betas = torch.zeros(1, 16, dtype=torch.float64)
    betas[0, 0] = 2.0
    np.testing.assert_allclose(
        np.array(rig.data.bones["head"].head_local), adult.rest_joints(betas)[0, 15].numpy(), atol=1e-5
    )


def test_reshape_keeps_the_users_shape_keys(addon, empty_scene, adult):
    rig = _add_body()
    bridge = importlib.import_module(f"{addon.__name__}.vposer_addon.bridge")
    skin = rig.vposer_body.mesh
    skin.shape_key_add(name="Basis")
    fix = skin.shape_key_add(name="Fix")
    fix.data[0].co.z += 0.01
    fix.value = 1.0
    rig.vposer_body.betas[2] = -1.5

    betas = torch.zeros(1, 16, dtype=torch.float64)
    betas[0, 2] = -1.5
    expected = adult.shaped_vertices(betas)[0].numpy()
    expected[0, 2] += 0.01
    bpy.context.view_layer.update()
    assert np.abs(bridge.evaluated_vertices(skin, bpy.context.evaluated_depsgraph_get()) - expected).max() < 1e-5


def test_undo_removes_the_body_and_restores_the_shape(addon, empty_scene):
    """Global undo runs headless when the operator is called with undo=True (the UI's behaviour)."""
    bpy.ops.ed.undo_push(message="empty")
    assert bpy.ops.vposer.add_body("EXEC_DEFAULT", True) == {"FINISHED"}
    assert len(bpy.data.objects) == 2
    bpy.ops.ed.undo()
    assert len(bpy.data.objects) == 0
    bpy.ops.ed.redo()
    rig = bpy.data.objects["Body"]
    rest_head = np.array(rig.data.bones["head"].head_local)
    rest_vertex = np.array(rig.vposer_body.mesh.data.vertices[0].co)

    rig.vposer_body.betas[0] = 2.0
    bpy.ops.ed.undo_push(message="shape")
    bpy.ops.ed.undo()
    rig = bpy.data.objects["Body"]  # undo replaces every datablock: look them up again
    assert rig.vposer_body.betas[0] == 0.0
    np.testing.assert_allclose(np.array(rig.data.bones["head"].head_local), rest_head)
    np.testing.assert_allclose(np.array(rig.vposer_body.mesh.data.vertices[0].co), rest_vertex)


def _garbage_npz(path):
    np.savez(path, v_template=np.zeros((3, 3)))
    return path


@pytest.mark.parametrize("make_file", [lambda path: path, _garbage_npz], ids=["missing", "malformed"])
def test_bad_model_file_cancels_naming_the_file(addon, preferences, empty_scene, tmp_path, make_file):
    path = make_file(tmp_path / "my_smplx.npz")
    preferences.default_body = "USER_FILE"
    preferences.model_path = str(path)
    with pytest.raises(RuntimeError, match="my_smplx.npz"):  # bpy.ops raises on an ERROR report
        bpy.ops.vposer.add_body()
    assert len(bpy.data.objects) == 0 and len(bpy.data.meshes) == 0 and len(bpy.data.armatures) == 0


def test_user_file_without_a_path_says_where_to_set_it(addon, preferences, empty_scene):
    preferences.model_path = ""
    with pytest.raises(RuntimeError, match="preferences"):
        bpy.ops.vposer.add_body(source="USER_FILE")
    assert len(bpy.data.objects) == 0


def test_extra_site_packages_goes_on_the_search_path(addon, preferences, tmp_path):
    folder = str(tmp_path)
    try:
        preferences.extra_site_packages = folder
        assert sys.path[0] == folder
    finally:
        while folder in sys.path:
            sys.path.remove(folder)


def _installed(folder, name: str, version: str, tag: str) -> None:
    """What `pip install --target folder` leaves of a wheel: the package and its dist-info with the WHEEL tags."""
    (folder / name).mkdir()
    (folder / name / "__init__.py").write_text("")
    dist_info = folder / f"{name}-{version}.dist-info"
    dist_info.mkdir()
    (dist_info / "WHEEL").write_text(f"Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: {tag}\n")


@pytest.mark.parametrize("relation", ["older", "newer"])
def test_extra_site_packages_for_another_python_is_left_out_and_says_why(addon, preferences, tmp_path, relation):
    # Blender 5.1 moved from Python 3.11 to 3.13 and keeps the preferences of the Blender before it.
    here = f"cp{sys.version_info.major}{sys.version_info.minor}"
    other = f"cp3{sys.version_info.minor + (-2 if relation == 'older' else 2)}"
    _installed(tmp_path, "torch", "2.13.0", f"{other}-{other}-manylinux_2_28_x86_64")
    _installed(tmp_path, "yaml", "6.0.2", f"{other}-{other}-manylinux_2_17_x86_64")
    _installed(tmp_path, "numba", "0.61.0", "pp310-pypy310_pp73-manylinux_2_17_x86_64")
    _installed(tmp_path, "sympy", "1.14.0", "py3-none-any")
    _installed(tmp_path, "markupsafe", "3.0.2", f"{here}-{here}-manylinux_2_17_x86_64")
    folder = str(tmp_path)
    try:
        preferences.extra_site_packages = folder
        assert folder not in sys.path
        problem = addon.vposer_addon.preferences.extra_site_packages_problem(folder)
        assert problem.startswith(f"Extra Site-Packages is not used: {folder} holds packages for another Python")
        assert f"torch-2.13.0 ({other})" in problem and f"yaml-6.0.2 ({other})" in problem
        assert "numba-0.61.0 (pp310)" in problem
        assert "sympy" not in problem and "markupsafe" not in problem
        assert f"install them again with Python 3.{sys.version_info.minor}" in problem
    finally:
        while folder in sys.path:
            sys.path.remove(folder)


def test_extra_site_packages_with_stable_abi_wheels_of_an_older_python_is_used(addon, preferences, tmp_path):
    here = f"cp{sys.version_info.major}{sys.version_info.minor}"
    _installed(tmp_path, "torch", "2.13.0", f"{here}-{here}-manylinux_2_28_x86_64")
    _installed(tmp_path, "cryptography", "45.0", "cp39-abi3-manylinux_2_28_x86_64")
    folder = str(tmp_path)
    try:
        preferences.extra_site_packages = folder
        assert sys.path[0] == folder
        assert addon.vposer_addon.preferences.extra_site_packages_problem(folder) is None
    finally:
        while folder in sys.path:
            sys.path.remove(folder)
