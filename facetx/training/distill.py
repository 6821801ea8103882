"""Distillation: a frozen teacher (rebuilt from its checkpoint) teaches a student LightningModule."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from facetx.errors import CheckpointError, UserError
from facetx.loss.distill import DistillationLoss
from facetx.loss.margin import MarginSoftmax
from facetx.models.facenet import FaceNet
from facetx.training.callbacks import check_finite_loss
from facetx.training.checkpoint import (
    CONFIG_KEY,
    CheckpointNotFoundError,
    build_face_net,
    checkpoint_role,
    describe_checkpoint,
    load_checkpoint,
    newest_checkpoint,
)
from facetx.training.module import (
    EvalMixin,
    OptimizerFactory,
    SchedulerFactory,
    log_losses,
    no_weight_decay_names,
    optimizer_config,
)
from facetx.training.sharding import ShardHooks, setup_shards
from facetx.training.teacher_cache import TeacherCache

log = logging.getLogger(__name__)


class TeacherNotFoundError(UserError, FileNotFoundError):
    """No teacher checkpoint given and none found: the user must train one first."""


#: what ``teacher.ckpt_path`` should point at, for the error messages
TEACHER_CHECKPOINT = "a checkpoints/last.ckpt written by train.py model=teacher"


def find_teacher(search_dir: str | Path) -> Path:
    """The newest ``last.ckpt`` under ``search_dir`` written by ``train.py model=teacher``."""
    try:
        return newest_checkpoint(search_dir, "train", "teacher")
    except CheckpointNotFoundError:
        raise TeacherNotFoundError(
            f"teacher.search_dir={Path(search_dir).resolve()}: no teacher checkpoint under it: train one first with"
            " `python train.py model=teacher` (or `make train`), or pass teacher.ckpt_path=PATH"
        ) from None


def load_teacher(
    ckpt_path: str | Path, key: str | None = "teacher.ckpt_path"
) -> tuple[FaceNet, MarginSoftmax | None, dict[str, Any]]:
    """Teacher network (frozen, eval) and its margin classifier (for class-logit distillation), from a checkpoint.

    A teacher is a ``train.py`` checkpoint (any ``model=``). A distilled student is refused: its classifier sits
    elsewhere in the state dict and chaining distillations is not a recipe facetx measures. ``key`` names the config
    key the path came from in the errors (None: a discovered checkpoint, named by its path alone).
    """
    ckpt = load_checkpoint(ckpt_path, key=key, expected=TEACHER_CHECKPOINT)
    config = ckpt[CONFIG_KEY]["config"]
    if checkpoint_role(config) != "net":
        where = f"{key}={ckpt_path}" if key else str(ckpt_path)
        raise CheckpointError(
            f"{where}: {describe_checkpoint(config)} cannot teach: expected {TEACHER_CHECKPOINT} (or another"
            " train.py model=...)"
        )
    net = build_face_net(ckpt, ckpt_path, "net.", key=key)
    state = ckpt["state_dict"]
    classifier = None
    weight = state.get("loss.recognition.weight")
    rec_cfg = (config.get("loss") or {}).get("recognition")
    if weight is not None and rec_cfg is not None:
        classifier = MarginSoftmax(
            num_classes=weight.shape[0],
            embedding_size=weight.shape[1],
            scale=rec_cfg.get("scale", 64.0),
            m1=rec_cfg.get("m1", 1.0),
            m2=rec_cfg.get("m2", 0.0),
            m3=rec_cfg.get("m3", 0.0),
        )
        classifier.weight.data.copy_(weight)
    net.requires_grad_(False)
    return net.eval(), classifier, config


def feature_info(net: FaceNet) -> dict[str, tuple[int, tuple[int, int]]]:
    return dict(zip(net.feature_names, net.backbone.feature_info, strict=True))


class DistillModule(ShardHooks, EvalMixin, pl.LightningModule):
    """Trains ``student`` against ``teacher`` with a :class:`DistillationLoss`; evaluates the student.

    The teacher stays in eval mode, outside the optimizer, under ``no_grad``, and out of checkpoints (it is rebuilt
    from its own checkpoint, whose path the run config records).
    """

    def __init__(
        self,
        student: FaceNet,
        teacher: FaceNet,
        loss: DistillationLoss,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        compile: bool = False,
        fars: Sequence[float] = (1e-3,),
        teacher_cache: TeacherCache | None = None,
    ) -> None:
        super().__init__()
        objects = ["student", "teacher", "loss", "optimizer", "scheduler", "teacher_cache"]
        self.save_hyperparameters(ignore=objects, logger=False)
        self.student = student
        self.teacher = teacher.requires_grad_(False).eval()
        self.loss = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.teacher_cache = teacher_cache
        self.fars = tuple(fars)
        self._evaluators = []
        self._raw_cache = {}
        self.last_validated_step: int | None = None
        self.strict_loading = False  # checkpoints hold no teacher weights

    def eval_net(self) -> nn.Module:
        return self.student

    def train(self, mode: bool = True) -> DistillModule:
        super().train(mode)
        self.teacher.eval()  # dropout/drop-path/BN statistics of the teacher never change
        return self

    def setup(self, stage: str) -> None:
        setup_shards(self, self.global_rank, self.trainer.world_size)
        if self.hparams.compile and stage == "fit":
            self.student.compile()
            self.teacher.compile()

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.student(image)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        image = batch["image"]  # [B, 3, H, W] in [0, 1]: each network applies its own normalization
        s_out = self.student(image)
        with torch.no_grad():
            t_out = self.teacher_outputs(image, batch["index"])
        losses = self.loss(s_out, t_out, batch)
        check_finite_loss(losses["loss"], self._trainer)  # before backward: NaN never reaches the weights
        bs = image.shape[0]
        log_losses(self, losses, bs)
        return losses["loss"]

    def teacher_outputs(self, image: torch.Tensor, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """The frozen teacher's outputs for ``image`` ``[B, 3, H, W]``: from the cache when every row is in it."""
        cache = self.teacher_cache
        if cache is None:
            return self.teacher(image)
        out = cache.lookup(index)
        if out is None:
            out = cache.store(index, self.teacher(image))
        return {k: v.to(image.device) for k, v in out.items()}

    def on_train_epoch_end(self) -> None:
        if self.teacher_cache is not None:
            c = self.teacher_cache
            log.info("teacher cache: %d batches read, %d computed (%s)", c.hits, c.misses, c.dir)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("teacher.")}
        super().on_save_checkpoint(checkpoint)  # ShardHooks: all class centres

    def configure_optimizers(self) -> dict[str, Any]:
        trainable = nn.ModuleDict({"student": self.student, "loss": self.loss})
        trainable.no_weight_decay = lambda: no_weight_decay_names(trainable)  # read by timm's optimizer factory
        # the teacher is not in it; frozen loss parts (the teacher's classifier) are filtered by requires_grad
        return optimizer_config(trainable, self.optimizer_factory, self.scheduler_factory, self.trainer)

    def no_weight_decay(self) -> set[str]:
        return no_weight_decay_names(self)
