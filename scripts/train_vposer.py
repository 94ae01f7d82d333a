"""Train VPoser v2 on folders of AMASS-style pose files (see core/train.py for the objective).

    python scripts/train_vposer.py build/mocap/train build/mocap/val --out build/train_run --max-minutes 50
    # the shipped open prior (core/data/vposer_open.md): official objective, KL weight 0.0002,
    # 7 deg noise, part mixing; build/mocap holds the main and the extra (cmu_daz) set
    python scripts/train_vposer.py build/mocap/train build/mocap/val --out build/run_E \\
        --max-minutes 35 --rotation-noise-deg 7 --kl-weight 0.0002 --part-mix 0.5 --threads 1
    python scripts/train_vposer.py build/mocap/train build/mocap/val --out build/train_run \\
        --resume build/train_run/last_state.pt --max-minutes 20

Writes into --out: best.pt (weights for core.vposer.load_vposer, with provenance metadata),
last_state.pt (everything needed to resume), history.json and loss_curves.png.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.train import TrainConfig, display_command, noise_scales, train  # noqa: E402


def key_value_pairs(items: list[str], flag: str, value_name: str = "VALUE") -> dict[str, str]:
    """KEY=VALUE items of a repeatable option as a dict."""
    result = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"{flag} wants KEY={value_name}, got {item!r}")
        result[key] = value
    return result


def _joint_noise(items: list[str]) -> dict[str, float]:
    try:
        result = {joint: float(deg) for joint, deg in key_value_pairs(items, "--joint-noise", "DEGREES").items()}
    except ValueError:
        raise SystemExit(f"--joint-noise wants JOINT=DEGREES with a number, got {' '.join(items)}") from None
    try:
        noise_scales(0.0, result)
    except ValueError as error:
        raise SystemExit(f"--joint-noise: {error}") from None
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("train_dir", help="folder of training .npz pose files")
    parser.add_argument("val_dir", help="folder of validation .npz pose files (other subjects)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--epochs", type=int, default=100, help="most epochs (default 100)")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="time budget; epochs are sized so that at least --min-epochs fit")
    parser.add_argument("--min-epochs", type=int, default=30)
    parser.add_argument("--samples-per-epoch", type=int, default=None,
                        help="fixed epoch size in poses (default: a full pass, or what the budget allows)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-5)
    parser.add_argument("--resume", default=None, help="a last_state.pt to continue from")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--body", default=None, help="body model .npz for the mesh losses (default: open body)")
    parser.add_argument("--train-vertices", type=int, default=1500, help="vertex subset for the training mesh loss")
    parser.add_argument("--kl-weight", type=float, default=0.005, help="weight of the KL term (official 0.005)")
    parser.add_argument("--rotation-noise-deg", type=float, default=0.0,
                        help="augmentation: std of random rotation noise per joint, degrees (default off)")
    parser.add_argument("--joint-noise", action="append", default=[], metavar="JOINT=DEG",
                        help="a body joint's own noise std in degrees, overriding --rotation-noise-deg "
                             "(repeatable), e.g. left_wrist=20")
    parser.add_argument("--denoise", action="store_true",
                        help="with --rotation-noise-deg: noise on the encoder's input only, clean target")
    parser.add_argument("--part-mix", type=float, default=0.0,
                        help="augmentation: share of training poses that take whole body parts (legs, trunk, "
                             "each arm) from another pose of the batch (default off)")
    parser.add_argument("--reset-at-switch", action="store_true",
                        help="restart best-model, early-stopping and plateau tracking when the extra loss "
                             "terms stop (default: one best across it, as the official trainer)")
    parser.add_argument("--frame-stride", type=int, default=1, help="keep every n-th frame of each file")
    parser.add_argument("--val-max-frames", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE",
                        help="extra metadata stored in best.pt (repeatable)")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    args = parser.parse_args(argv)

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    config = TrainConfig(
        train_dir=args.train_dir,
        val_dir=args.val_dir,
        out_dir=args.out,
        body=args.body,
        device=args.device,
        epochs=args.epochs,
        max_minutes=args.max_minutes,
        min_epochs=args.min_epochs,
        samples_per_epoch=args.samples_per_epoch,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        seed=args.seed,
        train_vertices=args.train_vertices,
        rotation_noise_deg=args.rotation_noise_deg,
        joint_noise_deg=_joint_noise(args.joint_noise),
        kl_weight=args.kl_weight,
        denoise=args.denoise,
        part_mix=args.part_mix,
        reset_at_switch=args.reset_at_switch,
        frame_stride=args.frame_stride,
        val_max_frames=args.val_max_frames,
        resume=args.resume,
        progress=not args.no_progress,
        command=display_command(["python", "scripts/train_vposer.py", *argv]),
        metadata=key_value_pairs(args.metadata, "--metadata"),
    )
    summary = train(config)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
