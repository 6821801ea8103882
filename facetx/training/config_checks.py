"""Checks of a composed run config that the entry points (train.py, distill.py, export.py) run before any work.

They catch, with one line naming the key, what would otherwise fail deep inside ``instantiate`` or Lightning with a
traceback: a required value left unset (``???``), ``data.root=null`` (the data configs would read ``None/...``), a
``data.root`` that is not a folder, a ``ckpt_path`` that cannot resume this run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from facetx.errors import ConfigError

MISSING = "???"

#: ``???`` keys the run fills itself (complete_loss_config: the class count read from the data)
FILLED_BY_THE_RUN = frozenset({"loss.recognition.num_classes"})
#: what to pass for the required keys of conf/ (anything else gets a generic hint)
REQUIRED_HINTS = {
    "ckpt_path": "expected ckpt_path=DIR/checkpoints/last.ckpt of a train.py or distill.py run",
}


def _missing_keys(node: Any, prefix: str = "") -> Iterator[str]:
    """Dotted keys whose value is ``???``, in config order (no interpolation is resolved)."""
    if isinstance(node, dict):
        items = ((f"{prefix}.{k}" if prefix else str(k), v) for k, v in node.items())
    elif isinstance(node, list):
        items = ((f"{prefix}[{i}]", v) for i, v in enumerate(node))
    else:
        return
    for key, value in items:
        if value == MISSING:
            yield key
        else:
            yield from _missing_keys(value, key)


def _data_choice() -> str:
    """The ``data=`` option of this run (``data=insightface``), for the hints; ``data=...`` outside a Hydra run."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return f"data={HydraConfig.get().runtime.choices['data']}"
    except Exception:  # no Hydra run (a config built by hand): the hint just loses the option's name
        return "data=..."


def check_required(cfg: DictConfig) -> None:
    """A :class:`ConfigError` for the first key left at ``???``, saying what to pass."""
    plain = OmegaConf.to_container(cfg, resolve=False, throw_on_missing=False)
    for key in _missing_keys(plain):
        if key in FILLED_BY_THE_RUN:
            continue
        if key == "data.root":
            data = _data_choice()
            raise ConfigError(f"data.root: not set ({data} reads its files from it): pass {data} data.root=/path/to/it")
        hint = REQUIRED_HINTS.get(key, f"the config requires a value: pass {key}=...")
        raise ConfigError(f"{key}: not set ({hint})")


def check_data_root(cfg: DictConfig) -> None:
    """``data.root`` (where a data config has one) must name a folder: ``null`` would make every path ``None/...``."""
    data = cfg.get("data")
    if not isinstance(data, DictConfig) or "root" not in data:
        return
    root = data.root
    choice = _data_choice()
    if root is None or str(root).strip() == "":
        raise ConfigError(f"data.root: empty ({choice} reads its files from it): pass {choice} data.root=/path/to/it")
    path = Path(str(root)).expanduser()
    if not path.is_dir():
        state = "is not a folder" if path.exists() else "no such folder"
        raise ConfigError(f"data.root={root}: {state} (expected the folder {choice} reads its files from)")


#: environment variables of launchers that start every rank themselves (torchrun, SLURM's srun)
EXTERNAL_LAUNCH_VARS = ("TORCHELASTIC_RUN_ID", "LOCAL_RANK", "SLURM_NTASKS")


def _is_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    except ImportError:
        return False


def check_launcher(cfg: DictConfig, environ: dict[str, str] | None = None) -> None:
    """Refuse Lightning's script DDP launcher inside a ``-m`` sweep: it starts the other ranks by re-running this
    process's command line, so each rank would start a sweep of its own. ``ddp_spawn`` (ranks are forked from the
    trial) and ranks started by torchrun or srun (one job per trial, e.g. hydra/launcher=slurm) are fine."""
    node = cfg.get("trainer")
    if not isinstance(node, DictConfig) or not _is_multirun():
        return
    trainer = OmegaConf.to_container(node, resolve=True)
    strategy, devices = str(trainer.get("strategy", "auto")), trainer.get("devices", 1)
    one_device = devices == 1 or (isinstance(devices, list) and len(devices) == 1)
    one_process = one_device and trainer.get("num_nodes", 1) == 1
    env = os.environ if environ is None else environ
    if strategy.startswith("ddp") and "spawn" not in strategy and not one_process:
        if not any(v in env for v in EXTERNAL_LAUNCH_VARS):
            raise ConfigError(
                f"trainer.strategy={strategy}: under a -m sweep Lightning would start every rank by re-running the "
                "sweep command, so each rank would run its own sweep; use trainer.strategy=ddp_spawn, or one DDP job "
                "per trial with hydra/launcher=slurm (srun starts the ranks)"
            )


def check_run_config(cfg: DictConfig, resume_task: str | None = None) -> None:
    """The checks every entry point runs on its composed config; ``resume_task`` (``train`` or ``distill``) also
    checks that ``cfg.ckpt_path``, when set, is a checkpoint that can resume a run of that script."""
    check_required(cfg)
    check_data_root(cfg)
    check_launcher(cfg)
    if resume_task is not None and cfg.get("ckpt_path"):
        from facetx.training.checkpoint import check_resume_checkpoint

        check_resume_checkpoint(cfg.ckpt_path, resume_task, cfg.get("model_name"))


def target_entries(cfg: DictConfig, group: str) -> list[DictConfig]:
    """The entries of a ``callbacks`` or ``logger`` group, to instantiate: ``null`` entries are left out (how a user
    removes one: ``callbacks.lr_monitor=null``); an entry without ``_target_`` would silently do nothing, so it is a
    :class:`ConfigError` naming ``<group>.<name>``."""
    entries = cfg.get(group)
    if entries is None or (isinstance(entries, DictConfig) and len(entries) == 0):  # callbacks=none, logger=none
        return []
    if not isinstance(entries, DictConfig):
        raise ConfigError(f"{group}: expected a mapping of name -> {{_target_: ...}}, got {entries!r}")
    out = []
    for name, entry in entries.items():
        if entry is None:
            continue
        if not isinstance(entry, DictConfig) or "_target_" not in entry:
            found = f"keys {sorted(entry)}" if isinstance(entry, DictConfig) else repr(entry)
            raise ConfigError(
                f"{group}.{name}: no _target_ (found {found}), so it would do nothing: give it a _target_ class or"
                f" remove it with {group}.{name}=null"
            )
        out.append(entry)
    return out
