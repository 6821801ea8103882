"""The LiteRT (TFLite) runtime of ``export.py`` (``runtime=[onnxruntime,tflite]``): ``model.tflite`` (FP32) converted
from PyTorch with ``litert-torch``, ``model.int8.tflite`` quantized from it with ``ai-edge-quantizer`` on training
images, both run through ``ai_edge_litert``'s interpreter with XNNPACK (what MediaPipe runs on CPU).

A ``.tflite`` has a static batch: the XNNPACK delegate cannot resize the converted ViT (its reshapes bake the batch
in) and litert-torch 0.10 fails to lower a dynamic batch dimension, so each batch size of ``batches`` is its own file
(``model.tflite`` is batch 1, ``model.b32.tflite`` batch 32); one runner picks the file by batch size.

Output names: the converted module returns a dict, so the signature's outputs are named by our heads
(``embedding``, ``landmarks``, ...); the runner returns them in ``source.names`` order.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from facetx.errors import ConfigError
from facetx.export.benchmark import BenchCase
from facetx.export.contracts import Int8Stage, OnnxArtifacts, RuntimeStage, Source
from facetx.export.data import ExportData
from facetx.export.int8_stage import verification_key
from facetx.export.onnx_export import ExportWrapper
from facetx.export.parity import check_parity, output_agreement
from facetx.export.settings import QuantTargets
from facetx.runtime.litert import LiteRtRunner, open_runner
from facetx.runtime.sessions import Predictor
from facetx.runtime.system import isa_flags, isa_regime
from facetx.runtime.timing import paired_ratio, runner_call, time_interleaved
from facetx.training.evaluation import evaluate

log = logging.getLogger(__name__)

#: import name -> pip distribution, for the one-line hint of an absent dependency
REQUIRED = {
    "litert_torch": "litert-torch",
    "ai_edge_litert": "ai-edge-litert",
    "ai_edge_quantizer": "ai-edge-quantizer",
}
PRECISIONS = ("fp32", "int8")
#: static: int8 weights and activations on ``static_ops`` (operators XNNPACK runs in int8), FP32 between Q/DQ
#: elsewhere, one XNNPACK partition; dynamic: int8 weights, activations quantized per call by XNNPACK (no
#: calibration); weight_only: int8 weights, FP32 activations (XNNPACK's f32 x int8-weight kernels). Not offered:
#: quantizing every operator ai-edge-quantizer can (LayerNorm, softmax, GELU, batch-matmul leave XNNPACK: 23
#: partitions on the tiny model, 63 on window_vit_nano, slower than FP32 at batch 32, and LiteRT aborted the process
#: on a constant-folded window_vit_nano)
RECIPES = ("static", "dynamic", "weight_only")
#: XNNPACK runs these in int8 inside one partition; ADD/SUB (scale-ratio limits), BATCH_MATMUL, SOFTMAX, GELU and
#: LayerNorm's RSQRT/SQUARED_DIFFERENCE would leave it. MUL and MEAN would stay inside but are LayerNorm's lossy half.
STATIC_OPS = ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE", "RESHAPE", "SLICE")


@dataclass(frozen=True)
class TfliteSettings:
    """``conf/runtime/tflite.yaml``: which precisions, batch sizes and INT8 recipe."""

    precisions: list[str] = field(default_factory=lambda: list(PRECISIONS))
    #: one static-batch file per size (the benchmark's batch sizes; 1 must be among them for batch-1 latency)
    batches: list[int] = field(default_factory=lambda: [1, 32])
    int8_recipe: str = "static"
    #: the TFLite operators the static recipe quantizes: matmuls and convolutions, and the data movement between
    #: them (fewer Q/DQ pairs: FC/conv alone measured 0.88-0.97x FP32 at batch 32 on window_vit_nano, AVX2)
    static_ops: list[str] = field(default_factory=lambda: list(STATIC_OPS))
    #: real training images (no augmentation), never the held-out sets
    calibration_batches: int = 8
    calibration_batch_size: int = 32
    parity_min_cosine: float = 0.9999
    #: fold constant-only subgraphs at conversion (one XNNPACK partition for the windowed ViTs; ~10% slower to convert)
    fold_constants: bool = True
    #: interleaved batch-1 runs of INT8 vs FP32 for the report's speed target (0: skip; the benchmark times both)
    speed_runs: int = 30
    targets: QuantTargets = field(default_factory=QuantTargets)

    def __post_init__(self) -> None:  # checked when runtime_choices builds it, before anything is exported
        unknown = sorted(set(self.precisions) - set(PRECISIONS))
        if unknown or "fp32" not in self.precisions:
            raise ConfigError(
                f"runtime.tflite.precisions={list(self.precisions)}: expected fp32 (the parity gate, and the file "
                f"INT8 is quantized from) and optionally int8"
            )
        if not self.batches or any(int(b) < 1 for b in self.batches):
            raise ConfigError(
                f"runtime.tflite.batches={list(self.batches)}: expected positive batch sizes, e.g. [1, 32]"
            )
        if self.int8_recipe not in RECIPES:
            raise ConfigError(f"runtime.tflite.int8_recipe={self.int8_recipe!r}: expected one of {list(RECIPES)}")


#: the settings type :func:`facetx.export.runtimes.runtime_choices` builds from ``cfg.runtime.tflite``
SETTINGS = TfliteSettings


def missing() -> str | None:
    """A one-line reason when litert-torch, ai-edge-litert or ai-edge-quantizer is absent (found without importing
    them: the import of litert-torch alone takes seconds)."""
    absent = []
    for module, dist in REQUIRED.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a parent package missing, or a module entry set to None
            found = False
        if not found:
            absent.append(dist)
    if not absent:
        return None
    return f"{', '.join(absent)} not installed (pip install -e '.[tflite]')"


class NamedOutputs(ExportWrapper):
    """``forward(image [B, 3, H, W] in [0, 1])`` -> ``{name: output}`` in ``output_names`` order: litert-torch names
    the signature outputs after the dict keys (a tuple would give ``output_0``, ``output_1``, ...)."""

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:  # type: ignore[override]
        return dict(zip(self.output_names, super().forward(image), strict=True))


@contextmanager
def _quiet_litert() -> Iterator[None]:
    """litert-torch prints a progress line per conversion step; keep the export's log readable."""
    import litert_torch

    before = litert_torch.config.show_progress
    litert_torch.config.show_progress = False
    try:
        yield
    finally:
        litert_torch.config.show_progress = before


