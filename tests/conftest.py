"""Shared fixtures: compose the real configs from conf/ with CPU/tiny overrides (lightning-hydra-template style)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")

# Tests run on 2 cores: keep torch from oversubscribing when pytest and DataLoader workers share them.
os.environ.setdefault("OMP_NUM_THREADS", "2")

#: overrides that make any train/distill config a few-second CPU run
FAST = ["debug=fast", "trainer.accelerator=cpu", "logger=csv"]


def compose_config(config_name: str, overrides: list[str], output_dir: Path) -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` with ``overrides``; outputs go to ``output_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(output_dir / "logs")
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
        cfg.hydra.job.id = "test"
    HydraConfig().set_config(cfg)
    return cfg


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """``make_cfg("train", ["model=tiny"])`` -> a composed config writing into ``tmp_path``."""

    def make(config_name: str = "train", overrides: list[str] | None = None, fast: bool = True) -> DictConfig:
        return compose_config(config_name, (FAST if fast else []) + list(overrides or []), tmp_path)

    yield make
    GlobalHydra.instance().clear()
