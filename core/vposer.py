"""VPoser v2: a variational auto-encoder over the 21 SMPL body-joint rotations (after the pelvis).

The layers and their names follow the official human_body_prior release (V02_05) exactly, so its
state_dict loads unchanged; the same network and key names serve for the open weights trained here.
The IK optimises a latent `z` and decodes it with `decode_matrix`, which is cheap and differentiable.

Checkpoints are loaded without running pickled code: `torch.load(weights_only=True)` first, and for
Lightning checkpoints (whose metadata holds arbitrary Python objects) a restricted unpickler that
rebuilds tensors and turns every other global into an inert placeholder.
"""

from __future__ import annotations

import logging
import pickle
import re
import types
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Normal

from .errors import VPoserError
from .rotations import matrix_to_axis_angle, rotation_6d_to_matrix

log = logging.getLogger(__name__)

FORMAT = "vposer-v2"
LIGHTNING_PREFIX = "vp_model."
NUM_JOINTS = 21


class VPoserLoadError(VPoserError):
    """A file is not a usable VPoser checkpoint; the message names the file and what is wrong."""


# --------------------------------------------------------------------------------------------
# Network


class _NormalDistDecoder(nn.Module):
    """Encoder head. softplus(`logvar`) is used as the standard deviation, as in the official
    code, despite the name: the trained weights only make sense read that way."""

    def __init__(self, num_feat_in: int, latent_dim: int) -> None:
        super().__init__()
        self.mu = nn.Linear(num_feat_in, latent_dim)
        self.logvar = nn.Linear(num_feat_in, latent_dim)

    def forward(self, x: Tensor) -> Normal:
        return Normal(self.mu(x), nn.functional.softplus(self.logvar(x)))


class _ContinuousRotReprDecoder(nn.Module):
    """(B, 21*6) -> (B, 21, 3, 3) through VPoser's row-major 3x2 6D layout."""

    def forward(self, x: Tensor) -> Tensor:
        return rotation_6d_to_matrix(x.unflatten(-1, (NUM_JOINTS, 6)))


