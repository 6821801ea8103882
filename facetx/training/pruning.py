"""``python prune.py``: prune a distilled (or trained) student, then recover it by distillation from the teacher.

The run is a distill.py run (same outputs, ``task_name: distill``, the student under ``student.`` in checkpoints)
whose student starts from the pruned weights instead of a fresh init:

1. the network of ``prune.ckpt_path`` is rebuilt from that checkpoint's own config (``student`` section of a
   distill.py checkpoint, ``model`` of a train.py one) and pruned (:mod:`facetx.models.pruning`);
2. its config, with the new per-block sizes in ``backbone.model_kwargs.pruned``, becomes ``cfg.student``, so every
   checkpoint of the run rebuilds the pruned architecture (export.py, the compare table); a network built from it
   with the pruned weights must give exactly the pruned network's outputs before training starts;
3. ``model_name`` becomes ``<source model_name>-pruned<percent>`` (a row label of ``facetx.bench.compare``);
4. the source's loss weights that still fit (the student's margin classifier, feature projections) start the
   recovery, and a distill.py source's teacher teaches again unless ``teacher.ckpt_path`` says otherwise.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from facetx.errors import ConfigError
from facetx.training.checkpoint import (
    CONFIG_KEY,
    RUN_CHECKPOINT,
    build_face_net,
    check_resume_checkpoint,
    checkpoint_role,
    load_checkpoint,
)

log = logging.getLogger(__name__)

KEY = "prune.ckpt_path"


def pruned_model_name(source: str, ratio: float, head_ratio: float) -> str:
    """``window_vit_nano-pruned50`` (``-pruned50-heads25`` when the head ratio differs)."""
    name = f"{source}-pruned{round(100 * ratio)}"
    return name if head_ratio == ratio else f"{name}-heads{round(100 * head_ratio)}"


def _refuse_student_choice() -> None:
    """``student=...`` on the command line would be ignored (the checkpoint's student is pruned): say so."""
    try:
        from hydra.core.hydra_config import HydraConfig

        overrides = list(HydraConfig.get().overrides.task)
    except ValueError:  # no Hydra run (a config built by hand): nothing was chosen on a command line
        return
    chosen = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") == "student"]
    if chosen:
        raise ConfigError(
            f"{chosen[0]}: prune.py prunes the network stored in {KEY}; pass the checkpoint of that student instead"
        )


def _loss_init(state: dict[str, torch.Tensor], role: str) -> dict[str, torch.Tensor]:
    """The source's loss weights as keys of a :class:`DistillationLoss` (a train.py loss is its ``task_loss``); the
    teacher's classifier is left out (it comes from the teacher checkpoint of this run)."""
    out = {}
    for k, v in state.items():
        if not k.startswith("loss.") or k.startswith("loss.teacher_classifier."):
            continue
        name = k[len("loss.") :]
        out[name if role == "student" else f"task_loss.{name}"] = v
    return out


def prune_and_distill(cfg: DictConfig) -> dict[str, float]:
    """Prune the network of ``cfg.prune.ckpt_path`` by ``cfg.prune.ratio`` and recover it by distillation (see the
    module docstring); returns the recovered student's final metrics."""
    from facetx.models.pruning import check_ratio, check_same_outputs, prune_face_net
    from facetx.training.run import distill

    _refuse_student_choice()
    ratio = check_ratio(cfg.prune.ratio, "prune.ratio")
    given = cfg.prune.get("head_ratio")
    head_ratio = ratio if given is None else check_ratio(given, "prune.head_ratio")
    source = Path(str(cfg.prune.ckpt_path))
    ckpt = load_checkpoint(source, key=KEY, expected=RUN_CHECKPOINT)
    config = ckpt[CONFIG_KEY]["config"]
    role = checkpoint_role(config)
    net = build_face_net(ckpt, source, f"{role}.", key=KEY)
    student_cfg: dict[str, Any] = config["student" if role == "student" else "model"]
    with open_dict(cfg):
        cfg.model_name = pruned_model_name(str(config.get("model_name")), ratio, head_ratio)
        cfg.prune.source_model_name = config.get("model_name")
        teacher = (config.get("teacher") or {}).get("ckpt_path")
        if not cfg.teacher.get("ckpt_path") and teacher and Path(teacher).is_file():
            cfg.teacher.ckpt_path = teacher  # the teacher that taught the source teaches the pruned student
    if cfg.get("ckpt_path"):  # a resumed prune run: same source, same ratios, hence the same pruned architecture
        check_resume_checkpoint(cfg.ckpt_path, "distill", cfg.model_name)

    sizes = prune_face_net(net, ratio, head_ratio, key=KEY)
    log.info("pruned %s by %g (heads %g): %s", source, ratio, head_ratio, sizes)
    with open_dict(cfg):
        cfg.student = OmegaConf.create(student_cfg)
        cfg.student.backbone.model_kwargs = {**(student_cfg["backbone"].get("model_kwargs") or {}), "pruned": sizes}
        cfg.student.backbone.checkpoint_path = None  # the unpruned file would not fit: the weights come from here

    def rebuild() -> torch.nn.Module:
        built = instantiate(cfg.student, _convert_="all")
        built.load_state_dict(net.state_dict())
        return built

    student = check_same_outputs(net, rebuild, input_size=int(cfg.student.backbone.get("input_size", 112)))
    return distill(cfg, student=student.train(), loss_init=_loss_init(ckpt["state_dict"], role))
