"""runtime=[onnxruntime,openvino]: OpenVINO reads the exported ONNX files, matches PyTorch, is evaluated and timed."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from facetx.errors import ConfigError
from facetx.export import runtimes
from facetx.runtime.openvino import OpenVinoRunner, cpu_capabilities
from facetx.runtime.sessions import OrtRunner, make_session

pytest.importorskip("openvino", reason="the openvino extra is not installed (pip install -e '.[openvino]')")


@pytest.fixture(scope="module")
def ov_export(int8_export: tuple[Path, dict]) -> tuple[Path, dict]:
    """The shared INT8 export (tests/export/conftest.py), which runs every installed runtime."""
    return int8_export


def test_openvino_fp32_matches_pytorch_and_every_precision_is_evaluated(ov_export: tuple[Path, dict]) -> None:
    _, report = ov_export
    parity = report["openvino"]["parity"]
    assert set(parity) == {"embedding", "landmarks", "expression_logits", "spoof_logits"}
    assert min(s["min_cosine"] for s in parity.values()) >= 0.9999
    metrics = report["metrics"]
    assert "openvino/fp32" in metrics and "openvino/int8" in metrics
    # the same file in two runtimes: FP32 held-out metrics agree closely
    ort, ov = metrics["onnxruntime/fp32"], metrics["openvino/fp32"]
    assert ov.keys() == ort.keys()
    assert all(abs(ov[k] - ort[k]) < 0.02 for k in ort if k.endswith(("/acc", "/nme")))
    if "BF16" in cpu_capabilities():
        assert "openvino/bf16" in metrics
    else:
        assert "openvino/bf16" not in metrics
        assert any("openvino/bf16 skipped" in n and "BF16" in n for n in report["notes"])


def test_openvino_rows_sit_in_the_same_benchmark_table(ov_export: tuple[Path, dict]) -> None:
    out, _ = ov_export
    rows = list(csv.DictReader((out / "benchmark.csv").open()))
    ov = [r for r in rows if r["runtime"] == "openvino"]
    bf16 = {"bf16"} if "BF16" in cpu_capabilities() else set()  # AMX / AVX512_BF16 CPUs get a BF16 row too
    assert {r["precision"] for r in ov} == {"fp32", "int8"} | bf16
    for r in ov:
        assert float(r["p50_ms"]) > 0 and float(r["speed_vs_ort_fp32"]) > 0 and r["isa_flags"]
        assert r["recognition/acc"] and r["landmarks/nme"]  # the held-out metrics of that runtime and precision
    assert "openvino" in (out / "benchmark.md").read_text()
    assert json.loads((out / "report.json").read_text())["openvino"]["files"]["int8"] == "model.int8.openvino.onnx"


def test_openvino_int8_is_its_own_tuned_qdq_file_with_its_own_threshold(ov_export: tuple[Path, dict]) -> None:
    out, report = ov_export
    meta = {p.key: p.value for p in onnx.load(str(out / "model.int8.openvino.onnx")).metadata_props}
    assert meta["int8.runtime"] == "openvino" and meta["facetx.precision"] == "int8"
    assert "recognition.threshold" in meta and meta["facetx.fingerprint"] == report["calibration"]["fingerprint"]
    assert set(report["openvino"]["int8"]) == {"recipe", "fp32_nodes", "size_ratio", "speedup_vs_fp32_b1"}
    assert report["openvino"]["int8"]["size_ratio"] > 1.5


def test_openvino_int8_reads_the_qdq_file_and_compiles_per_batch(ov_export: tuple[Path, dict]) -> None:
    out, _ = ov_export
    x = np.random.default_rng(0).random((3, 3, 112, 112), dtype=np.float32)
    ov = OpenVinoRunner(out / "model.int8.onnx", threads=1, precision="int8")
    ort = OrtRunner(make_session(out / "model.int8.onnx", threads=1))
    assert ov.output_names == ort.output_names and ov.fixed_batch is None
    got, want = ov.run(x), ort.run(x)
    emb = [g / np.linalg.norm(g, axis=1, keepdims=True) for g in (got[0], want[0])]
    assert (emb[0] * emb[1]).sum(axis=1).min() > 0.98  # two int8 kernel sets, one quantized graph
    assert ov.run(x[:1])[0].shape == (1, want[0].shape[1]) and sorted(ov._requests) == [1, 3]


def test_runtime_list_errors_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"runtime: unknown runtime\(s\) \['tensorflow'\]"):
        runtimes.runtime_choices({"onnxruntime": {}, "tensorflow": {}})
    with pytest.raises(ConfigError, match="onnxruntime is missing"):
        runtimes.runtime_choices({"openvino": {}})
    with pytest.raises(ConfigError, match=r"runtime.openvino: unknown key\(s\) \['precision'\]"):
        runtimes.runtime_choices({"onnxruntime": {}, "openvino": {"precision": "fp32"}})
    with pytest.raises(ConfigError, match=r"runtime.openvino.precisions: \['fp8'\] unknown"):
        runtimes.runtime_choices({"onnxruntime": {}, "openvino": {"precisions": ["fp8"]}})
    import facetx.export.openvino_stage as stage

    monkeypatch.setattr(stage, "openvino_missing", lambda: "the openvino package is not installed (x)")
    with pytest.raises(ConfigError, match=r"^runtime=openvino: the openvino package is not installed"):
        runtimes.runtime_choices({"onnxruntime": {}, "openvino": {}})


@pytest.mark.ci_extra
def test_nncf_int8_replaces_our_qdq_file_when_kept(tiny_ckpt: Path, tmp_path: Path) -> None:
    from facetx.export import pipeline
    from tests.export.conftest import QUICK_INT8, export_cfg

    # the tiny network on 8 calibration images: its accuracy moves a lot either way, so no budget here
    overrides = ["runtime=[onnxruntime,openvino]", *QUICK_INT8, "runtime.openvino.nncf=force", "quant.max_drop_pt=100"]
    report = pipeline.export(export_cfg(tmp_path, tiny_ckpt, overrides))
    nncf = report["openvino"]["int8"]["nncf"]
    assert nncf["kept"] == "nncf" and set(nncf["speed_vs_openvino_fp32"]["nncf"]) == {1, 8}
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "model.int8.openvino.onnx")).metadata_props}
    assert meta["int8.tool"] == "nncf" and meta["int8.runtime"] == "openvino" and "recognition.threshold" in meta
    assert not (tmp_path / "model.int8.nncf.onnx").exists()
    got = report["metrics"]["openvino/int8"]
    assert got.keys() == nncf["metrics"].keys() and all(
        got[k] == pytest.approx(v, abs=1e-5) for k, v in nncf["metrics"].items()
    )
    assert any("NNCF" in n for n in report["notes"])
