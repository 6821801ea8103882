"""CelebA-Spoof: a JSON label file ``{image path relative to root: [44 ints]}`` (index 43: 0 live, 1 spoof) and, next
to every image, ``<stem>_BB.txt`` with ``x y w h score`` in coordinates of the image resized to 224x224.

Faces get a square box crop (no landmarks to align them with), scaled back from 224x224 to the image size.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from facetx.data.formats.base import Face, FormatDataset, Transform
from facetx.data.formats.crop import crop_by_box
from facetx.data.formats.errors import DataFormatError
from facetx.data.formats.io import read_image, require_dir, require_file
from facetx.data.landmarks import LandmarkLayout

CELEBA_SPOOF_LABELS = 44
SPOOF_INDEX = 43
BOX_REFERENCE = 224.0
TRAIN_LABELS = "metas/intra_test/train_label.json"
TEST_LABELS = "metas/intra_test/test_label.json"


def read_bb(path: Path, image_hw: tuple[int, int]) -> tuple[float, float, float, float]:
    """``*_BB.txt`` -> face box ``(x1, y1, x2, y2)`` in pixels of an image of size ``image_hw = (H, W)``."""
    try:
        first = path.read_text(errors="replace").split("\n", 1)[0]
    except FileNotFoundError:
        raise DataFormatError(f"{path}: box file does not exist (expected 'x y w h score' next to the image)") from None
    fields = first.split()
    try:
        values = [float(v) for v in fields]
    except ValueError:
        values = []
    if len(values) != 5 or not np.all(np.isfinite(values)):
        raise DataFormatError(f"{path}: expected one line 'x y w h score' (5 numbers), got {first.strip()!r}")
    x, y, w, h, _ = values
    if w <= 0 or h <= 0:
        raise DataFormatError(f"{path}: box width and height must be positive, got w={w:g} h={h:g}")
    sy, sx = image_hw[0] / BOX_REFERENCE, image_hw[1] / BOX_REFERENCE
    return x * sx, y * sy, (x + w) * sx, (y + h) * sy


class CelebASpoof(FormatDataset):
    """Spoof-labeled faces listed in ``root/<labels>`` (a CelebA-Spoof JSON label file).

    Labels are checked at construction (44 ints, index 43 in {0, 1}); images and box files are read per item, so a
    missing one fails (with its path) when first used. ``margin`` enlarges the box before the square crop.
    """

    tasks = ("spoof",)

    def __init__(
        self,
        root: str | os.PathLike,
        labels: str = TRAIN_LABELS,
        layout: str | int | LandmarkLayout = "ibug68",
        transform: Transform | None = None,
        on_corrupt: str = "fail",
        margin: float = 1.3,
        name: str = "celeba_spoof",
    ) -> None:
        super().__init__(layout, transform, on_corrupt)
        self.root = require_dir(root, "the CelebA-Spoof folder (Data/, metas/)")
        self.name = name
        self.margin = float(margin)
        self.labels_path = require_file(self.root / labels, "a CelebA-Spoof label JSON ({image path: [44 ints]})")
        try:
            table = json.loads(self.labels_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataFormatError(f"{self.labels_path}: not valid JSON ({e})") from None
        if not isinstance(table, dict) or not table:
            raise DataFormatError(f"{self.labels_path}: expected a non-empty JSON object {{image path: [44 ints]}}")
        paths, spoof = [], []
        for rel, lab in sorted(table.items()):
            if not (isinstance(lab, list) and len(lab) == CELEBA_SPOOF_LABELS):
                got = f"{len(lab)} values" if isinstance(lab, list) else type(lab).__name__
                raise DataFormatError(
                    f"{self.labels_path}: {rel}: expected a list of {CELEBA_SPOOF_LABELS} ints, got {got}"
                )
            if lab[SPOOF_INDEX] not in (0, 1) or isinstance(lab[SPOOF_INDEX], bool):
                raise DataFormatError(
                    f"{self.labels_path}: {rel}: live/spoof label (index {SPOOF_INDEX}) must be 0 or 1,"
                    f" got {lab[SPOOF_INDEX]!r}"
                )
            paths.append(rel)
            spoof.append(int(lab[SPOOF_INDEX]))
        self.image_paths = paths  # relative to root
        self.spoof = np.array(spoof, dtype=np.int64)
        self._set_length(len(paths))

    def _load(self, index: int) -> Face:
        path = self.root / self.image_paths[index]
        image = read_image(path)
        box = read_bb(path.with_name(path.stem + "_BB.txt"), image.shape[:2])
        return Face(image=crop_by_box(image, box, margin=self.margin), spoof=int(self.spoof[index]))
