"""WFLW (98 landmarks): annotation lines of 207 space-separated fields and images under ``WFLW_images``.

Each line: 196 landmark coordinates ``x0 y0 ... x97 y97`` (pixels of the original image), the face box
``x_min y_min x_max y_max``, 6 attribute flags (pose, expression, illumination, make-up, occlusion, blur) and the
image path relative to the images folder. Faces are aligned to the ArcFace template through the layout's five
points (pupils, nose tip, mouth corners) and the landmarks follow the same matrix. NME is normalized by the outer eye
corners (points 60 and 72: ``WFLW98.nme_indices``), as WFLW reports it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from facetx.data.formats.base import Face, FormatDataset, Transform
from facetx.data.formats.crop import align_by_landmarks
from facetx.data.formats.errors import DataFormatError
from facetx.data.formats.io import read_image, require_dir, require_file
from facetx.data.landmarks import LandmarkLayout

WFLW_POINTS = 98
WFLW_FIELDS = 2 * WFLW_POINTS + 4 + 6 + 1  # 207
TRAIN_LIST = "WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_train.txt"
TEST_LIST = "WFLW_annotations/list_98pt_rect_attr_train_test/list_98pt_rect_attr_test.txt"


def check_layout(layout: LandmarkLayout, num_points: int, source: str) -> None:
    if layout.num_points != num_points:
        raise DataFormatError(
            f"{source}: the annotations have {num_points} landmarks but the data config's layout is"
            f" {layout.name!r} ({layout.num_points} points): set data.num_landmarks={num_points}"
        )


def parse_wflw_line(line: str, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """One annotation line -> ``(landmarks [98, 2] float32, box [4] float32, attributes [6] int64, image path)``."""
    fields = line.split()
    if len(fields) != WFLW_FIELDS:
        raise DataFormatError(
            f"{where}: expected {WFLW_FIELDS} fields ({2 * WFLW_POINTS} landmark coords, 4 box, 6 attributes, path),"
            f" got {len(fields)}"
        )
    try:
        nums = np.array([float(f) for f in fields[: 2 * WFLW_POINTS + 4]], dtype=np.float32)
        attrs = np.array([int(f) for f in fields[2 * WFLW_POINTS + 4 : -1]], dtype=np.int64)
    except ValueError as e:
        raise DataFormatError(f"{where}: non-numeric coordinate, box or attribute field ({e})") from None
    if not np.all(np.isfinite(nums)):
        raise DataFormatError(f"{where}: landmark or box coordinates are not finite")
    if not np.all((attrs == 0) | (attrs == 1)):
        raise DataFormatError(f"{where}: attribute flags must be 0 or 1, got {attrs.tolist()}")
    return nums[: 2 * WFLW_POINTS].reshape(WFLW_POINTS, 2), nums[2 * WFLW_POINTS :], attrs, fields[-1]


class WFLW(FormatDataset):
    """Landmark-labeled faces from one WFLW annotation list (train or test).

    ``root`` holds ``annotations`` (a path relative to ``root``, or absolute) and the ``images`` folder. Samples carry
    ``landmarks`` (98 points, ``layout`` must be a 98-point layout); other tasks are absent. ``attributes`` ``[N, 6]``
    keeps the per-face flags for subset evaluation.
    """

    tasks = ("landmarks",)

    def __init__(
        self,
        root: str | os.PathLike,
        annotations: str = TRAIN_LIST,
        images: str = "WFLW_images",
        layout: str | int | LandmarkLayout = "wflw98",
        transform: Transform | None = None,
        on_corrupt: str = "fail",
        name: str = "wflw",
    ) -> None:
        super().__init__(layout, transform, on_corrupt)
        self.root = require_dir(root, "the WFLW folder (WFLW_annotations/, WFLW_images/)")
        self.name = name
        self.list_path = require_file(self.root / annotations, "a WFLW annotation list (207 fields per line)")
        self.image_dir = require_dir(self.root / images, "the WFLW images folder")
        check_layout(self.layout, WFLW_POINTS, str(self.list_path))
        lms, attrs, paths = [], [], []
        for no, line in enumerate(self.list_path.read_text(errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            lm, _, attr, rel = parse_wflw_line(line, f"{self.list_path}: line {no}")
            image = self.image_dir / rel
            if not image.is_file():
                raise DataFormatError(f"{self.list_path}: line {no}: image {image} does not exist")
            lms.append(lm)
            attrs.append(attr)
            paths.append(image)
        if not paths:
            raise DataFormatError(f"{self.list_path}: no annotation lines")
        self.landmarks = np.stack(lms)  # [N, 98, 2] pixels of the original images
        self.attributes = np.stack(attrs)  # [N, 6]
        self.image_paths: list[Path] = paths
        self._set_length(len(paths))

    def _load(self, index: int) -> Face:
        crop, lm = align_by_landmarks(read_image(self.image_paths[index]), self.landmarks[index], self.layout)
        return Face(image=crop, landmarks=lm)
