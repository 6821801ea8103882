"""LightningModule for multitask face training (teacher or student trained alone)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from facetx.loss.multitask import MultiTaskLoss
from facetx.models.facenet import FaceNet
from facetx.training.callbacks import check_finite_loss
from facetx.training.evaluation import HeldOutEvaluator, merge_set_metrics
from facetx.training.sharding import ShardHooks, setup_shards

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]


def no_weight_decay_names(module: nn.Module) -> set[str]:
    """Full parameter names that timm models list in ``no_weight_decay()`` (position embeddings, tokens)."""
    names: set[str] = set()
    for prefix, sub in module.named_modules():
        if sub is not module and hasattr(sub, "no_weight_decay"):
            names |= {f"{prefix}.{n}" for n in sub.no_weight_decay()}
    return names


def lr_scales(module: nn.Module) -> dict[str, float]:
    """Full parameter names under submodules that set an ``lr_scale`` attribute other than 1 (the innermost wins)."""
    scales: dict[str, float] = {}
    for prefix, sub in module.named_modules():
        scale = getattr(sub, "lr_scale", None)
        if sub is not module and isinstance(scale, (int, float)) and not isinstance(scale, bool):
            for name, _ in sub.named_parameters():
                scales[f"{prefix}.{name}"] = float(scale)
    return {k: v for k, v in scales.items() if v != 1.0}


def apply_lr_scales(optimizer: torch.optim.Optimizer, module: nn.Module) -> None:
    """Move the parameters of :func:`lr_scales` into groups of their own, ``lr`` times the scale (``lr_scale`` kept
    in the group for the scheduler). Runs before the first step, so there is no optimizer state to move."""
    scales = lr_scales(module)
    if not scales:
        return
    scale_of = {id(p): scales[n] for n, p in module.named_parameters() if n in scales}
    for group in list(optimizer.param_groups):
        moved: dict[float, list[nn.Parameter]] = {}
        kept = []
        for p in group["params"]:
            (moved.setdefault(scale_of[id(p)], []) if id(p) in scale_of else kept).append(p)
        group["params"] = kept
        for scale, params in moved.items():
            extra = {k: v for k, v in group.items() if k not in ("params", "lr", "initial_lr")}
            optimizer.add_param_group({**extra, "params": params, "lr": group["lr"] * scale, "lr_scale": scale})
    optimizer.param_groups[:] = [g for g in optimizer.param_groups if g["params"]]


def build_scheduler(
    factory: SchedulerFactory | None, optimizer: torch.optim.Optimizer, total_steps: int
) -> dict[str, Any] | None:
    """Complete a scheduler partial with the run's length (``total_steps`` / ``T_max``) unless the config set it.

    A scalar ``max_lr`` (OneCycleLR) becomes one per group, times the group's ``lr_scale``; schedulers that start
    from each group's own ``lr`` (cosine, none) honour the scale as they are."""
    if factory is None:
        return None
    params = inspect.signature(getattr(factory, "func", factory)).parameters
    given = getattr(factory, "keywords", {})
    extra: dict[str, Any] = {k: total_steps for k in ("total_steps", "T_max") if k in params and given.get(k) is None}
    max_lr = given.get("max_lr")
    if isinstance(max_lr, (int, float)) and any("lr_scale" in g for g in optimizer.param_groups):
        extra["max_lr"] = [float(max_lr) * g.get("lr_scale", 1.0) for g in optimizer.param_groups]
    return {"scheduler": factory(optimizer=optimizer, **extra), "interval": "step"}


def optimizer_config(
    trainable: nn.Module, optimizer: OptimizerFactory, scheduler: SchedulerFactory | None, trainer: pl.Trainer
) -> dict[str, Any]:
    """Lightning's optimizer dict: ``optimizer(trainable)`` (timm's ``create_optimizer_v2`` takes the module, so it
    can skip decay on norms/biases and ``trainable.no_weight_decay()``) plus the per-step scheduler sized from the
    trainer. Submodules with an ``lr_scale`` attribute (``TextureHead``) train at that multiple of the rate."""
    opt = optimizer(trainable)
    apply_lr_scales(opt, trainable)
    config: dict[str, Any] = {"optimizer": opt}
    sched = build_scheduler(scheduler, opt, int(trainer.estimated_stepping_batches))
    if sched is not None:
        config["lr_scheduler"] = sched
    return config


