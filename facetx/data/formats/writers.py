"""Writers for the formats the readers accept: the insightface RecordIO pack (used by the ``prepare`` CLI), and small
writers for verification packs, WFLW lines, 300-W ``.pts``, the FER2013 CSV and CelebA-Spoof labels (tests, tools).
"""

from __future__ import annotations

import csv
import json
import os
import pickle
import struct
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

from facetx.data.formats.io import encode_image
from facetx.data.formats.recordio import frame_record, pack_record

LABEL_MODES = ("scalar", "array")


class RecordIOWriter:
    """Write an insightface pack: ``root/{prefix}.rec``, ``{prefix}.idx`` and ``property``.

    Layout written (as insightface's ``face2rec``): record 0 = meta header with ``label = [n + 1, n + 1 + k]``, image
    records ``1 .. n``, then ``k`` identity records (``label = [first, end)`` of that identity's images) when every
    identity's images were added contiguously (k = 0 otherwise). ``label_mode="scalar"`` stores the class in the
    header; ``"array"`` stores ``[class, *extra]`` float32 after it (flag > 0), as some packs do.

    Use as a context manager, or call :meth:`close` (which writes the header, identity records and ``property``).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        label_mode: str = "scalar",
        num_classes: int | None = None,
        image_size: int = 112,
        prefix: str = "train",
        quality: int = 95,
    ) -> None:
        if label_mode not in LABEL_MODES:
            raise ValueError(f"label_mode must be one of {LABEL_MODES}, got {label_mode!r}")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.label_mode = label_mode
        self.num_classes = num_classes
        self.image_size = int(image_size)
        self.prefix = prefix
        self.quality = int(quality)
        self._rec: BinaryIO = open(self.root / f"{prefix}.rec", "wb")  # noqa: SIM115 - closed in close()
        self._offsets: list[int] = []
        self._labels: list[int] = []
        self._header_len = self._write(self._meta(0, 0))

    def _meta(self, a: int, b: int) -> bytes:
        return frame_record(pack_record(np.array([a, b], dtype=np.float32), b"", id=0))

    def _write(self, framed: bytes) -> int:
        self._offsets.append(self._rec.tell())
        self._rec.write(framed)
        return len(framed)

    def add(self, image: np.ndarray | bytes, label: int, extra: Sequence[float] = ()) -> int:
        """Append one aligned face (uint8 ``[H, W, 3]`` RGB, JPEG-encoded here, or already encoded bytes) with its
        class ``label``; ``extra`` values follow the class in array mode. Returns the record index."""
        if self._rec.closed:
            raise ValueError("RecordIOWriter is closed")
        label = int(label)
        if label < 0 or (self.num_classes is not None and label >= self.num_classes):
            raise ValueError(f"label {label} outside [0, {self.num_classes})")
        if extra and self.label_mode != "array":
            raise ValueError("extra label values need label_mode='array'")
        payload = image if isinstance(image, (bytes, bytearray)) else encode_image(image, ".jpg", self.quality)
        key = len(self._offsets)
        lab = float(label) if self.label_mode == "scalar" else np.array([label, *extra], dtype=np.float32)
        self._write(frame_record(pack_record(lab, bytes(payload), id=key)))
        self._labels.append(label)
        return key

    def close(self) -> None:
        if self._rec.closed:
            return
        n = len(self._labels)
        ranges = _contiguous_ranges(self._labels)  # {label: (first key, end key)} or None
        if ranges:
            for label in sorted(ranges):
                first, end = ranges[label]
                self._write(frame_record(pack_record(np.array([first, end], dtype=np.float32), b"", id=n + 1 + label)))
        k = len(ranges) if ranges else 0
        header = self._meta(n + 1, n + 1 + k)
        assert len(header) == self._header_len  # fixed-size record, patched in place
        self._rec.seek(0)
        self._rec.write(header)
        self._rec.close()
        with open(self.root / f"{self.prefix}.idx", "w") as f:
            f.writelines(f"{key}\t{off}\n" for key, off in enumerate(self._offsets))
        num_classes = self.num_classes if self.num_classes is not None else (max(self._labels) + 1 if n else 0)
        (self.root / "property").write_text(f"{num_classes},{self.image_size},{self.image_size}\n")

    def __enter__(self) -> RecordIOWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _contiguous_ranges(labels: list[int]) -> dict[int, tuple[int, int]] | None:
    """Record ranges per label (keys start at 1) if each label's records are contiguous and labels are 0..k-1."""
    ranges: dict[int, tuple[int, int]] = {}
    for key, label in enumerate(labels, 1):
        if label in ranges:
            first, end = ranges[label]
            if end != key:
                return None
            ranges[label] = (first, key + 1)
        else:
            ranges[label] = (key, key + 1)
    return ranges if ranges and sorted(ranges) == list(range(len(ranges))) else None