class VPoser(nn.Module):
    """VPoser v2 (latent 32, hidden 512 in the official release).

    Inputs are body poses as axis-angle, (B, 63) or (B, 21, 3), in SMPL joint order without the
    pelvis. Call `eval()` before use outside training: the encoder's BatchNorm layers must use
    their running statistics and dropout must be off (the loaders do this).
    """

    num_joints = NUM_JOINTS

    def __init__(self, num_neurons: int = 512, latent_dim: int = 32) -> None:
        super().__init__()
        self.num_neurons = num_neurons
        self.latent_dim = latent_dim
        n_features = self.num_joints * 3
        self.encoder_net = nn.Sequential(
            nn.Flatten(),
            nn.BatchNorm1d(n_features),
            nn.Linear(n_features, num_neurons),
            nn.LeakyReLU(),
            nn.BatchNorm1d(num_neurons),
            nn.Dropout(0.1),
            nn.Linear(num_neurons, num_neurons),
            nn.Linear(num_neurons, num_neurons),
            _NormalDistDecoder(num_neurons, latent_dim),
        )
        self.decoder_net = nn.Sequential(
            nn.Linear(latent_dim, num_neurons),
            nn.LeakyReLU(),
            nn.Dropout(0.1),
            nn.Linear(num_neurons, num_neurons),
            nn.LeakyReLU(),
            nn.Linear(num_neurons, self.num_joints * 6),
            _ContinuousRotReprDecoder(),
            nn.Flatten(),  # (B, 21*9), as the official decoder's last stage
        )
        # Set by the loaders: the file the weights came from and our format's metadata.
        self.source: str | None = None
        self.metadata: dict[str, str | int | float | bool] = {}

    @property
    def config(self) -> dict[str, int]:
        return {"num_neurons": self.num_neurons, "latent_dim": self.latent_dim}

    def encode(self, pose_body: Tensor) -> Normal:
        """(B, 63) axis-angle -> q(z | pose), a Normal over (B, latent_dim)."""
        return self.encoder_net(pose_body)

    def encode_matrix(self, rotations: Tensor) -> Tensor:
        """(B, 21, 3, 3) body rotations -> (B, latent_dim) the encoder's mean: the latent whose
        decoding is nearest that pose (the IK's start from a pose made elsewhere), and, by its
        squared norm, how likely the prior finds the pose (core.limb_flips' judge)."""
        return self.encode(matrix_to_axis_angle(rotations).flatten(-2)).mean

    def decode_matrix(self, z: Tensor) -> Tensor:
        """(B, latent_dim) -> (B, 21, 3, 3) rotation matrices; the cheapest decode, for the IK."""
        return self.decoder_net(z).unflatten(-1, (self.num_joints, 3, 3))

    def decode_axis_angle(self, z: Tensor) -> Tensor:
        """(B, latent_dim) -> (B, 63) axis-angle (angles in [0, pi])."""
        return matrix_to_axis_angle(self.decode_matrix(z)).flatten(-2)

    def decode(self, z: Tensor) -> dict[str, Tensor]:
        """Both forms: pose_body (B, 63) axis-angle and pose_body_matrot (B, 21, 3, 3)."""
        matrot = self.decode_matrix(z)
        return {"pose_body": matrix_to_axis_angle(matrot).flatten(-2), "pose_body_matrot": matrot}

    def forward(self, pose_body: Tensor) -> dict[str, Any]:
        """Training pass: encode, draw z with the reparameterisation trick, decode.

        Returns `decode`'s keys plus q_z and its mean/std under the official names
        (poZ_body_mean, poZ_body_std), which the KL term and the training logs use.
        """
        q_z = self.encode(pose_body)
        out: dict[str, Any] = self.decode(q_z.rsample())
        out.update(poZ_body_mean=q_z.mean, poZ_body_std=q_z.scale, q_z=q_z)
        return out

    def _param(self) -> Tensor:
        return next(self.parameters())

    def sample_latent(
        self,
        n: int,
        seed: int | None = None,
        temperature: float = 1.0,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """(n, latent_dim) draws from N(0, temperature^2).

        With a seed, the draw uses its own CPU generator, so it is the same on every device and
        neither reads nor advances the global RNG. Temperature < 1 gives tamer poses; 0 gives the
        zero latent (the prior's mean pose).
        """
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.latent_dim, generator=generator) * temperature
        return z.to(device=device or self._param().device, dtype=self._param().dtype)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        seed: int | None = None,
        temperature: float = 1.0,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """n random body poses, (n, 63) axis-angle; see `sample_latent` for the arguments."""
        return self.decode_axis_angle(self.sample_latent(n, seed, temperature, device))

    @staticmethod
    def interpolate(z0: Tensor, z1: Tensor, steps: int) -> Tensor:
        """`steps` latents from z0 to z1 (both included), (..., D) -> (steps, ..., D).

        Spherical interpolation (slerp) about the origin, not linear: under the N(0, I) prior
        almost all mass lies near the sphere of radius sqrt(D), and the midpoint of a straight
        line between two draws is ~30% shorter, so linear paths sag towards the mean pose.
        Slerp keeps intermediate latents as typical as the ends. When the two latents are
        (nearly) parallel or one is zero, it falls back to linear interpolation.
        """
        if steps < 2:
            raise ValueError(f"interpolate needs steps >= 2, got {steps}")
        t = torch.linspace(0, 1, steps, dtype=z0.dtype, device=z0.device)
        t = t.view(steps, *([1] * z0.dim()))
        norms = torch.minimum(z0.norm(dim=-1, keepdim=True), z1.norm(dim=-1, keepdim=True))
        cos = nn.functional.cosine_similarity(z0, z1, dim=-1, eps=1e-12).unsqueeze(-1)
        omega = torch.acos(cos.clamp(-1.0, 1.0))
        sin_omega = torch.sin(omega)
        nearly_parallel = (sin_omega < 1e-4) | (norms < 1e-8)
        safe_sin = torch.where(nearly_parallel, torch.ones_like(sin_omega), sin_omega)
        w0 = torch.where(nearly_parallel, 1 - t, torch.sin((1 - t) * omega) / safe_sin)
        w1 = torch.where(nearly_parallel, t, torch.sin(t * omega) / safe_sin)
        return w0 * z0 + w1 * z1


# --------------------------------------------------------------------------------------------
# The latent's Gaussian refitted to the data