def log_losses(module: pl.LightningModule, losses: dict[str, torch.Tensor], batch_size: int) -> None:
    """``train/loss`` and ``train/<part>/loss``, averaged over the ranks under DDP (each rank has its own batch)."""
    module.log("train/loss", losses["loss"], prog_bar=True, batch_size=batch_size, sync_dist=True)
    parts = {f"train/{k}/loss": v for k, v in losses.items() if k != "loss"}
    module.log_dict(parts, batch_size=batch_size, sync_dist=True)


class EvalMixin:
    """Validation/test over every held-out dataloader with :class:`HeldOutEvaluator`; logs ``<stage>/<key>``."""

    fars: Sequence[float] = (1e-3,)
    last_validated_step: int | None = None
    _evaluators: list[HeldOutEvaluator]
    _raw_cache: dict[str, float]

    def eval_net(self) -> nn.Module:
        raise NotImplementedError

    def _start_eval(self, loaders: Any) -> None:
        loaders = loaders if isinstance(loaders, (list, tuple)) else [loaders]
        self._evaluators = [
            HeldOutEvaluator(
                dl.dataset, fars=self.fars, raw_pixels=dl.dataset.__class__.__name__ not in self._raw_cache
            )
            for dl in loaders
        ]

    def _eval_step(self, batch: dict[str, torch.Tensor], dataloader_idx: int) -> None:
        ev = self._evaluators[dataloader_idx]
        net = self.eval_net()
        out = net(batch["image"])
        flipped = net(batch["image"].flip(-1)) if ev.flip_tta else None
        ev.update(batch, out, flipped)

    def _end_eval(self, stage: str) -> dict[str, float]:
        gather = self.all_gather if self.trainer.world_size > 1 else None
        per_set = []
        for ev in self._evaluators:
            m = ev.compute(gather)
            # raw-pixel accuracy never changes during a run: compute once per set, then report the cached value
            for k in [k for k in m if k.endswith("/raw_pixel_acc")]:
                self._raw_cache[f"{stage}:{ev.name}:{k}"] = m[k]
            per_set.append((ev.name, m))
        metrics = merge_set_metrics(per_set)
        for key, v in self._raw_cache.items():
            s, _, k = key.split(":", 2)
            if s == stage:
                metrics.setdefault(k, v)
        self._evaluators = []
        logged = {f"{stage}/{k}": float(v) for k, v in metrics.items()}
        if logged:
            # every rank computed these from the same gathered outputs; syncing (a mean of equal values) keeps them
            # identical on every rank, where ModelCheckpoint and early stopping read them
            self.log_dict(logged, sync_dist=True)
        return logged

    def on_validation_epoch_start(self) -> None:
        self._start_eval(self.trainer.val_dataloaders)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        self._end_eval("val")
        if not self.trainer.sanity_checking:
            self.last_validated_step = self.global_step

    def on_test_epoch_start(self) -> None:
        self._start_eval(self.trainer.test_dataloaders)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, dataloader_idx)

    def on_test_epoch_end(self) -> None:
        self._end_eval("test")


class FaceModule(ShardHooks, EvalMixin, pl.LightningModule):
    """Trains ``net`` with ``loss``; evaluates on every held-out set of the datamodule.

    Args:
        net: the network (returns ``dict[str, Tensor]``).
        loss: the multitask loss (holds the margin classifier, so it has parameters too).
        optimizer: a partial taking the module (timm ``create_optimizer_v2``) or an iterable of params.
        scheduler: a partial taking ``optimizer`` (and ``total_steps`` / ``T_max``, filled from the trainer).
        compile: ``torch.compile`` the network in place (state-dict keys stay the same).
        fars: false-accept rates for TAR@FAR.
    """

    def __init__(
        self,
        net: FaceNet,
        loss: MultiTaskLoss,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        compile: bool = False,
        fars: Sequence[float] = (1e-3,),
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "loss", "optimizer", "scheduler"], logger=False)
        self.net = net
        self.loss = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.fars = tuple(fars)
        self._evaluators = []
        self._raw_cache = {}
        self.last_validated_step: int | None = None

    def eval_net(self) -> nn.Module:
        return self.net

    def setup(self, stage: str) -> None:
        setup_shards(self, self.global_rank, self.trainer.world_size)
        if self.hparams.compile and stage == "fit":
            self.net.compile()

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.net(image)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self.net(batch["image"])
        losses = self.loss(out, batch)
        check_finite_loss(losses["loss"], self._trainer)  # before backward: NaN never reaches the weights
        bs = batch["image"].shape[0]
        log_losses(self, losses, bs)
        return losses["loss"]

    def configure_optimizers(self) -> dict[str, Any]:
        return optimizer_config(self, self.optimizer_factory, self.scheduler_factory, self.trainer)

    def no_weight_decay(self) -> set[str]:
        return no_weight_decay_names(self)
