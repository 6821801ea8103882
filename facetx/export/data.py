"""The data an export needs, rebuilt from the checkpoint's own config: held-out sets to report on and to select the
INT8 fallback with, and un-augmented training images to calibrate on."""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from hydra.utils import instantiate
from torch.utils.data import Dataset

from facetx.errors import CheckpointError, ConfigError
from facetx.quant.calibration import MaterializedSet, sample_batches

log = logging.getLogger(__name__)

SPLITS = ("test", "val")


def _without_transforms(node: Any) -> Any:
    """A copy of a config subtree with every ``transform`` set to ``None`` (no augmentation for calibration)."""
    if isinstance(node, dict):
        return {k: (None if k == "transform" else _without_transforms(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [_without_transforms(v) for v in node]
    return node


@dataclass
class ExportData:
    """``report``: held-out sets whose metrics go into the table; ``select``: held-out sets that steer the INT8
    fallback (the validation sets); ``train``: the training set without augmentation (calibration, probes)."""

    report: list[Dataset]
    select: list[Dataset]
    train: Dataset
    report_split: str

    def calibration(self, batch_size: int, num_batches: int, seed: int) -> list[np.ndarray]:
        return sample_batches(self.train, batch_size, num_batches, seed)

    def probe(self, count: int, seed: int) -> np.ndarray:
        """``count`` training images ``[count, 3, H, W]`` (a different draw than calibration)."""
        return sample_batches(self.train, count, 1, seed + 1)[0]

    def real_images(self, count: int) -> np.ndarray:
        """The first ``count`` images of the first report set, for parity checks and timing inputs."""
        ds = self.report[0]
        return np.stack([ds[i]["image"].numpy() for i in range(min(count, len(ds)))])


def build_export_data(run_config: dict[str, Any], split: str = "test", max_images: int | None = None) -> ExportData:
    """Instantiate the checkpoint's ``data`` section; held-out sets are read once into memory.

    ``split``: ``test`` reports on the test sets (falling back to the validation sets when the run had none) and
    selects on the validation sets; ``val`` uses the validation sets for both.
    """
    if split not in SPLITS:
        raise ConfigError(f"eval.split must be one of {SPLITS}, got {split!r}")
    if "data" not in run_config:
        raise CheckpointError("the checkpoint's config has no 'data' section: cannot rebuild calibration/held-out data")
    data_cfg = copy.deepcopy(run_config["data"])
    if "train" in data_cfg:
        data_cfg["train"] = _without_transforms(data_cfg["train"])
    dm = instantiate(data_cfg, _convert_="all")
    if not dm.val_sets:
        raise CheckpointError("the checkpoint's data config has no held-out (val) sets to evaluate on")
    select = [MaterializedSet(ds, max_images) for ds in dm.val_sets]
    if split == "test" and dm.test_sets:
        report, used = [MaterializedSet(ds, max_images) for ds in dm.test_sets], "test"
    else:
        if split == "test":
            log.info("the run has no test sets: reporting on the validation sets (also used for INT8 selection)")
        report, used = select, "val"
    return ExportData(report=report, select=select, train=dm.train_set, report_split=used)
