"""Lightning datamodule over data sets that follow the batch contract (:mod:`facetx.data.contract`)."""

from __future__ import annotations

import signal
from collections.abc import Sequence

import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset

from facetx.data.landmarks import LandmarkLayout
from facetx.data.sampler import EpochSampler, KeyedDataset
from facetx.errors import CheckpointError, ConfigError

_TASKS = ("recognition", "landmarks", "expression", "spoof")


def _as_list(sets: Dataset | Sequence[Dataset] | None) -> list[Dataset]:
    if sets is None:
        return []
    if isinstance(sets, Dataset):
        return [sets]
    return list(sets)


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers ignore Ctrl-C and SIGTERM (a terminal or SLURM signals the whole process group): the main
    process stops at the next step boundary and saves; a worker killed first would crash it mid-step instead."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # what Lightning's seed_everything(workers=True) would have installed: numpy/random seeded per worker
    from lightning_fabric.utilities.seed import pl_worker_init_function

    pl_worker_init_function(worker_id)


class FaceDataModule(pl.LightningDataModule):
    """Wraps a training set and held-out sets.

    ``num_landmarks`` is the run's landmark layout size (68 or 98); ``root`` the data folder the configs interpolate;
    ``val_bins`` insightface verification packs added as held-out sets (``val/<stem>/acc``); ``val_ijb`` IJB-B/C folders
    in insightface's layout (``val/ijbc/tar@far=1e-4``, ...); ``monitor`` /
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
        val_ijb: Sequence[str] = (),
        monitor: str = "val/recognition/acc",
        monitor_mode: str = "max",
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = True,
        seed: int = 0,
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
        self.seed = int(seed)  # training order and augmentation draw from it (conf: ${seed})
        self._resume_at: tuple[int, int] | None = None
        self._train_sampler: EpochSampler | None = None
        self.num_landmarks = num_landmarks
        self.root = root  # read by the data configs' ${data.root} interpolations
        if monitor_mode not in ("min", "max"):
            raise ConfigError(f"data.monitor_mode must be 'min' or 'max', got {monitor_mode!r}")
        self.monitor, self.monitor_mode = monitor, monitor_mode
        from pathlib import Path

        if isinstance(val_bins, str):  # a bare path would be read letter by letter
            raise ConfigError(f"data.val_bins={val_bins}: expected a list of packs, e.g. data.val_bins=[{val_bins}]")
        missing = [Path(p).expanduser() for p in val_bins or () if not Path(p).expanduser().is_file()]
        if missing:
            state = "is not a file" if missing[0].exists() else "does not exist"
            raise ConfigError(
                f"data.val_bins: {missing[0]} {state} (expected insightface verification packs such as lfw.bin;"
                " data.val_bins=[] uses none)"
            )
        if val_bins:
            from facetx.data.formats.verification import verification_sets

            self.val_sets += verification_sets(val_bins, layout=num_landmarks)
        if isinstance(val_ijb, str):
            raise ConfigError(f"data.val_ijb={val_ijb}: expected a list of folders, e.g. data.val_ijb=[{val_ijb}]")
        if val_ijb:
            from facetx.data.formats.ijb import ijb_sets

            self.val_sets += ijb_sets(list(val_ijb), layout=num_landmarks)
        for ds in [self.train_set, *self.val_sets, *self.test_sets]:
            layout = getattr(ds, "layout", None)
            if layout is not None and layout.num_points != num_landmarks:
                raise ConfigError(
                    f"data.num_landmarks={num_landmarks} but {getattr(ds, 'name', type(ds).__name__)} uses the "
                    f"{layout.name} layout with {layout.num_points} points: set data.num_landmarks={layout.num_points}"
                )
        self._check_monitor()

    def _check_monitor(self) -> None:
        """``monitor`` must be a metric these held-out sets report: ``val/<task>/...`` or ``val/<set name>/...``
        (an IJB recipe run without ``data.val_ijb`` would otherwise select no checkpoint and say nothing)."""
        parts = self.monitor.split("/")
        if len(parts) < 3 or parts[0] not in ("val", "test"):
            return
        sets = self.val_sets if parts[0] == "val" else self.test_sets
        add = "data.val_ijb=[/path/to/IJB_release/IJBC]" if parts[1] in ("ijbc", "ijbb") else (
            f"data.val_bins=[/path/to/{parts[1]}.bin]" if parts[1] not in _TASKS else "a held-out set")  # fmt: skip
        if not sets:
            raise ConfigError(
                f"data.monitor={self.monitor}: there is no {parts[0]} set to measure it on (no data.{parts[0]} set,"
                f" data.val_bins or data.val_ijb), so no best checkpoint could be chosen: add one ({add})"
            )
        known = set(_TASKS)  # a task is reported by the sets that label it; which do is known only at run time
        for ds in sets:
            known |= {str(n) for n in (getattr(ds, "verification_name", None), getattr(ds, "name", None)) if n}
        if parts[1] not in known:
            raise ConfigError(
                f"data.monitor={self.monitor}: no held-out set reports {parts[1]!r} (held-out names and tasks:"
                f" {sorted(known)}): add it ({add}) or monitor one of those"
            )

    @property
    def num_classes(self) -> int:
        return int(getattr(self.train_set, "num_classes", 0))

    @property
    def layout(self) -> LandmarkLayout:
        return self.train_set.layout

    def _worker_options(self) -> dict[str, object]:
        return {
            "num_workers": self.num_workers,
            "pin_memory": self.pin_memory,
            "persistent_workers": self.persistent_workers,
            "worker_init_fn": ignore_stop_signals,
        }

    def _loader(self, ds: Dataset) -> DataLoader:
        return DataLoader(ds, batch_size=self.eval_batch_size, shuffle=False, **self._worker_options())

    def train_dataloader(self) -> DataLoader:
        """Batches in an order drawn from ``(seed, epoch)``, each sample augmented from ``(seed, epoch, index)``; a
        resumed run starts where :meth:`load_state_dict` says (:mod:`facetx.data.sampler`)."""
        sampler = EpochSampler(len(self.train_set), self.batch_size, seed=self.seed, epoch_source=self._current_epoch)
        if len(sampler) == 0:
            raise ConfigError(
                f"data.batch_size={self.batch_size}: the training set has only {len(self.train_set)} images "
                f"({sampler.num_replicas} process(es)), fewer than one batch per process; lower data.batch_size "
                f"to at most {len(self.train_set) // sampler.num_replicas}"
            )
        if self._resume_at is not None:
            sampler.resume(*self._resume_at)
            self._resume_at = None
        self._train_sampler = sampler
        return DataLoader(
            KeyedDataset(self.train_set),
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=True,
            **self._worker_options(),
        )

    def _current_epoch(self) -> int:
        trainer = getattr(self, "trainer", None)
        return int(trainer.current_epoch) if trainer is not None else 0

    def state_dict(self) -> dict[str, int]:
        """The training position, as the trainer counts it: the epoch in flight and the batches finished in it (the
        next epoch and 0 once it is over). Lightning stores it in every checkpoint."""
        trainer = getattr(self, "trainer", None)
        if trainer is None or self._train_sampler is None:
            return {}
        # the epoch the sampler is dealing (the trainer's counters are one off right after a resume at an epoch's end)
        epoch = self._train_sampler.epoch_in_flight
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        if done >= trainer.num_training_batches:
            epoch, done = epoch + 1, 0
        return {"epoch": int(epoch), "batches": int(done), "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume the training order at ``state``; Lightning calls this before it builds the training loader."""
        if not state:
            return
        if int(state["seed"]) != self.seed:
            raise CheckpointError(
                f"seed={self.seed}: the checkpoint's run drew its data order from seed={state['seed']}; resume "
                f"with seed={state['seed']}"
            )
        self._resume_at = (int(state["epoch"]), int(state["batches"]))

    def val_dataloader(self) -> list[DataLoader]:
        return [self._loader(ds) for ds in self.val_sets]

    def test_dataloader(self) -> list[DataLoader]:
        return [self._loader(ds) for ds in self.test_sets]
