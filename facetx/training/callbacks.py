"""Callbacks that keep a run honest: exact resume, checkpoints that hold the final weights, clean stops.

- :class:`StepSeed`: every training step draws its randomness (dropout, drop-path, anything on torch's, numpy's or
  Python's global generators) from ``(seed, step, rank)``, as fairseq seeds each update. A resumed run needs no saved
  generator state, and no stray draw (a DataLoader iterator, a validation pass) shifts the steps after it.
- :class:`FinalValidation`: the last optimizer step is validated inside ``fit`` (Lightning skips it when ``max_steps``
  or the epoch's end falls between validation intervals), so the best checkpoint can be the final weights and
  ``last.ckpt`` is written after the validation that ``metrics.json`` reports.
- :class:`LastCheckpoint`: owns ``last.ckpt``: every N steps, after every validation, at the end of training, and at
  the step boundary after SIGINT/SIGTERM (then it prints the resume command and stops the run). It never writes
  non-finite weights.
- :func:`check_finite_loss`: a NaN/Inf loss stops training before its gradients touch the weights.
"""

from __future__ import annotations

import logging
import math
import random
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Checkpoint
from pytorch_lightning.trainer.states import TrainerFn

from facetx.errors import ConfigError, UserError

log = logging.getLogger(__name__)


class TrainingDiverged(UserError):
    """The loss or the weights became NaN/Inf; the message names the step and the last good checkpoint."""


class TrainingInterrupted(Exception):
    """SIGINT/SIGTERM stopped training at a step boundary after ``last.ckpt`` was saved; ``exit_code`` is 128 + the
    signal number, as a shell reports a process killed by it."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + int(signum)


def step_seed(seed: int, step: int, rank: int) -> int:
    """A 63-bit seed for training step ``step`` on ``rank``; distinct streams for distinct (seed, step, rank)."""
    return int(np.random.SeedSequence([int(seed), int(step), int(rank)]).generate_state(1, np.uint64)[0] >> 1)


class StepSeed(pl.Callback):
    """Seeds torch (all devices), numpy and ``random`` from ``(seed, global_step, global_rank)`` before each step."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, idx: int) -> None:
        micro = idx % max(int(trainer.accumulate_grad_batches), 1)  # micro-batches of one accumulated step differ
        s = step_seed(self.seed, trainer.global_step * 1024 + micro, trainer.global_rank)
        torch.manual_seed(s)
        np.random.seed(s % 2**32)
        random.seed(s)


def is_final_step(trainer: pl.Trainer) -> bool:
    """Whether the optimizer step just taken is the run's last (``max_steps`` reached, or the last epoch's end)."""
    if 0 < trainer.max_steps <= trainer.global_step:
        return True
    loop = trainer.fit_loop
    last_epoch = loop.max_epochs is not None and loop.max_epochs >= 0 and trainer.current_epoch + 1 >= loop.max_epochs
    return last_epoch and bool(loop.epoch_loop.batch_progress.is_last_batch)


class FinalValidation(pl.Callback):
    """Asks Lightning to validate after the final step (``should_stop`` makes its loop run validation there)."""

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if is_final_step(trainer):
            trainer.should_stop = True


def non_finite_parameters(module: torch.nn.Module) -> list[str]:
    return [n for n, p in module.named_parameters() if not bool(torch.isfinite(p).all())]


def resume_command(last: Path) -> str:
    """The command line that continues this run: the same script and overrides, this run dir, this checkpoint."""
    try:
        from hydra.core.hydra_config import HydraConfig

        hc = HydraConfig.get()
        overrides = [o for o in hc.overrides.task if not o.startswith(("ckpt_path=", "hydra.run.dir="))]
        run_dir = hc.runtime.output_dir
    except (ImportError, ValueError):  # not under @hydra.main (tests, notebooks)
        overrides, run_dir = [], str(last.parent.parent)
    script = Path(sys.argv[0]).name if sys.argv and sys.argv[0].endswith(".py") else "train.py"
    args = [*overrides, f"hydra.run.dir={run_dir}", f"ckpt_path={last}"]
    return " ".join(["python", script, *(shlex.quote(a) for a in args)])


