"""Several data sources in one training set, each with its tasks and sampling weight.

E.g. identity from an insightface pack, landmarks from WFLW, expression from FER2013 and spoof from CelebA-Spoof.
Every source yields contract samples; :class:`MixDataset` keeps only each source's chosen tasks (the other label
masks are turned off), offsets identity labels so that sources with identities get disjoint class ranges, and
requires one landmark layout for all sources.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from facetx.data.contract import TASKS
from facetx.data.formats.errors import DataFormatError
from facetx.data.landmarks import LandmarkLayout

_ABSENT = {"identity": -1, "expression": -1, "spoof": -1}


@dataclass
class MixSource:
    """One source of a mix: a contract ``dataset``, its sampling ``weight`` (relative, > 0) and the ``tasks`` taken
    from it (None: every task its samples label)."""

    dataset: Dataset
    weight: float = 1.0
    tasks: Sequence[str] | None = None


class MixDataset(Dataset):
    """``length`` samples drawn from the sources in proportion to their weights (default length: the sources'
    total size).

    The schedule (which source item each index reads) is fixed by ``seed``: source ``s`` gets
    ``round(length * w_s / sum w)`` slots (largest remainder); a source with more slots than items repeats them as
    evenly as possible, one with fewer is subsampled without repetition. The DataLoader's shuffle mixes sources
    within batches. ``num_classes`` is the sum over sources that keep ``identity``; each such source's labels are
    shifted by the classes of the sources before it (``identity_offsets``).
    """

    def __init__(
        self,
        sources: Mapping[str, MixSource] | Sequence[MixSource],
        length: int | None = None,
        seed: int = 0,
        name: str = "mix",
    ) -> None:
        items = (
            list(sources.items())
            if isinstance(sources, Mapping)
            else [(f"source{i}", s) for i, s in enumerate(sources)]
        )
        if not items:
            raise ValueError("mix: needs at least one source")
        self.name = name
        self.source_names = [str(k) for k, _ in items]
        self.sources = [s for _, s in items]
        self.datasets = [s.dataset for s in self.sources]
        self.layout = self._common_layout()
        self.num_landmarks = int(self.layout.num_points)
        self.tasks = [self._tasks(n, s) for n, s in items]

        self.identity_offsets: list[int] = []
        total = 0
        for ds, tasks in zip(self.datasets, self.tasks, strict=True):
            self.identity_offsets.append(total)
            if "identity" in tasks:
                total += int(getattr(ds, "num_classes", 0))
        self.num_classes = total

        weights = np.array([float(s.weight) for s in self.sources], dtype=np.float64)
        for n, w in zip(self.source_names, weights, strict=True):
            if not np.isfinite(w) or w <= 0:
                raise ValueError(f"mix: source {n!r} needs a positive weight, got {w}")
        sizes = [len(ds) for ds in self.datasets]
        for n, size in zip(self.source_names, sizes, strict=True):
            if size == 0:
                raise DataFormatError(f"mix: source {n!r} is empty")
        self.length = int(sum(sizes) if length is None else length)
        if self.length <= 0:
            raise ValueError(f"mix: length must be positive, got {length}")
        self.counts = _largest_remainder(weights / weights.sum(), self.length)
        self._starts = np.concatenate(([0], np.cumsum(self.counts))).tolist()
        rng = np.random.default_rng(seed)
        self._plans = [_plan(int(c), size, rng) for c, size in zip(self.counts, sizes, strict=True)]

    def _common_layout(self) -> LandmarkLayout:
        layouts = []
        for n, ds in zip(self.source_names, self.datasets, strict=True):
            layout = getattr(ds, "layout", None)
            if not isinstance(layout, LandmarkLayout):
                raise ValueError(f"mix: source {n!r} ({type(ds).__name__}) exposes no landmark layout")
            layouts.append((n, layout))
        n0, first = layouts[0]
        for n, layout in layouts[1:]:
            if layout.name != first.name or layout.num_points != first.num_points:
                raise DataFormatError(
                    f"mix: source {n!r} uses landmark layout {layout.name!r} but source {n0!r} uses {first.name!r};"
                    " all sources must share one layout (data.num_landmarks)"
                )
        return first

    @staticmethod
    def _tasks(name: str, source: MixSource) -> frozenset[str]:
        has = getattr(source.dataset, "tasks", None)
        if source.tasks is None:
            return frozenset(TASKS if has is None else has)
        tasks = frozenset(source.tasks)
        unknown = sorted(tasks - set(TASKS))
        if unknown:
            raise ValueError(f"mix: source {name!r}: unknown task(s) {unknown}; expected among {list(TASKS)}")
        if has is not None and not tasks <= set(has):
            raise ValueError(
                f"mix: source {name!r} asks for task(s) {sorted(tasks - set(has))} that"
                f" {type(source.dataset).__name__} has no labels for (it has {list(has)})"
            )
        if not tasks:
            raise ValueError(f"mix: source {name!r} keeps no task")
        return tasks

    def __len__(self) -> int:
        return self.length

    @property
    def skipped(self) -> int:
        """Corrupt images skipped so far by the sources (those that count them, see ``FormatDataset.skipped``)."""
        return sum(int(getattr(ds, "skipped", 0)) for ds in self.datasets)

    def locate(self, index: int) -> tuple[int, int]:
        """Mix index -> ``(source number, item index in that source)``."""
        if not 0 <= index < self.length:
            raise IndexError(f"mix: index {index} out of range for {self.length} items")
        s = bisect.bisect_right(self._starts, index) - 1
        return s, _item(self._plans[s], index - self._starts[s])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        s, j = self.locate(int(index))
        sample = dict(self.datasets[s][j])
        tasks = self.tasks[s]
        for task in TASKS:
            if task not in tasks:
                sample[f"has_{task}"] = torch.tensor(False)
                sample[task] = (
                    torch.zeros_like(sample[task])
                    if task == "landmarks"
                    else torch.full_like(sample[task], _ABSENT[task])
                )
        if "identity" in tasks and bool(sample["has_identity"]):
            sample["identity"] = sample["identity"] + self.identity_offsets[s]
        sample["index"] = torch.tensor(int(index), dtype=torch.long)
        return sample


def _largest_remainder(fractions: np.ndarray, total: int) -> np.ndarray:
    raw = fractions * total
    counts = np.floor(raw).astype(np.int64)
    short = total - int(counts.sum())
    counts[np.argsort(-(raw - counts), kind="stable")[:short]] += 1
    return counts


def _plan(count: int, size: int, rng: np.random.Generator) -> tuple[int, int, np.ndarray]:
    """Slots ``j < full`` read item ``j % size``; the rest read ``extra[j - full]`` (distinct, random)."""
    full = (count // size) * size
    extra = rng.choice(size, count - full, replace=False).astype(np.int64)
    return full, size, extra


def _item(plan: tuple[int, int, np.ndarray], j: int) -> int:
    full, size, extra = plan
    return j % size if j < full else int(extra[j - full])
