"""insightface recognition packs: a folder with ``train.rec``, ``train.idx`` and ``property`` (MS1M, Glint, WebFace).

Record 0 is a meta header: when its ``flag > 0``, ``label[0]`` is the end of the image records, which are
``1 .. label[0] - 1`` (records ``label[0] .. label[1] - 1`` are per-identity ranges, unused here); with ``flag == 0``
every record of the index is an image (insightface's ``MXFaceDataset`` reads it the same way). An image record's
label is a scalar in the header or, in some packs, an array whose first value is the class. Payloads are aligned
112x112 JPEGs. ``property`` is one line ``"num_classes,height,width"``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from facetx.data.contract import IMAGE_SIZE
from facetx.data.formats.base import Face, FormatDataset, Transform
from facetx.data.formats.errors import DataFormatError
from facetx.data.formats.io import decode_image, require_dir, require_file, resize_square
from facetx.data.formats.recordio import IndexedRecordReader, unpack_record
from facetx.data.landmarks import LandmarkLayout


def read_property(path: str | os.PathLike) -> tuple[int, int, int]:
    """``property`` file -> ``(num_classes, height, width)``."""
    p = require_file(path, "an insightface 'property' file ('num_classes,112,112')")
    text = p.read_text(errors="replace").strip()
    fields = [f.strip() for f in text.split(",")]
    if len(fields) != 3 or not all(f.isdigit() for f in fields):
        raise DataFormatError(f"{p}: expected one line 'num_classes,height,width' (e.g. '85742,112,112'), got {text!r}")
    num_classes, h, w = (int(f) for f in fields)
    if num_classes <= 0:
        raise DataFormatError(f"{p}: num_classes must be positive, got {num_classes}")
    return num_classes, h, w


class InsightFaceRec(FormatDataset):
    """Identity-labeled aligned faces from an insightface RecordIO pack (``root/{prefix}.rec``, ``.idx``,
    ``property``).

    Samples carry ``identity`` in ``[0, num_classes)``; other tasks are absent. ``layout`` only sizes the (empty)
    landmark tensor to the run's layout.
    """

    tasks = ("identity",)

    def __init__(
        self,
        root: str | os.PathLike,
        layout: str | int | LandmarkLayout = "ibug68",
        transform: Transform | None = None,
        on_corrupt: str = "fail",
        prefix: str = "train",
        name: str = "insightface",
    ) -> None:
        super().__init__(layout, transform, on_corrupt)
        self.root = require_dir(root, f"an insightface pack folder with {prefix}.rec, {prefix}.idx and property")
        self.name = name
        self.num_classes, h, w = read_property(self.root / "property")
        self.reader = IndexedRecordReader(self.root / f"{prefix}.rec", self.root / f"{prefix}.idx")
        self.image_keys = self._image_keys()
        self._offsets = self.reader.offsets[np.searchsorted(self.reader.keys, self.image_keys)]
        self._set_length(len(self.image_keys))

    def _image_keys(self) -> np.ndarray:
        r = self.reader
        if 0 not in r:
            raise DataFormatError(f"{r.idx_path}: has no record 0 (the pack's meta header)")
        header, _ = unpack_record(r.read(0), f"{r.rec_path}: record 0")
        r.close()  # never keep a handle opened before DataLoader workers fork
        if header.flag <= 0:
            return r.keys.copy()
        end = int(header.label[0])
        if end < 2:
            raise DataFormatError(f"{r.rec_path}: record 0 announces no images (label[0] = {end}, expected >= 2)")
        lo, hi = np.searchsorted(r.keys, [1, end])
        if hi - lo != end - 1:
            raise DataFormatError(
                f"{r.idx_path}: lists {hi - lo} of the {end - 1} image records (1..{end - 1}) that record 0 of"
                f" {r.rec_path.name} announces (truncated .idx?)"
            )
        return r.keys[lo:hi].copy()

    def _load(self, index: int) -> Face:
        key = int(self.image_keys[index])
        where = f"{self.reader.rec_path}: record {key}"
        header, payload = unpack_record(self.reader.read_at(int(self._offsets[index]), key), where)
        label = float(header.label[0]) if header.flag > 0 else float(header.label)
        if not (label.is_integer() and 0 <= label < self.num_classes):
            raise DataFormatError(
                f"{where}: label {label:g} is outside [0, {self.num_classes}) (num_classes from"
                f" {Path(self.root, 'property')})"
            )
        image = resize_square(decode_image(payload, where), IMAGE_SIZE)
        return Face(image=image, identity=int(label))
