"""core.markers: nearest surface points, unposing through the skinning, and a marker layout
calibrated to a subject whose markers sit elsewhere than the layout says (MoSh-style)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from core.body_model import BodyModel
from core.keypoints import KeypointSet
from core.markers import (closest_barycentric, displaced_layout, nearest_surface_points, read_calibration,
                          rest_positions, surface_keypoints, unposed_targets)
from core.retarget import Retarget, RetargetOptions, marker_targets

LAYOUT = Path(__file__).resolve().parents[2] / "core" / "data" / "markers_plugin_gait_open.json"


@pytest.fixture(scope="module")
def body() -> BodyModel:
    return BodyModel.open_default("adult")


@pytest.fixture(scope="module")
def prior(body):
    from core.vposer import load_default_vposer

    return load_default_vposer().to(body.v_template).eval()


def test_closest_point_on_a_triangle_inside_on_an_edge_and_at_a_corner():
    triangle = np.array([[[0.0, 0, 0], [1, 0, 0], [0, 1, 0]]])
    np.testing.assert_allclose(closest_barycentric(np.array([0.25, 0.25, 3.0]), triangle), [[0.5, 0.25, 0.25]])
    np.testing.assert_allclose(closest_barycentric(np.array([0.5, -2.0, 1.0]), triangle), [[0.5, 0.5, 0.0]])
    np.testing.assert_allclose(closest_barycentric(np.array([-1.0, -1.0, 0.0]), triangle), [[1.0, 0.0, 0.0]])
    np.testing.assert_allclose(closest_barycentric(np.array([2.0, 2.0, 0.0]), triangle), [[0.0, 0.5, 0.5]])


def test_nearest_surface_point_gives_back_a_point_lifted_off_the_mesh(body):
    vertices, faces = body.v_template.double().numpy(), body.faces.numpy()
    markers = KeypointSet.from_json(body, LAYOUT)
    points = surface_keypoints(markers)
    lifted = rest_positions(body, points, torch.zeros(body.num_betas))
    triangles, bary, signed = nearest_surface_points(vertices, faces, lifted)
    # The layout's markers are 10 mm off their triangles; the nearest skin may be a neighbour's, never farther.
    assert (signed <= 0.0100001).all() and (signed > 0.004).all()
    on_skin = np.einsum("kc,kcd->kd", bary, vertices[faces[triangles]])
    np.testing.assert_allclose(np.linalg.norm(lifted - on_skin, axis=1), signed, atol=1e-9)


def test_unposed_targets_invert_the_posed_markers(body, prior):
    """Markers evaluated on a posed, shaped body (the model's own forward) come back to their
    places on the shaped rest body."""
    markers = KeypointSet.from_json(body, LAYOUT)
    points = surface_keypoints(markers)
    generator = torch.Generator().manual_seed(2)
    betas = torch.randn(body.num_betas, generator=generator)
    rotations = torch.eye(3).expand(3, body.num_joints, 3, 3).clone()
    with torch.no_grad():
        rotations[:, 1:22] = prior.decode_matrix(torch.randn(3, prior.latent_dim, generator=generator))
        transl = torch.randn(3, 3, generator=generator)
        posed = markers.evaluate(rotations, betas.expand(3, -1), transl)
    posed[1, 4] = float("nan")
    unposed = unposed_targets(body, points, rotations, betas, transl, posed)
    rest = rest_positions(body, points, betas)
    assert np.isnan(unposed[1, 4]).all()
    np.testing.assert_allclose(unposed[~np.isnan(unposed)], np.broadcast_to(rest, unposed.shape)[~np.isnan(unposed)],
                               atol=1e-4)


def test_calibration_finds_where_the_subjects_markers_sit(body, prior):
    subject = displaced_layout(KeypointSet.from_json(body, LAYOUT), seed=1)
    frames = 40
    generator = torch.Generator().manual_seed(5)
    betas = 0.8 * torch.randn(body.num_betas, generator=generator)
    rotations = torch.eye(3).expand(frames, body.num_joints, 3, 3).clone()
    with torch.no_grad():
        rotations[:, 1:22] = prior.decode_matrix(0.8 * torch.randn(frames, prior.latent_dim, generator=generator))
        positions = subject.evaluate(rotations, betas.expand(frames, -1), torch.zeros(frames, 3)).numpy()
    positions += np.random.default_rng(0).normal(scale=0.0015, size=positions.shape)
    labels = [*subject.names, "EXTRA"]
    positions = np.concatenate([positions, np.zeros((frames, 1, 3))], axis=1)
    results = {}
    for calibrate in (False, True):
        targets = marker_targets(body, LAYOUT, labels, positions, 100.0)
        assert targets.unused_labels == ("EXTRA",)
        run = Retarget(body, targets, prior, RetargetOptions(calibrate=calibrate, shape_frames=20))
        for _ in run:
            pass
        results[calibrate] = run.result()
    before, after = results[False].mpjpe_mm, results[True].mpjpe_mm
    assert results[False].calibration is None
    assert after < 0.5 * before and after < 8.0, (before, after)
    document = results[True].calibration
    assert set(document["markers"]) == set(subject.names) == set(document["calibration"])
    offsets = np.array([entry["offset_mm"] for entry in document["calibration"].values()])
    assert 6 < offsets.mean() < 14 and offsets.min() >= 2 and offsets.max() <= 50

    # A second take of the same subject: the calibration as the layout, its shape held.
    again = marker_targets(body, document, labels, positions, 100.0)
    betas_again = torch.as_tensor(read_calibration(document), dtype=body.dtype)
    run = Retarget(body, again, prior, RetargetOptions(calibrate=False, fit_shape=False), betas=betas_again)
    for _ in run:
        pass
    assert run.result().mpjpe_mm < after + 1.0


def test_calibration_document_refuses_bad_betas():
    with pytest.raises(ValueError, match="take.json: 'betas' must be a list of numbers"):
        read_calibration({"markers": {}, "betas": "tall"}, "take.json")


def test_frames_started_from_nearby_key_frames_fit_as_well_as_cold_ones(body, prior):
    """A smooth marker take: frames going on from their nearest key frame's solve reach the same
    residual as frames each started from the prior's mean, in fewer iterations."""
    frames = 48
    generator = torch.Generator().manual_seed(9)
    ends = 0.8 * torch.randn(2, prior.latent_dim, generator=generator)
    blend = torch.linspace(0, 1, frames).unsqueeze(1)
    markers = KeypointSet.from_json(body, LAYOUT)
    rotations = torch.eye(3).expand(frames, body.num_joints, 3, 3).clone()
    with torch.no_grad():
        rotations[:, 1:22] = prior.decode_matrix((1 - blend) * ends[0] + blend * ends[1])
        transl = torch.stack([torch.linspace(0, 1.0, frames), torch.zeros(frames), torch.zeros(frames)], 1)
        positions = markers.evaluate(rotations, None, transl).numpy()
    results = {}
    for stride in (1, 8):
        targets = marker_targets(body, LAYOUT, markers.names, positions, 100.0)
        options = RetargetOptions(key_stride=stride, fit_shape=False, calibrate=False)
        run = Retarget(body, targets, prior, options)
        for _ in run:
            pass
        results[stride] = run.result()
    assert results[8].mpjpe_mm < results[1].mpjpe_mm + 0.3 and results[8].mpjpe_mm < 2.0
    assert results[8].iterations.float().mean() < results[1].iterations.float().mean()