def write_verification_bin(
    path: str | os.PathLike, images: Sequence[bytes], issame: Sequence[bool], python2: bool = False
) -> None:
    """Write a verification pack ``(images, issame)``; ``images[2i], images[2i+1]`` is pair ``i``.

    ``python2=True`` writes what Python 2's ``pickle.dump(..., protocol=2)`` writes for ``str`` images
    (``BINSTRING`` opcodes, which Python 3 reads back as bytes only with ``encoding="bytes"``).
    """
    if len(images) != 2 * len(issame):
        raise ValueError(f"need 2 images per pair: {len(images)} images, {len(issame)} pairs")
    if not python2:
        with open(path, "wb") as f:
            pickle.dump((list(images), [bool(s) for s in issame]), f, protocol=pickle.HIGHEST_PROTOCOL)
        return
    out = bytearray(b"\x80\x02")  # PROTO 2
    out += b"]("  # EMPTY_LIST, MARK
    for b in images:
        b = bytes(b)
        out += (b"U" + struct.pack("<B", len(b))) if len(b) < 256 else (b"T" + struct.pack("<I", len(b)))
        out += b
    out += b"e]("  # APPENDS, EMPTY_LIST, MARK
    out += b"".join(b"\x88" if s else b"\x89" for s in issame)  # NEWTRUE / NEWFALSE
    out += b"e\x86."  # APPENDS, TUPLE2, STOP
    Path(path).write_bytes(bytes(out))


def wflw_line(landmarks: np.ndarray, box: Sequence[float], attributes: Sequence[int], image_path: str) -> str:
    """One WFLW annotation line: 196 coordinates (x0 y0 x1 y1 ...), box x_min y_min x_max y_max, 6 attribute flags
    (pose, expression, illumination, make-up, occlusion, blur), image path relative to ``WFLW_images``."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (98, 2) or len(box) != 4 or len(attributes) != 6:
        raise ValueError(
            f"expected [98, 2] landmarks, 4 box values, 6 attributes; got {lm.shape}, {len(box)}, {len(attributes)}"
        )
    fields = [f"{v:.6f}" for v in lm.ravel()] + [str(int(round(v))) for v in box] + [str(int(a)) for a in attributes]
    return " ".join([*fields, image_path])


def write_pts(path: str | os.PathLike, points: np.ndarray) -> None:
    """300-W ``.pts``: ``version: 1``, ``n_points: N``, ``{``, one ``x y`` per line (1-based pixel coordinates as
    the iBUG files use, i.e. OpenCV coordinates + 1), ``}``."""
    pts = np.asarray(points, dtype=np.float64)
    body = "\n".join(f"{x + 1:.3f} {y + 1:.3f}" for x, y in pts)
    Path(path).write_text(f"version: 1\nn_points: {len(pts)}\n{{\n{body}\n}}\n")


def write_fer2013_csv(path: str | os.PathLike, rows: Iterable[tuple[int, np.ndarray, str]]) -> None:
    """FER2013 CSV: header ``emotion,pixels,Usage``; each row ``(fer_label 0-6, uint8 [48, 48] gray, usage)``."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["emotion", "pixels", "Usage"])
        for label, pixels, usage in rows:
            w.writerow([int(label), " ".join(str(int(v)) for v in np.asarray(pixels).ravel()), usage])


def write_celeba_spoof_labels(path: str | os.PathLike, labels: Mapping[str, Sequence[int]]) -> None:
    """CelebA-Spoof label JSON: ``{image path relative to the data root: [44 ints]}`` (index 43: 0 live, 1 spoof)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({k: [int(v) for v in vals] for k, vals in labels.items()}))


def celeba_spoof_label(spoof: int) -> list[int]:
    """A 44-int CelebA-Spoof label with only the live/spoof flag (index 43) set; the rest is left 0."""
    return [0] * 43 + [int(spoof)]


def write_celeba_spoof_box(
    image_path: str | os.PathLike, box_xywh: Sequence[float], image_hw: tuple[int, int], score: float = 0.99
) -> Path:
    """Write ``<image stem>_BB.txt`` next to the image: ``x y w h score`` scaled to a 224x224 resize of the image.

    ``box_xywh`` is in pixels of the original image of size ``image_hw = (H, W)``.
    """
    h, w = image_hw
    x, y, bw, bh = box_xywh
    sx, sy = 224.0 / w, 224.0 / h
    p = Path(image_path)
    out = p.with_name(p.stem + "_BB.txt")
    out.write_text(f"{round(x * sx)} {round(y * sy)} {round(bw * sx)} {round(bh * sy)} {score}\n")
    return out


def write_ijb(
    root: str | os.PathLike,
    faces: Sequence[tuple[str, int, int, np.ndarray, float]],
    pairs: Sequence[tuple[int, int, int]],
    images: Mapping[str, np.ndarray],
    kind: str = "ijbc",
) -> Path:
    """An IJB-B/C folder as insightface ships it: ``faces`` = (image name, template, media, 5 points ``[5, 2]`` px,
    detector score), ``pairs`` = (template, template, same), ``images`` name -> uint8 RGB loose crop."""
    root = Path(root)
    meta, crops = root / "meta", root / "loose_crop"
    meta.mkdir(parents=True, exist_ok=True)
    crops.mkdir(exist_ok=True)
    (meta / f"{kind}_face_tid_mid.txt").write_text("".join(f"{n} {t} {m}\n" for n, t, m, _, _ in faces))
    lines = [" ".join([n, *(f"{v:.3f}" for v in np.asarray(p).reshape(-1)), f"{s:.6f}"]) for n, _, _, p, s in faces]
    (meta / f"{kind}_name_5pts_score.txt").write_text("\n".join(lines) + "\n")
    (meta / f"{kind}_template_pair_label.txt").write_text("".join(f"{a} {b} {s}\n" for a, b, s in pairs))
    for name, image in images.items():
        (crops / name).write_bytes(encode_image(image, ext=Path(name).suffix or ".jpg"))
    return root
