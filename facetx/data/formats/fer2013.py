"""FER2013: one CSV with columns ``emotion,pixels,Usage`` (48x48 grayscale faces, 2304 space-separated values).

``Usage`` picks the split (``Training``, ``PublicTest``, ``PrivateTest``). FER2013's labels are 0 Angry, 1 Disgust,
2 Fear, 3 Happy, 4 Sad, 5 Surprise, 6 Neutral; they are mapped by name onto facetx's :data:`EXPRESSIONS`. The faces
come cropped (no landmarks to realign them); they are resized to 112x112 and replicated to three channels.
"""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Sequence

import cv2
import numpy as np

from facetx.data.contract import EXPRESSIONS, IMAGE_SIZE
from facetx.data.formats.base import Face, FormatDataset, Transform
from facetx.data.formats.errors import DataFormatError
from facetx.data.formats.io import require_file
from facetx.data.landmarks import LandmarkLayout

FER_CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
_FER_TO_CONTRACT = {"angry": "anger", "disgust": "disgust", "fear": "fear", "happy": "happy", "sad": "sad",
                    "surprise": "surprise", "neutral": "neutral"}  # fmt: skip
#: FER2013 label -> index into EXPRESSIONS
FER_TO_EXPRESSION: tuple[int, ...] = tuple(EXPRESSIONS.index(_FER_TO_CONTRACT[c]) for c in FER_CLASSES)
USAGES: tuple[str, ...] = ("Training", "PublicTest", "PrivateTest")
FER_SIDE = 48


class FER2013(FormatDataset):
    """Expression-labeled faces from ``root/<csv_name>``, rows whose ``Usage`` is in ``usage``.

    The whole split is parsed once at construction into a uint8 ``[N, 48, 48]`` array (~80 MB for all of FER2013).
    """

    tasks = ("expression",)

    def __init__(
        self,
        root: str | os.PathLike,
        usage: str | Sequence[str] = "Training",
        csv_name: str = "fer2013.csv",
        layout: str | int | LandmarkLayout = "ibug68",
        transform: Transform | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(layout, transform, on_corrupt="fail")
        usages = (usage,) if isinstance(usage, str) else tuple(usage)
        bad = [u for u in usages if u not in USAGES]
        if bad or not usages:
            raise ValueError(f"FER2013 usage must be among {USAGES}, got {list(usages)}")
        root_path = os.fspath(root)
        self.path = require_file(
            os.path.join(root_path, csv_name) if os.path.isdir(root_path) else root_path,
            "the FER2013 CSV (emotion,pixels,Usage)",
        )
        self.name = name or f"fer2013_{'_'.join(u.lower() for u in usages)}"
        self.usage = usages
        self.pixels, self.labels = self._read(set(usages))
        self._set_length(len(self.labels))

    def _read(self, usages: set[str]) -> tuple[np.ndarray, np.ndarray]:
        p = self.path
        with open(p, newline="") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            missing = [c for c in ("emotion", "pixels", "Usage") if c not in header]
            if missing:
                raise DataFormatError(f"{p}: line 1: header lacks column(s) {missing}; expected emotion,pixels,Usage")
            ie, ip, iu = header.index("emotion"), header.index("pixels"), header.index("Usage")
            images, labels = [], []
            for no, row in enumerate(reader, 2):
                if not row:
                    continue
                if len(row) != len(header):
                    raise DataFormatError(f"{p}: line {no}: expected {len(header)} columns, got {len(row)}")
                use = row[iu].strip()
                if use not in USAGES:
                    raise DataFormatError(f"{p}: line {no}: Usage {use!r} is not one of {', '.join(USAGES)}")
                if use not in usages:
                    continue
                label = row[ie].strip()
                if not label.isdigit() or int(label) >= len(FER_CLASSES):
                    raise DataFormatError(f"{p}: line {no}: emotion {label!r} is outside 0-6")
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # older numpy warns (instead of raising) on bad text
                        px = np.fromstring(row[ip], dtype=np.int64, sep=" ")
                except ValueError:
                    px = np.zeros(0, dtype=np.int64)
                if px.size != FER_SIDE * FER_SIDE:
                    n = len(row[ip].split())
                    what = f"got {n}" if n != FER_SIDE * FER_SIDE else "some are not integers"
                    raise DataFormatError(
                        f"{p}: line {no}: expected {FER_SIDE * FER_SIDE} integer pixel values ({FER_SIDE}x{FER_SIDE}),"
                        f" {what}"
                    )
                if px.min() < 0 or px.max() > 255:
                    raise DataFormatError(f"{p}: line {no}: pixel values must be integers 0-255")
                images.append(px.astype(np.uint8).reshape(FER_SIDE, FER_SIDE))
                labels.append(FER_TO_EXPRESSION[int(label)])
        if not labels:
            raise DataFormatError(f"{p}: no rows with Usage in {sorted(usages)}")
        return np.stack(images), np.array(labels, dtype=np.int64)

    def _load(self, index: int) -> Face:
        gray = cv2.resize(self.pixels[index], (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_LINEAR)
        return Face(image=np.repeat(gray[:, :, None], 3, axis=2), expression=int(self.labels[index]))
