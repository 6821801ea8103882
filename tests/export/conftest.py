"""Shared by the export tests: quick export settings and one INT8 export with every installed runtime."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from facetx.export import pipeline
from tests.conftest import compose_config

#: a quick export: few parity images, one tiny benchmark pass
QUICK = ["export.parity_images=8", "bench.batches=[1]", "bench.runs=3", "bench.min_runs=2", "bench.warmup=1",
         "bench.seconds_per_case=0.1", "eval.batch_size=20"]  # fmt: skip
#: a small INT8 stage: one calibration batch, short latency pass, few ranked nodes
#: (and static Q/DQ only: ORT's dynamic candidate is kept by timing, so the shared export would differ by machine)
QUICK_INT8 = ["quant.calibration_batches=1", "quant.calibration_batch_size=8", "quant.latency_runs=4",
              "quant.sensitivity_images=8", "quant.max_sensitivity_nodes=4", "quant.dynamic=off"]  # fmt: skip


def export_cfg(tmp_path: Path, ckpt: Path, overrides: list[str]):
    """The real ``conf/export.yaml`` on ``ckpt`` with the quick settings and ``overrides``, into ``tmp_path``."""
    return compose_config("export", [f"ckpt_path={ckpt}", *QUICK, *overrides], tmp_path)


#: every runtime of conf/runtime/ whose optional dependency is installed here
RUNTIMES = ["onnxruntime", *(n for n, m in (("openvino", "openvino"), ("tflite", "litert_torch"))
                             if importlib.util.find_spec(m) is not None)]  # fmt: skip
#: LiteRT in the shared export: one batch-1 file per precision (batch-32 files cost another conversion), a small
#: calibration, a short speed check
QUICK_TFLITE = ["runtime.tflite.batches=[1]", "runtime.tflite.calibration_batches=1",
                "runtime.tflite.calibration_batch_size=16", "runtime.tflite.speed_runs=6"]  # fmt: skip


@pytest.fixture(scope="session")
def int8_export(tiny_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One export of ``tiny_ckpt`` with INT8 (the quick settings) and every installed runtime: the run dir and its
    report. Shared by the INT8, calibration and runtime tests (each export costs tens of seconds on 2 cores)."""
    out = tmp_path_factory.mktemp("export_int8")
    tflite = QUICK_TFLITE if "tflite" in RUNTIMES else []
    # OpenVINO keeps our Q/DQ file here: NNCF's candidate is kept by timing (tests/export/test_openvino.py forces it)
    nncf = ["runtime.openvino.nncf=off"] if "openvino" in RUNTIMES else []
    overrides = [f"runtime=[{','.join(RUNTIMES)}]", *QUICK_INT8, *tflite, *nncf]
    return out, pipeline.export(export_cfg(out, tiny_ckpt, overrides))
