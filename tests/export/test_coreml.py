"""runtime=[onnxruntime,coreml]: ML Program packages (FP16, 8-bit weights) with the ONNX file's input, outputs and
metadata; their MIL programs match PyTorch in the reference interpreter; predictions run on macOS only."""

from __future__ import annotations

import copy
import importlib.machinery
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch

from facetx.errors import ConfigError
from facetx.export import coreml_stage, pipeline, runtimes
from facetx.export.coreml_stage import CoremlSettings
from facetx.export.metadata import CALIBRATION_DOCS
from facetx.export.parity import ParityError
from facetx.export.settings import settings_from
from facetx.runtime.coreml import batch_plan, run_chunked
from tests.export.conftest import export_cfg

HEADS = ["embedding", "landmarks", "expression_logits", "spoof_logits"]
SHAPES = {"embedding": [1, 512], "landmarks": [1, 68, 2], "expression_logits": [1, 7], "spoof_logits": [1, 2]}
#: ONNX Runtime's INT8 and model.b1.onnx are not needed (Core ML compresses its own weights, from the network); two
#: images for the MIL reference check
QUICK_COREML = ["runtime=[onnxruntime,coreml]", "quant=none", "export.fixed_batch_variant=false",
                "runtime.coreml.reference_images=2"]  # fmt: skip
needs_coreml = pytest.mark.skipif(coreml_stage.missing() is not None, reason=str(coreml_stage.missing()))
on_macos = pytest.mark.skipif(sys.platform != "darwin", reason="Core ML predictions need macOS's Core ML framework")


