"""Keypoints: joints, vertices and offset surface points evaluated against the full mesh; layouts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ik_testing import posed, small_body

from core.keypoints import (
    EFFECTORS,
    Keypoint,
    KeypointError,
    KeypointSet,
    sample_surface,
)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return small_body(tmp_path_factory.mktemp("body"))


@pytest.fixture(scope="module")
def pose(model):
    rotations, _, transl = posed(model, None, batch=3)
    betas = torch.randn(3, model.num_betas, generator=torch.Generator().manual_seed(5), dtype=model.dtype)
    return rotations, betas, transl


def _usable_triangle(model, start: int = 0) -> int:
    corners = model.v_template[model.faces.long()]
    area = torch.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0], dim=-1).norm(dim=-1)
    return int(torch.nonzero(area > 1e-6)[start])


def test_named_sets(model):
    body = KeypointSet.named(model, "body22")
    assert body.names == model.joint_names[:22] and body.only_joints
    effectors = KeypointSet.named(model, "effectors")
    assert effectors.names == EFFECTORS
    with pytest.raises(KeypointError, match="unknown keypoint set 'hands'"):
        KeypointSet.named(model, "hands")


def test_joints_only_never_skins(model, pose, monkeypatch):
    rotations, betas, transl = pose
    expected = model.forward_rotations(rotations, betas, transl=transl).joints[:, :22]
    monkeypatch.setattr(model, "_skin", lambda *args: pytest.fail("joint keypoints must not skin the mesh"))
    points = KeypointSet.named(model, "body22").evaluate(rotations, betas, transl)
    torch.testing.assert_close(points, expected)


def test_vertices_and_surface_points_match_the_full_mesh(model, pose):
    rotations, betas, transl = pose
    triangle = _usable_triangle(model)
    markers = {
        "vertex": {"vertex": 17},
        "on_skin": {"triangle": triangle, "barycentric": [0.2, 0.3, 0.5]},
        "off_skin": {"triangle": triangle, "barycentric": [0.2, 0.3, 0.5], "offset": 0.02},
        "wrist": {"joint": "left_wrist"},
    }
    keypoints = KeypointSet.from_dict(model, markers)
    assert keypoints.names == tuple(markers)
    points = keypoints.evaluate(rotations, betas, transl).numpy()
    full = model.forward_rotations(rotations, betas, transl=transl)
    vertices, joints = full.vertices.numpy(), full.joints.numpy()
    corners = vertices[:, model.faces[triangle].long().numpy()]  # (B, 3, 3)
    on_skin = np.einsum("c,bcd->bd", np.array([0.2, 0.3, 0.5]), corners)
    normal = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    np.testing.assert_allclose(points[:, 0], vertices[:, 17], atol=1e-12)
    np.testing.assert_allclose(points[:, 1], on_skin, atol=1e-12)
    np.testing.assert_allclose(points[:, 2], on_skin + 0.02 * normal, atol=1e-12)
    np.testing.assert_allclose(points[:, 3], joints[:, model.joint_names.index("left_wrist")], atol=1e-12)
    assert set(keypoints.vertex_ids.tolist()) == {17, *model.faces[triangle].tolist()}


def test_follows_model_dtype(tmp_path):
    model32 = small_body(tmp_path, torch.float32)
    keypoints = sample_surface(model32, 5, offset=0.01)
    rotations, _, transl = posed(model32, None, batch=2)
    assert keypoints.evaluate(rotations, transl=transl).dtype == torch.float32


def test_sample_surface(model):
    keypoints = sample_surface(model, 12, offset=0.015, seed=2)
    assert len(keypoints) == 12 and len({point.index for point in keypoints.keypoints}) == 12
    assert all(point.kind == "surface" and point.offset == 0.015 for point in keypoints.keypoints)
    assert all(abs(sum(point.barycentric) - 1) < 1e-9 for point in keypoints.keypoints)


def test_json_round_trip(model, pose, tmp_path):
    keypoints = KeypointSet.from_dict(model, {
        "a": {"vertex": 3}, "b": {"joint": "head"},
        "c": {"triangle": _usable_triangle(model, 1), "barycentric": [0.5, 0.25, 0.25], "offset": -0.01},
    })
    path = tmp_path / "layout.json"
    path.write_text(json.dumps({"description": "test layout", "markers": keypoints.to_dict()}))
    loaded = KeypointSet.named(model, path)
    assert loaded.names == keypoints.names
    rotations, betas, transl = pose
    torch.testing.assert_close(loaded.evaluate(rotations, betas, transl), keypoints.evaluate(rotations, betas, transl))


@pytest.mark.parametrize("entry, message", [
    ({"vertex": 10**6}, "vertex index 1000000 is outside"),
    ({"vertex": 2.5}, "'vertex' must be an integer"),
    ({"joint": "tail"}, "unknown joint 'tail'"),
    ({"triangle": 0, "barycentric": [0.5, 0.5]}, "'barycentric' must be 3 non-negative numbers"),
    ({"triangle": 0, "barycentric": [0.9, 0.9, -0.8]}, "'barycentric' must be 3 non-negative numbers"),
    ({"triangle": 0, "offset": "1cm"}, "'offset' must be a number of metres"),
    ({"triangle": 10**6}, "triangle index 1000000 is outside"),
    ({"bone": "x"}, "expected {'joint': name}"),
])
def test_bad_layout_entries_name_the_file_and_marker(model, tmp_path, entry, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"markers": {"ok": {"vertex": 1}, "RFHD": entry}}))
    with pytest.raises(KeypointError, match=message) as error:
        KeypointSet.from_json(model, path)
    assert str(path) in str(error.value) and "'RFHD'" in str(error.value)


def test_bad_layout_files(model, tmp_path):
    path = tmp_path / "layout.json"
    path.write_text("{not json")
    with pytest.raises(KeypointError, match="cannot read the marker layout"):
        KeypointSet.from_json(model, path)
    path.write_text(json.dumps({"LFHD": {"vertex": 1}}))
    with pytest.raises(KeypointError, match="'markers' object"):
        KeypointSet.from_json(model, path)
    with pytest.raises(KeypointError, match="cannot read"):
        KeypointSet.from_json(model, tmp_path / "missing.json")


def test_degenerate_triangles_and_duplicates_are_refused(model):
    faces = model.faces.long()
    corners = model.v_template[faces]
    area = torch.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0], dim=-1).norm(dim=-1)
    degenerate = int(torch.nonzero(area < 1e-12)[0])  # the made-up mesh repeats a corner in a few faces
    with pytest.raises(KeypointError, match="degenerate"):
        KeypointSet.from_dict(model, {"m": {"triangle": degenerate}})
    with pytest.raises(KeypointError, match="duplicate keypoint names"):
        KeypointSet(model, [Keypoint("a", "vertex", 1), Keypoint("a", "vertex", 2)])
    with pytest.raises(KeypointError, match="no keypoints"):
        KeypointSet.from_dict(model, {})


def test_local_offsets_ride_on_the_parent_segment(model, pose, tmp_path):
    rotations, betas, transl = pose
    keypoints = KeypointSet.from_dict(model, {"elbow": {"joint": "left_elbow", "local": [0.01, 0.02, -0.03]},
                                              "wrist": {"joint": "left_wrist"}})
    output = model.forward_rotations(rotations, betas, None, transl, return_vertices=False)
    parent = model.parents[model.joint_names.index("left_elbow")]
    expected = output.joints[:, model.joint_names.index("left_elbow")] + (
        output.joint_rotations[:, parent] @ torch.tensor([0.01, 0.02, -0.03], dtype=model.dtype))
    torch.testing.assert_close(keypoints.evaluate(rotations, betas, transl)[:, 0], expected)
    layout = tmp_path / "local.json"
    layout.write_text(json.dumps({"markers": keypoints.to_dict()}))
    assert KeypointSet.from_json(model, layout).keypoints == keypoints.keypoints
    with pytest.raises(KeypointError, match="root joint has no parent segment"):
        KeypointSet.from_dict(model, {"p": {"joint": "pelvis", "local": [0.0, 0.1, 0.0]}})
    with pytest.raises(KeypointError, match="'local' must be 3 numbers"):
        KeypointSet.from_dict(model, {"p": {"joint": "head", "local": [0.0, 0.1]}})
