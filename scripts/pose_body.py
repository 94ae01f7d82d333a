"""Pose a body with one frame of an AMASS-style pose file: print its joints, optionally write an OBJ.

    python scripts/pose_body.py POSES.npz [--frame N] [--model PATH | --variant adult|all_ages] [--obj OUT.obj]

Without --model the shipped open default body is used, so this runs with no download.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.body_model import BodyModel  # noqa: E402
from core.mesh_io import write_obj  # noqa: E402
from core.model_files import BodyModelError  # noqa: E402
from core.pose_files import PoseFileError, load_pose_file  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("poses", type=Path, help="AMASS-style .npz (poses, trans, betas, mocap_framerate)")
    parser.add_argument("--frame", type=int, default=0, help="frame index (default 0)")
    parser.add_argument("--model", type=Path, help="an SMPL-family .npz instead of the open default body")
    parser.add_argument("--variant", default="adult", choices=("adult", "all_ages"), help="open default body variant")
    parser.add_argument("--obj", type=Path, help="write the posed mesh here")
    parser.add_argument("--json", action="store_true", help="print joints as JSON instead of a table")
    args = parser.parse_args(argv)

    try:
        model = BodyModel.from_file(args.model) if args.model else BodyModel.open_default(args.variant)
        sequence = load_pose_file(args.poses)
        if not 0 <= args.frame < sequence.num_frames:
            parser.error(f"--frame {args.frame} is outside 0..{sequence.num_frames - 1} of {args.poses}")
        frame = slice(args.frame, args.frame + 1)
        parts = {name: torch.as_tensor(value[frame]) for name, value in
                 sequence.parts_for(model.kind.pose_parts, str(args.poses)).items()}
        betas = sequence.betas[: model.num_betas]
        betas_full = torch.zeros(1, model.num_betas, dtype=torch.float64)
        betas_full[0, : len(betas)] = torch.as_tensor(betas)
        with torch.inference_mode():
            output = model(betas=betas_full, transl=torch.as_tensor(sequence.trans[frame]), **parts)
    except (BodyModelError, PoseFileError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    joints = output.joints[0].double().numpy()
    if args.json:
        print(json.dumps({name: [round(float(c), 5) for c in joints[i]] for i, name in enumerate(model.joint_names)}))
    else:
        print(f"{model.kind.name} body from {Path(model.path).name}, frame {args.frame} of {args.poses.name} (metres, Y up)")
        for name, (x, y, z) in zip(model.joint_names, joints):
            print(f"  {name:<16} {x:+.4f} {y:+.4f} {z:+.4f}")
    if args.obj:
        write_obj(args.obj, output.vertices[0].numpy(), model.faces.numpy())
        print(f"wrote {args.obj} ({model.num_vertices} vertices)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
