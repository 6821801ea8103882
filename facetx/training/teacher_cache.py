"""Teacher outputs stored once per training image (TinyViT-style), so repeated distillation runs skip the teacher.

Valid only while every epoch shows the teacher the same images: the cache is keyed by the sample's ``index`` and is
refused when the training data is augmented (our augmentations draw fresh randomness per call and cannot be
replayed). The directory name fingerprints the teacher checkpoint and the training data config, so a new teacher or
other data never reads stale rows. Outputs are stored as float16 ``.npy`` memmaps ``[N, ...]`` beside a ``filled``
flag per row; rows are written before their flags, so an interrupted run leaves at most rows to recompute.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)


class TeacherCacheError(ValueError):
    """The teacher cache cannot serve this run (augmented data, a cache of another size)."""


def cache_fingerprint(teacher_ckpt: str | Path, data_config: Mapping[str, Any], keys: Sequence[str]) -> str:
    """Short hash of the teacher checkpoint (path, size, mtime), the training data config and the stored outputs."""
    p = Path(teacher_ckpt).resolve()
    st = p.stat()
    blob = json.dumps(
        {"ckpt": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "data": data_config, "keys": sorted(keys)},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


class TeacherCache:
    """Per-image teacher outputs in ``root/<fingerprint>/``: ``lookup(index)`` -> outputs or None; ``store(...)``.

    ``size``: number of training images (sample indices are ``0..size-1``). ``keys``: the teacher outputs the
    distillation loss reads (``embedding``, ``feat.11``, ...). ``writable=False`` (non-zero DDP ranks) only reads.
    """

    def __init__(self, root: str | Path, fingerprint: str, size: int, keys: Sequence[str], writable: bool = True):
        self.dir = Path(root) / fingerprint
        self.size, self.keys, self.writable = int(size), tuple(sorted(keys)), writable
        self._arrays: dict[str, np.ndarray] | None = None
        self._filled: np.ndarray | None = None
        self.hits = self.misses = 0
        if (self.dir / "filled.npy").is_file():
            self._open("r+" if writable else "r")

    def _open(self, mode: str) -> None:
        self._filled = np.load(self.dir / "filled.npy", mmap_mode=mode)
        self._arrays = {k: np.load(self.dir / f"{k}.npy", mmap_mode=mode) for k in self.keys}
        if len(self._filled) != self.size:
            n = len(self._filled)
            raise TeacherCacheError(f"teacher cache {self.dir}: holds {n} rows, the data has {self.size}")

    def _create(self, example: Mapping[str, torch.Tensor]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        for k in self.keys:
            shape = (self.size, *example[k].shape[1:])
            np.lib.format.open_memmap(self.dir / f"{k}.npy", mode="w+", dtype=np.float16, shape=shape).flush()
        # the flags last: their presence marks a complete layout
        tmp = self.dir / "filled.npy.tmp"
        with open(tmp, "wb") as f:
            np.save(f, np.zeros(self.size, dtype=bool))
        os.replace(tmp, self.dir / "filled.npy")
        (self.dir / "README").write_text("facetx teacher-output cache (float16 rows, keyed by training sample index)\n")
        self._open("r+")
        log.info("teacher cache: created %s (%d rows, %s)", self.dir, self.size, ", ".join(self.keys))

    def lookup(self, index: torch.Tensor) -> dict[str, torch.Tensor] | None:
        """The stored outputs for ``index`` ``[B]`` (float32 tensors ``[B, ...]``), or None unless every row is in."""
        idx = index.cpu().numpy()
        if self._filled is None or not bool(self._filled[idx].all()):
            self.misses += 1
            return None
        self.hits += 1
        return {k: torch.from_numpy(np.asarray(a[idx], dtype=np.float32)) for k, a in self._arrays.items()}

    def store(self, index: torch.Tensor, outputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Write the teacher's ``outputs`` for the samples ``index`` ``[B]``; returns the stored keys as the cache
        will give them back (float16-rounded), so the run that fills the cache trains on the same targets as the
        runs that read it."""
        rounded = {k: outputs[k].detach().to(torch.float16).float() for k in self.keys}
        if not self.writable:
            return rounded
        if self._filled is None:
            self._create(outputs)
        idx = index.cpu().numpy()
        for k, a in self._arrays.items():
            a[idx] = rounded[k].cpu().numpy().astype(np.float16)
            a.flush()
        self._filled[idx] = True  # after the rows: a crash in between leaves rows that are simply recomputed
        self._filled.flush()
        return rounded
