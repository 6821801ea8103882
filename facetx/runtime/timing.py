"""Latency measurement for torch, ONNX Runtime and TensorRT callables: warm-up, many timed runs, medians.

On a shared CPU absolute latencies drift with the load; :func:`time_interleaved` runs the candidates round-robin (in
short blocks) so that every one sees the same load, and ratios between them stay meaningful.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class Timing:
    """Latency of one call on ``batch`` images (milliseconds) and the throughput it implies."""

    batch: int
    runs: int
    p50_ms: float
    p95_ms: float
    mean_ms: float
    images_per_s: float

    @classmethod
    def from_samples(cls, seconds: np.ndarray, batch: int) -> Timing:
        ms = np.asarray(seconds, dtype=np.float64) * 1e3
        p50 = float(np.median(ms))
        return cls(batch=batch, runs=len(ms), p50_ms=p50, p95_ms=float(np.percentile(ms, 95)),
                   mean_ms=float(ms.mean()), images_per_s=batch * 1e3 / p50 if p50 > 0 else float("inf"))  # fmt: skip

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def time_interleaved(
    fns: Mapping[str, Callable[[], object]],
    batch: int,
    warmup: int = 10,
    runs: int = 50,
    block: int = 5,
    sync: Callable[[], None] | None = None,
) -> tuple[dict[str, Timing], dict[str, np.ndarray]]:
    """Time each zero-argument callable ``runs`` times, in blocks of ``block`` runs taken round-robin.

    Blocks rather than single calls: runtimes keep idle threads spinning for a while after a call (ONNX Runtime,
    OpenMP), which would steal the cores from the next candidate; each block starts with one discarded call. Every
    candidate gets ``warmup`` calls first. ``sync`` is called before the clock stops (CUDA synchronization).
    Returns per-name :class:`Timing` and the raw seconds shaped ``[rounds, block]`` (row ``i`` of every name shares
    round ``i``, see :func:`paired_ratio`).
    """
    if runs < 1 or warmup < 0 or block < 1:
        raise ValueError(f"time_interleaved: need runs >= 1, block >= 1, warmup >= 0; got {runs}, {block}, {warmup}")
    block = min(block, runs)
    rounds = -(-runs // block)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
        if sync is not None:
            sync()
    samples = {name: np.empty((rounds, block)) for name in fns}
    for r in range(rounds):
        for name, fn in fns.items():
            fn()  # settles the thread pools after the previous candidate
            if sync is not None:
                sync()
            for i in range(block):
                t0 = time.perf_counter()
                fn()
                if sync is not None:
                    sync()
                samples[name][r, i] = time.perf_counter() - t0
    return {name: Timing.from_samples(s.ravel(), batch) for name, s in samples.items()}, samples


def paired_ratio(numerator: np.ndarray, denominator: np.ndarray) -> float:
    """Median over rounds of ``median(numerator[i]) / median(denominator[i])``: a speed ratio of two candidates timed
    in the same rounds, robust to the load drifting over time. 1-D inputs are one sample per round."""
    a, b = np.asarray(numerator), np.asarray(denominator)
    a = a.reshape(len(a), -1)
    b = b.reshape(len(b), -1)
    return float(np.median(np.median(a, axis=1) / np.median(b, axis=1)))


def cpu_ms_per_call(fn: Callable[[], object], runs: int = 10, settle_s: float = 0.05) -> float:
    """Process CPU time (all threads) per call, in ms: the work a call costs, nearly independent of other load.

    Only meaningful when the runtime does not spin-wait between calls (ORT ``allow_spinning=0``, OpenMP passive):
    spinning threads are counted as work. ``settle_s``: pause first so other sessions' spinning threads go to sleep.
    """
    fn()
    time.sleep(settle_s)
    t0 = time.process_time()
    for _ in range(runs):
        fn()
    return (time.process_time() - t0) * 1e3 / runs


def torch_call(net: nn.Module, images: torch.Tensor) -> Callable[[], object]:
    """A zero-argument call of ``net(images)`` without autograd (eager mode)."""

    def run() -> object:
        with torch.inference_mode():
            return net(images)

    return run


def ort_call(session: object, images: np.ndarray) -> Callable[[], object]:
    """A zero-argument ``session.run`` on ``images`` (all outputs)."""
    feed = {session.get_inputs()[0].name: np.ascontiguousarray(images, dtype=np.float32)}
    return lambda: session.run(None, feed)


def speedups_by_batch(
    runners: Mapping[str, object], inputs: Sequence[np.ndarray], reference: str, runs: int, warmup: int = 3
) -> dict[str, dict[int, float]]:
    """``{name: {batch: reference time / name's time}}`` for every runner but ``reference``, each input batch timed
    in its own interleaved loop (:func:`time_interleaved`, :func:`paired_ratio`); the runners are reused across
    batches."""
    out: dict[str, dict[int, float]] = {k: {} for k in runners if k != reference}
    for x in inputs:
        fns = {k: runner_call(r, x) for k, r in runners.items()}
        _, samples = time_interleaved(fns, batch=len(x), warmup=warmup, runs=runs)
        for k in out:
            out[k][len(x)] = round(paired_ratio(samples[reference], samples[k]), 3)
    return out


def runner_call(runner: object, images: np.ndarray) -> Callable[[], object]:
    """A zero-argument ``runner.run`` on ``images`` (any :class:`~facetx.runtime.sessions.Runner`)."""
    x = np.ascontiguousarray(images, dtype=np.float32)
    return lambda: runner.run(x)


def count_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@torch.no_grad()
def count_gflops(net: nn.Module, input_size: int = 112) -> float:
    """GFLOPs of one forward pass on one image (2 x multiply-adds of matmuls, convolutions and attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        net(torch.rand(1, 3, input_size, input_size))
    return counter.get_total_flops() / 1e9
