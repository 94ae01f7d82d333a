"""Refit a trained VPoser's latent Gaussian to its training poses (core.vposer.whiten_latent).

    python scripts/whiten_vposer.py build/mocap/train --weights RUN/best.pt --out core/data/vposer_open.pt

Encodes every pose of the training folder (prepare_mocap.py's .npz files), fits the Gaussian of
the encoder's means and folds it into the network, so that u ~ N(0, I) is that Gaussian: the IK's
latent term and the prior's samples then follow the data. Reconstructions do not change. The
weights' metadata keeps the source's and gains `latent_whitening` (what was done, on how many
poses), `latent_eigenvalues` (the refitted covariance's, largest first) and `whitening_command`;
the source's sample figures (eval_val_sample_to_data_mm, ..._data_to_sample_mm) are dropped, as the
samples change (--metadata KEY=VALUE stores the new ones).
Run it once on the trained weights; running it again on its own output changes next to nothing
(their latent already is the data's standard normal).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
for folder in (REPO, REPO / "scripts"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from core.errors import VPoserError  # noqa: E402
from core.train import display_command, display_path  # noqa: E402
from core.vposer import load_vposer, save_vposer, whiten_latent  # noqa: E402
from eval_prior import find_files, load_body_poses  # noqa: E402
from train_vposer import key_value_pairs  # noqa: E402

SAMPLE_FIGURES = ("eval_val_sample_to_data_mm", "eval_val_data_to_sample_mm")


def _number(value: str) -> str | float:
    """A metadata value as a number where it reads as one (eval figures), else the text."""
    try:
        return float(value)
    except ValueError:
        return value


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("train_dir", help="folder of training .npz pose files (prepare_mocap.py's OUT_DIR/train)")
    parser.add_argument("--weights", required=True, help="the trained VPoser weights")
    parser.add_argument("--out", required=True, help="the whitened weights file to write")
    parser.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE",
                        help="extra metadata stored in the file (repeatable), e.g. its new eval figures")
    args = parser.parse_args(argv)
    extra = {key: _number(value) for key, value in key_value_pairs(args.metadata, "--metadata").items()}
    files = find_files([args.train_dir])
    if not files or files[0].suffix.lower() != ".npz":
        raise SystemExit(f"error: {args.train_dir}: expected prepare_mocap.py's .npz pose files")
    poses = torch.as_tensor(load_body_poses(files, None))
    try:
        model = load_vposer(args.weights)
        whitened, eigenvalues = whiten_latent(model, poses)
    except VPoserError as error:
        raise SystemExit(f"error: {error}") from None
    # the samples change with the latent's Gaussian (reconstructions do not): their figures go
    metadata = {key: value for key, value in model.metadata.items() if key not in SAMPLE_FIGURES}
    metadata.update(
        latent_whitening=f"z = m + L u folded into the decoder's first layer and the encoder's mean: m, L L^T the "
                         f"mean and covariance of the encoder means of {len(poses)} poses of {display_path(args.train_dir)} "
                         f"({len(files)} files); u ~ N(0, I)",
        latent_eigenvalues=" ".join(f"{value:.4g}" for value in eigenvalues.tolist()),
        whitening_command=display_command(["python", "scripts/whiten_vposer.py", *argv]),
        **extra,
    )
    save_vposer(whitened, args.out, metadata)
    print(f"{args.out}: latent whitened on {len(poses)} poses; covariance eigenvalues "
          f"{float(eigenvalues[0]):.3g} .. {float(eigenvalues[-1]):.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