@torch.no_grad()
def whiten_latent(model: VPoser, poses: Tensor, chunk: int = 4096) -> tuple[VPoser, Tensor]:
    """A copy of `model` whose latent u ~ N(0, I) is the Gaussian of its training data.

    Why: trained with a small KL weight (the open prior: 0.0002, for reconstruction), the encoder's
    means of the training poses are far from N(0, I) (the open prior's covariance eigenvalues run
    from 3.1 down to 0.03), so the IK's latent term ||z||^2 and samples from N(0, I) misjudge which
    poses are likely. Refit: mean m (D,) and covariance C = L L^T (L = V diag(sqrt(eigenvalues)))
    of the encoder means of `poses` (N, 63) axis-angle, and fold z = m + L u into the decoder's first
    layer and u = L^-1 (mu - m) into the encoder's mean head. Same network, same file layout, the same
    decoded pose for the same input pose (`encode(x).mean` -> decode); only what the latent's origin
    and unit sphere mean changes (two-stage density estimation in the latent, as in Dai & Wipf 2019
    and Ghosh et al. 2020, with one Gaussian). The encoder's spread (a diagonal Normal) cannot carry
    L^-1's mixing and is left in the old units: nothing but training reads it.

    Returns the copy (eval mode) and the eigenvalues of C, largest first (D,)."""
    model = model.eval()
    means = torch.cat([model.encode(part).mean for part in poses.to(model._param()).split(chunk)]).double()
    if len(means) <= model.latent_dim:
        raise VPoserError(f"whitening the latent needs more than {model.latent_dim} poses, got {len(means)}")
    mean = means.mean(0)
    eigenvalues, eigenvectors = torch.linalg.eigh(torch.cov(means.T))
    if float(eigenvalues.min()) <= 0:
        raise VPoserError("the poses' latent covariance is singular: they do not span the latent")
    factor = eigenvectors * eigenvalues.sqrt()  # L, columns scaled: C = L L^T
    inverse = torch.linalg.inv(factor)
    whitened = VPoser(model.num_neurons, model.latent_dim).to(model._param())
    whitened.load_state_dict(model.state_dict())
    first, head = whitened.decoder_net[0], whitened.encoder_net[-1].mu
    weight, bias = first.weight.double(), first.bias.double()
    first.weight.copy_(weight @ factor)
    first.bias.copy_(bias + weight @ mean)
    head_weight, head_bias = head.weight.double(), head.bias.double()
    head.weight.copy_(inverse @ head_weight)
    head.bias.copy_(inverse @ (head_bias - mean))
    whitened.source, whitened.metadata = model.source, dict(model.metadata)
    return whitened.eval(), eigenvalues.flip(0)


# --------------------------------------------------------------------------------------------
# Restricted unpickling


class _Inert:
    """Stands in for a global that a checkpoint names but we do not trust.

    The unpickler hands out a subclass of this instead of importing the global, so pickled
    `__reduce__` calls, constructors and `__setstate__` only ever reach these methods, which just
    record their arguments.
    """

    qualified_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> _Inert:
        # Everything happens here: pickle's NEWOBJ calls only __new__, its REDUCE calls both.
        self = super().__new__(cls)
        self.args, self.kwargs = args, kwargs
        self.state: Any = None
        self.items: list[Any] = []
        return self

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items.append((key, value))

    def append(self, value: Any) -> None:
        self.items.append(value)

    def extend(self, values: Any) -> None:
        self.items.extend(values)

    def add(self, value: Any) -> None:
        self.items.append(value)

    def __repr__(self) -> str:
        return f"<not loaded: {self.qualified_name}>"


_STORAGE_NAMES = frozenset(name for name in dir(torch) if name.endswith("Storage"))
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("collections", "OrderedDict"): OrderedDict,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Rebuilds tensors; every other global becomes an `_Inert` placeholder (never imported)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[(module, name)]
        if module == "torch" and name in _STORAGE_NAMES:
            return getattr(torch, name)
        return type(f"Inert[{module}.{name}]", (_Inert,), {"qualified_name": f"{module}.{name}"})


def _restricted_load(file: Any, **kwargs: Any) -> Any:
    return _RestrictedUnpickler(file, **kwargs).load()


# torch.load wants a module-like object exposing Unpickler and load (and __name__).
_restricted_pickle = types.ModuleType("vposer_restricted_pickle")
_restricted_pickle.Unpickler = _RestrictedUnpickler  # type: ignore[attr-defined]
_restricted_pickle.load = _restricted_load  # type: ignore[attr-defined]