def convert_fp32(
    net: nn.Module, names: list[str], path: Path, batch: int, input_size: int, fold_constants: bool = True
) -> float:
    """``net`` -> an FP32 ``.tflite`` at ``path`` taking ``[batch, 3, input_size, input_size]``; returns seconds.

    ``fold_constants``: let LiteRT evaluate what depends on constants only (the shifted-window attention mask:
    SELECT/EQUAL/PAD that XNNPACK does not take and would run between two delegate partitions on every call).
    """
    import litert_torch

    module = NamedOutputs(net, names).eval()
    sample = (torch.zeros(batch, 3, input_size, input_size),)
    t0 = time.perf_counter()
    with _quiet_litert(), torch.no_grad():
        edge = litert_torch.convert(module, sample, runtime_constant_folding=fold_constants)
        edge.export(str(path))
    return time.perf_counter() - t0


def int8_recipe(name: str, static_ops: list[str]) -> list[dict[str, Any]]:
    """The ai-edge-quantizer recipe of ``name`` (:data:`RECIPES`); model inputs and outputs stay float32 in every
    one (callers feed [0, 1] images, MediaPipe's float tensors)."""
    from ai_edge_quantizer import qtyping, recipe, recipe_manager
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    ops = qtyping.TFLOperationName
    if name == "dynamic":
        return recipe.dynamic_wi8_afp32()
    if name == "weight_only":
        return recipe.weight_only_wi8_afp32()
    unknown = [op for op in static_ops if op not in ops.__members__]
    if unknown:
        raise ConfigError(f"runtime.tflite.static_ops: unknown TFLite operator(s) {unknown}")
    manager = recipe_manager.RecipeManager()
    targets = [ops[op] for op in static_ops]
    for op in targets:
        # per-channel symmetric int8 weights, per-tensor asymmetric int8 activations from min/max
        manager.add_static_config(".*", op, activation_num_bits=8, weight_num_bits=8)
    for io in (ops.INPUT, ops.OUTPUT):  # float I/O: a QUANTIZE after the input, DEQUANTIZE before each output
        manager.add_quantization_config(".*", io, algorithm_key=AlgorithmName.NO_QUANTIZE)
    return manager.get_quantization_recipe()


