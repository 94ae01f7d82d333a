"""Small bodies, test priors and posed targets shared by the keypoint, Jacobian and IK tests."""

from __future__ import annotations

from pathlib import Path

import torch

from core.body_model import BodyModel
from core.keypoints import KeypointSet
from core.rotations import axis_angle_to_matrix
from core.synthetic_models import write_model
from core.vposer import VPoser

IDENTITY_6D = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0]).repeat(21)


def small_body(folder: Path, dtype: torch.dtype = torch.float64, kind: str = "smplh") -> BodyModel:
    """A made-up SMPL-H layout body with few vertices (fast), pose correctives included."""
    path = write_model(folder / f"{kind}_small.npz", kind, num_vertices=600, num_faces=1200, seed=3)
    return BodyModel.from_file(path, dtype=dtype)


def smooth_prior(dtype: torch.dtype = torch.float64, seed: int = 0, spread: float = 0.4) -> VPoser:
    """A random VPoser whose hidden units are always active, so z -> rotations is smooth (no ReLU
    kinks), and whose mean pose is the T-pose: poses drawn from it are moderate and exactly reachable."""
    torch.manual_seed(seed)
    prior = VPoser().to(dtype).eval().requires_grad_(False)
    net = prior.decoder_net
    with torch.no_grad():
        net[0].bias.add_(10.0)
        net[3].bias.add_(10.0)
        net[5].weight.mul_(spread)
        offset = net[5](net[:5](torch.zeros(1, prior.latent_dim, dtype=dtype)))[0]
        net[5].bias.sub_(offset - IDENTITY_6D.to(dtype))
    return prior


def rest_rotations(model: BodyModel, batch: int) -> torch.Tensor:
    """(B, J, 3, 3): every joint at its rest rotation (hand means included)."""
    return axis_angle_to_matrix(model.full_pose({}, 1).view(1, -1, 3)).expand(batch, -1, -1, -1).clone()


def posed(model: BodyModel, prior: VPoser | None, batch: int, seed: int = 1, temperature: float = 1.0,
          turn: float = 0.8) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Random (rotations, latent or None, transl): a prior sample (or small raw rotations without
    a prior), a random global orientation and a translation of about a metre."""
    generator = torch.Generator().manual_seed(seed)
    rotations = rest_rotations(model, batch)
    rotations[:, 0] = axis_angle_to_matrix((torch.randn(batch, 3, generator=generator) * turn).to(model.dtype))
    latent = None
    if prior is not None:
        latent = (torch.randn(batch, prior.latent_dim, generator=generator) * temperature).to(model.dtype)
        rotations[:, 1:22] = prior.decode_matrix(latent)
    else:
        rotations[:, 1:22] = axis_angle_to_matrix((torch.randn(batch, 21, 3, generator=generator) * 0.3).to(model.dtype))
    transl = torch.randn(batch, 3, generator=generator).to(model.dtype)
    return rotations, latent, transl


def targets_for(keypoints: KeypointSet, rotations: torch.Tensor, transl: torch.Tensor,
                betas: torch.Tensor | None = None) -> torch.Tensor:
    with torch.no_grad():
        return keypoints.evaluate(rotations, betas, transl)