def _torch_load(path: Path, map_location: Any) -> Any:
    """torch.load without executing pickled code, even for Lightning checkpoints."""
    try:
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError:
            # Refused for non-tensor globals (Lightning's hyper_parameters etc.): use placeholders.
            return torch.load(
                path, map_location=map_location, pickle_module=_restricted_pickle, weights_only=False
            )
    except Exception as error:
        raise VPoserLoadError(
            f"{path}: not a readable PyTorch checkpoint ({type(error).__name__}: {error})"
        ) from error


# --------------------------------------------------------------------------------------------
# Loading and saving


def _expected_shapes(config: Mapping[str, int]) -> dict[str, torch.Size]:
    with torch.device("meta"):
        model = VPoser(**config)
    return {key: value.shape for key, value in model.state_dict().items()}


def _state_dict_from(obj: Any, path: Path) -> tuple[dict[str, Tensor], dict[str, int] | None, dict]:
    """Finds the network's tensors in whatever was stored: (state_dict, config or None, metadata)."""
    if not isinstance(obj, Mapping):
        raise VPoserLoadError(f"not a VPoser checkpoint: {path} holds a {type(obj).__name__}, not a dict")
    if "format" in obj:
        if obj["format"] != FORMAT:
            raise VPoserLoadError(
                f"not a VPoser checkpoint: {path} has format {obj['format']!r}, not {FORMAT!r}"
            )
        try:
            stored = obj["config"]
            config = {"num_neurons": int(stored["num_neurons"]), "latent_dim": int(stored["latent_dim"])}
            return dict(obj["state_dict"]), config, dict(obj.get("metadata", {}))
        except (KeyError, TypeError, ValueError) as error:
            raise VPoserLoadError(f"{path}: damaged {FORMAT} file ({error!r})") from error
    if isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    elif not all(isinstance(value, Tensor) for value in obj.values()):
        raise VPoserLoadError(
            f"not a VPoser checkpoint: {path} has neither 'state_dict' nor only tensors "
            f"(keys: {', '.join(map(str, list(obj)[:8]))})"
        )
    keys = [key for key in obj if isinstance(key, str) and key.startswith(LIGHTNING_PREFIX)]
    state_dict = {key[len(LIGHTNING_PREFIX):]: obj[key] for key in keys} if keys else dict(obj)
    if not any(str(key).startswith(("encoder_net.", "decoder_net.")) for key in state_dict):
        raise VPoserLoadError(
            f"not a VPoser checkpoint: {path} has no encoder_net/decoder_net weights "
            f"(keys: {', '.join(map(str, list(state_dict)[:8])) or 'none'})"
        )
    return state_dict, None, {}


def _check_state_dict(state_dict: Mapping[str, Any], config: Mapping[str, int], path: Path) -> None:
    expected = _expected_shapes(config)
    sizes = f"num_neurons={config['num_neurons']}, latent_dim={config['latent_dim']}"
    for key, shape in expected.items():
        if key not in state_dict:
            raise VPoserLoadError(f"{path}: missing key '{key}' (expected shape {tuple(shape)}; {sizes})")
        value = state_dict[key]
        if not isinstance(value, Tensor):
            raise VPoserLoadError(f"{path}: key '{key}' is a {type(value).__name__}, not a tensor")
        if value.shape != shape:
            raise VPoserLoadError(
                f"{path}: key '{key}' has shape {tuple(value.shape)}, expected {tuple(shape)} ({sizes})"
            )
    unexpected = sorted(set(state_dict) - set(expected))
    if unexpected:
        raise VPoserLoadError(f"{path}: unexpected keys for VPoser: {', '.join(map(str, unexpected))}")


def _config_from_yaml(path: Path) -> dict[str, int]:
    """model_params {num_neurons, latentD} from an official config (safe_load: no tags run).
    PyYAML is imported here, not with the module: only the official release has a YAML config, so
    the shipped prior and our own weights load without it."""
    try:
        import yaml
    except ImportError:
        raise VPoserLoadError(
            f"{path}: reading the official release's config needs the PyYAML package, which this Python "
            "lacks: install it (pip install pyyaml) where PyTorch is installed"
        ) from None
    try:
        params = yaml.safe_load(path.read_text())["model_params"]
        config = {"num_neurons": int(params["num_neurons"]), "latent_dim": int(params["latentD"])}
    except (yaml.YAMLError, OSError, KeyError, TypeError, ValueError) as error:
        raise VPoserLoadError(
            f"{path}: cannot read model_params.num_neurons / model_params.latentD ({error!r})"
        ) from error
    return config


