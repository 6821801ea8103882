"""ONNX Runtime dynamic INT8 beside static Q/DQ: when it is tried, which one is kept, and an export that keeps it
(model.int8.onnx dynamic with its metadata and threshold, the Q/DQ file beside it for OpenVINO and TensorRT)."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from facetx.errors import ConfigError
from facetx.export import pipeline
from facetx.quant.dynamic import choose_kind, wants_dynamic
from tests.export.conftest import QUICK_INT8, export_cfg


def test_it_is_tried_where_int8_dot_products_exist_and_kept_when_faster() -> None:
    assert wants_dynamic("auto", "amx") and wants_dynamic("auto", "vnni") and not wants_dynamic("auto", "avx2")
    assert wants_dynamic("measure", "avx2") and not wants_dynamic("off", "amx")
    with pytest.raises(ConfigError, match="quant.dynamic='on'"):
        wants_dynamic("on", "amx")
    fast = {"static": {1: 1.40, 32: 1.05}, "dynamic": {1: 1.73, 32: 1.35}}
    assert choose_kind("auto", fast, within_budget=True) == "dynamic"
    assert choose_kind("auto", fast, within_budget=False) == "static"
    slow_at_32 = {"static": {1: 1.40, 32: 1.05}, "dynamic": {1: 1.90, 32: 0.95}}
    assert choose_kind("auto", slow_at_32, within_budget=True) == "static"  # its slowest batch decides
    assert choose_kind("force", slow_at_32, within_budget=True) == "dynamic"


@pytest.mark.ci_extra  # a whole export (about 35 s): make test-extra
def test_an_export_that_keeps_dynamic_int8(tiny_ckpt: Path, tmp_path: Path) -> None:
    overrides = ["runtime=[onnxruntime]", *[o for o in QUICK_INT8 if not o.startswith("quant.dynamic")]]
    report = pipeline.export(export_cfg(tmp_path, tiny_ckpt, [*overrides, "quant.dynamic=force"]))
    q = report["int8"]
    assert q["kind"] == "dynamic" and set(q["dynamic"]["speed_vs_fp32"]["dynamic"]) == {1, 8}  # 8 calibration images
    ops = {n.op_type for n in onnx.load(str(tmp_path / "model.int8.onnx")).graph.node}
    assert "DynamicQuantizeLinear" in ops and "QuantizeLinear" not in ops
    qdq_ops = {n.op_type for n in onnx.load(str(tmp_path / "model.int8.qdq.onnx")).graph.node}
    assert "QuantizeLinear" in qdq_ops
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "model.int8.onnx")).metadata_props}
    assert meta["int8.kind"] == "dynamic" and meta["facetx.precision"] == "int8" and "recognition.threshold" in meta
    assert any("static Q/DQ vs dynamic" in n for n in report["notes"])
    assert {r["precision"] for r in report["benchmark"] if r["runtime"] == "onnxruntime"} == {"fp32", "int8"}
