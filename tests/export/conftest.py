"""Shared by the export tests: one tiny trained checkpoint per session (each runtime's tests export it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from facetx.training.run import train
from tests.conftest import FAST, compose_config

#: a quick export: few parity images, one tiny benchmark pass
QUICK = ["export.parity_images=8", "bench.batches=[1]", "bench.runs=3", "bench.min_runs=2", "bench.warmup=1",
         "bench.seconds_per_case=0.1", "eval.batch_size=20"]  # fmt: skip
#: a small INT8 stage: one calibration batch, short latency pass, few ranked nodes
QUICK_INT8 = ["quant.calibration_batches=1", "quant.calibration_batch_size=8", "quant.latency_runs=4",
              "quant.sensitivity_images=8", "quant.max_sensitivity_nodes=4"]  # fmt: skip


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``last.ckpt`` of ``train.py model=tiny debug=fast``."""
    out = tmp_path_factory.mktemp("tiny_train")
    train(compose_config("train", [*FAST, "model=tiny"], out))
    return out / "checkpoints" / "last.ckpt"


def export_cfg(tmp_path: Path, ckpt: Path, overrides: list[str]):
    """The real ``conf/export.yaml`` on ``ckpt`` with the quick settings and ``overrides``, into ``tmp_path``."""
    return compose_config("export", [f"ckpt_path={ckpt}", *QUICK, *overrides], tmp_path)
