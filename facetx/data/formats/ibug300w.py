"""300-W (iBUG 68 landmarks): images with ``.pts`` files of the same stem.

A ``.pts`` file is ``version: 1``, ``n_points: 68``, ``{``, 68 lines ``x y``, ``}``. The coordinates are 1-based
(Matlab convention, as menpo reads them); they are shifted by -1 to OpenCV pixel coordinates. Faces are aligned to the
ArcFace template through the layout's five points; the landmarks follow the same matrix. NME uses the outer eye
corners (``IBUG68.nme_indices`` = 36, 45).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from facetx.data.formats.base import Face, FormatDataset, Transform
from facetx.data.formats.crop import align_by_landmarks
from facetx.data.formats.errors import DataFormatError
from facetx.data.formats.io import IMAGE_EXTENSIONS, read_image, require_dir
from facetx.data.formats.wflw import check_layout
from facetx.data.landmarks import LandmarkLayout

IBUG_POINTS = 68


def read_pts(path: str | os.PathLike, num_points: int = IBUG_POINTS) -> np.ndarray:
    """``.pts`` file -> ``[num_points, 2]`` float32 OpenCV pixel coordinates (file values minus 1)."""
    p = Path(path)
    lines = [ln.strip() for ln in p.read_text(errors="replace").splitlines() if ln.strip()]
    header = {}
    i = 0
    while i < len(lines) and lines[i] != "{":
        key, sep, value = lines[i].partition(":")
        if not sep:
            raise DataFormatError(f"{p}: line {i + 1}: expected 'version: 1', 'n_points: N' or '{{', got {lines[i]!r}")
        header[key.strip()] = value.strip()
        i += 1
    if i == len(lines) or lines[-1] != "}":
        raise DataFormatError(f"{p}: expected the points between '{{' and '}}' lines (truncated file?)")
    if not header.get("n_points", "").isdigit():
        raise DataFormatError(f"{p}: missing or invalid 'n_points:' header line")
    declared = int(header["n_points"])
    if declared != num_points:
        raise DataFormatError(f"{p}: n_points is {declared}, expected {num_points} (iBUG 68-point annotation)")
    body = lines[i + 1 : -1]
    if len(body) != declared:
        raise DataFormatError(f"{p}: n_points says {declared} but {len(body)} point lines follow")
    try:
        pts = np.array([[float(v) for v in ln.split()] for ln in body], dtype=np.float32)
    except ValueError as e:
        raise DataFormatError(f"{p}: non-numeric point coordinate ({e})") from None
    if pts.shape != (declared, 2) or not np.all(np.isfinite(pts)):
        raise DataFormatError(f"{p}: every point line must hold two finite numbers 'x y'")
    return pts - 1.0


def _image_for(pts: Path) -> Path:
    for ext in IMAGE_EXTENSIONS + tuple(e.upper() for e in IMAGE_EXTENSIONS):
        cand = pts.with_suffix(ext)
        if cand.is_file():
            return cand
    raise DataFormatError(f"{pts}: no image with the same stem ({', '.join(IMAGE_EXTENSIONS)})")


class IBUG300W(FormatDataset):
    """Landmark-labeled faces: every ``*.pts`` under ``root/<dir>`` for each of ``dirs`` (all of ``root`` when
    ``dirs`` is empty), with its image. Samples carry 68 ``landmarks``; other tasks are absent.
    """

    tasks = ("landmarks",)

    def __init__(
        self,
        root: str | os.PathLike,
        dirs: Sequence[str] = (),
        layout: str | int | LandmarkLayout = "ibug68",
        transform: Transform | None = None,
        on_corrupt: str = "fail",
        name: str = "300w",
    ) -> None:
        super().__init__(layout, transform, on_corrupt)
        self.root = require_dir(root, "the 300-W folder (images with .pts files)")
        self.name = name
        check_layout(self.layout, IBUG_POINTS, str(self.root))
        folders = [require_dir(self.root / d, "a 300-W subset folder") for d in dirs] or [self.root]
        pts_files = sorted({p for f in folders for p in f.rglob("*.pts")})
        if not pts_files:
            raise DataFormatError(f"{self.root}: no .pts files under {', '.join(str(f) for f in folders)}")
        self.landmarks = np.stack([read_pts(p) for p in pts_files])  # [N, 68, 2]
        self.image_paths = [_image_for(p) for p in pts_files]
        self._set_length(len(pts_files))

    def _load(self, index: int) -> Face:
        crop, lm = align_by_landmarks(read_image(self.image_paths[index]), self.landmarks[index], self.layout)
        return Face(image=crop, landmarks=lm)
