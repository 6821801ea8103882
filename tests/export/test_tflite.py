"""runtime=[onnxruntime,tflite]: litert-torch converts the network, LiteRT (XNNPACK) matches PyTorch, INT8 is
quantized on training images, both are evaluated and timed beside ONNX Runtime."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from facetx.errors import ConfigError
from facetx.export import pipeline, runtimes
from facetx.export.onnx_export import ExportWrapper

HEADS = ["embedding", "landmarks", "expression_logits", "spoof_logits"]


@pytest.fixture(scope="module")
def tflite_export(int8_export: tuple[Path, dict]) -> tuple[Path, dict]:
    """The shared INT8 export (tests/export/conftest.py), which runs every installed runtime."""
    pytest.importorskip("litert_torch", reason="the tflite extra is not installed (pip install -e '.[tflite]')")
    return int8_export


def test_tflite_fp32_matches_pytorch_and_both_precisions_are_evaluated(tflite_export: tuple[Path, dict]) -> None:
    out, report = tflite_export
    assert (out / "model.tflite").is_file() and (out / "model.int8.tflite").is_file()
    parity = report["tflite"]["parity"]["model.tflite"]
    assert set(parity) == set(HEADS)
    assert min(s["min_cosine"] for s in parity.values()) >= 0.9999
    metrics = json.loads((out / "report.json").read_text())["metrics"]
    ort, fp32, int8 = metrics["onnxruntime/fp32"], metrics["tflite/fp32"], metrics["tflite/int8"]
    assert fp32.keys() == ort.keys() == int8.keys()
    # the same network in two runtimes: FP32 held-out metrics agree
    assert all(abs(fp32[k] - ort[k]) < 0.02 for k in ort if k.endswith(("/acc", "/nme")))
    q = report["tflite"]["int8"]
    assert q["recipe"]["name"] == "static" and q["calibration"]["source"].startswith("training set")
    assert q["size_ratio"] >= 3.5 and (out / "model.int8.tflite").stat().st_size < (out / "model.tflite").stat().st_size
    assert q["agreement_with_torch"]["landmarks"]["mean_cosine"] > 0.99
    # every file runs in one XNNPACK partition (nothing falls back to LiteRT's reference kernels)
    assert report["tflite"]["xnnpack_partitions"] == {"model.tflite": 1, "model.int8.tflite": 1}


def test_tflite_rows_sit_in_the_benchmark_table(tflite_export: tuple[Path, dict]) -> None:
    out, _ = tflite_export
    rows = [r for r in csv.DictReader((out / "benchmark.csv").open()) if r["runtime"] == "tflite"]
    assert {(r["precision"], r["graph"], r["batch"]) for r in rows} == {
        ("fp32", "xnnpack", "1"),
        ("int8", "xnnpack", "1"),
    }
    for r in rows:
        assert float(r["p50_ms"]) > 0 and float(r["speed_vs_ort_fp32"]) > 0
        assert r["isa_flags"] and r["isa_regime"] and r["recognition/acc"] and r["landmarks/nme"]
    assert "tflite" in (out / "benchmark.md").read_text()


def test_tflite_outputs_are_named_by_head(tflite_export: tuple[Path, dict], tiny_ckpt: Path) -> None:
    from facetx.runtime.litert import BatchSizes, LiteRtRunner

    out, _ = tflite_export
    runner = LiteRtRunner(out / "model.tflite", threads=1)  # no names given: the order the module returned them in
    assert runner.output_names == HEADS and runner.fixed_batch == 1
    # the quantizer gives the outputs new (dequantized) tensors; the signature names and their order survive
    assert LiteRtRunner(out / "model.int8.tflite", threads=1).output_names == HEADS
    x = np.random.default_rng(0).random((3, 3, 112, 112), dtype=np.float32)
    net = pipeline.load_source(tiny_ckpt).net
    with torch.no_grad():
        want = [t.numpy() for t in ExportWrapper(net, HEADS)(torch.from_numpy(x))]
    got = BatchSizes([runner]).run(x)  # three batch-1 calls
    assert [g.shape for g in got] == [w.shape for w in want]
    assert all(np.allclose(g, w, atol=1e-4) for g, w in zip(got, want, strict=True))
    swapped = LiteRtRunner(out / "model.tflite", threads=1, output_names=["spoof_logits", "embedding"])
    assert [o.shape[1] for o in swapped.run(x[:1])] == [2, want[0].shape[1]]
    with pytest.raises(ValueError, match=r"no signature output\(s\) \['output_0'\]"):
        LiteRtRunner(out / "model.tflite", threads=1, output_names=["output_0"])


def test_tflite_config_errors_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"runtime.tflite.precisions=\['int8'\]: expected fp32"):
        runtimes.runtime_choices({"onnxruntime": {}, "tflite": {"precisions": ["int8"]}})
    with pytest.raises(ConfigError, match=r"runtime.tflite.int8_recipe='int4'"):
        runtimes.runtime_choices({"onnxruntime": {}, "tflite": {"int8_recipe": "int4"}})
    monkeypatch.setitem(sys.modules, "litert_torch", None)  # what an absent package looks like to find_spec
    with pytest.raises(ConfigError) as err:
        runtimes.runtime_choices({"onnxruntime": {}, "tflite": {}})
    msg = str(err.value)
    assert msg == "runtime=tflite: litert-torch not installed (pip install -e '.[tflite]')" and "\n" not in msg


def test_the_student_is_timed_beside_mediapipes_own_models(tflite_export: tuple[Path, dict], tmp_path: Path) -> None:
    """make bench's LiteRT peer table: our files and MediaPipe's BlazeFace/FaceMesh .tflite in one interpreter."""
    from facetx.detect.weights import WHEEL, cache_dir

    if not (cache_dir() / WHEEL).is_file():
        pytest.skip(f"{cache_dir() / WHEEL} is not cached (make weights)")
    out, _ = tflite_export
    # its own process, as make bench runs it
    cmd = [sys.executable, "-m", "facetx.bench.tflite_peer", str(out), "--threads", "1", "--runs", "4", "--out",
           str(tmp_path)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = list(csv.DictReader((tmp_path / "tflite_peer.csv").open()))
    shapes = {r["model"]: r["input"] for r in rows}
    assert shapes["facetx student int8"] == "1x3x112x112" and shapes["MediaPipe BlazeFace short range"] == "1x128x128x3"
    assert shapes["MediaPipe FaceMesh landmarks"] == "1x192x192x3" and len(rows) == 5
    assert all(float(r["p50_ms"]) > 0 and float(r["speed_vs_facemesh"]) > 0 and r["isa_flags"] for r in rows)
    assert "ISA flags" in (tmp_path / "tflite_peer.md").read_text()
