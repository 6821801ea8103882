"""Run entry points shared by ``train.py`` and the tests: compose objects from a config, fit, evaluate, report."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from facetx.training.callbacks import FinalValidation, StepSeed, TrainingInterrupted
from facetx.training.checkpoint import AtomicCheckpointIO, StoreConfig

log = logging.getLogger(__name__)


def write_json_atomic(path: str | os.PathLike, data: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def setup_run(cfg: DictConfig) -> None:
    """Seed everything and pin the thread count (the CPU profile sets it; ``null`` keeps torch's default)."""
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    pl.seed_everything(cfg.seed, workers=True)


def build_callbacks(cfg: DictConfig, resolved: dict[str, Any]) -> list[pl.Callback]:
    """The ``callbacks`` entries (``null`` ones removed; one without ``_target_`` is a ConfigError) + StoreConfig."""
    from facetx.training.config_checks import target_entries

    callbacks = [instantiate(c) for c in target_entries(cfg, "callbacks")]
    callbacks.append(StoreConfig(resolved))
    return callbacks


def build_loggers(cfg: DictConfig) -> list[Any]:
    """The ``logger`` entries (``null`` ones removed; one without ``_target_`` is a ConfigError)."""
    from facetx.training.config_checks import target_entries

    return [instantiate(c) for c in target_entries(cfg, "logger")]


def build_trainer(cfg: DictConfig, resolved: dict[str, Any]) -> pl.Trainer:
    # not config options: exact resume and a validated final step are what every run's outputs promise
    always = [StepSeed(cfg.seed), FinalValidation()]
    plugins: list[Any] = [AtomicCheckpointIO()]
    if "SLURM_NTASKS" in os.environ:
        from pytorch_lightning.plugins.environments import SLURMEnvironment

        # requeue has one owner, submitit (hydra/launcher=slurm); the requeued job resumes via requeued_checkpoint
        plugins.append(SLURMEnvironment(auto_requeue=False))
    return instantiate(
        cfg.trainer,
        callbacks=[*always, *build_callbacks(cfg, resolved)],
        logger=build_loggers(cfg) or False,
        plugins=plugins,
    )


def requeued_checkpoint(cfg: DictConfig, environ: dict[str, str] | None = None) -> str | None:
    """The ``last.ckpt`` a requeued SLURM job resumes from: SLURM counts requeues in ``SLURM_RESTART_COUNT``, and
    submitit requeues a job with its arguments, so it writes into the same run directory. None for a first run, a
    run given ``ckpt_path``, or a directory without ``last.ckpt``."""
    env = os.environ if environ is None else environ
    if cfg.get("ckpt_path") or int(env.get("SLURM_RESTART_COUNT") or 0) == 0:
        return None
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    return str(last) if last.is_file() else None


def resume_if_requeued(cfg: DictConfig) -> None:
    """Set ``cfg.ckpt_path`` to the run directory's ``last.ckpt`` when this is a requeued SLURM job."""
    last = requeued_checkpoint(cfg)
    if last is not None:
        log.info("requeued job (SLURM_RESTART_COUNT=%s): resuming from %s", os.environ["SLURM_RESTART_COUNT"], last)
        with open_dict(cfg):
            cfg.ckpt_path = last


def complete_loss_config(cfg: DictConfig, num_classes: int) -> None:
    """Fill the margin classifier's class count from the data (real packs only know it once read, e.g. from an
    insightface ``property`` file); without identity labels (landmark/expression/spoof-only data) drop it."""
    with open_dict(cfg):
        if cfg.loss.get("recognition") is None:
            return
        if num_classes >= 2:
            cfg.loss.recognition.num_classes = num_classes
        else:
            log.info("the training data has no identity labels: recognition loss off")
            cfg.loss.recognition = None


def final_metrics(trainer: pl.Trainer) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in trainer.callback_metrics.items()
        if k.startswith(("val/", "test/")) and torch.as_tensor(v).numel() == 1
    }


def fit_and_report(cfg: DictConfig, datamodule: pl.LightningDataModule, module: pl.LightningModule) -> dict[str, float]:
    """Fit (resuming from ``cfg.ckpt_path``), make sure the final weights were validated, test, write metrics.json."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    trainer = build_trainer(cfg, resolved)
    try:
        with warnings.catch_warnings():
            # Lightning looks for state on the loader; FaceDataModule keeps the training position itself and restores
            # it before the loader is built (facetx.data.sampler), so a mid-epoch resume is exact.
            warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch")
            trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    except TrainingInterrupted as e:
        log.warning("%s", e)
        raise SystemExit(e.exit_code) from None
    # FinalValidation validates the last step inside fit; without validation in fit (limit_val_batches=0, an epoch
    # that check_val_every_n_epoch skips) the report must still describe the weights we hand on.
    if getattr(module, "last_validated_step", None) != trainer.global_step:
        trainer.validate(module, datamodule=datamodule, verbose=False)
    metrics = final_metrics(trainer)
    if cfg.get("test") and datamodule.test_dataloader():
        trainer.test(module, datamodule=datamodule, verbose=False)
        metrics.update(final_metrics(trainer))
    metrics["train/global_step"] = float(trainer.global_step)
    out_dir = Path(cfg.paths.output_dir)
    if trainer.is_global_zero:
        write_json_atomic(out_dir / "metrics.json", metrics)
        log.info("metrics: %s", json.dumps(metrics, indent=1, sort_keys=True))
        log.info("wrote %s", out_dir / "metrics.json")
    return metrics


def build_optimization(cfg: DictConfig) -> dict[str, Any]:
    """The module's ``optimizer`` and ``scheduler`` factories (partials completed by ``configure_optimizers``)."""
    scheduler = instantiate(cfg.scheduler, _convert_="all") if cfg.get("scheduler") else None
    return {"optimizer": instantiate(cfg.optim, _convert_="all"), "scheduler": scheduler}


