"""Plain progress lines for logs nobody watches live: SLURM output files, CI, ``| tee``.

Lightning's progress bar redraws one terminal line; written to a file it leaves nothing between the model summary
and the end of the run. :class:`ProgressLog` logs a line every N optimizer steps (step, loss, images/s, ETA) and one
per validation (the monitored metric first), through Python logging, so Hydra's run log keeps them too.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import pytorch_lightning as pl

log = logging.getLogger(__name__)


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"


class ProgressLog(pl.Callback):
    """One log line every ``every_n_steps`` optimizer steps and one per validation (rank 0 only).

    Args:
        every_n_steps: steps between lines.
        when: ``"auto"`` logs only when stderr is not a terminal (where the progress bar is not seen), ``"always"``,
            or ``"never"``.
        monitor: the metric named first in the validation line (the others follow, sorted).
    """

    def __init__(self, every_n_steps: int = 50, when: str = "auto", monitor: str | None = None) -> None:
        if when not in ("auto", "always", "never"):
            raise ValueError(f"callbacks.progress_log.when={when!r}: expected auto, always or never")
        if every_n_steps < 1:
            raise ValueError(f"callbacks.progress_log.every_n_steps={every_n_steps}: expected a positive step count")
        self.every_n_steps, self.when, self.monitor = every_n_steps, when, monitor
        self._t0 = 0.0
        self._step0 = 0
        self._images = 0

    def _on(self, trainer: pl.Trainer) -> bool:
        if not trainer.is_global_zero or self.when == "never":
            return False
        return self.when == "always" or not sys.stderr.isatty()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0, self._step0, self._images = time.perf_counter(), trainer.global_step, 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:  # fmt: skip
        self._images += int(batch["image"].shape[0]) * trainer.world_size
        step = trainer.global_step
        if step == self._step0 or step % self.every_n_steps or not self._on(trainer):
            return
        elapsed = time.perf_counter() - self._t0
        done = step - self._step0
        total = int(trainer.estimated_stepping_batches)
        loss = trainer.callback_metrics.get("train/loss")
        loss_text = f"{float(loss):.4f}" if loss is not None else "n/a"
        eta = _clock(elapsed / done * max(total - step, 0))
        log.info("step %d/%d  loss %s  %.1f images/s  ETA %s", step, total, loss_text, self._images / elapsed, eta)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not self._on(trainer):
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/") and v.numel() == 1}
        keys = sorted(metrics, key=lambda k: (k != self.monitor, k))
        shown = "  ".join(f"{k}={metrics[k]:.4f}" for k in keys if not k.endswith(("_pairs", "_std")))
        log.info("validation at step %d: %s", trainer.global_step, shown or "(no metrics)")
