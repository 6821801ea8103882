"""export.py on a tiny trained checkpoint: ONNX checker, parity, metadata, dynamic batch, INT8 report, failures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from omegaconf import open_dict

from facetx.export import pipeline
from facetx.export.onnx_export import ExportWrapper, export_onnx, head_names
from facetx.export.parity import ParityError, check_parity
from facetx.export.tensorrt import unavailable_reason
from facetx.runtime.sessions import OrtPredictor, make_session
from facetx.training.checkpoint import CONFIG_KEY, load_checkpoint
from tests.export.conftest import QUICK_INT8, export_cfg

HEADS = ["embedding", "landmarks", "expression_logits", "spoof_logits"]


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 112, 112, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def fp32_export(tiny_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One FP32-only export (TensorRT asked for: here it must be skipped with a reason, the rest proceeds)."""
    out = tmp_path_factory.mktemp("export_fp32")
    report = pipeline.export(export_cfg(out, tiny_ckpt, ["quant=none", "export.tensorrt=true"]))
    return out, report


def test_onnx_passes_full_checker_and_names_inputs_outputs(fp32_export: tuple[Path, dict]) -> None:
    out, _ = fp32_export
    model = onnx.load(str(out / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["image"]
    assert [o.name for o in model.graph.output] == HEADS
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, 112, 112]


def test_onnx_metadata_documents_preprocessing_and_labels(fp32_export: tuple[Path, dict], tiny_ckpt: Path) -> None:
    out, _ = fp32_export
    meta = {p.key: p.value for p in onnx.load(str(out / "model.onnx")).metadata_props}
    assert json.loads(meta["input.mean"]) == [0.5, 0.5, 0.5] and json.loads(meta["input.std"]) == [0.5, 0.5, 0.5]
    assert "inside the graph" in meta["input.normalization"]
    assert json.loads(meta["input.size"]) == [112, 112]
    assert meta["landmarks.count"] == "68" and meta["landmarks.layout"] == "ibug68"
    assert json.loads(meta["expression.classes"])[:2] == ["neutral", "happy"]
    assert json.loads(meta["spoof.classes"]) == ["live", "spoof"]
    assert meta["facetx.source_checkpoint"] == str(tiny_ckpt) and meta["facetx.version"]
    assert json.loads(meta["outputs"]) == HEADS


def test_onnx_matches_pytorch_for_batch_1_and_3(fp32_export: tuple[Path, dict], tiny_ckpt: Path) -> None:
    out, report = fp32_export
    net, _, _ = pipeline.load_network(tiny_ckpt)
    ort_fp32 = OrtPredictor(make_session(out / "model.onnx", threads=2))
    for n in (1, 3):
        x = _images(n, seed=n)
        got = ort_fp32(x)
        with torch.no_grad():
            ref = net(x)
        for name in HEADS:
            assert got[name].shape == ref[name].shape
            cos = torch.nn.functional.cosine_similarity(got[name].flatten(1), ref[name].flatten(1), dim=1)
            assert cos.min() >= 0.9999, name
    assert report["parity"]["model.onnx"]["embedding"]["min_cosine"] >= 0.9999
    b1 = make_session(out / "model.b1.onnx", threads=2)
    assert b1.get_inputs()[0].shape[0] == 1


def test_tensorrt_missing_is_one_note_and_export_proceeds(fp32_export: tuple[Path, dict]) -> None:
    out, report = fp32_export
    reason = unavailable_reason()
    if reason is None:
        pytest.skip("TensorRT is available here: the skip path is not exercised")
    assert report["tensorrt"]["skipped"] == reason
    assert reason in (out / "benchmark.md").read_text()
    assert (out / "benchmark.csv").is_file() and not (out / "model.fp16.engine").exists()


def test_benchmark_rows_state_threads_isa_and_versions(fp32_export: tuple[Path, dict]) -> None:
    out, report = fp32_export
    rows = report["benchmark"]
    assert {(r["runtime"], r["precision"]) for r in rows} >= {("torch", "fp32"), ("onnxruntime", "fp32")}
    for r in rows:
        assert r["threads"] == 2 and r["p50_ms"] > 0 and r["images_per_s"] > 0 and r["cpu_ms"] > 0
        assert "isa_flags" in r and r["isa_regime"] and "onnxruntime" in r["versions"]
        assert "recognition/acc" in r
    header = (out / "benchmark.csv").read_text().splitlines()[0].split(",")
    for col in ("p50_ms", "p95_ms", "images_per_s", "params_m", "gflops", "size_mb", "isa_flags", "git_commit", "seed"):
        assert col in header


def test_int8_export_reports_both_precisions(int8_export: tuple[Path, dict]) -> None:
    tmp_path, report = int8_export
    assert (tmp_path / "model.int8.onnx").is_file()
    onnx.checker.check_model(onnx.load(str(tmp_path / "model.int8.onnx")), full_check=True)
    fp32, int8 = report["metrics"]["onnxruntime/fp32"], report["metrics"]["onnxruntime/int8"]
    assert set(fp32) == set(int8) and "recognition/acc" in int8 and "landmarks/nme" in int8
    q = report["int8"]
    assert q["size_ratio"] > 1.5  # weights of the quantized nodes are int8
    assert sum(g["int8"] for g in q["groups"].values()) > 0
    assert set(q["fp32_nodes"]) <= set(q["groups"])
    text = (tmp_path / "int8_report.md").read_text()
    assert "| recognition/acc |" in text and "Stayed in FP32 (compute)" in text and "FP32 (ORT) | INT8 (ORT)" in text
    assert [g["group"] for g in q["sensitivity"]["group_errors"]][0] == "all INT8"
    assert "| size on disk (FP32 / INT8) | >= 3.50x |" in text
    assert {r["precision"] for r in report["benchmark"] if r["runtime"] == "onnxruntime"} == {"fp32", "int8"}
    sess = make_session(tmp_path / "model.int8.onnx", threads=2)
    outs = sess.run(None, {"image": _images(3).numpy()})
    assert [o.shape[0] for o in outs] == [3, 3, 3, 3]


class _Broken(ExportWrapper):
    """Exports a graph whose embedding is perturbed: what a wrong export looks like."""

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = list(super().forward(image))
        out[0] = out[0] + 0.5 * out[0].roll(1, dims=1)
        return tuple(out)


def test_broken_parity_fails_the_export(tiny_ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    net, _, _ = pipeline.load_network(tiny_ckpt)
    names = head_names(net)
    export_onnx(_Broken(net, names), tmp_path / "broken.onnx", names, simplify=False)
    with pytest.raises(ParityError, match="embedding"):
        check_parity(net, OrtPredictor(make_session(tmp_path / "broken.onnx")), [_images(4)], names)
    monkeypatch.setattr(pipeline, "ExportWrapper", _Broken)
    with pytest.raises(ParityError, match="embedding"):
        pipeline.export(export_cfg(tmp_path / "run", tiny_ckpt, ["quant=none"]))


def test_fixed_batch_export_and_opset(tiny_ckpt: Path, tmp_path: Path) -> None:
    net, _, _ = pipeline.load_network(tiny_ckpt)
    names = head_names(net)
    model = export_onnx(ExportWrapper(net, names), tmp_path / "b2.onnx", names, opset=18, dynamic_batch=False,
                        batch_size=2, simplify=False)  # fmt: skip
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == 18
    pred = OrtPredictor(make_session(tmp_path / "b2.onnx"))
    out = pred(_images(3))  # fed in chunks of the fixed batch
    assert out["embedding"].shape == (3, 512)


def test_distillation_checkpoint_exports_its_student(tiny_ckpt: Path, tmp_path: Path) -> None:
    """A checkpoint whose config has a ``student`` section stores the exported network under ``student.``."""
    ckpt = load_checkpoint(tiny_ckpt)
    config = dict(ckpt[CONFIG_KEY]["config"])
    config["student"] = config["model"]
    state = {k.replace("net.", "student.", 1): v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    state.update({"teacher.dummy": torch.zeros(1)})
    path = tmp_path / "distill.ckpt"
    torch.save({"state_dict": state, CONFIG_KEY: {"config": config, "version": "test"}}, path)
    net, _, role = pipeline.load_network(path)
    ref, _, _ = pipeline.load_network(tiny_ckpt)
    assert role == "student"
    x = _images(2)
    with torch.no_grad():
        assert torch.allclose(net(x)["embedding"], ref(x)["embedding"])


def test_tensorrt_engines(tiny_ckpt: Path, tmp_path: Path) -> None:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    cfg = export_cfg(tmp_path, tiny_ckpt, ["export.tensorrt=true", *QUICK_INT8])
    with open_dict(cfg):
        cfg.export.trt_opt_batch, cfg.export.trt_max_batch = 8, 32
    report = pipeline.export(cfg)
    assert (tmp_path / "model.fp16.engine").is_file() and (tmp_path / "model.int8.engine").is_file()
    for prec in ("fp16", "int8"):
        assert report["tensorrt"]["agreement_with_torch"][prec]["embedding"]["min_cosine"] > 0.99
    assert {r["precision"] for r in report["benchmark"] if r["runtime"] == "tensorrt"} == {"fp16", "int8"}
    assert np.isfinite([r["p50_ms"] for r in report["benchmark"]]).all()


def test_stages_run_alone_with_typed_hand_offs(tiny_ckpt: Path, tmp_path: Path) -> None:
    """Each export stage is a function of its inputs: the video pipeline and make bench call them one by one."""
    from facetx.export.data import build_export_data
    from facetx.export.settings import BenchSettings, ExportSettings

    source = pipeline.load_source(tiny_ckpt)
    assert source.role == "net" and source.names == HEADS and source.input_size == 112
    data = build_export_data(source.run_config, split="val")
    real = torch.from_numpy(data.real_images(4))
    settings = ExportSettings(fixed_batch_variant=False, simplify=False)
    onnx_out = pipeline.onnx_stage(source, real, tmp_path, settings=settings, threads=1)
    assert set(onnx_out.paths) == {"fp32"} and onnx_out.meta["outputs"] == json.dumps(HEADS)
    assert min(s["min_cosine"] for s in onnx_out.parity["model.onnx"].values()) >= 0.9999
    metrics = pipeline.evaluate_stage(source, onnx_out, data, batch_size=20, threads=1)
    assert metrics["torch/fp32"].keys() == metrics["onnxruntime/fp32"].keys()
    bench = BenchSettings(batches=(1,), warmup=0, runs=2, min_runs=1, seconds_per_case=0.01)
    cases = pipeline.bench_cases(source, onnx_out.paths, settings=bench, export=settings)
    rows = pipeline.benchmark_stage(source, cases, real, settings=bench, threads=1)
    assert {(r["runtime"], r["batch"]) for r in rows} == {("torch", 1), ("onnxruntime", 1)}


def test_settings_refuse_unknown_keys_with_one_line() -> None:
    from facetx.errors import ConfigError
    from facetx.export.settings import QuantSettings, settings_from

    q = settings_from(QuantSettings, {"recipe": "avx2", "targets": {"min_speedup": 1.3}}, "quant")
    assert q.recipe == "avx2" and q.targets.min_speedup == 1.3 and q.targets.min_size_ratio == 3.5
    with pytest.raises(ConfigError, match=r"quant: unknown key\(s\) \['calibraton_batches'\]"):
        settings_from(QuantSettings, {"calibraton_batches": 2}, "quant")
    with pytest.raises(ConfigError, match=r"quant.targets: unknown key\(s\) \['speedup'\]"):
        settings_from(QuantSettings, {"targets": {"speedup": 2}}, "quant")


def test_gpu_execution_providers_are_timed_only_where_onnxruntime_has_them(monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert pipeline.gpu_provider_cases(Path("model.onnx")) == []
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    (case,) = pipeline.gpu_provider_cases(Path("model.onnx"))
    assert (case.runtime, case.precision, case.graph) == ("onnxruntime", "fp32", "cuda-ep") and case.factory
