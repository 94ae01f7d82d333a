"""Training VPoser v2 on body poses (AMASS-style `.npz` folders), on CPU or CUDA.

The objective is the official one (human_body_prior, V02_05 trainer and config):

    loss = kl_weight * mean_batch( sum_latent KL(q(z|x) || N(0, I)) )     (official kl_weight 0.005)
         + 4 * L1(vertices(x_hat), vertices(x))                       (mean over vertices and xyz)
         + [epoch < 15] * ( 2 * geodesic(R_hat, R) + 2 * L1(joints(x_hat), joints(x)) )

where x_hat is decoded from a reparameterised draw z ~ q(z|x), bodies are posed with betas 0,
global orientation 0 and flat hands, `geodesic` is the mean over batch and the 21 joints of the
rotation angle (radians) between the decoded and input joint matrices, and the joint L1 runs over
all the body model's joints. Adam (lr 1e-3, weight decay 1e-5), batch 128, ReduceLROnPlateau
(patience 5) and early stopping (patience 10) on the validation loss, best checkpoint kept.

Departures from the official trainer, each for speed or robustness on a small data set:

- **Mesh term on a fixed vertex subset.** The official L1 is the mean over every vertex. Training
  here uses `train_vertices` vertices (default 1,500) drawn once, uniformly without replacement
  with a fixed seed. A uniform pick makes the subset mean an unbiased estimate of the full-mesh
  mean (same weighting of dense and sparse regions as the official loss), with a standard error
  far below the loss's batch-to-batch noise; farthest-point sampling would spread the points more
  evenly but change the weighting (fewer hand and face vertices than the full-mesh mean counts).
  Validation always uses the full mesh.
- **Matrices straight through, posed by a reduced chain.** The official trainer converts the
  decoded matrices to axis-angle and back before posing the body; here the decoded matrices (and
  the input axis-angle converted once per batch) pose the body directly through `BodyPoser`,
  which gives the same vertices and joints as `BodyModel.forward_rotations` with identity at the
  pelvis and the hand joints (tested to float precision) at about a third of its cost on CPU: the
  identity joints fold into their body ancestors and the skinning becomes one matrix product.
- **Geodesic term formulation.** Same quantity as the official `geodesic_loss_R` (mean angle in
  radians), computed as 2 * asin(|R_hat - R|_F / sqrt(8)) instead of acos((tr(R_hat R^T) - 1) / 2):
  equal for rotation matrices, but the chordal form has no 1 - cos cancellation in float32, so
  its gradient stays finite and accurate for near-perfect reconstructions.
- **Validation loss** is the official one: the mean vertex-to-vertex distance (metres, full mesh)
  of reconstructions from a *sampled* z (here with a fixed noise seed, so epochs compare like
  with like). We also log `val_recon_v2v_mm`, the same distance for z = the encoder mean, which is
  what `scripts/eval_prior.py` reports as `recon_v2v_mm`, and the weighted loss terms.
- **Optional restart of model selection when the extra terms go** (`reset_at_switch`, off by
  default, as in the official trainer). One best validation loss is kept across epoch 15, where the
  objective changes: without the matrot/joint terms the KL term wins more and the posteriors
  widen, so the sampled-z validation loss usually jumps up; the pre-switch best can then stay
  unbeaten (the run keeps a checkpoint trained under the old objective and stops 10 epochs later),
  and the plateau count carried over cuts the learning rate a few epochs after the switch. With
  the option the best loss, the early-stopping count and the scheduler's plateau count restart at
  the switch. On the CMU set it did not help (same settings: 31 vs 29 mm validation
  reconstruction; the longer high learning rate let the KL term shrink further), hence off.
- **Optional augmentation** (off by default): `rotation_noise_deg` perturbs every input joint
  rotation by a random rotation whose axis-angle components are N(0, sigma^2); the perturbed pose
  is both the input and the target, which widens the small data set's support (on 11 minutes of
  CMU motion it cut the held-out reconstruction error by a third or more; large sigma makes the
  samples less natural, see core/data/vposer_open.md). With `denoise` the noise goes to the
  encoder's input only and the target stays clean (tried on CMU: much worse). `joint_noise_deg`
  gives named joints their own sigma.
- **Optional part mixing** (off by default): `part_mix` is the share of training poses that take
  each whole body part (both legs, trunk with head, each arm; `BODY_PARTS`) with probability 1/2
  from another pose of the batch. Each part keeps natural local rotations, and the combinations
  reach poses the small data set lacks (held-out people move their arms and legs in combinations
  no training take has).
- **KL weight** is a parameter (`kl_weight`); the shipped open prior uses 0.001, see its card.
- **Time budget.** `max_minutes` times a few steps before training; when a full pass over the data
  would leave fewer than `min_epochs` epochs in the budget, an epoch becomes a fixed number of
  samples drawn from a running shuffle (every pose is still visited equally often). Training
  stops before an epoch that would overrun the budget.

Everything a run needs to continue is in `last_state.pt` (plain tensors and numbers, loads with
`torch.load(weights_only=True)`); `train(config)` with `resume=` that file picks up at the next
epoch with the same history.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .body_model import BodyModel
from .model_files import SMPL_BODY_JOINTS
from .pose_files import load_pose_file
from .rotations import axis_angle_to_matrix, matrix_to_axis_angle
from .vposer import VPoser, save_vposer

log = logging.getLogger(__name__)

NUM_BODY_JOINTS = 21
STATE_FORMAT = "vposer-train-state-1"


# --------------------------------------------------------------------------------------------
# Configuration


@dataclass
class TrainConfig:
    """Everything that defines a run. Paths are strings so the config stores as plain data."""

    train_dir: str
    val_dir: str
    out_dir: str
    body: str | None = None  # body model file; None: the open default body ("adult")
    device: str = "cpu"
    epochs: int = 100
    max_minutes: float | None = None
    min_epochs: int = 30  # with max_minutes: shrink epochs so at least this many fit
    samples_per_epoch: int | None = None  # None: a full pass (or what the budget dictates)
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-5
    seed: int = 0
    num_neurons: int = 512
    latent_dim: int = 32
    kl_weight: float = 0.005
    rec_weight: float = 4.0
    matrot_weight: float = 2.0
    joint_weight: float = 2.0
    extra_terms_until_epoch: int = 15  # epochs are counted from 0, as in the official trainer
    reset_at_switch: bool = False  # restart best/plateau tracking when the extra terms go (see doc)
    lr_patience: int = 5
    lr_factor: float = 0.1
    early_stop_patience: int = 10
    train_vertices: int = 1500
    vertex_seed: int = 0
    rotation_noise_deg: float = 0.0
    joint_noise_deg: dict[str, float] = field(default_factory=dict)  # per-joint overrides, by SMPL name
    denoise: bool = False  # with noise: perturb the encoder's input only, keep the clean target
    part_mix: float = 0.0  # share of training poses that take body parts from another pose (see doc)
    frame_stride: int = 1  # keep every n-th frame of each file (both splits)
    val_max_frames: int = 1000  # full-mesh validation on at most this many evenly spaced frames
    eval_chunk: int = 250
    resume: str | None = None
    progress: bool = True
    plot: bool = True  # write loss_curves.png at the end
    command: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)  # extra entries for best.pt


# --------------------------------------------------------------------------------------------
# Data


@dataclass
class PoseData:
    poses: Tensor  # (N, 63) axis-angle body poses (joints 1..21)
    files: list[str]
    frames_per_file: list[int]


def load_pose_folder(folder: str | Path, frame_stride: int = 1) -> PoseData:
    """All `*.npz` pose files in a folder (sorted, not recursive) as one (N, 63) float32 tensor.

    Takes `poses[:, 3:66]` (the 21 body joints after the global orientation) of AMASS-style files.
    """
    folder = Path(folder)
    paths = sorted(folder.glob("*.npz"))
    if not paths:
        raise FileNotFoundError(f"no .npz pose files in {folder}")
    chunks, names, counts = [], [], []
    for path in paths:
        poses = load_pose_file(path).poses
        if poses.shape[1] < 66:
            raise ValueError(f"{path}: 'poses' has {poses.shape[1] // 3} joints; need at least 22")
        body = poses[::frame_stride, 3:66]
        chunks.append(body)
        names.append(path.name)
        counts.append(len(body))
    poses = torch.as_tensor(np.concatenate(chunks), dtype=torch.float32)
    if not torch.isfinite(poses).all():
        raise ValueError(f"{folder}: pose files contain NaN or infinite values")
    return PoseData(poses, names, counts)


def evenly_spaced(n: int, k: int) -> Tensor:
    """Indices of at most k items spread evenly over range(n) (all of them when n <= k)."""
    if n <= k:
        return torch.arange(n)
    return torch.linspace(0, n - 1, k).round().long()


def pick_vertices(num_vertices: int, count: int, seed: int = 0) -> Tensor:
    """`count` distinct vertex indices, uniform without replacement, sorted; fixed by the seed."""
    if count >= num_vertices:
        return torch.arange(num_vertices)
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(num_vertices, generator=generator)[:count].sort().values


# --------------------------------------------------------------------------------------------
# Body posing and losses


def load_body(path: str | Path | None, device: str | torch.device = "cpu") -> BodyModel:
    """The body the mesh losses use; pose correctives are dropped when the file's are all zero."""
    body = BodyModel.open_default("adult") if path is None else BodyModel.from_file(path)
    if body.use_pose_correctives and not bool(body.posedirs.abs().max() > 0):
        body.use_pose_correctives = False  # zeros contribute nothing; skip the (P x 3V) product
    return body.to(device).eval().requires_grad_(False)


