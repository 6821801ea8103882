"""Shared Dataset machinery of the format readers: contract samples, augmentation, corrupt-image policy."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from facetx.data.contract import make_sample
from facetx.data.formats.errors import CorruptImageError, DataFormatError
from facetx.data.landmarks import LAYOUTS, LandmarkLayout, get_layout
from facetx.errors import ConfigError

log = logging.getLogger(__name__)

#: ``transform(image_uint8_rgb, landmarks_px_or_None, flip_map) -> (image, landmarks)``, e.g. ``FaceAugment``.
Transform = Callable[[np.ndarray, np.ndarray | None, np.ndarray], tuple[np.ndarray, np.ndarray | None]]

ON_CORRUPT = ("skip", "fail")
# A run of this many undecodable images in a row means the pack is broken, not a few bad records.
MAX_CONSECUTIVE_CORRUPT = 64


@dataclass
class Face:
    """One aligned 112x112 uint8 RGB crop and the labels its source has (None = absent; landmarks in crop pixels)."""

    image: np.ndarray
    landmarks: np.ndarray | None = None
    identity: int | None = None
    expression: int | None = None
    spoof: int | None = None


def resolve_layout(layout: str | int | LandmarkLayout) -> LandmarkLayout:
    """A layout, its name (``"ibug68"``, ``"wflw98"``) or its point count (68, 98: what ``data.num_landmarks`` says)."""
    if isinstance(layout, LandmarkLayout):
        return layout
    if isinstance(layout, int) and not isinstance(layout, bool):
        found = [lay for lay in LAYOUTS.values() if lay.num_points == layout]
        if len(found) != 1:
            counts = sorted(lay.num_points for lay in LAYOUTS.values())
            raise ValueError(f"no single landmark layout with {layout} points; known point counts: {counts}")
        return found[0]
    return get_layout(layout)


class FormatDataset(Dataset):
    """Base of the readers: subclasses set ``name``, fill ``_items`` length via ``_set_length`` and implement
    ``_load(index) -> Face``.

    ``on_corrupt``: ``"fail"`` raises on an undecodable image; ``"skip"`` logs it once, serves the next decodable
    item instead and counts it. The count is shared across DataLoader workers (a shared-memory mask, one flag per
    item), so :attr:`skipped` in the main process is the number of distinct corrupt items met so far by any worker.
    """

    name: str = "dataset"
    num_classes: int = 0

    def __init__(self, layout: str | int | LandmarkLayout, transform: Transform | None, on_corrupt: str) -> None:
        if on_corrupt not in ON_CORRUPT:
            raise ConfigError(f"on_corrupt must be one of {ON_CORRUPT}, got {on_corrupt!r}")
        self.layout = resolve_layout(layout)
        self.num_landmarks = int(self.layout.num_points)
        self.transform = transform
        self.on_corrupt = on_corrupt
        self._length = 0
        self._corrupt = torch.zeros(0, dtype=torch.bool)

    def _set_length(self, n: int) -> None:
        self._length = int(n)
        self._corrupt = torch.zeros(self._length, dtype=torch.bool).share_memory_()

    def __len__(self) -> int:
        return self._length

    def _load(self, index: int) -> Face:
        raise NotImplementedError

    @property
    def skipped(self) -> int:
        """Number of distinct corrupt items skipped so far (all workers)."""
        return int(self._corrupt.sum())

    @property
    def corrupt_indices(self) -> list[int]:
        return torch.nonzero(self._corrupt).flatten().tolist()

    def scan(self) -> list[int]:
        """Decode every item once; returns the indices of corrupt ones (other format errors still raise)."""
        bad = []
        for i in range(len(self)):
            try:
                self._load(i)
            except CorruptImageError:
                self._corrupt[i] = True
                bad.append(i)
        return bad

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"{self.name}: index {index} out of range for {n} items")
        index %= n
        for step in range(min(n, MAX_CONSECUTIVE_CORRUPT)):
            j = (index + step) % n
            try:
                face = self._load(j)
            except CorruptImageError as e:
                if self.on_corrupt == "fail":
                    raise
                if not bool(self._corrupt[j]):
                    self._corrupt[j] = True
                    log.warning("%s (skipped; on_corrupt=skip)", e)
                continue
            return self._sample(j, face)
        raise DataFormatError(
            f"{self.name}: {min(n, MAX_CONSECUTIVE_CORRUPT)} undecodable images in a row from item {index}"
            " (the data set looks broken, not just a few bad records)"
        )

    def _sample(self, index: int, face: Face) -> dict[str, torch.Tensor]:
        image, landmarks = face.image, face.landmarks
        if self.transform is not None:
            image, landmarks = self.transform(image, landmarks, self.layout.flip_map)
        return make_sample(
            image,
            index=index,
            num_landmarks=self.num_landmarks,
            identity=face.identity,
            landmarks=landmarks,
            expression=face.expression,
            spoof=face.spoof,
        )
