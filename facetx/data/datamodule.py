"""Lightning datamodule over data sets that follow the batch contract (:mod:`facetx.data.contract`)."""

from __future__ import annotations

from collections.abc import Sequence

import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset

from facetx.data.landmarks import LandmarkLayout


def _as_list(sets: Dataset | Sequence[Dataset] | None) -> list[Dataset]:
    if sets is None:
        return []
    if isinstance(sets, Dataset):
        return [sets]
    return list(sets)


class FaceDataModule(pl.LightningDataModule):
    """Wraps a training set and held-out sets.

    ``num_landmarks`` is the run's landmark layout size (68 or 98); ``root`` the data folder the configs interpolate;
    ``val_bins`` insightface verification packs added as held-out sets (``val/<stem>/acc``); ``monitor`` /
    ``monitor_mode`` the metric that selects the best checkpoint for this data (a landmark-only set has no
    verification accuracy).

    Every data set yields contract samples. The training set exposes ``num_classes`` (identity classes; 0 when it has
    no identity labels) and ``layout`` (its :class:`LandmarkLayout`). Held-out sets expose ``name``, and those used
    for verification ``verification_name`` and ``pairs`` (int64 ``[P, 3]``: index i, index j, same).
    """

    def __init__(
        self,
        train: Dataset,
        val: Dataset | Sequence[Dataset],
        test: Dataset | Sequence[Dataset] | None = None,
        num_landmarks: int = 68,
        root: str | None = None,
        val_bins: Sequence[str] = (),
        monitor: str = "val/recognition/acc",
        monitor_mode: str = "max",
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = True,
    ) -> None:
        super().__init__()
        self.train_set = train
        self.val_sets = _as_list(val)
        self.test_sets = _as_list(test)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.num_landmarks = num_landmarks
        self.root = root  # read by the data configs' ${data.root} interpolations
        if monitor_mode not in ("min", "max"):
            raise ValueError(f"data.monitor_mode must be 'min' or 'max', got {monitor_mode!r}")
        self.monitor, self.monitor_mode = monitor, monitor_mode
        if val_bins:
            from facetx.data.formats.verification import verification_sets

            self.val_sets += verification_sets(val_bins, layout=num_landmarks)
        for ds in [self.train_set, *self.val_sets, *self.test_sets]:
            layout = getattr(ds, "layout", None)
            if layout is not None and layout.num_points != num_landmarks:
                raise ValueError(
                    f"data.num_landmarks={num_landmarks} but {getattr(ds, 'name', type(ds).__name__)} uses the "
                    f"{layout.name} layout with {layout.num_points} points: set data.num_landmarks={layout.num_points}"
                )

    @property
    def num_classes(self) -> int:
        return int(getattr(self.train_set, "num_classes", 0))

    @property
    def layout(self) -> LandmarkLayout:
        return self.train_set.layout

    def _loader(self, ds: Dataset, train: bool) -> DataLoader:
        return DataLoader(
            ds,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            drop_last=train,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> list[DataLoader]:
        return [self._loader(ds, train=False) for ds in self.val_sets]

    def test_dataloader(self) -> list[DataLoader]:
        return [self._loader(ds, train=False) for ds in self.test_sets]