class BodyPoser(torch.nn.Module):
    """The body posed by its 21 body-joint rotations only, fast enough for a CPU training loop.

    Same result as `BodyModel.forward_rotations` with identity at the pelvis and at every joint
    after the 22 body joints (betas 0), for the chosen vertices, but much cheaper:

    - A joint whose local rotation is the identity has exactly its parent's skinning transform
      A = [R_p | p_p - R_p j_p], so every joint past the 22 (fingers, SMPL-X jaw and eyes) folds
      into its nearest body ancestor: its skinning weights are summed there, and its position is
      that ancestor's transform applied to its rest position. The chain runs over 22 joints.
    - Without pose correctives a posed point is sum_j w_j A_j [x; 1], which is linear in the 22
      transforms with constant coefficients w_j * [x; 1]: one (points x 88) matrix, built once,
      times the (88 x 3) stacked transforms poses vertices and joints in a single matmul.
    - With non-zero pose correctives (SMPL-family files) the rest points move with the pose, so
      the per-vertex blended transform is applied instead; only the 21 body joints' features
      count (the others are zero).
    """

    def __init__(self, body: BodyModel, vertex_ids: Tensor | None = None) -> None:
        super().__init__()
        parents = body.parents.tolist()
        num_joints, n_body = len(parents), NUM_BODY_JOINTS + 1
        if num_joints < n_body or any(p >= n_body for p in parents[:n_body]):
            raise ValueError("the body model needs the 22 SMPL body joints first")
        anchor = list(range(num_joints))
        for j in range(n_body, num_joints):
            anchor[j] = anchor[parents[j]]  # parents come before children in SMPL-family files
        self.parents = parents[:n_body]
        device, dtype = body.v_template.device, body.v_template.dtype
        ids = torch.arange(body.num_vertices) if vertex_ids is None else torch.as_tensor(vertex_ids).long()
        ids = ids.to(device)
        anchor_t = torch.tensor(anchor, device=device)
        weights = torch.zeros(len(ids), n_body, dtype=dtype, device=device).index_add_(1, anchor_t, body.weights[ids])
        rest_joints = body.rest_joints_template
        joint_weights = torch.nn.functional.one_hot(anchor_t, n_body).to(dtype)
        posedirs = None
        if body.use_pose_correctives:
            coords = (ids.unsqueeze(1) * 3 + torch.arange(3, device=device)).reshape(-1)
            posedirs = body.posedirs[: 9 * NUM_BODY_JOINTS][:, coords]
            if not bool(posedirs.abs().max() > 0):
                posedirs = None
        # Rows: the vertices, then all joints; columns (joint, homogeneous coordinate).
        points = torch.cat([body.v_template[ids], rest_joints])
        point_weights = torch.cat([weights, joint_weights])
        homogeneous = torch.cat([points, torch.ones_like(points[:, :1])], 1)
        coefficients = (point_weights[:, :, None] * homogeneous[:, None, :]).reshape(len(points), 4 * n_body)
        self.register_buffer("rest_joints", rest_joints[:n_body].clone())  # (22, 3)
        self.register_buffer("coefficients", coefficients)  # (V + J, 88)
        self.register_buffer("weights", weights)  # (V, 22), for the pose-corrective path
        self.register_buffer("rest_vertices", body.v_template[ids].clone())
        self.register_buffer("posedirs", posedirs)  # (189, 3V) or None
        self.num_joints = num_joints
        self.num_vertices = len(ids)

    def forward(self, body_matrices: Tensor) -> tuple[Tensor, Tensor]:
        """(B, 21, 3, 3) local rotations of joints 1..21 -> vertices (B, V, 3), joints (B, J, 3)."""
        batch = body_matrices.shape[0]
        rest = self.rest_joints
        rotations: list[Tensor] = [torch.eye(3, dtype=rest.dtype, device=rest.device).expand(batch, 3, 3)]
        positions: list[Tensor] = [rest[0].expand(batch, 3)]
        for j in range(1, NUM_BODY_JOINTS + 1):
            p = self.parents[j]
            rotations.append(rotations[p] @ body_matrices[:, j - 1])
            positions.append(positions[p] + rotations[p] @ (rest[j] - rest[p]))
        world = torch.stack(rotations, 1)  # (B, 22, 3, 3)
        translations = torch.stack(positions, 1) - (world @ rest.unsqueeze(-1)).squeeze(-1)
        # (B, 22, 4, 3): per joint the three columns of R and the translation, each a 3-vector.
        stacked = torch.cat([world.transpose(-1, -2), translations.unsqueeze(-2)], -2).reshape(batch, -1, 3)
        # One GEMM, (V + J, 88) x (88, B * 3); a broadcast batched matmul is far slower on CPU.
        posed = (self.coefficients @ stacked.transpose(0, 1).reshape(stacked.shape[1], -1)).view(-1, batch, 3)
        posed = posed.transpose(0, 1)  # (B, V + J, 3)
        vertices, joints = posed[:, : self.num_vertices], posed[:, self.num_vertices:]
        if self.posedirs is not None:
            eye = torch.eye(3, dtype=rest.dtype, device=rest.device)
            offsets = ((body_matrices - eye).reshape(batch, -1) @ self.posedirs).view(batch, self.num_vertices, 3)
            blend = (self.weights @ world.reshape(batch, -1, 9)).view(batch, self.num_vertices, 3, 3)
            vertices = vertices + (blend @ offsets.unsqueeze(-1)).squeeze(-1)
        return vertices, joints


