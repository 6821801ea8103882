"""Calibration and evaluation inputs: real images from the data module, read once and kept in memory."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from onnxruntime.quantization import CalibrationDataReader
from torch.utils.data import Dataset

#: attributes of a held-out set that :func:`facetx.training.evaluation.evaluate` reads
_EVAL_ATTRS = (
    "name",
    "verification_name",
    "pairs",
    "layout",
    "flip_tta",
    "fars",
    "templates",
    "medias",
    "detector_scores",
    "template_pairs",
)  # the last four: IJB templates


class MaterializedSet(Dataset):
    """A data set read once into memory (images as uint8 when that is exact), with the source's evaluation attributes.

    Export evaluates one held-out set many times (FP32, INT8, sensitivity variants); procedural or decoded sources are
    too slow to render again each time.
    """

    def __init__(self, source: Dataset, limit: int | None = None) -> None:
        n = len(source) if limit is None else min(int(limit), len(source))
        samples = [source[i] for i in range(n)]
        images = torch.stack([s["image"] for s in samples])
        as_u8 = images.mul(255).round().clamp(0, 255).to(torch.uint8)
        self._u8 = bool(torch.equal(as_u8.float().div(255), images))
        self.images = as_u8 if self._u8 else images
        self.rest = [{k: v for k, v in s.items() if k != "image"} for s in samples]
        for attr in _EVAL_ATTRS:
            if hasattr(source, attr):
                setattr(self, attr, getattr(source, attr))

    def __len__(self) -> int:
        return len(self.rest)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        img = self.images[index]
        return {"image": img.float().div(255) if self._u8 else img, **self.rest[index]}


def sample_batches(dataset: Dataset, batch_size: int, num_batches: int, seed: int = 0) -> list[np.ndarray]:
    """``num_batches`` float32 ``[batch_size, 3, H, W]`` image batches drawn without replacement (fixed by ``seed``).

    Fewer, smaller batches are returned when the data set has fewer than ``batch_size * num_batches`` images.
    """
    if batch_size < 1 or num_batches < 1:
        raise ValueError(f"calibration needs batch_size >= 1 and num_batches >= 1, got {batch_size}, {num_batches}")
    n = len(dataset)
    if n == 0:
        raise ValueError("calibration data set is empty")
    order = np.random.default_rng(seed).permutation(n)[: batch_size * num_batches]
    batches = []
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        batches.append(torch.stack([dataset[int(j)]["image"] for j in idx]).float().numpy())
    return batches


class BatchReader(CalibrationDataReader):
    """ONNX Runtime calibration reader over in-memory batches; ``fixed_batch`` re-chunks them for fixed-batch graphs."""

    def __init__(
        self, batches: Sequence[np.ndarray], input_name: str = "image", fixed_batch: int | None = None
    ) -> None:
        if fixed_batch is not None:
            flat = np.concatenate(list(batches))
            batches = [flat[i : i + fixed_batch] for i in range(0, len(flat) - fixed_batch + 1, fixed_batch)]
        self.batches = [np.ascontiguousarray(b, dtype=np.float32) for b in batches]
        self.input_name = input_name
        self._it: Iterator[np.ndarray] = iter(self.batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._it, None)
        return None if batch is None else {self.input_name: batch}

    def rewind(self) -> None:
        self._it = iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)
