"""The Core ML runtime of ``export.py`` (``runtime=[onnxruntime,coreml]``): ``.mlpackage`` ML Programs for Apple
devices, FP16 compute precision (``model.fp16.mlpackage``) and 8-bit weights (``model.w8.mlpackage``).

The network is traced with ``torch.jit.trace`` (coremltools' TorchScript frontend; its ``torch.export`` frontend is
an option, ``exporter: torch_export``) and converted with float32 ``image`` input and outputs, the ONNX file's
contract. The W8 package is the FP16 one with ``linear_quantize_weights`` (int8, symmetric, per output channel:
coremltools' defaults; activations stay FP16). Both carry the ONNX metadata (precision set to their own).

Everywhere each package is read back and checked: spec (input ``image`` float32 ``[B, 3, S, S]``, outputs named and
shaped as the heads, in order), metadata, that the W8 weights really are int8, sizes; and its MIL program is run by
the reference interpreter of :mod:`facetx.runtime.coreml` on real images against PyTorch. Predictions need the Core
ML framework, so only on macOS are the packages evaluated on the held-out sets (``coreml/fp16``, ``coreml/w8``,
judged by their metrics against ONNX Runtime FP32, not by cosine), given their own match threshold and timed.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import sys
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import facetx
from facetx.errors import ConfigError
from facetx.export.benchmark import BenchCase
from facetx.export.contracts import Int8Stage, OnnxArtifacts, RuntimeStage, Source
from facetx.export.data import ExportData
from facetx.export.metadata import OUTPUT_DOCS
from facetx.export.onnx_export import INPUT_NAME, ExportWrapper
from facetx.export.parity import ParityError, output_agreement
from facetx.runtime.sessions import Predictor

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "w8")
EXPORTERS = ("torchscript", "torch_export")
COMPUTE_UNITS = ("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE")
GRANULARITIES = ("per_channel", "per_tensor")
#: the oldest OS of each family that runs an ML Program with int8 weights (constexpr ops: Core ML 6)
MIN_TARGETS = {"iOS": 16, "macOS": 13, "tvOS": 16, "watchOS": 9, "visionOS": 1}
FILES = {p: f"model.{p}.mlpackage" for p in PRECISIONS}
#: the weight file inside an ML Program package
WEIGHT_FILE = Path("Data/com.apple.CoreML/weights/weight.bin")
#: of the weight elements of a W8 package at least this share must be stored as 8-bit integers
MIN_INT8_SHARE = 0.5


@dataclass(frozen=True)
class CoremlSettings:
    """``conf/runtime/coreml.yaml``."""

    precisions: tuple[str, ...] = ("fp16", "w8")
    minimum_deployment_target: str = "iOS16"
    batch_sizes: tuple[int, ...] = (1,)
    exporter: str = "torchscript"
    w8_granularity: str = "per_channel"
    w8_weight_threshold: int = 2048
    compute_units: str = "ALL"
    reference_images: int = 4
    reference_min_cosine: float = 0.99
    max_drop_pt: float = 0.5
    author: str = "facetx"
    license: str = "facetx code: Apache-2.0; the weights carry the terms of the data they were trained on"

    def __post_init__(self) -> None:
        key = "runtime.coreml"
        precisions, sizes = tuple(self.precisions), tuple(int(b) for b in self.batch_sizes)
        bad = [p for p in precisions if p not in PRECISIONS]
        if bad or not precisions or len(set(precisions)) != len(precisions):
            raise ConfigError(f"{key}.precisions={list(precisions)}: expected distinct values among {list(PRECISIONS)}")
        if not sizes or min(sizes) < 1 or len(set(sizes)) != len(sizes):
            raise ConfigError(f"{key}.batch_sizes={list(sizes)}: expected distinct positive batch sizes, e.g. [1]")
        target = re.fullmatch(r"(iOS|macOS|tvOS|watchOS|visionOS)(\d+)", str(self.minimum_deployment_target))
        if target is None or int(target[2]) < MIN_TARGETS[target[1]]:
            oldest = ", ".join(f"{k}{v}" for k, v in MIN_TARGETS.items())
            raise ConfigError(
                f"{key}.minimum_deployment_target={self.minimum_deployment_target!r}: expected an ML Program target "
                f"with 8-bit weights, at least {oldest}"
            )
        for name, value, allowed in (
            ("exporter", self.exporter, EXPORTERS),
            ("compute_units", self.compute_units, COMPUTE_UNITS),
            ("w8_granularity", self.w8_granularity, GRANULARITIES),
        ):
            if value not in allowed:
                raise ConfigError(f"{key}.{name}={value!r}: expected one of {list(allowed)}")
        if self.exporter == "torch_export" and len(sizes) > 1:
            raise ConfigError(
                f"{key}.exporter=torch_export converts one fixed batch size, got batch_sizes={list(sizes)}"
            )
        if self.reference_images < 0 or not 0 < self.reference_min_cosine <= 1:
            raise ConfigError(f"{key}: reference_images must be >= 0 and reference_min_cosine in (0, 1]")
        object.__setattr__(self, "precisions", precisions)
        object.__setattr__(self, "batch_sizes", sizes)


SETTINGS = CoremlSettings


def missing() -> str | None:
    """Why no package can be written here (coremltools absent, or without its native writer), else None. Looks at
    the installed files only: importing coremltools takes seconds."""
    spec = importlib.util.find_spec("coremltools")
    if spec is None:
        return "coremltools is not installed (pip install -e '.[coreml]'; it converts on Linux and macOS)"
    folders = list(spec.submodule_search_locations or [])
    if not any(next(Path(d).glob("libmodelpackage*"), None) for d in folders):
        return (
            f"coremltools at {folders[0] if folders else spec.origin} has no libmodelpackage: its wheels for this "
            f"platform ({sys.platform}) cannot write .mlpackage files (Linux and macOS can)"
        )
    return None


# --- conversion ----------------------------------------------------------------------------------------------


@contextmanager
def _converter_fixes() -> Iterator[None]:
    """Two torch-op converters of coremltools 9.0 replaced while converting (its own are put back afterwards):

    * ``aten::Int`` of a folded shape constant becomes ``int(ndarray)``, which numpy >= 2.4 refuses for a 1-element
      rank-1 array (apple/coremltools#2633; the window attention's ``x.view(b, ...)`` hits it): here its item.
    * ``prelu`` on ``[B, C]`` (the heads' MLPs) is expanded to rank 3, where MIL's prelu takes one alpha only, so
      any trained per-channel PReLU fails to convert: here it is expanded to rank 4, where MIL takes ``alpha[C]``.

    Every other case goes to coremltools' own converter."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch import ops
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY as registry

    original = {name: registry.get_func(name) for name in ("int", "prelu")}

    def _int(context: Any, node: Any) -> None:
        x = ops._get_inputs(context, node, expected=1)[0]
        if x.can_be_folded_to_const() and np.ndim(x.val) > 0 and np.size(x.val) == 1:
            context.add(mb.const(val=np.int32(np.asarray(x.val).item()), name=node.name), node.name)
        else:
            original["int"](context, node)

    def _prelu(context: Any, node: Any) -> None:
        x, alpha = ops._get_inputs(context, node, expected=2)
        if x.rank not in (2, 3) or alpha.val is None or np.size(alpha.val) == 1 or not isinstance(x.shape[1], int):
            original["prelu"](context, node)
            return
        axes = [2, 3] if x.rank == 2 else [3]
        a = np.broadcast_to(np.asarray(alpha.val, dtype=np.float32).reshape(-1), (x.shape[1],))
        y = mb.prelu(x=mb.expand_dims(x=x, axes=axes), alpha=np.ascontiguousarray(a))
        context.add(mb.squeeze(x=y, axes=axes, name=node.name))

    registry.set_func_by_name(_int, "int")
    registry.set_func_by_name(_prelu, "prelu")
    try:
        yield
    finally:
        for name, func in original.items():
            registry.set_func_by_name(func, name)


def _example(real: torch.Tensor, batch: int) -> torch.Tensor:
    """``batch`` real images (repeated if there are fewer) to trace with."""
    reps = -(-batch // len(real))
    return real.repeat(reps, 1, 1, 1)[:batch].float().contiguous()


def trace_network(source: Source, example: torch.Tensor, exporter: str) -> Any:
    """The export wrapper as coremltools' frontends read it: a TorchScript trace, or an ``ExportedProgram``."""
    wrapper = ExportWrapper(source.net, source.names).eval()
    with torch.no_grad(), warnings.catch_warnings():
        if exporter == "torchscript":
            # the tracer's Python-int warnings are about sizes fixed by the input size (grid side, token count);
            # torch.jit.trace is deprecated but it is coremltools' mature frontend (its torch.export one is beta)
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.trace", category=FutureWarning)
            # no check_trace (a second and third run, seconds): the MIL program is compared with eager PyTorch later
            return torch.jit.trace(wrapper, example, check_trace=False)
        program = torch.export.export(wrapper, (example,)).run_decompositions({})
    # torch 2.14 leaves aten.alias nodes (an identity) that coremltools 9.0 cannot convert: bypass them
    graph = program.graph
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target == torch.ops.aten.alias.default:
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
    program.graph_module.recompile()
    return program


def convert_network(
    traced: Any, source: Source, settings: CoremlSettings, precision: str, batch_sizes: Sequence[int]
) -> Any:
    """``ct.convert`` of ``traced`` to an ML Program: float32 ``image`` (fixed batch, or enumerated batch sizes) and
    float32 outputs named as the heads; ``precision`` fp16 or fp32 compute."""
    from facetx.runtime.coreml import import_coremltools

    ct = import_coremltools()
    s = source.input_size
    shape: Any = (batch_sizes[0], 3, s, s)
    if len(batch_sizes) > 1:  # ANE-friendly flexibility: a set of static shapes, not a range
        shape = ct.EnumeratedShapes(shapes=[(b, 3, s, s) for b in batch_sizes], default=(batch_sizes[0], 3, s, s))
    with _converter_fixes():
        return ct.convert(
            traced,
            inputs=[ct.TensorType(name=INPUT_NAME, shape=shape, dtype=np.float32)],
            # float32 I/O as in the ONNX file (iOS16+ would otherwise make them fp16 under FP16 compute)
            outputs=[ct.TensorType(name=n, dtype=np.float32) for n in source.names],
            convert_to="mlprogram",
            compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
            minimum_deployment_target=getattr(ct.target, settings.minimum_deployment_target),
        )


def quantize_weights(model: Any, settings: CoremlSettings) -> Any:
    """8-bit weights: symmetric int8 with a scale per output channel (or tensor), for every weight of more than
    ``w8_weight_threshold`` elements; activations keep the model's compute precision."""
    from facetx.runtime.coreml import import_coremltools

    ct = import_coremltools()
    config = ct.optimize.coreml.OptimizationConfig(
        global_config=ct.optimize.coreml.OpLinearQuantizerConfig(
            mode="linear_symmetric",
            dtype="int8",
            granularity=settings.w8_granularity,
            weight_threshold=settings.w8_weight_threshold,
        )
    )
    return ct.optimize.coreml.linear_quantize_weights(model, config)


# --- metadata ------------------------------------------------------------------------------------------------


def package_metadata(meta: Mapping[str, str], precision: str, settings: CoremlSettings) -> dict[str, str]:
    """The ONNX file's metadata with this package's precision, and what the Core ML variant adds."""
    weights = {
        "fp32": "float32",
        "fp16": "float16",
        "w8": f"int8 symmetric {settings.w8_granularity.replace('_', '-')} (float16 scales) for weights of more "
        f"than {settings.w8_weight_threshold} elements, float16 otherwise",
    }[precision]
    return {
        **meta,
        "facetx.precision": precision,
        "coreml.compute_precision": "float32" if precision == "fp32" else "float16",
        "coreml.weights": weights,
        "coreml.minimum_deployment_target": settings.minimum_deployment_target,
    }


def describe(model: Any, source: Source, meta: Mapping[str, str], settings: CoremlSettings) -> None:
    """Author, license, version, short description, input/output descriptions and ``user_defined_metadata``."""
    model.author = settings.author
    model.license = settings.license
    # the facetx version and the weights' fingerprint: two packages of one checkpoint share it
    model.version = f"{facetx.__version__}+{meta.get('facetx.fingerprint', 'unknown')}"
    model.short_description = (
        f"facetx face network {source.model_name} ({source.role}), {meta['facetx.precision']}: "
        f"{', '.join(source.names)} from one aligned {source.input_size}x{source.input_size} RGB crop"
    )
    model.input_description[INPUT_NAME] = f"{meta['input.format']}; {meta['input.normalization']}"
    for name in source.names:
        model.output_description[name] = OUTPUT_DOCS.get(name, name)
    for key, value in meta.items():
        model.user_defined_metadata[key] = str(value)


def update_metadata(path: Path, props: Mapping[str, str]) -> None:
    """Add ``props`` to a saved package's ``user_defined_metadata`` (written to a sibling, then swapped in)."""
    from facetx.runtime.coreml import import_coremltools

    ct = import_coremltools()
    model = ct.models.MLModel(str(path), skip_model_load=True)
    for key, value in props.items():
        model.user_defined_metadata[key] = str(value)
    tmp = path.with_name(path.stem + ".tmp.mlpackage")  # coremltools saves ML Programs to .mlpackage names only
    shutil.rmtree(tmp, ignore_errors=True)
    model.save(str(tmp))
    shutil.rmtree(path)
    os.replace(tmp, path)


def _template_props(source: Source, data: ExportData) -> dict[str, str]:
    """``landmarks.template`` as the calibration stage writes it into the ONNX files (it rewrites only those)."""
    from facetx.export.calibration import landmark_template

    k = source.shapes.get("landmarks", (0, 0))[1] if "landmarks" in source.names else 0
    template = landmark_template(data.report) if k else None
    if template is None or len(template) != k:
        return {}
    return {"landmarks.template": json.dumps([[round(float(x), 5), round(float(y), 5)] for x, y in template])}


# --- checks on the saved package -----------------------------------------------------------------------------


class CoremlCheckError(RuntimeError):
    """A saved package does not hold what the stage converted (inputs, outputs, metadata or weights)."""


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def weight_summary(program: Any) -> dict[str, Any]:
    """Elements of the program's weights by stored dtype, and its ``constexpr_`` (compressed weight) ops. A weight
    is a float constant of more than one element, or the largest input of a ``constexpr_`` op (its quantized data;
    the scales and zero points beside it are not counted)."""
    from coremltools.converters.mil.mil import types

    elements: dict[str, int] = {}
    constexpr: dict[str, int] = {}

    def add(var: Any) -> None:
        name = types.builtin_to_string(var.dtype)
        elements[name] = elements.get(name, 0) + int(np.size(var.val))

    for op in program.functions["main"].operations:
        if op.op_type.startswith("constexpr_"):
            constexpr[op.op_type] = constexpr.get(op.op_type, 0) + 1
            known = [v for v in op.inputs.values() if not isinstance(v, tuple) and v.val is not None]
            if known:
                add(max(known, key=lambda v: np.size(v.val)))
        elif op.op_type == "const":
            out = op.outputs[0]
            if out.child_ops and all(c.op_type.startswith("constexpr_") for c in out.child_ops):
                continue  # counted with its constexpr op
            if out.val is not None and np.size(out.val) > 1 and types.is_float(out.dtype):
                add(out)
    total = sum(elements.values())
    int8 = elements.get("int8", 0) + elements.get("uint8", 0)
    return {"elements": elements, "int8_share": round(int8 / total, 4) if total else 0.0, "constexpr_ops": constexpr}


def check_package(
    path: Path,
    *,
    source: Source,
    batch_sizes: Sequence[int],
    meta: Mapping[str, str],
    precision: str,
    program: Any | None = None,
) -> dict[str, Any]:
    """Read a saved package back and check its spec, metadata and weights (``program``: its MIL program if already
    loaded); a :class:`CoremlCheckError` lists every problem. Returns what was checked (shapes, metadata keys,
    weight dtypes, sizes)."""
    from facetx.runtime.coreml import import_coremltools, load_program, package_batch_sizes

    ct = import_coremltools()
    model = ct.models.MLModel(str(path), skip_model_load=True)
    spec = model.get_spec()
    problems: list[str] = []
    float32 = ct.proto.FeatureTypes_pb2.ArrayFeatureType.FLOAT32
    if spec.WhichOneof("Type") != "mlProgram":
        problems.append(f"model type {spec.WhichOneof('Type')}, not mlProgram")
    s = source.input_size
    inputs = {i.name: i.type.multiArrayType for i in spec.description.input}
    if list(inputs) != [INPUT_NAME]:
        problems.append(f"inputs {list(inputs)}, expected [{INPUT_NAME!r}]")
    image = inputs.get(INPUT_NAME)
    taken = package_batch_sizes(spec) if image is not None else None
    if image is not None:
        if image.dataType != float32:
            problems.append(f"input {INPUT_NAME} has array data type {image.dataType}, not FLOAT32 ({float32})")
        if list(image.shape)[1:] != [3, s, s]:
            problems.append(f"input {INPUT_NAME} shape {list(image.shape)}, expected [B, 3, {s}, {s}]")
        if taken is None or sorted(taken) != sorted(batch_sizes):
            problems.append(f"input {INPUT_NAME} takes batch sizes {taken}, expected {sorted(batch_sizes)}")
    outputs = {o.name: o.type.multiArrayType for o in spec.description.output}
    if list(outputs) != list(source.names):
        problems.append(f"outputs {list(outputs)}, expected {source.names} in this order")
    program = load_program(path) if program is None else program
    program_shapes = {v.name: v.shape for v in program.functions["main"].outputs}
    shapes = {}
    for name in source.names:
        if name not in outputs:
            continue
        want = tuple(source.shapes[name][1:])
        # a fixed-batch spec states the shape; with enumerated batches only the program knows it (symbolic batch)
        got = tuple(outputs[name].shape) or tuple(program_shapes.get(name, ()))
        shapes[name] = [d if isinstance(d, int) else str(d) for d in got]
        if outputs[name].dataType != float32:
            problems.append(f"output {name} is not FLOAT32")
        if tuple(got[1:]) != want or (len(batch_sizes) == 1 and got[:1] != (batch_sizes[0],)):
            problems.append(f"output {name} shape {shapes[name]}, expected [B, {', '.join(map(str, want))}]")
    stored = dict(spec.description.metadata.userDefined)
    wrong = sorted(k for k, v in meta.items() if stored.get(k) != v)
    if wrong:
        problems.append(f"user_defined_metadata misses or differs at {wrong}")
    fields = spec.description.metadata
    empty = [f for f in ("author", "license", "versionString", "shortDescription") if not getattr(fields, f)]
    if empty:
        problems.append(f"empty metadata fields {empty}")
    weights = weight_summary(program)
    if precision == "w8" and weights["int8_share"] < MIN_INT8_SHARE:
        problems.append(f"only {weights['int8_share']:.0%} of the weight elements are int8 (need {MIN_INT8_SHARE:.0%})")
    if precision != "w8" and weights["constexpr_ops"]:
        problems.append(f"compressed weights {weights['constexpr_ops']} in an uncompressed package")
    weight_file = path / WEIGHT_FILE
    if problems:
        raise CoremlCheckError(f"{path.name}: " + "; ".join(problems))
    return {
        "spec_version": spec.specificationVersion,
        "input": {"name": INPUT_NAME, "shape": list(image.shape), "dtype": "float32", "batch_sizes": list(taken)},
        "outputs": shapes,
        "metadata_keys": sorted(stored),
        "weights": weights,
        "package_bytes": _dir_bytes(path),
        "weight_file_bytes": weight_file.stat().st_size if weight_file.exists() else 0,
    }


def reference_check(
    path: Path, source: Source, images: torch.Tensor, min_cosine: float, program: Any | None = None
) -> dict[str, dict[str, float]]:
    """The package's MIL program (reference interpreter; ``program`` if already loaded) against PyTorch on
    ``images``: per-output statistics; a :class:`~facetx.export.parity.ParityError` below ``min_cosine`` (a
    conversion bug, not FP16 rounding)."""
    from facetx.runtime.coreml import MilRunner

    stats = output_agreement(source.net, Predictor(MilRunner(path, program)), images, source.names)
    bad = {n: round(s["min_cosine"], 6) for n, s in stats.items() if not s["min_cosine"] >= min_cosine}
    if bad:
        raise ParityError(f"{path.name}: its MIL program differs from PyTorch (need cosine >= {min_cosine}): {bad}")
    return stats


# --- the stage -----------------------------------------------------------------------------------------------


def _convert_all(
    source: Source, real: torch.Tensor, settings: CoremlSettings, notes: list[str]
) -> tuple[dict[str, Any], dict[str, float], tuple[int, ...]]:
    """precision -> converted (unsaved) model, conversion seconds, and the batch sizes the packages take."""
    sizes = settings.batch_sizes
    t0 = time.perf_counter()
    traced = trace_network(source, _example(real, sizes[0]), settings.exporter)
    seconds = {"trace": time.perf_counter() - t0}
    wanted = set(settings.precisions) | ({"fp16"} if "w8" in settings.precisions else set())
    models: dict[str, Any] = {}
    for base in (b for b in ("fp16", "fp32") if b in wanted):  # W8 is the FP16 program with compressed weights
        t0 = time.perf_counter()
        try:
            models[base] = convert_network(traced, source, settings, base, sizes)
        except ValueError as e:
            if len(sizes) == 1 or "rank" not in str(e):
                raise
            # Core ML tensors have rank <= 5; the window attention's rank-6 partition folds away only at a fixed batch
            reason = str(e).strip()
            note = (
                f"coreml: batch_sizes {list(sizes)} do not convert ({reason}); the packages take batch {sizes[0]} only"
            )
            log.warning(note)
            notes.append(note)
            sizes = sizes[:1]
            traced = trace_network(source, _example(real, sizes[0]), settings.exporter)
            models[base] = convert_network(traced, source, settings, base, sizes)
        seconds[base] = time.perf_counter() - t0
    if "w8" in settings.precisions:
        t0 = time.perf_counter()
        models["w8"] = quantize_weights(models["fp16"], settings)
        seconds["w8"] = time.perf_counter() - t0
    return {p: models[p] for p in settings.precisions}, seconds, sizes


def _on_macos(
    stage: RuntimeStage,
    files: dict[str, Path],
    *,
    source: Source,
    data: ExportData,
    onnx: OnnxArtifacts,
    settings: CoremlSettings,
    eval_batch_size: int,
    real: torch.Tensor,
    threads: int | None,
    sizes: tuple[int, ...],
) -> dict[str, Any]:
    """Held-out metrics, agreement with PyTorch, accuracy against ONNX Runtime FP32, each package's own match
    threshold in its metadata, and the benchmark cases (Core ML framework: macOS only)."""
    from facetx.export.calibration import FAR, verification_threshold
    from facetx.export.int8_stage import verification_key
    from facetx.runtime.coreml import CoreMLRunner
    from facetx.runtime.sessions import OrtPredictor, make_session
    from facetx.training.evaluation import evaluate

    baseline = evaluate(
        OrtPredictor(make_session(onnx.paths["fp32"], threads)), data.report, batch_size=eval_batch_size
    )
    key = verification_key(baseline, None)
    report: dict[str, Any] = {"compute_units": settings.compute_units, "agreement_with_torch": {}, "accuracy": {}}
    for precision, path in files.items():
        predictor = Predictor(CoreMLRunner(path, settings.compute_units))
        metrics = evaluate(predictor, data.report, batch_size=eval_batch_size)
        stage.metrics[f"coreml/{precision}"] = metrics
        report["agreement_with_torch"][precision] = output_agreement(source.net, predictor, real, source.names)
        if key is not None and key in metrics:
            drop_pt = 100 * (baseline[key] - metrics[key])
            report["accuracy"][precision] = {
                "metric": key,
                "onnxruntime_fp32": baseline[key],
                "value": metrics[key],
                "drop_pt": round(drop_pt, 4),
            }
            if drop_pt > settings.max_drop_pt:
                note = (
                    f"coreml/{precision}: {key} {drop_pt:.2f} pt below ONNX Runtime FP32 (limit {settings.max_drop_pt})"
                )
                log.warning(note)
                stage.notes.append(note)
        threshold = verification_threshold(metrics, FAR)
        if threshold is not None:  # the package's own threshold, as calibration writes into each ONNX file
            pairs = {"genuine": threshold.genuine, "impostor": threshold.impostor}
            props = {
                "recognition.threshold": repr(threshold.value),
                "recognition.far": repr(FAR),
                "recognition.threshold_split": data.report_split,
                "recognition.threshold_pairs": json.dumps(pairs),
            }
            update_metadata(path, props)
        stage.cases.append(
            BenchCase(
                "coreml",
                precision,
                f"mlprogram-{settings.compute_units.lower()}",
                path=path,
                batches=sizes,
                factory=lambda p=path: CoreMLRunner(p, settings.compute_units),
            )
        )
        log.info("coreml/%s on %s: %s", precision, path.name, metrics)
    return report


def run_stage(
    *,
    source: Source,
    data: ExportData,
    onnx: OnnxArtifacts,
    int8: Int8Stage | None,
    out: Path,
    settings: CoremlSettings,
    eval_batch_size: int,
    real: torch.Tensor,
    threads: int | None,
    seed: int,
) -> RuntimeStage:
    """Convert, save and check every package; MIL reference agreement everywhere, predictions on macOS only."""
    del int8, seed  # Core ML quantizes its own weights; nothing is drawn
    from facetx.runtime.coreml import MilUnsupportedError, import_coremltools, load_program

    ct = import_coremltools()
    stage = RuntimeStage()
    models, seconds, sizes = _convert_all(source, real, settings, stage.notes)
    template = _template_props(source, data)
    report: dict[str, Any] = {
        "coremltools": ct.__version__,
        "torch": torch.__version__,
        # coremltools warns on import when torch is newer: this path is checked by the MIL reference instead
        "torch_tested_by_coremltools": getattr(getattr(ct, "_deps", None), "_TORCH_MAX_VERSION", None),
        "frontend": "torch.jit.trace (TorchScript)" if settings.exporter == "torchscript" else "torch.export",
        "minimum_deployment_target": settings.minimum_deployment_target,
        "batch_sizes": list(sizes),
        "convert_s": {k: round(v, 2) for k, v in seconds.items()},
        "packages": {},
        "reference": {},
    }
    files: dict[str, Path] = {}
    programs: dict[str, Any] = {}  # read back from disk: what is checked and interpreted is what was saved
    for precision, model in models.items():
        meta = {**package_metadata(onnx.meta, precision, settings), **template}
        describe(model, source, meta, settings)
        path = out / FILES[precision]
        shutil.rmtree(path, ignore_errors=True)
        model.save(str(path))
        programs[precision] = load_program(path)
        checked = check_package(
            path, source=source, batch_sizes=sizes, meta=meta, precision=precision, program=programs[precision]
        )
        report["packages"][precision] = {"file": path.name, **checked}
        files[precision] = path
        stage.paths[f"coreml_{precision}"] = path
        log.info("coreml/%s: %s, %.2f MB", precision, path.name, report["packages"][precision]["package_bytes"] / 1e6)
    if "fp16" in files and "w8" in files:
        fp16, w8 = (report["packages"][p]["weight_file_bytes"] for p in ("fp16", "w8"))
        report["w8_size_ratio"] = round(fp16 / max(w8, 1), 3)
    images = real[: settings.reference_images]
    for precision, path in files.items() if len(images) else ():
        try:
            stats = reference_check(path, source, images, settings.reference_min_cosine, programs[precision])
        except MilUnsupportedError as e:
            note = f"coreml/{precision}: MIL reference check not run ({e})"
            log.warning(note)
            stage.notes.append(note)
            continue
        report["reference"][precision] = stats
        worst = {n: round(s["min_cosine"], 6) for n, s in stats.items()}
        log.info("coreml/%s MIL program vs PyTorch on %d images (min cosine): %s", precision, len(images), worst)
    if sys.platform == "darwin":
        report["predictions"] = _on_macos(
            stage,
            files,
            source=source,
            data=data,
            onnx=onnx,
            settings=settings,
            eval_batch_size=eval_batch_size,
            real=real,
            threads=threads,
            sizes=sizes,
        )
    else:
        matched = sorted(report["reference"])
        checked = f"MIL programs of {matched} matched PyTorch in the reference interpreter"
        if not matched:
            checked = "no MIL program was run (see the reference notes)"
        note = (
            f"coreml: predictions, held-out metrics and timing skipped on {sys.platform}: the Core ML framework runs "
            f"models on macOS only; the packages were converted, their spec, metadata and weights checked, {checked}"
        )
        log.info(note)
        stage.notes.append(note)
        report["predictions"] = {"skipped": note}
    stage.report = report
    return stage