def full_rotations(body_matrices: Tensor, num_joints: int) -> Tensor:
    """(B, 21, 3, 3) body-joint matrices -> (B, J, 3, 3) with identity at the pelvis and beyond."""
    batch = body_matrices.shape[0]
    eye = torch.eye(3, dtype=body_matrices.dtype, device=body_matrices.device)
    rest = eye.expand(batch, num_joints, 3, 3)
    return torch.cat([rest[:, :1], body_matrices, rest[:, 1 + NUM_BODY_JOINTS:]], dim=1)


def geodesic_mean(a: Tensor, b: Tensor) -> Tensor:
    """Mean rotation angle (radians) between matrices, via the chordal distance (see module doc)."""
    chord = ((a - b) ** 2).sum((-1, -2)).add(1e-12).sqrt()
    # Clamped just below 1: asin has an infinite slope at 1 (angle pi, where the angle itself has a kink).
    return (2 * torch.asin((chord / math.sqrt(8)).clamp(max=1.0 - 1e-6))).mean()


def kl_to_standard_normal(q_z) -> Tensor:
    """Mean over the batch of the KL divergence summed over latent dimensions."""
    mu, std = q_z.loc, q_z.scale
    kl = 0.5 * (mu**2 + std**2 - 1) - torch.log(std)
    return kl.sum(-1).mean()


