"""Detect 2D body keypoints in images or a video, offline, and write MediaPipe-33 JSON per frame.

    python scripts/detect_keypoints.py IMAGE|VIDEO|FOLDER --out DIR

Needs the optional extra: pip install -e '.[detect]' (MediaPipe 0.10.21 with numpy<2, Python 3.11 or
3.12). The detector itself, the files it writes and why only 0.10.21 is used: core/detect2d.py.
Prints a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from core.detect2d import DetectError, detect  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="an image, a video, or a folder of images")
    parser.add_argument("--out", type=Path, required=True, help="folder for the per-frame JSON files")
    args = parser.parse_args(argv)
    try:
        summary = detect(args.source, args.out)
    except DetectError as error:
        raise SystemExit(f"error: {error}") from None
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
