"""Build the INT8 model: pre-process, calibrate once, run the latency and accuracy sensitivity passes, save.

The callbacks of :mod:`facetx.quant.sensitivity` are realized here: speed is measured in the target runtime (ONNX
Runtime unless told otherwise) interleaved against the FP32 model at batch 1 on the pinned thread count, error with
ONNX Runtime on a few training images.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from facetx.quant import sensitivity
from facetx.quant.calibration import BatchReader
from facetx.quant.static import QuantRecipe, fp32_nodes, node_groups, preprocess, quantize, weight_only_nodes
from facetx.runtime.sessions import OrtRunner, Runner, make_session, set_metadata
from facetx.runtime.timing import paired_ratio, runner_call, time_interleaved

log = logging.getLogger(__name__)


@dataclass
class Int8Result:
    path: Path
    recipe: QuantRecipe
    report: sensitivity.SensitivityReport
    groups: dict[str, list[str]]
    fp32_nodes: dict[str, list[str]]
    weight_only: list[str]
    speedup_vs_fp32: float | None


def output_error(reference: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> float:
    """Mean over outputs of the mean per-sample relative L2 error ``|a - b| / |a|``."""
    errs = []
    for a, b in zip(reference, outputs, strict=True):
        a2, b2 = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
        errs.append(float(np.mean(np.linalg.norm(a2 - b2, axis=1) / (np.linalg.norm(a2, axis=1) + 1e-12))))
    return float(np.mean(errs))


class _Variants:
    """Quantized variants of one pre-processed model, memoized by recipe (the sensitivity pass asks repeatedly)."""

    def __init__(self, pre: Path, work: Path, reader: BatchReader) -> None:
        self.pre, self.work, self.reader = pre, work, reader
        self._paths: dict[str, Path] = {}

    def __call__(self, recipe: QuantRecipe, tag: str) -> Path:
        if tag.startswith("node"):
            # per-node variants are scored once: one file, overwritten, keeps the work folder small
            return quantize(self.pre, self.work / "node.onnx", recipe, self.work / "calibration", self.reader)
        key = repr(recipe)
        if key not in self._paths:
            path = self.work / f"{tag.replace('/', '_')}.onnx"
            self._paths[key] = quantize(self.pre, path, recipe, self.work / "calibration", self.reader)
        return self._paths[key]


def build_int8(
    fp32_path: str | Path,
    out_path: str | Path,
    work_dir: str | Path,
    calibration: Sequence[np.ndarray],
    probe: np.ndarray,
    recipe: QuantRecipe,
    threads: int | None = 2,
    select: Callable[[Path], float] | None = None,
    baseline: float | None = None,
    max_drop: float = 0.005,
    latency_search: bool = True,
    min_gain: float = 0.08,
    latency_runs: int = 30,
    max_nodes: int | None = None,
    metadata: Mapping[str, str] | None = None,
    proxy_outputs: Sequence[str] | None = None,
    runner_for: Callable[[Path], Runner] | None = None,
) -> Int8Result:
    """Quantize ``fp32_path`` into ``out_path`` (Q/DQ, per ``recipe``), keeping in FP32 what costs speed or accuracy.

    ``calibration``: float32 ``[B, 3, H, W]`` batches (training images, no augmentation). ``probe``: a few images for
    the output-error proxy and the latency pass. ``select(path) -> metric`` on held-out data with ``baseline`` (FP32)
    and ``max_drop`` (fraction): the accuracy pass runs only when given. ``proxy_outputs``: the outputs whose error
    ranks nodes (e.g. ``["embedding"]`` when verification accuracy steers; default all). ``runner_for(path)``: the
    runtime the latency pass times variants in (default ONNX Runtime): what INT8 makes slower depends on its kernels.
    """
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    pre = preprocess(fp32_path, work / "model.pre.onnx")
    pre_model = onnx.load(str(pre))
    groups = node_groups(pre_model)
    log.info("INT8 recipe %s; compute node groups: %s", recipe.name, {g: len(n) for g, n in groups.items()})
    variants = _Variants(pre, work, BatchReader(calibration))
    fp32_session = make_session(pre, threads)
    proxy = list(proxy_outputs or [o.name for o in fp32_session.get_outputs()])
    reference = fp32_session.run(proxy, {"image": probe})
    one = probe[:1]
    timed_fp32 = OrtRunner(fp32_session) if runner_for is None else runner_for(pre)

    def speed(paths: Mapping[str, Path]) -> dict[str, float]:
        fns = {"__fp32__": runner_call(timed_fp32, one)}
        for name, p in paths.items():
            fns[name] = runner_call(OrtRunner(make_session(p, threads)) if runner_for is None else runner_for(p), one)
        _, samples = time_interleaved(fns, batch=1, warmup=5, runs=latency_runs)
        return {name: paired_ratio(samples["__fp32__"], samples[name]) for name in paths}

    def error(path: Path) -> float:
        return output_error(reference, make_session(path, threads).run(proxy, {"image": probe}))

    report = sensitivity.SensitivityReport(recipe)
    current = recipe
    if latency_search:
        current = sensitivity.latency_pass(current, groups, variants, speed, min_gain=min_gain, report=report)
    else:
        current = current.with_(groups=tuple(g for g in current.groups if groups.get(g)))
    report.group_errors = sensitivity.group_errors(current, variants, error)
    if select is not None:
        if baseline is None:
            raise ValueError("build_int8: select needs the FP32 baseline metric")
        current = sensitivity.accuracy_pass(
            current, groups, variants, error, select, baseline, max_drop, max_nodes, report
        )
    report.recipe = current
    final = variants(current, "final")
    model = onnx.load(str(final))
    if metadata:
        set_metadata(model, dict(metadata))
    onnx.checker.check_model(model, full_check=True)
    out_path = Path(out_path)
    onnx.save(model, str(out_path))
    stayed = fp32_nodes(model, pre_model)
    speedup = speed({"final": out_path})["final"] if latency_search else None
    return Int8Result(out_path, current, report, groups, stayed, weight_only_nodes(model), speedup)


def cleanup(work_dir: str | Path) -> None:
    shutil.rmtree(work_dir, ignore_errors=True)