def _body_joints(*names: str) -> tuple[int, ...]:
    """Indices into the 21 body joints after the pelvis."""
    return tuple(SMPL_BODY_JOINTS.index(name) - 1 for name in names)


# Body parts swapped whole by `mix_parts`: both legs together (so the stance stays coordinated),
# the trunk with neck and head, and each arm from its collar down.
BODY_PARTS = (
    _body_joints(*(f"{s}_{j}" for s in ("left", "right") for j in ("hip", "knee", "ankle", "foot"))),
    _body_joints("spine1", "spine2", "spine3", "neck", "head"),
    *(_body_joints(*(f"{s}_{j}" for j in ("collar", "shoulder", "elbow", "wrist"))) for s in ("left", "right")),
)


def mix_parts(poses: Tensor, share: float, generator: torch.Generator | None = None) -> Tensor:
    """(B, 63) axis-angle -> (B, 63) where a `share` of the poses take each body part (BODY_PARTS)
    with probability 1/2 from another pose of the batch. Every part keeps its own joints' natural
    local rotations, so the combinations stay plausible while covering poses the data lacks (a
    dribbling arm over a lunge)."""
    count = poses.shape[0]
    partner = torch.randint(count, (count,), generator=generator)
    mixed = poses.view(count, NUM_BODY_JOINTS, 3).clone()
    donors = poses.view(count, NUM_BODY_JOINTS, 3)[partner.to(poses.device)]
    chosen = torch.rand(count, generator=generator) < share
    for part in BODY_PARTS:
        take = (chosen & (torch.rand(count, generator=generator) < 0.5)).to(poses.device)
        joints = list(part)
        mixed[:, joints] = torch.where(take[:, None, None], donors[:, joints], mixed[:, joints])
    return mixed.flatten(1)


def noise_scales(sigma_deg: float, per_joint_deg: dict[str, float]) -> Tensor:
    """(21,) radians: sigma_deg for every body joint after the pelvis, per_joint_deg where named."""
    unknown = sorted(set(per_joint_deg) - set(SMPL_BODY_JOINTS[1:]))
    if unknown:
        raise ValueError(f"joint noise names unknown body joints {unknown}; expected some of {SMPL_BODY_JOINTS[1:]}")
    return torch.tensor([math.radians(per_joint_deg.get(name, sigma_deg)) for name in SMPL_BODY_JOINTS[1:]])


def rotation_noise(poses: Tensor, sigma_rad: Tensor | float, generator: torch.Generator | None = None) -> Tensor:
    """(B, 63) axis-angle -> perturbed (B, 63): each joint rotation times exp(N(0, sigma^2 I)),
    sigma a number or one per joint (21,)."""
    sigma = torch.as_tensor(sigma_rad, dtype=poses.dtype).to(poses.device).expand(NUM_BODY_JOINTS)
    noise = torch.randn(poses.shape, generator=generator).to(poses).view(-1, NUM_BODY_JOINTS, 3) * sigma[:, None]
    matrices = axis_angle_to_matrix(poses.view(-1, NUM_BODY_JOINTS, 3)) @ axis_angle_to_matrix(
        noise.view(-1, NUM_BODY_JOINTS, 3)
    )
    return matrix_to_axis_angle(matrices).flatten(1)