def quantize_int8(fp32: Path, path: Path, recipe: list[dict[str, Any]], images: np.ndarray) -> float:
    """Quantize ``fp32`` into ``path`` with ``recipe``, calibrated (when the recipe needs it) on ``images
    [N, 3, H, W]`` in batches of the file's static batch (``N`` a multiple of it); returns seconds."""
    from ai_edge_quantizer import quantizer

    t0 = time.perf_counter()
    q = quantizer.Quantizer(str(fp32), recipe)
    qsv = None
    if q.need_calibration:
        runner = LiteRtRunner(fp32, threads=1)
        batch = runner.fixed_batch or 1
        feed = [{runner.input_name: images[i : i + batch]} for i in range(0, len(images) - batch + 1, batch)]
        # one thread: min/max of the same images whatever the file's batch (the b1 and b32 files get equal scales)
        qsv = q.calibrate({runner.signature: feed}, num_threads=1)
    q.quantize(qsv, enable_progress_report=False).export_model(str(path), overwrite=True)
    return time.perf_counter() - t0


def _file(precision: str, batch: int) -> str:
    stem = "model" if precision == "fp32" else f"model.{precision}"
    return f"{stem}.tflite" if batch == 1 else f"{stem}.b{batch}.tflite"


def _speedup(fp32: Any, int8: Any, images: np.ndarray, runs: int) -> float | None:
    """INT8 speed over FP32 (FP32 time / INT8 time, median of interleaved rounds) at the runners' batch."""
    if runs < 1:
        return None
    x = np.ascontiguousarray(np.resize(images, (fp32.fixed_batch, *images.shape[1:])), dtype=np.float32)
    fns = {"fp32": runner_call(fp32, x), "int8": runner_call(int8, x)}
    _, samples = time_interleaved(fns, batch=len(x), warmup=3, runs=runs, block=max(1, min(5, runs // 6)))
    return paired_ratio(samples["fp32"], samples["int8"])


def run_stage(
    *,
    source: Source,
    data: ExportData,
    onnx: OnnxArtifacts,
    int8: Int8Stage | None,
    out: Path,
    settings: TfliteSettings,
    eval_batch_size: int,
    real: torch.Tensor,
    threads: int | None,
    seed: int,
) -> RuntimeStage:
    """Convert, parity-check (FP32 vs PyTorch on ``real``), quantize, evaluate on the held-out sets and hand the
    benchmark its cases. ``onnx`` and ``int8`` (ONNX Runtime's) are not read: LiteRT converts from PyTorch."""
    batches = sorted({int(b) for b in settings.batches})
    names, size = source.names, source.input_size
    recipe = int8_recipe(settings.int8_recipe, list(settings.static_ops)) if "int8" in settings.precisions else None
    files: dict[str, dict[int, Path]] = {p: {b: out / _file(p, b) for b in batches} for p in settings.precisions}
    seconds: dict[str, float] = {}
    parity: dict[str, dict[str, dict[str, float]]] = {}
    partitions: dict[str, int] = {}
    for batch, path in files["fp32"].items():
        seconds[path.name] = round(convert_fp32(source.net, names, path, batch, size, settings.fold_constants), 3)
        runner = LiteRtRunner(path, threads, names)
        # batch 1: eight single images; larger: the real images padded up to the batch by the predictor
        checks = [real[i : i + 1] for i in range(min(8, len(real)))] if batch == 1 else [real[:batch]]
        parity[path.name] = check_parity(
            source.net, Predictor(runner), checks, names, settings.parity_min_cosine, str(path)
        )
        partitions[path.name] = runner.xnnpack_partitions()
        worst = {n: round(s["min_cosine"], 7) for n, s in parity[path.name].items()}
        log.info("parity %s vs PyTorch (min cosine): %s; converted in %.1f s", path.name, worst, seconds[path.name])

    report: dict[str, Any] = {
        "converter": "litert-torch (torch.export -> .tflite), signature outputs named by head",
        "runtime": "ai_edge_litert Interpreter, XNNPACK delegate",
        "threads": threads,
        "batches": batches,
        "parity": parity,
        "convert_seconds": seconds,
    }
    notes = [f"tflite: LiteRT interpreter with XNNPACK, one static-batch file per batch size ({batches})"]
    if "int8" in settings.precisions:
        report["int8"] = _int8(source, data, files, settings, recipe, seed, real, threads, seconds, partitions)
        notes.append(f"tflite INT8: ai-edge-quantizer recipe {settings.int8_recipe!r}, float32 inputs and outputs")
        notes += report["int8"]["notes"]
    report["xnnpack_partitions"] = partitions

    metrics: dict[str, dict[str, float]] = {}
    cases, paths = [], {}
    for precision, by_batch in files.items():
        # evaluation: the largest file takes whole batches, the batch-1 file the rest (no padded images)
        runner = open_runner(by_batch, threads, names)
        metrics[f"tflite/{precision}"] = evaluate(Predictor(runner), data.report, batch_size=eval_batch_size)
        for batch, path in by_batch.items():
            paths[f"tflite_{precision}" if batch == 1 else f"tflite_{precision}_b{batch}"] = path
            # a case per file: its row names its own file (best.json) and size; a distinct graph name per batch
            cases.append(
                BenchCase(
                    "tflite",
                    precision,
                    "xnnpack" if batch == 1 else f"xnnpack-b{batch}",
                    path=path,
                    batches=(batch,),
                    factory=lambda p=path: LiteRtRunner(p, threads, names),
                )
            )
    if "int8" in settings.precisions:
        key = verification_key(metrics["tflite/fp32"], None)
        drop = None if key is None else (metrics["tflite/fp32"][key] - metrics["tflite/int8"][key]) * 100
        report["int8"]["held_out"] = {"metric": key, "drop_pt": drop}
    report["files"] = {k: p.name for k, p in paths.items()}
    report["size_bytes"] = {p.name: p.stat().st_size for p in paths.values()}
    return RuntimeStage(paths=paths, metrics=metrics, report=report, notes=notes, cases=cases)


def _int8(
    source: Source,
    data: ExportData,
    files: dict[str, dict[int, Path]],
    settings: TfliteSettings,
    recipe: list[dict[str, Any]],
    seed: int,
    real: torch.Tensor,
    threads: int | None,
    seconds: dict[str, float],
    partitions: dict[str, int],
) -> dict[str, Any]:
    """Quantize every FP32 file with ``recipe``; agreement with PyTorch, size and speed against the targets."""
    calibrated = settings.int8_recipe == "static"
    images = np.zeros((0, 3, source.input_size, source.input_size), np.float32)
    if calibrated:
        images = np.concatenate(data.calibration(settings.calibration_batch_size, settings.calibration_batches, seed))
        # the same images for every file: as many as fill whole batches of the largest one
        largest = max(files["int8"])
        images = images[: len(images) // largest * largest]
        if not len(images):
            raise ConfigError(
                f"runtime.tflite: {settings.calibration_batches} x {settings.calibration_batch_size} calibration "
                f"images cannot fill one batch of {largest}; raise calibration_batches or calibration_batch_size"
            )
    for batch, path in files["int8"].items():
        seconds[path.name] = round(quantize_int8(files["fp32"][batch], path, recipe, images), 3)
        partitions[path.name] = LiteRtRunner(path, threads).xnnpack_partitions()
        log.info("quantized %s (%s) in %.1f s", path.name, settings.int8_recipe, seconds[path.name])
    b1 = min(files["fp32"])
    fp32_runner = LiteRtRunner(files["fp32"][b1], threads, source.names)
    int8_runner = LiteRtRunner(files["int8"][b1], threads, source.names)
    agreement = output_agreement(source.net, Predictor(int8_runner), real, source.names)
    size_fp32, size_int8 = files["fp32"][b1].stat().st_size, files["int8"][b1].stat().st_size
    speedup = _speedup(fp32_runner, int8_runner, real.numpy(), settings.speed_runs)
    t = settings.targets
    ratio = size_fp32 / max(size_int8, 1)
    notes = []
    if ratio < t.min_size_ratio:
        notes.append(f"tflite INT8: {ratio:.2f}x smaller than FP32, below the {t.min_size_ratio}x target")
    if speedup is not None and speedup < t.min_speedup:
        notes.append(f"tflite INT8: {speedup:.2f}x FP32's speed at batch {b1}, below the {t.min_speedup}x target")
    return {
        "recipe": {
            "name": settings.int8_recipe,
            "tool": "ai-edge-quantizer",
            "static_ops": list(settings.static_ops) if settings.int8_recipe == "static" else None,
            "entries": recipe,
        },
        "isa_regime": isa_regime(),
        "isa_flags": isa_flags(),
        "calibration": {
            "images": len(images),
            "source": "training set (no augmentation)" if calibrated else "none (the recipe needs no calibration)",
        },
        "agreement_with_torch": agreement,
        "size_bytes": {"fp32": size_fp32, "int8": size_int8},
        "size_ratio": ratio,
        f"speedup_vs_fp32_b{b1}": speedup,
        "targets": {"min_size_ratio": t.min_size_ratio, "min_speedup": t.min_speedup},
        "notes": notes,
    }
