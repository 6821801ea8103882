"""Teacher outputs stored once per training image (TinyViT-style), so repeated distillation runs skip the teacher.

Valid only while every epoch shows the teacher the same images: the cache is keyed by the sample's ``index`` and is
refused when the training data is augmented (our augmentations draw fresh randomness per call and cannot be
replayed). The directory name fingerprints the teacher checkpoint and the training data config, so a new teacher or
other data never reads stale rows. Each teacher output is a float16 ``.npy`` memmap ``[N, ...]`` with its own
``filled`` flag per row (recipes that read fewer outputs share the cache; a recipe that needs one more output fills
just that one); rows are written before their flags, so an interrupted run leaves at most rows to recompute.
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

from facetx.errors import UserError

log = logging.getLogger(__name__)


class TeacherCacheError(UserError, ValueError):
    """The teacher cache cannot serve this run (augmented data, a cache of another size)."""


def cache_fingerprint(teacher_ckpt: str | Path, data_config: Mapping[str, Any]) -> str:
    """Short hash of the teacher checkpoint (path, size, mtime) and the training data config."""
    p = Path(teacher_ckpt).resolve()
    st = p.stat()
    blob = json.dumps(
        {"ckpt": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "data": data_config},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


class TeacherCache:
    """Per-image teacher outputs in ``root/<fingerprint>/``: ``lookup(index)`` -> outputs or None; ``store(...)``.

    ``size``: number of training images (sample indices are ``0..size-1``). ``keys``: the teacher outputs the
    distillation loss reads (``embedding``, ``feat.11``, ...). ``writable=False`` (non-zero DDP ranks) only reads.
    Files per output ``<key>.npy`` (float16 ``[size, ...]``) and ``<key>.filled.npy`` (bool ``[size]``).
    """

    def __init__(self, root: str | Path, fingerprint: str, size: int, keys: Sequence[str], writable: bool = True):
        self.dir = Path(root) / fingerprint
        self.size, self.keys, self.writable = int(size), tuple(sorted(keys)), writable
        self._arrays: dict[str, np.ndarray] = {}
        self._filled: dict[str, np.ndarray] = {}
        self.hits = self.misses = 0
        for k in self.keys:
            if (self.dir / f"{k}.filled.npy").is_file():
                self._open(k, "r+" if writable else "r")

    def _open(self, key: str, mode: str) -> None:
        filled = np.load(self.dir / f"{key}.filled.npy", mmap_mode=mode)
        if len(filled) != self.size:
            n = len(filled)
            raise TeacherCacheError(f"teacher cache {self.dir}: {key} holds {n} rows, the data has {self.size}")
        self._filled[key] = filled
        self._arrays[key] = np.load(self.dir / f"{key}.npy", mmap_mode=mode)

    def _create(self, key: str, example: torch.Tensor) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        shape = (self.size, *example.shape[1:])
        np.lib.format.open_memmap(self.dir / f"{key}.npy", mode="w+", dtype=np.float16, shape=shape).flush()
        tmp = self.dir / f"{key}.filled.npy.tmp"  # the flags last: their presence marks a complete layout
        with open(tmp, "wb") as f:
            np.save(f, np.zeros(self.size, dtype=bool))
        os.replace(tmp, self.dir / f"{key}.filled.npy")
        self._open(key, "r+")
        log.info("teacher cache: created %s/%s.npy %s", self.dir, key, list(shape))

    def lookup(self, index: torch.Tensor) -> dict[str, torch.Tensor] | None:
        """The stored outputs for ``index`` ``[B]`` (float32 tensors ``[B, ...]``), or None unless every row of
        every key is in."""
        idx = index.cpu().numpy()
        if len(self._filled) < len(self.keys) or not all(bool(f[idx].all()) for f in self._filled.values()):
            self.misses += 1
            return None
        self.hits += 1
        return {k: torch.from_numpy(np.asarray(self._arrays[k][idx], dtype=np.float32)) for k in self.keys}

    def store(self, index: torch.Tensor, outputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Write the teacher's ``outputs`` for the samples ``index`` ``[B]``; returns the stored keys as the cache
        will give them back (float16-rounded), so the run that fills the cache trains on the same targets as the
        runs that read it."""
        rounded = {k: outputs[k].detach().to(torch.float16).float() for k in self.keys}
        if not self.writable:
            return rounded
        idx = index.cpu().numpy()
        for k in self.keys:
            if k not in self._filled:
                self._create(k, rounded[k])
            self._arrays[k][idx] = rounded[k].cpu().numpy().astype(np.float16)
            self._arrays[k].flush()
            self._filled[k][idx] = True  # after the rows: a crash in between leaves rows that are simply recomputed
            self._filled[k].flush()
        return rounded
