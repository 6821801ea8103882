"""Benchmark rows for the exported artifacts: torch eager, ONNX Runtime FP32/INT8, TensorRT FP16/INT8.

CPU runtimes at one batch size are timed round-robin in one loop (same load for all, so their ratios hold even on a
busy machine), every session with spin-waiting off: idle spinning threads of one session steal the cores of the next,
so with it on the order of the cases decided their ratios (see :func:`facetx.runtime.sessions.make_session`).
TensorRT is timed on the GPU with CUDA events. The run count adapts to a time budget per case.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facetx.runtime.sessions import OrtRunner, Runner, make_session
from facetx.runtime.system import cpu_model, load_average
from facetx.runtime.timing import (
    Timing,
    count_gflops,
    count_params,
    cpu_ms_per_call,
    paired_ratio,
    runner_call,
    time_interleaved,
    torch_call,
)

log = logging.getLogger(__name__)

#: timed on the GPU with CUDA events, not in the interleaved CPU loop
GPU_RUNTIMES = ("tensorrt",)


@dataclass
class BenchCase:
    """One runtime x precision: a torch ``module`` or a model/engine file at ``path``; ``batches`` limits sizes."""

    runtime: str
    precision: str
    graph: str
    module: nn.Module | None = None
    path: Path | None = None
    batches: tuple[int, ...] | None = None
    #: builds the case's :class:`~facetx.runtime.sessions.Runner`; None: a (non-spinning) ONNX Runtime session on
    #: ``path``
    factory: Callable[[], Runner] | None = None

    def runner(self, threads: int | None) -> Runner:
        if self.factory is not None:
            return self.factory()
        return OrtRunner(make_session(self.path, threads))

    @property
    def name(self) -> str:
        return f"{self.runtime}/{self.precision}/{self.graph}"


def _tile(images: np.ndarray, batch: int) -> np.ndarray:
    reps = -(-batch // len(images))
    return np.ascontiguousarray(np.concatenate([images] * reps)[:batch], dtype=np.float32)


def _size_mb(case: BenchCase) -> float:
    if case.path is not None and case.path.is_dir():  # a bundle (.mlpackage, OpenVINO IR pair)
        return sum(f.stat().st_size for f in case.path.rglob("*") if f.is_file()) / 1e6
    if case.path is not None:
        weights = case.path.with_suffix(".bin")  # an OpenVINO IR's weights sit beside its .xml
        extra = weights.stat().st_size if case.path.suffix == ".xml" and weights.is_file() else 0
        return (case.path.stat().st_size + extra) / 1e6
    return sum(t.numel() * t.element_size() for t in case.module.state_dict().values()) / 1e6


def _device(case: BenchCase) -> str:
    """What a CPU-loop case runs on: an ORT GPU execution provider (graph ``cuda-ep`` / ``tensorrt-ep``) or the CPU."""
    return f"gpu ({case.graph})" if case.graph.endswith("-ep") else f"cpu ({cpu_model()})"


def _plan_runs(fns: dict, warmup: int, runs: int, min_runs: int, seconds_per_case: float) -> tuple[int, int]:
    """Time one call of each to size the loop: about ``seconds_per_case`` per case, within [min_runs, runs]."""
    est = 0.0
    for fn in fns.values():
        fn()
        t0 = time.perf_counter()
        fn()
        est += time.perf_counter() - t0
    n = int(seconds_per_case * len(fns) / max(est, 1e-6))
    n = max(min_runs, min(runs, n))
    return max(1, min(warmup, n // 2)), n


def benchmark(
    cases: Sequence[BenchCase],
    net: nn.Module,
    images: np.ndarray,
    batches: Sequence[int],
    threads: int | None,
    warmup: int = 10,
    runs: int = 50,
    min_runs: int = 5,
    seconds_per_case: float = 5.0,
    input_size: int = 112,
) -> list[dict[str, object]]:
    """Rows (dicts) with timing, size, params and GFLOPs per case and batch size; metrics are added by the caller."""
    params_m = count_params(net) / 1e6
    gflops = count_gflops(net, input_size)
    rows = []
    runners = {c.name: c.runner(threads) for c in cases if c.runtime not in GPU_RUNTIMES and c.module is None}
    for batch in batches:
        x = _tile(images, int(batch))
        todo = [c for c in cases if c.batches is None or batch in c.batches]
        cpu = [c for c in todo if c.runtime not in GPU_RUNTIMES]
        fns = {}
        for c in cpu:
            if c.module is not None:
                fns[c.name] = torch_call(c.module.eval(), torch.from_numpy(x))
            else:
                fns[c.name] = runner_call(runners[c.name], x)
        timings: dict[str, Timing] = {}
        samples: dict[str, np.ndarray] = {}
        load = load_average()
        if fns:
            w, n = _plan_runs(fns, warmup, runs, min_runs, seconds_per_case)
            timings, samples = time_interleaved(fns, batch=int(batch), warmup=w, runs=n, block=max(1, min(5, n // 10)))
        # the load-independent view: process CPU time per call (no thread spin-waits, so it is the work itself)
        cpu_ms = {c.name: cpu_ms_per_call(fns[c.name], runs=max(2, min(n, 20))) for c in cpu}
        gpu_name = None
        for c in todo:
            if c.runtime in GPU_RUNTIMES:
                from facetx.export.tensorrt import TrtRunner, time_engine

                secs = time_engine(
                    TrtRunner(c.path), int(batch), input_size, warmup=max(warmup, 20), runs=max(runs, 100)
                )
                timings[c.name] = Timing.from_samples(np.asarray(secs), int(batch))
                gpu_name = torch.cuda.get_device_name()
        load = max(load, load_average())
        ref = next(
            (c.name for c in cpu if c.runtime == "onnxruntime" and c.precision == "fp32" and c.graph != "fixed-b1"),
            None,
        )
        for c in todo:
            t = timings[c.name]
            row: dict[str, object] = {
                "runtime": c.runtime,
                "precision": c.precision,
                "graph": c.graph,
                "batch": int(batch),
                "params_m": round(params_m, 3),
                "gflops": round(gflops, 3),
                "size_mb": round(_size_mb(c), 3),
                "p50_ms": round(t.p50_ms, 3),
                "p95_ms": round(t.p95_ms, 3),
                "images_per_s": round(t.images_per_s, 1),
                "cpu_ms": round(cpu_ms[c.name], 3) if c.name in cpu_ms else None,
                "runs": t.runs,
                "load_avg": round(load, 2),
                "device": gpu_name if c.runtime in GPU_RUNTIMES else _device(c),
            }
            if ref is not None and c.name in samples:
                row["speed_vs_ort_fp32"] = round(paired_ratio(samples[ref], samples[c.name]), 3)
            rows.append(row)
            log.info(
                "bench %-28s batch %3d: p50 %.2f ms, p95 %.2f ms, %.1f img/s",
                c.name,
                batch,
                t.p50_ms,
                t.p95_ms,
                t.images_per_s,
            )
    return rows