# --------------------------------------------------------------------------------------------
# Training


class _Budget:
    def __init__(self, minutes: float | None) -> None:
        self.start = time.monotonic()
        self.seconds = None if minutes is None else 60.0 * minutes

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return math.inf if self.seconds is None else self.seconds - self.elapsed()


class Trainer:
    """One training run; `run()` trains to the end (epochs, early stop or time) and writes outputs."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.device = torch.device(config.device)
        self.out_dir = Path(config.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(config.seed)

        t0 = time.monotonic()
        self.train_data = load_pose_folder(config.train_dir, config.frame_stride)
        self.val_data = load_pose_folder(config.val_dir, config.frame_stride)
        self.train_poses = self.train_data.poses.to(self.device)
        self.body = load_body(config.body, self.device)
        self.vertex_ids = pick_vertices(self.body.num_vertices, config.train_vertices, config.vertex_seed)
        self.train_poser = BodyPoser(self.body, self.vertex_ids)  # the training mesh loss's vertices
        self.full_poser = BodyPoser(self.body)  # validation: the full mesh
        self._prepare_validation()
        log.info("data and body ready in %.1f s", time.monotonic() - t0)

        self.model = VPoser(config.num_neurons, config.latent_dim).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="min", factor=config.lr_factor, patience=config.lr_patience
        )
        self.generator = torch.Generator().manual_seed(config.seed)  # shuffles and noise (CPU)
        self.noise_scales = noise_scales(config.rotation_noise_deg, config.joint_noise_deg)
        self.epoch = 0  # epochs completed
        self.best_val_loss = math.inf
        self.best_epoch = -1
        self.bad_epochs = 0
        self.history: list[dict[str, float]] = []
        self.samples_per_epoch = config.samples_per_epoch
        self.order = torch.empty(0, dtype=torch.long)  # running shuffle of the training poses
        self.cursor = 0
        self.trained_seconds = 0.0
        if config.resume:
            self._load_state(config.resume)

    # ------------------------------------------------------------------ validation set
    def _prepare_validation(self) -> None:
        ids = evenly_spaced(len(self.val_data.poses), self.config.val_max_frames)
        self.val_poses = self.val_data.poses[ids].to(self.device)
        vertices, joints = [], []
        with torch.no_grad():
            for chunk in self.val_poses.split(self.config.eval_chunk):
                v, j = self.full_poser(self._matrices(chunk))
                vertices.append(v)
                joints.append(j)
        self.val_vertices = torch.cat(vertices)
        self.val_joints = torch.cat(joints)

    # ------------------------------------------------------------------ helpers
    def _matrices(self, poses: Tensor) -> Tensor:
        return axis_angle_to_matrix(poses.view(-1, NUM_BODY_JOINTS, 3))

    def _losses(self, matrices: Tensor, rec_matrices: Tensor, q_z, target, rec, extra: bool) -> dict[str, Tensor]:
        """Weighted loss terms (official names) for a batch: input and decoded body-joint matrices,
        the posterior, and (vertices, joints) of the bodies posed with each (same vertex set)."""
        c = self.config
        losses = {
            "loss_kl": c.kl_weight * kl_to_standard_normal(q_z),
            "loss_mesh_rec": c.rec_weight * (rec[0] - target[0]).abs().mean(),
        }
        if extra:
            losses["matrot"] = c.matrot_weight * geodesic_mean(rec_matrices, matrices)
            losses["jtr"] = c.joint_weight * (rec[1] - target[1]).abs().mean()
        losses["loss_total"] = torch.stack(list(losses.values())).sum()
        return losses

    def _batch_losses(self, poses: Tensor, extra: bool, inputs: Tensor | None = None) -> dict[str, Tensor]:
        """Training pass on a batch: encode, sample z, decode, pose both bodies, weighted terms.
        `inputs` (default: the poses themselves) is what the encoder sees; `poses` the target."""
        matrices = self._matrices(poses)
        with torch.no_grad():
            target = self.train_poser(matrices)
        q_z = self.model.encode(poses if inputs is None else inputs)
        rec_matrices = self.model.decode_matrix(q_z.rsample())
        rec = self.train_poser(rec_matrices)
        return self._losses(matrices, rec_matrices, q_z, target, rec, extra)

    def _next_indices(self, count: int) -> Tensor:
        """The next `count` training indices of a running shuffle (reshuffled when used up)."""
        taken = []
        while count > 0:
            if self.cursor >= len(self.order):
                self.order = torch.randperm(len(self.train_poses), generator=self.generator)
                self.cursor = 0
            piece = self.order[self.cursor:self.cursor + count]
            self.cursor += len(piece)
            count -= len(piece)
            taken.append(piece)
        return torch.cat(taken)

    def _train_step(self, poses: Tensor, extra: bool) -> dict[str, float]:
        inputs = None
        if self.config.part_mix > 0:
            poses = mix_parts(poses, self.config.part_mix, self.generator)
        if self.noise_scales.any():
            noisy = rotation_noise(poses, self.noise_scales, self.generator)
            if self.config.denoise:
                inputs = noisy  # the encoder sees the perturbed pose, the target stays clean
            else:
                poses = noisy
        losses = self._batch_losses(poses, extra, inputs)
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss_total"].backward()
        self.optimizer.step()
        return {key: float(value.detach()) for key, value in losses.items()}

    # ------------------------------------------------------------------ timing
    def _time_step(self, steps: int = 6) -> float:
        """Seconds per training step (forward + backward, no update), after a warm-up step."""
        self.model.train()
        generator = torch.Generator().manual_seed(1234)
        times = []
        for i in range(steps + 1):
            idx = torch.randint(len(self.train_poses), (self.config.batch_size,), generator=generator)
            t = time.perf_counter()
            poses = self.train_poses[idx.to(self.device)]
            losses = self._batch_losses(poses, True)
            self.model.zero_grad(set_to_none=True)
            losses["loss_total"].backward()
            self.model.zero_grad(set_to_none=True)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            if i:
                times.append(time.perf_counter() - t)
        return float(np.median(times))

    def _time_validation(self) -> float:
        t = time.perf_counter()
        self._validate(limit=self.config.eval_chunk)
        return (time.perf_counter() - t) * max(1.0, len(self.val_poses) / self.config.eval_chunk)

    def _plan(self, budget: _Budget) -> None:
        """Size epochs to the time budget (only when max_minutes is set and no size was given)."""
        c = self.config
        if c.max_minutes is None:
            return
        step = self._time_step()
        val = self._time_validation()
        full_steps = len(self.train_poses) // c.batch_size
        full_epoch = full_steps * step + val
        print(
            f"timing: {step * 1000:.0f} ms per step of {c.batch_size}, {val:.1f} s per validation; "
            f"a full pass ({full_steps} steps) takes ~{full_epoch / 60:.1f} min",
            flush=True,
        )
        if self.samples_per_epoch is not None:
            return
        per_epoch = budget.left() / max(1, min(c.min_epochs, c.epochs) - self.epoch)
        if full_epoch > per_epoch:
            steps = max(10, int((per_epoch - val) / step))
            self.samples_per_epoch = steps * c.batch_size
            print(
                f"budget {c.max_minutes:g} min: epochs of {steps} steps ({self.samples_per_epoch} samples, "
                f"{self.samples_per_epoch / len(self.train_poses):.2f} of the data) so that "
                f"~{min(c.min_epochs, c.epochs)} epochs fit",
                flush=True,
            )

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def _validate(self, limit: int | None = None) -> dict[str, float]:
        """Full-mesh validation: the official val_loss (v2v of a sampled z, metres), the v2v of
        z = mean (mm), and the weighted training terms on the same frames."""
        c = self.config
        self.model.eval()
        noise = torch.Generator().manual_seed(c.seed + 7)
        extra = self.epoch < c.extra_terms_until_epoch
        sums: dict[str, float] = {}
        count = 0
        poses_all = self.val_poses if limit is None else self.val_poses[:limit]
        for start in range(0, len(poses_all), c.eval_chunk):
            poses = poses_all[start:start + c.eval_chunk]
            n = len(poses)
            target_v = self.val_vertices[start:start + n]
            target_j = self.val_joints[start:start + n]
            q_z = self.model.encode(poses)
            eps = torch.randn(q_z.loc.shape, generator=noise).to(q_z.loc)
            sampled = self.model.decode_matrix(q_z.loc + q_z.scale * eps)
            mean = self.model.decode_matrix(q_z.loc)
            rec_s = self.full_poser(sampled)
            rec_m = self.full_poser(mean)
            target = (target_v, target_j)
            losses = self._losses(self._matrices(poses), sampled, q_z, target, rec_s, extra)
            values = {f"val_{k}": float(v) for k, v in losses.items()}
            values["val_loss"] = float((rec_s[0] - target_v).norm(dim=-1).mean())
            values["val_recon_v2v_mm"] = 1000 * float((rec_m[0] - target_v).norm(dim=-1).mean())
            for key, value in values.items():
                sums[key] = sums.get(key, 0.0) + value * n
            count += n
        return {key: value / count for key, value in sums.items()}

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": _to_cpu(self.optimizer.state_dict()),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "best_val_loss": self.best_val_loss,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "history": self.history,
            "samples_per_epoch": self.samples_per_epoch,
            "order": self.order.clone(),
            "cursor": self.cursor,
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "vertex_ids": self.vertex_ids.clone(),
            "trained_seconds": self.trained_seconds,
            "config": {k: v for k, v in asdict(self.config).items() if k != "metadata"},
        }

    def _load_state(self, path: str | Path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ValueError(f"{path}: not a training state file ({STATE_FORMAT})")
        stored = state["config"]
        for key in ("num_neurons", "latent_dim"):
            if stored[key] != getattr(self.config, key):
                raise ValueError(f"{path}: {key}={stored[key]} but this run asks for {getattr(self.config, key)}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = int(state["epoch"])
        self.best_val_loss = float(state["best_val_loss"])
        self.best_epoch = int(state["best_epoch"])
        self.bad_epochs = int(state["bad_epochs"])
        self.history = list(state["history"])
        if self.config.samples_per_epoch is None:
            self.samples_per_epoch = state["samples_per_epoch"]
        self.order = state["order"]
        self.cursor = int(state["cursor"])
        if len(self.order) != len(self.train_poses):
            self.order, self.cursor = torch.empty(0, dtype=torch.long), 0  # other data: reshuffle
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if not torch.equal(state["vertex_ids"], self.vertex_ids):
            log.warning("%s: stored training vertex subset differs from this body's; using the new one", path)
        self.trained_seconds = float(state["trained_seconds"])
        print(f"resumed from {path} after epoch {self.epoch} (best val_loss {self.best_val_loss:.5f} "
              f"at epoch {self.best_epoch + 1})", flush=True)

    def _save_best(self, metrics: dict[str, float]) -> None:
        c = self.config
        metadata: dict[str, Any] = {
            "trainer": "core/train.py",
            "train_data": display_path(c.train_dir),
            "val_data": display_path(c.val_dir),
            "train_frames": len(self.train_data.poses),
            "val_frames": len(self.val_data.poses),
            "train_files": len(self.train_data.files),
            "val_files": len(self.val_data.files),
            "body": "open default (adult)" if c.body is None else display_path(c.body),
            "epoch": self.epoch,  # epochs completed when these weights were current
            "val_loss_v2v_sampled_m": metrics["val_loss"],
            "val_recon_v2v_mm": metrics["val_recon_v2v_mm"],
            "rotation_noise_deg": c.rotation_noise_deg,
            **{f"noise_deg_{name}": deg for name, deg in c.joint_noise_deg.items()},
            "denoise": c.denoise,
            "part_mix": c.part_mix,
            "kl_weight": c.kl_weight,
            "reset_at_switch": c.reset_at_switch,
            "seed": c.seed,
            "command": c.command,
        }
        metadata.update({k: v for k, v in c.metadata.items() if isinstance(v, (str, int, float, bool))})
        save_vposer(self.model, self.out_dir / "best.pt", metadata)

    # ------------------------------------------------------------------ main loop
    def run(self) -> dict[str, Any]:
        c = self.config
        budget = _Budget(c.max_minutes)
        print(
            f"data: {len(self.train_poses)} train poses ({len(self.train_data.files)} files), "
            f"{len(self.val_data.poses)} val poses ({len(self.val_data.files)} files; {len(self.val_poses)} "
            f"used per validation); body {self.body.num_vertices} vertices / {self.body.num_joints} joints, "
            f"{len(self.vertex_ids)} training vertices; device {self.device}, {torch.get_num_threads()} threads",
            flush=True,
        )
        self._plan(budget)
        epoch_seconds: list[float] = []
        stop_reason = "epochs"
        while self.epoch < c.epochs:
            if epoch_seconds and budget.left() < 1.05 * float(np.mean(epoch_seconds[-3:])):
                stop_reason = "time budget"
                break
            if c.reset_at_switch and self.epoch == c.extra_terms_until_epoch > 0:
                self._reset_tracking()
            t_epoch = time.monotonic()
            train_metrics = self._train_epoch()
            val_metrics = self._validate()
            self.scheduler.step(val_metrics["val_loss"])
            seconds = time.monotonic() - t_epoch
            epoch_seconds.append(seconds)
            self.trained_seconds += seconds
            self.epoch += 1
            improved = val_metrics["val_loss"] < self.best_val_loss
            if improved:
                self.best_val_loss, self.best_epoch, self.bad_epochs = val_metrics["val_loss"], self.epoch - 1, 0
            else:
                self.bad_epochs += 1
            entry = {"epoch": self.epoch, "lr": self.optimizer.param_groups[0]["lr"], "seconds": seconds,
                     **train_metrics, **val_metrics}
            self.history.append(entry)
            if improved:
                self._save_best(val_metrics)
            torch.save(self.state(), self.out_dir / "last_state.pt")
            self._write_history()
            print(
                f"epoch {self.epoch:3d}  train {train_metrics['loss_total']:.4f} (kl {train_metrics['loss_kl']:.4f})  "
                f"val_loss {val_metrics['val_loss'] * 1000:.1f} mm  recon_v2v {val_metrics['val_recon_v2v_mm']:.1f} mm  "
                f"val_total {val_metrics['val_loss_total']:.4f}  lr {entry['lr']:.0e}  {seconds:.0f} s"
                f"{'  *best' if improved else ''}",
                flush=True,
            )
            if self.bad_epochs >= c.early_stop_patience:
                stop_reason = "early stopping"
                break
        else:
            stop_reason = "epochs"
        self._write_history()
        try:
            if c.plot:
                plot_history(self.history, self.out_dir / "loss_curves.png")
        except Exception as error:  # plotting is a convenience; never lose a run over it
            log.warning("could not plot the loss curves: %s", error)
        best = next((h for h in self.history if h["epoch"] == self.best_epoch + 1), None)
        summary = {
            "stop_reason": stop_reason,
            "epochs": self.epoch,
            "best_epoch": self.best_epoch + 1,
            "best_val_loss": self.best_val_loss,
            "best_val_recon_v2v_mm": None if best is None else best["val_recon_v2v_mm"],
            "trained_seconds": self.trained_seconds,
        }
        print(f"stopped ({stop_reason}) after {self.epoch} epochs; best epoch {summary['best_epoch']}: "
              f"val_loss {self.best_val_loss * 1000:.1f} mm, recon_v2v "
              f"{summary['best_val_recon_v2v_mm'] or float('nan'):.1f} mm", flush=True)
        return summary

    def _reset_tracking(self) -> None:
        """The objective loses its extra terms: forget the best validation loss and the plateau
        counts, so that model selection, early stopping and the LR schedule judge the final
        objective only (the learning rate itself is kept)."""
        self.best_val_loss, self.bad_epochs = math.inf, 0
        self.scheduler.best = self.scheduler.mode_worse
        self.scheduler.num_bad_epochs = 0
        self.scheduler.cooldown_counter = 0
        print(f"epoch {self.epoch + 1}: extra loss terms off; best-model and plateau tracking restart", flush=True)

    def _train_epoch(self) -> dict[str, float]:
        c = self.config
        self.model.train()
        extra = self.epoch < c.extra_terms_until_epoch
        samples = self.samples_per_epoch or len(self.train_poses)
        steps = max(1, samples // c.batch_size)
        sums: dict[str, float] = {}
        bar = _progress(range(steps), c.progress, f"epoch {self.epoch + 1}")
        for i in bar:
            idx = self._next_indices(c.batch_size).to(self.device)
            values = self._train_step(self.train_poses[idx], extra)
            for key, value in values.items():
                sums[key] = sums.get(key, 0.0) + value
            if hasattr(bar, "set_postfix") and (i % 20 == 0 or i == steps - 1):
                bar.set_postfix({k.replace("loss_", ""): f"{v / (i + 1):.4f}" for k, v in sums.items()},
                                refresh=sys.stderr.isatty())
        for key in ("matrot", "jtr"):
            sums.setdefault(key, 0.0)
        return {key: value / steps for key, value in sums.items()}

    def _write_history(self) -> None:
        (self.out_dir / "history.json").write_text(json.dumps(self.history, indent=1))


def train(config: TrainConfig) -> dict[str, Any]:
    """Train VPoser as configured; returns a summary (stop reason, epochs, best metrics)."""
    return Trainer(config).run()


# --------------------------------------------------------------------------------------------
# Outputs


def plot_history(history: list[dict[str, float]], path: str | Path) -> None:
    """Loss curves per epoch: total (train/val), KL (train/val) and the validation v2v errors."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    axes[0].plot(epochs, [h["loss_total"] for h in history], label="train")
    axes[0].plot(epochs, [h["val_loss_total"] for h in history], label="val")
    axes[0].set_title("total loss (weighted)")
    axes[1].plot(epochs, [h["loss_kl"] for h in history], label="train")
    axes[1].plot(epochs, [h["val_loss_kl"] for h in history], label="val")
    axes[1].set_title("KL term (weighted)")
    axes[2].plot(epochs, [1000 * h["val_loss"] for h in history], label="val v2v, sampled z (val_loss)")
    axes[2].plot(epochs, [h["val_recon_v2v_mm"] for h in history], label="val v2v, z = mean")
    axes[2].set_title("validation vertex error (mm, full mesh)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _progress(iterable, enabled: bool, desc: str):
    if not enabled:
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    interactive = sys.stderr.isatty()
    return tqdm(iterable, desc=desc, leave=False, mininterval=0.5 if interactive else 30.0,
                dynamic_ncols=interactive, ncols=None if interactive else 120)


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def display_path(path: str | Path) -> str:
    """A path as it may appear in shipped metadata: relative to the working directory when inside
    it, else only its last two parts (never a machine's absolute path)."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(Path(*path.parts[-2:])) if path.is_absolute() else str(path)


def display_command(argv: list[str]) -> str:
    """The command line with absolute paths shortened as in `display_path`."""
    return shlex.join(display_path(arg) if os.path.isabs(arg) else arg for arg in argv)