def _find_yaml(folder: Path) -> Path | None:
    """The release's config: <folder name>.yaml, else the only *.yaml in the folder."""
    named = folder / f"{folder.name}.yaml"
    if named.is_file():
        return named
    candidates = sorted(folder.glob("*.yaml"))
    return candidates[0] if len(candidates) == 1 else None


def _epoch(path: Path) -> int:
    match = re.search(r"epoch=(\d+)", path.name)
    return int(match.group(1)) if match else -1


def _pick_snapshot(folder: Path) -> Path:
    """The snapshot with the highest `epoch=N` in its name (names break ties)."""
    snapshots = sorted((folder / "snapshots").glob("*.ckpt"))
    if not snapshots:
        raise VPoserLoadError(f"no snapshots/*.ckpt in folder {folder}")
    return max(snapshots, key=lambda p: (_epoch(p), p.name))


def load_vposer(path: str | Path, map_location: Any = "cpu") -> VPoser:
    """Loads VPoser weights, in eval mode with frozen parameters, from any of:

    - the official release folder (e.g. V02_05/ with V02_05.yaml and snapshots/*.ckpt; the
      snapshot with the highest epoch is used and recorded in `model.source`),
    - a Lightning .ckpt (keys prefixed 'vp_model.' or not),
    - our own file written by `save_vposer`, or a raw state_dict file.

    Sizes come from the release's YAML when there is one (also beside a snapshots/ folder),
    from our file's config, or else from the shape of encoder_net.8.mu.weight. Every key must
    be present with its shape, and no others. Call `requires_grad_(True)` and `train()` to
    fine-tune; the IK only needs gradients with respect to the latent.
    """
    path = Path(path)
    if not path.exists():
        raise VPoserLoadError(f"VPoser weights not found: {path}")
    config = None
    if path.is_dir():
        yaml_path = _find_yaml(path)
        path = _pick_snapshot(path)
        log.info("VPoser: using snapshot %s", path.name)
    else:
        yaml_path = _find_yaml(path.parent.parent) if path.parent.name == "snapshots" else None
    if yaml_path is not None:
        config = _config_from_yaml(yaml_path)

    state_dict, stored_config, metadata = _state_dict_from(_torch_load(path, map_location), path)
    config = config or stored_config
    if config is None:
        head = state_dict.get("encoder_net.8.mu.weight")
        if not isinstance(head, Tensor) or head.dim() != 2:
            raise VPoserLoadError(
                f"{path}: missing key 'encoder_net.8.mu.weight' (expected shape (latent_dim, num_neurons))"
            )
        config = {"num_neurons": head.shape[1], "latent_dim": head.shape[0]}
    _check_state_dict(state_dict, config, path)

    model = VPoser(**config)
    model.load_state_dict(state_dict)
    model.source = str(path)
    model.metadata = metadata
    if isinstance(map_location, (str, torch.device)):
        model.to(map_location)
    return model.eval().requires_grad_(False)


def save_vposer(
    model: VPoser, path: str | Path, metadata: Mapping[str, str | int | float | bool] | None = None
) -> None:
    """Writes our weights file: plain tensors, ints and strings, so it loads with weights_only.

    metadata (provenance, licence, training figures) is restricted to strings and numbers.
    """
    metadata = dict(metadata or {})
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, (str, int, float, bool)):
            raise TypeError(
                f"metadata must map str to str/int/float/bool; got {key!r}: {type(value).__name__}"
            )
    state_dict = {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}
    stored = {"format": FORMAT, "state_dict": state_dict, "config": model.config, "metadata": metadata}
    torch.save(stored, path)


def default_vposer_path() -> Path:
    """Where the open VPoser weights ship inside the package."""
    return Path(__file__).resolve().parent / "data" / "vposer_open.pt"


def load_default_vposer(map_location: Any = "cpu") -> VPoser:
    """The shipped open prior; raises VPoserLoadError with directions when it is absent."""
    path = default_vposer_path()
    if not path.is_file():
        raise VPoserLoadError(
            f"The open VPoser weights are missing ({path}). Train them with scripts/train_vposer.py, "
            "or load the official VPoser v2 release (the V02_05 folder from the SMPL-X download page, "
            "https://smpl-x.is.tue.mpg.de) with load_vposer(folder)."
        )
    return load_vposer(path, map_location)
