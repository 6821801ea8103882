"""Identity folders: ``root/<identity>/*.jpg|png``; class ``k`` is the ``k``-th identity folder in sorted order.

Images are assumed aligned (ArcFace-style 112x112 crops); other sizes are resized to 112x112.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from facetx.data.contract import IMAGE_SIZE
from facetx.data.formats.base import Face, FormatDataset, Transform
from facetx.data.formats.errors import DataFormatError
from facetx.data.formats.io import IMAGE_EXTENSIONS, read_image, require_dir, resize_square
from facetx.data.landmarks import LandmarkLayout

log = logging.getLogger(__name__)


class ImageFolderFaces(FormatDataset):
    """Identity-labeled aligned faces from one folder per identity (``classes``: the folder names, sorted).

    Folders without images are left out of ``classes`` (with a warning), so every class has samples.
    """

    tasks = ("identity",)

    def __init__(
        self,
        root: str | os.PathLike,
        layout: str | int | LandmarkLayout = "ibug68",
        transform: Transform | None = None,
        on_corrupt: str = "fail",
        name: str = "imagefolder",
    ) -> None:
        super().__init__(layout, transform, on_corrupt)
        self.root = require_dir(root, "an image folder with one sub-folder of aligned faces per identity")
        self.name = name
        classes, paths, labels, empty = [], [], [], []
        for d in sorted((p for p in self.root.iterdir() if p.is_dir()), key=lambda p: p.name):
            files = sorted(f for f in d.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
            if not files:
                empty.append(d.name)
                continue
            labels += [len(classes)] * len(files)
            paths += files
            classes.append(d.name)
        if not classes:
            raise DataFormatError(
                f"{self.root}: no identity sub-folder holds images ({', '.join(IMAGE_EXTENSIONS)}); expected"
                " root/<identity>/<image>"
            )
        if empty:
            log.warning("%s: %d identity folder(s) without images left out: %s", self.root, len(empty), empty[:5])
        self.classes: list[str] = classes
        self.num_classes = len(classes)
        self.image_paths: list[Path] = paths
        self.labels = np.array(labels, dtype=np.int64)
        self._set_length(len(paths))

    def _load(self, index: int) -> Face:
        image = resize_square(read_image(self.image_paths[index]), IMAGE_SIZE)
        return Face(image=image, identity=int(self.labels[index]))