def train(cfg: DictConfig) -> dict[str, float]:
    """``python train.py``: train one network on one data config; returns the final metrics."""
    setup_run(cfg)
    datamodule = instantiate(cfg.data, _convert_="all")
    complete_loss_config(cfg, datamodule.num_classes)
    net = instantiate(cfg.model, _convert_="all")
    loss = instantiate(cfg.loss, _convert_="all")
    module = instantiate(
        cfg.module,
        net=net,
        loss=loss,
        **build_optimization(cfg),
        _convert_="all",
    )
    return fit_and_report(cfg, datamodule, module)


def build_teacher_cache(cfg: DictConfig, ckpt: str | os.PathLike, datamodule: Any, keys: list[str]) -> Any:
    """The teacher-output cache under ``teacher.cache_dir``; refused when training images are augmented."""
    from pytorch_lightning.utilities import rank_zero_only

    from facetx.training.teacher_cache import TeacherCache, TeacherCacheError, cache_fingerprint

    if not instantiate(cfg.augment).is_identity:
        raise TeacherCacheError(
            "teacher.cache_dir: cached teacher outputs need training images that repeat exactly, but the augment "
            "config changes them every epoch: use augment=none or teacher.cache_dir=null"
        )
    data = OmegaConf.to_container(cfg.data.train, resolve=True)
    fingerprint = cache_fingerprint(ckpt, data)
    size = len(datamodule.train_set)
    return TeacherCache(cfg.teacher.cache_dir, fingerprint, size, keys, writable=rank_zero_only.rank == 0)


def distill(
    cfg: DictConfig, student: torch.nn.Module | None = None, loss_init: dict[str, torch.Tensor] | None = None
) -> dict[str, float]:
    """``python distill.py``: distill the teacher checkpoint into ``student``; returns the student's final metrics.

    ``student``: a network to start from instead of ``instantiate(cfg.student)`` (prune.py's pruned student; its
    ``cfg.student`` must rebuild it, checkpoints store that config). ``loss_init``: loss weights to start from
    (``task_loss.recognition.weight``, ``projectors.*``), keys of the :class:`DistillationLoss`; those whose name or
    shape does not fit are left at their init.
    """
    from facetx.training.distill import feature_info, find_teacher, load_teacher

    setup_run(cfg)
    given = cfg.teacher.get("ckpt_path")
    ckpt = given or find_teacher(cfg.teacher.search_dir)
    log.info("teacher: %s", ckpt)
    # errors name teacher.ckpt_path (load_teacher's default), or only the path of a discovered teacher
    teacher, teacher_classifier, teacher_cfg = load_teacher(ckpt) if given else load_teacher(ckpt, key=None)
    datamodule = instantiate(cfg.data, _convert_="all")
    with open_dict(cfg):
        cfg.teacher.ckpt_path = str(ckpt)  # the stored config says which teacher taught this student
        cfg.teacher.model_name = teacher_cfg.get("model_name")
    complete_loss_config(cfg, datamodule.num_classes)
    student = instantiate(cfg.student, _convert_="all") if student is None else student
    task_loss = instantiate(cfg.loss, _convert_="all")
    if cfg.distill.weights.get("kd_recognition", 0) == 0:
        teacher_classifier = None
    loss = instantiate(cfg.distill, _convert_="all")(  # a partial: completed with the networks' feature shapes
        task_loss=task_loss,
        student_features=feature_info(student),
        teacher_features=feature_info(teacher),
        teacher_classifier=teacher_classifier,
        # with the outputs known, a weighted term that could never be computed is refused now, not silently zero
        teacher_outputs=teacher.output_names,
        student_outputs=student.output_names,
    )
    if loss_init:
        own = loss.state_dict()
        fit = {k: v for k, v in loss_init.items() if k in own and own[k].shape == v.shape}
        loss.load_state_dict(fit, strict=False)
        log.info("loss: %d of %d tensors start from the given weights", len(fit), len(own))
    cache = build_teacher_cache(cfg, ckpt, datamodule, loss.teacher_keys()) if cfg.teacher.get("cache_dir") else None
    module = instantiate(
        cfg.module,
        student=student,
        teacher=teacher,
        loss=loss,
        teacher_cache=cache,
        **build_optimization(cfg),
        _convert_="all",
    )
    return fit_and_report(cfg, datamodule, module)