class LastCheckpoint(Checkpoint):
    """Writes ``dirpath/last.ckpt``: every ``every_n_train_steps`` steps (0: never in between), after each validation
    during fit, at each epoch's end, when training ends, and after SIGINT/SIGTERM at the next step boundary (or
    validation / epoch end), after which it raises :class:`TrainingInterrupted` with the resume command. A second
    Ctrl-C stops at once.

    Lightning runs checkpoint callbacks after the others and in their listed order: list this one after the
    ``ModelCheckpoint`` so ``last.ckpt`` carries the best-score state of the validation it follows.
    """

    def __init__(self, dirpath: str, every_n_train_steps: int = 50, filename: str = "last.ckpt") -> None:
        if every_n_train_steps < 0:
            raise ConfigError(f"callbacks.last_checkpoint.every_n_train_steps must be >= 0, got {every_n_train_steps}")
        self.path = Path(dirpath) / filename
        self.every_n_train_steps = int(every_n_train_steps)
        self.last_saved_step: int | None = None
        self._signal: int | None = None
        self._previous: dict[int, Any] = {}

    # -- saving --------------------------------------------------------------------------------------------------
    def save(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        bad = non_finite_parameters(pl_module)
        if bad:
            raise TrainingDiverged(
                f"non-finite weights ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}) at step "
                f"{trainer.global_step}: {self.path} was not overwritten; {last_good_checkpoint(trainer)}"
            )
        # the full state (optimizer, loops, callbacks) is what makes a resumed run exact; saying so also stops
        # Lightning logging "`weights_only` was not set" at every save
        trainer.save_checkpoint(self.path, weights_only=False)
        self.last_saved_step = trainer.global_step

    def _fitting(self, trainer: pl.Trainer) -> bool:
        return trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        # A state saved here at the epoch's last batch, or at a step that validates next, does not resume exactly in
        # Lightning 2.6 (the resumed run skips that validation and miscounts the next epoch): those saves wait for
        # the epoch's end or the validation's end, which write last.ckpt anyway.
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch or _validates_now(trainer):
            return
        n = self.every_n_train_steps
        due = bool(n) and trainer.global_step % n == 0 and self.last_saved_step != trainer.global_step
        stop = self._stop_requested(trainer)
        if stop or due:
            self.save(trainer, pl_module)
        if stop:
            self._stop(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._fitting(trainer) or trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return  # at the epoch's last batch on_train_epoch_end saves, after ModelCheckpoint's update there
        self.save(trainer, pl_module)
        if self._stop_requested(trainer):
            self._stop(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.save(trainer, pl_module)
        if self._stop_requested(trainer):
            self._stop(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.last_saved_step != trainer.global_step:
            self.save(trainer, pl_module)
        self._restore_handlers()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore_handlers()  # nothing is saved on an exception: the state may be half-updated

    # -- signals -------------------------------------------------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._signal = None
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signal = signum
        name = signal.Signals(signum).name
        log.warning("%s received: saving %s at the next step boundary (Ctrl-C again stops at once)", name, self.path)
        self._restore_handlers()  # a second signal gets the previous handler (for SIGINT: KeyboardInterrupt)

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _stop_requested(self, trainer: pl.Trainer) -> bool:
        # one decision for all ranks (a signal may reach one rank only), so they save and stop at the same step
        return bool(trainer.strategy.reduce_boolean_decision(self._signal is not None, all=False))

    def _stop(self, trainer: pl.Trainer) -> None:
        signum = self._signal if self._signal is not None else signal.SIGTERM
        raise TrainingInterrupted(
            f"{signal.Signals(signum).name}: stopped at step {trainer.global_step} and saved {self.path}; resume "
            f"with: {resume_command(self.path)}",
            signum,
        )


def _validates_now(trainer: pl.Trainer) -> bool:
    """Whether Lightning validates right after this training step (asked with its own test, so both agree)."""
    loop = trainer.fit_loop
    try:
        return bool(loop.epoch_loop._should_check_val_fx(loop._data_fetcher))
    except AttributeError:  # another Lightning version: save now (exact but for that validation's log on resume)
        return False


def last_good_checkpoint(trainer: pl.Trainer) -> str:
    """Where the run's last good state is, for error messages."""
    for cb in trainer.callbacks:
        if isinstance(cb, LastCheckpoint) and cb.last_saved_step is not None:
            return f"the last good checkpoint is {cb.path} (step {cb.last_saved_step})"
    best = getattr(trainer.checkpoint_callback, "best_model_path", "")
    if best:
        return f"the last good checkpoint is {best}"
    return "no checkpoint was written before it"


def check_finite_loss(loss: torch.Tensor, trainer: pl.Trainer | None) -> None:
    """Raise :class:`TrainingDiverged` when ``loss`` is NaN/Inf: called in ``training_step``, before the backward
    pass, so the weights and ``last.ckpt`` keep the last good state. ``trainer``: None outside a Trainer."""
    finite = bool(torch.isfinite(loss).all())
    if trainer is not None:  # every rank stops at the same step, or the others would wait in the next all-reduce
        finite = not trainer.strategy.reduce_boolean_decision(not finite, all=False)
    if finite:
        return
    value = loss.detach().float().cpu().item() if loss.numel() == 1 else "non-finite"
    value = "nan" if isinstance(value, float) and math.isnan(value) else value
    where = "" if trainer is None else f" at step {trainer.global_step} (epoch {trainer.current_epoch})"
    last = "" if trainer is None else f"; {last_good_checkpoint(trainer)}"
    then = " and resume from it" if "last good checkpoint is" in last else ""
    raise TrainingDiverged(
        f"train/loss is {value}{where}: training stopped{last}; lower optim.lr or clip gradients harder (a smaller "
        f"trainer.gradient_clip_val){then}"
    )
