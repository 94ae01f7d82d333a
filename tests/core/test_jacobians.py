"""Analytic Jacobians of VPoser's decoder and of body keypoints against central differences (float64)."""

from __future__ import annotations

import pytest
import torch
from ik_testing import posed, small_body

import core.jacobians
from core.jacobians import DECODER_CHUNK, KeptDecoderJacobians, body_jacobians, decoder_jacobian
from core.keypoints import KeypointSet, sample_surface
from core.rotations import axis_angle_to_matrix
from core.vposer import VPoser

F64 = torch.float64
EPS = 1e-6


def _angular(rotations: torch.Tensor, moved: torch.Tensor) -> torch.Tensor:
    """Body-frame angular velocity w from R and a nearby rotation: R^T dR = [w]x."""
    delta = rotations.transpose(-1, -2) @ moved
    return torch.stack([delta[..., 2, 1], delta[..., 0, 2], delta[..., 1, 0]], dim=-1)


def test_decoder_jacobian_matches_differences():
    """More frames than one CPU pass takes: the passes must come back joined in frame order."""
    torch.manual_seed(0)
    prior = VPoser().double().eval()
    z = torch.randn(DECODER_CHUNK + 5, prior.latent_dim, dtype=F64)
    rotations, omega = decoder_jacobian(prior, z)
    torch.testing.assert_close(rotations, prior.decode_matrix(z))
    for column in range(0, prior.latent_dim, 5):
        dz = torch.zeros_like(z)
        dz[:, column] = EPS
        difference = (prior.decode_matrix(z + dz) - prior.decode_matrix(z - dz)) / (2 * EPS)
        expected = _angular(rotations, difference)
        torch.testing.assert_close(omega[..., column], expected, atol=1e-7, rtol=1e-6)


def test_kept_decoder_jacobians_equal_fresh_ones_along_a_solve(monkeypatch):
    """A freshly initialised VPoser (ReLU kinks everywhere), frames visited in random subsets and
    orders, over more frames than one CPU pass takes: small moves (a few units switch: the kept
    Jacobians are updated) and now and then a jump (many switch: recomputed). Every Jacobian equals
    decoder_jacobian's at the same latents, and the last ones central differences; after the first
    visit most frames never go through the full forward mode again."""
    torch.manual_seed(0)
    prior = VPoser().double().eval()
    frames = DECODER_CHUNK + 20
    kept = KeptDecoderJacobians(prior, frames)
    fresh_frames = []
    full = core.jacobians.decoder_features

    def counted(vposer, z, tangents):
        fresh_frames.append(len(z))
        return full(vposer, z, tangents)

    monkeypatch.setattr(core.jacobians, "decoder_features", counted)
    generator = torch.Generator().manual_seed(1)
    z = torch.randn(frames, prior.latent_dim, generator=generator, dtype=F64)
    first = torch.arange(frames)
    torch.testing.assert_close(kept.angular(z, first), decoder_jacobian(prior, z)[1], rtol=1e-9, atol=1e-12)
    fresh_frames.clear()
    for step in range(12):
        rows = torch.randperm(frames, generator=generator)[: frames - 7]
        scale = 1.0 if step == 5 else 0.003
        z[rows] += scale * torch.randn(len(rows), prior.latent_dim, generator=generator, dtype=F64)
        got = kept.angular(z[rows], rows)
        torch.testing.assert_close(got, decoder_jacobian(prior, z[rows])[1], rtol=1e-9, atol=1e-12)
    visits = 12 * (frames - 7)
    assert sum(fresh_frames) - visits < visits / 3  # decoder_jacobian above counts too: one pass each
    rows = torch.arange(frames)
    omega = kept.angular(z, rows)
    rotations = prior.decode_matrix(z)
    for column in range(0, prior.latent_dim, 7):
        dz = torch.zeros_like(z)
        dz[:, column] = EPS
        difference = (prior.decode_matrix(z + dz) - prior.decode_matrix(z - dz)) / (2 * EPS)
        torch.testing.assert_close(omega[..., column], _angular(rotations, difference), atol=1e-7, rtol=1e-6)


def test_decoder_jacobian_needs_eval_mode():
    with pytest.raises(RuntimeError, match="eval mode"):
        decoder_jacobian(VPoser().double().train(), torch.zeros(1, 32, dtype=F64))


@pytest.mark.parametrize(("markers", "moving"), [(False, range(22)), (True, range(22)), (True, range(1, 22, 2)),
                                                  (True, [0]), (False, []), (True, [])])
def test_body_jacobian_matches_differences(tmp_path, markers, moving):
    """Unknowns: root turned in the world, body joints turned in their own frames (all 21, or only
    some: the others' columns are zero), translation and betas; keypoints are joints or offset
    surface points (pose correctives on). No moving joint at all (a pinned root in an orientation and
    translation stage) leaves translation and betas."""
    model = small_body(tmp_path)
    assert model.use_pose_correctives
    keypoints = (KeypointSet.from_dict(model, {**sample_surface(model, 8, offset=0.02).to_dict(),
                                               "wrist": {"joint": "left_wrist"}, "v": {"vertex": 5}})
                 if markers else KeypointSet.named(model, "body22"))
    batch, num_betas = 2, model.num_betas
    rotations, _, transl = posed(model, None, batch)
    betas = 0.5 * torch.randn(batch, num_betas, generator=torch.Generator().manual_seed(2), dtype=F64)
    size = 3 + 63 + 3 + num_betas

    def points(step: torch.Tensor) -> torch.Tensor:
        moved = rotations.clone()
        moved[:, 0] = axis_angle_to_matrix(step[:, :3]) @ rotations[:, 0]
        moved[:, 1:22] = rotations[:, 1:22] @ axis_angle_to_matrix(step[:, 3:66].unflatten(1, (21, 3)))
        return keypoints.evaluate(moved, betas + step[:, 69:], transl + step[:, 66:69])

    output = model.forward_rotations(rotations, betas, None, transl, return_vertices=False,
                                     vertex_ids=keypoints.vertex_ids)
    world = output.joint_rotations
    moving = torch.tensor(list(moving), dtype=torch.long)
    angular = torch.zeros(batch, len(moving), 3, size, dtype=F64)
    for position, joint in enumerate(moving.tolist()):
        if joint == 0:  # exp(h) R: the root turns about world axes
            angular[:, position, :, :3] = torch.eye(3, dtype=F64)
        else:  # R exp(h): world angular velocity G_j h
            angular[:, position, :, 3 * joint:3 * joint + 3] = world[:, joint]
    corners = keypoints.corner_vertices(output.vertices) if markers else None
    corner_maps = keypoints.corner_maps(output.vertices) if markers else None
    d_joints, d_corner_points = body_jacobians(
        model, rotations, world, output.joints, betas, moving, angular, num_columns=size,
        joint_ids=keypoints.joint_ids, corner_ids=keypoints.corner_ids, corner_vertices=corners,
        corner_maps=corner_maps, transl_columns=slice(66, 69), betas_columns=slice(69, size))
    analytic = keypoints.points_jacobian(d_joints, d_corner_points)
    steps = torch.eye(size, dtype=F64).unsqueeze(1).expand(size, batch, size) * EPS
    numeric = torch.stack([(points(step) - points(-step)) / (2 * EPS) for step in steps], dim=-1)
    still = [column for joint in set(range(22)) - set(moving.tolist())
             for column in (range(3) if joint == 0 else range(3 * joint, 3 * joint + 3))]
    numeric[..., still] = 0
    torch.testing.assert_close(analytic, numeric, atol=1e-7, rtol=1e-6)
