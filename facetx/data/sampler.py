"""Training data order and augmentation as pure functions of (seed, epoch, index): what makes a resumed run exact.

A killed run that resumes mid-epoch must see the batches the uninterrupted run would have seen, each augmented the
same way, whatever the number of DataLoader workers. So nothing here carries hidden state forward:

- :class:`EpochSampler` draws epoch ``e``'s order from ``(seed, e)`` alone and can start an epoch after its first
  ``k`` batches (:meth:`EpochSampler.resume`). It is a ``DistributedSampler``, so Lightning keeps it under DDP (and
  calls ``set_epoch``); each rank takes every ``world_size``-th index of the same order.
- It yields :class:`SampleKey` ``(seed, epoch, index)``; :class:`KeyedDataset` reads ``dataset[index]`` with that key
  set as the current sample key, and augmentations (``FaceAugment``) seed themselves from it.
- The position to resume from (epoch, batches finished in it) is the trainer's count, saved by the datamodule
  (:class:`facetx.data.datamodule.FaceDataModule`); the loader cannot count it itself, since Lightning prefetches a
  batch and workers prefetch more.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler


class SampleKey(NamedTuple):
    """Which sample is read and under which randomness: the run's data ``seed``, the ``epoch`` and the ``index``."""

    seed: int
    epoch: int
    index: int


_CURRENT_KEY: contextvars.ContextVar[SampleKey | None] = contextvars.ContextVar("facetx_sample_key", default=None)


def current_sample_key() -> SampleKey | None:
    """The key of the sample being read (inside :class:`KeyedDataset`), else None."""
    return _CURRENT_KEY.get()


@contextmanager
def sample_key(key: SampleKey) -> Iterator[None]:
    token = _CURRENT_KEY.set(key)
    try:
        yield
    finally:
        _CURRENT_KEY.reset(token)


class KeyedDataset(Dataset):
    """``dataset`` indexed by :class:`SampleKey`: ``self[key]`` is ``dataset[key.index]`` read with ``key`` current,
    so its augmentation is a function of the key (and the same in any worker, before and after a resume)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: SampleKey) -> Any:
        with sample_key(SampleKey(*key)):
            return self.dataset[int(key[2])]

    def __getattr__(self, name: str) -> Any:  # num_classes, layout, name, ... of the wrapped set
        if name == "dataset":  # not set yet (unpickling in a worker): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)


class EpochSampler(DistributedSampler):
    """Epoch ``e``: a permutation of ``range(size)`` drawn from ``(seed, e)``, cut to a multiple of
    ``batch_size * world_size`` (the last incomplete batch is dropped), dealt round-robin to the ranks; yields
    :class:`SampleKey`. ``epoch_source`` gives the epoch when a pass starts (default: the ``set_epoch`` value);
    ``resume(epoch, batches)`` makes the next pass deal that epoch without its first ``batches`` batches (per rank).
    """

    def __init__(self, size: int, batch_size: int, seed: int, epoch_source: Callable[[], int] | None = None) -> None:
        world, rank = (
            (dist.get_world_size(), dist.get_rank()) if dist.is_available() and dist.is_initialized() else (1, 0)
        )
        # DistributedSampler's own fields (num_replicas, rank, epoch, seed, shuffle) keep their meaning
        super().__init__(range(size), num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.size, self.batch_size = int(size), int(batch_size)
        self.num_samples = (self.size // (self.batch_size * world)) * self.batch_size
        self.total_size = self.num_samples * world
        self._resume: tuple[int, int] | None = None
        # the trainer's epoch, read when an epoch's pass starts: Lightning's set_epoch passes a counter that is one
        # ahead after a resume from an epoch's end, which would shuffle the resumed epoch differently
        self.epoch_source = epoch_source
        self.epoch_in_flight = 0

    def resume(self, epoch: int, batches: int) -> None:
        self._resume = (int(epoch), int(batches))

    def order(self, epoch: int) -> list[int]:
        """Every rank's sample indices of ``epoch``, in the order they are dealt (rank ``r`` takes ``[r::world]``)."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.size, generator=g).tolist()[: self.total_size]

    def __iter__(self) -> Iterator[SampleKey]:
        epoch = self.epoch_source() if self.epoch_source is not None else self.epoch
        skip = 0
        if self._resume is not None:  # the first pass after a resume: the checkpoint's position decides
            epoch, skip = self._resume[0], self._resume[1] * self.batch_size
            self._resume = None  # one-shot: later passes start at the beginning of their epoch
        self.epoch_in_flight = epoch
        mine = self.order(epoch)[self.rank :: self.num_replicas]
        return iter([SampleKey(self.seed, epoch, i) for i in mine[skip:]])

    def __len__(self) -> int:
        return self.num_samples