@pytest.fixture(scope="module")
def coreml_export(tiny_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("export_coreml")
    return out, pipeline.export(export_cfg(out, tiny_ckpt, QUICK_COREML))


def _spec(path: Path) -> Any:
    from facetx.runtime.coreml import import_coremltools

    return import_coremltools().models.MLModel(str(path), skip_model_load=True).get_spec()


@needs_coreml
def test_packages_take_image_and_give_the_heads_in_order(coreml_export: tuple[Path, dict]) -> None:
    from coremltools.proto.FeatureTypes_pb2 import ArrayFeatureType

    out, report = coreml_export
    for precision in ("fp16", "w8"):
        path = out / f"model.{precision}.mlpackage"
        assert report["files"][f"coreml_{precision}"] == str(path) and path.is_dir()
        spec = _spec(path)
        assert spec.WhichOneof("Type") == "mlProgram" and spec.specificationVersion >= 7  # iOS16: Core ML 6
        (image,) = spec.description.input
        assert image.name == "image" and list(image.type.multiArrayType.shape) == [1, 3, 112, 112]
        assert image.type.multiArrayType.dataType == ArrayFeatureType.FLOAT32
        assert [o.name for o in spec.description.output] == HEADS
        for o in spec.description.output:
            assert list(o.type.multiArrayType.shape) == SHAPES[o.name], o.name
            assert o.type.multiArrayType.dataType == ArrayFeatureType.FLOAT32
        assert report["coreml"]["packages"][precision]["outputs"] == SHAPES


@needs_coreml
def test_packages_carry_the_onnx_metadata(coreml_export: tuple[Path, dict]) -> None:
    out, _ = coreml_export
    onnx_meta = {p.key: p.value for p in onnx.load(str(out / "model.onnx")).metadata_props}
    # the calibration stage writes each ONNX file's own threshold later; off macOS a package has no held-out metrics
    own = {k: v for k, v in onnx_meta.items() if not k.startswith("recognition.")}
    assert set(CALIBRATION_DOCS) - set(own) == {k for k in CALIBRATION_DOCS if k.startswith("recognition.")}
    for precision in ("fp16", "w8"):
        spec = _spec(out / f"model.{precision}.mlpackage")
        meta = dict(spec.description.metadata.userDefined)
        assert {k: meta.get(k) for k in own} == {**own, "facetx.precision": precision}  # landmarks.template too
        fields = spec.description.metadata
        assert fields.author == "facetx" and "Apache-2.0" in fields.license
        assert fields.versionString.endswith("+" + onnx_meta["facetx.fingerprint"])
        assert "facevit_tiny_p14_112" in fields.shortDescription and precision in fields.shortDescription
        assert "w8" != precision or "int8" in meta["coreml.weights"]


@needs_coreml
def test_w8_weights_are_int8_and_half_the_size(coreml_export: tuple[Path, dict]) -> None:
    from facetx.runtime.coreml import load_program

    out, report = coreml_export
    files = {p: out / f"model.{p}.mlpackage" / coreml_stage.WEIGHT_FILE for p in ("fp16", "w8")}
    fp16, w8 = (coreml_stage.weight_summary(load_program(out / f"model.{p}.mlpackage")) for p in ("fp16", "w8"))
    assert fp16["constexpr_ops"] == {} and set(fp16["elements"]) == {"fp16"}
    assert w8["constexpr_ops"].get("constexpr_affine_dequantize", 0) >= 10 and w8["int8_share"] > 0.95
    # the weight file holds what the program says: 2 bytes per fp16 element, 1 per int8 one (plus blob headers)
    assert 2 * fp16["elements"]["fp16"] <= files["fp16"].stat().st_size < 2.02 * fp16["elements"]["fp16"]
    assert files["w8"].stat().st_size < 0.52 * files["fp16"].stat().st_size
    assert report["coreml"]["w8_size_ratio"] > 1.9


@needs_coreml
def test_mil_programs_match_pytorch_and_linux_says_why_predictions_are_skipped(
    coreml_export: tuple[Path, dict],
) -> None:
    out, report = coreml_export
    for precision in ("fp16", "w8"):
        ref = report["coreml"]["reference"][precision]
        assert set(ref) == set(HEADS)
        assert min(s["min_cosine"] for s in ref.values()) >= 0.999, precision  # a conversion bug gives far less
    if sys.platform != "darwin":
        (note,) = [n for n in report["notes"] if n.startswith("coreml:")]
        assert "skipped on linux" in note and "macOS only" in note and "\n" not in note
        assert json.loads((out / "report.json").read_text())["coreml"]["predictions"] == {"skipped": note}
        assert not [k for k in report["metrics"] if k.startswith("coreml/")]
        assert not [r for r in report["benchmark"] if r["runtime"] == "coreml"]
        from facetx.runtime.coreml import CoreMLRunner

        with pytest.raises(RuntimeError, match=r"Core ML predictions need macOS \(this is linux\)"):
            CoreMLRunner(out / "model.fp16.mlpackage")


@needs_coreml
def test_reference_check_catches_a_program_of_other_weights(coreml_export: tuple[Path, dict], tiny_ckpt: Path) -> None:
    out, _ = coreml_export
    source = pipeline.load_source(tiny_ckpt)
    other = copy.copy(source)
    other.net = copy.deepcopy(source.net)
    torch.manual_seed(0)
    with torch.no_grad():  # other weights, same graph: the package no longer computes this network
        for p in other.net.parameters():
            p.add_(torch.randn_like(p) * p.abs().mean().clamp_min(0.05))
    images = torch.rand(1, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ParityError, match="model.fp16.mlpackage: its MIL program differs from PyTorch"):
        coreml_stage.reference_check(out / "model.fp16.mlpackage", other, images, 0.99)


@needs_coreml
def test_update_metadata_keeps_the_package(coreml_export: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = coreml_export
    path = tmp_path / "model.w8.mlpackage"
    shutil.copytree(out / "model.w8.mlpackage", path)
    before = dict(_spec(path).description.metadata.userDefined)
    coreml_stage.update_metadata(path, {"recognition.threshold": "0.5"})
    spec = _spec(path)
    assert dict(spec.description.metadata.userDefined) == {**before, "recognition.threshold": "0.5"}
    assert [o.name for o in spec.description.output] == HEADS
    weights = (p / coreml_stage.WEIGHT_FILE for p in (path, out / "model.w8.mlpackage"))
    assert len({w.read_bytes() for w in weights}) == 1


@on_macos
@needs_coreml
def test_macos_predictions_are_evaluated_and_timed(coreml_export: tuple[Path, dict]) -> None:
    from facetx.runtime.coreml import CoreMLRunner

    out, report = coreml_export
    for precision in ("fp16", "w8"):
        assert f"coreml/{precision}" in report["metrics"]
        agreement = report["coreml"]["predictions"]["agreement_with_torch"][precision]
        assert min(s["min_cosine"] for s in agreement.values()) >= 0.99
        assert [r for r in report["benchmark"] if r["runtime"] == "coreml" and r["precision"] == precision]
    runner = CoreMLRunner(out / "model.fp16.mlpackage", "CPU_ONLY")
    outs = runner.run(np.random.default_rng(0).random((3, 3, 112, 112), dtype=np.float32))  # 3 calls at batch 1
    assert [o.shape for o in outs] == [(3, 512), (3, 68, 2), (3, 7), (3, 2)]


def test_coreml_config_errors_are_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for node, match in (
        ({"precisions": ["int4"]}, r"runtime.coreml.precisions=\['int4'\]: expected distinct values"),
        ({"minimum_deployment_target": "iOS15"}, r"minimum_deployment_target='iOS15'.*at least iOS16, macOS13"),
        ({"batch_sizes": [1, 32], "exporter": "torch_export"}, r"torch_export converts one fixed batch size"),
        ({"compute_units": "GPU"}, r"runtime.coreml.compute_units='GPU'"),
        ({"batch": 1}, r"runtime.coreml: unknown key\(s\) \['batch'\]"),
    ):
        with pytest.raises(ConfigError, match=match):
            settings_from(CoremlSettings, node, "runtime.coreml")
    monkeypatch.setitem(sys.modules, "coremltools", None)  # what an absent package looks like to find_spec
    with pytest.raises(ConfigError) as err:
        runtimes.runtime_choices({"onnxruntime": {}, "coreml": {}})
    msg = str(err.value)
    assert msg.startswith("runtime=coreml: coremltools is not installed (pip install -e '.[coreml]'")
    assert "\n" not in msg
    # a wheel without the native package writer (Windows): also refused before any work
    bare = importlib.machinery.ModuleSpec("coremltools", None, is_package=True)
    bare.submodule_search_locations = [str(tmp_path)]
    monkeypatch.setattr(coreml_stage.importlib.util, "find_spec", lambda name: bare)
    assert "has no libmodelpackage" in coreml_stage.missing() and "\n" not in coreml_stage.missing()


def test_batches_are_fed_in_the_sizes_a_package_takes() -> None:
    assert batch_plan(5, (1,)) == [(1, 1)] * 5
    assert batch_plan(70, (1, 32)) == [(32, 32), (32, 32), (1, 1), (1, 1), (1, 1), (1, 1), (1, 1), (1, 1)]
    assert batch_plan(3, (8,)) == [(8, 3)] and batch_plan(4, None) == [(4, 4)] and batch_plan(0, (1,)) == []
    images = np.arange(3 * 2, dtype=np.float32).reshape(3, 2)
    calls: list[int] = []

    def predict(x: np.ndarray) -> list[np.ndarray]:
        calls.append(len(x))
        return [x * 2, x[:, :1]]

    doubled, first = run_chunked(images, (2,), predict)
    assert calls == [2, 2] and np.array_equal(doubled, images * 2) and np.array_equal(first, images[:, :1])
