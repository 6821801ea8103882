"""The :class:`Runner` interface every runtime implements, ONNX Runtime sessions behind it, a predictor that looks
like the torch network to ``facetx.training.evaluation.evaluate``, and the ``metadata_props`` of an ONNX model (what
export and INT8 write, what a runtime reads back)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

if TYPE_CHECKING:
    import onnx

GRAPH_LEVELS = ("disable", "basic", "extended", "layout", "all")


def make_session(
    path: str | Path,
    threads: int | None = 2,
    graph_optimization: str = "all",
    providers: Sequence[str] = ("CPUExecutionProvider",),
    spinning: bool = False,
) -> object:
    """An ``onnxruntime.InferenceSession`` with pinned intra-op threads (``None``: ORT's default, all cores).

    ``spinning``: let idle intra-op threads spin-wait (ORT's own default). Off here: measured on 2 cores with one
    other busy process, window_vit_nano at batch 1 took 10.7-11.5 ms spinning vs 5.0-6.6 ms not, and two spinning
    sessions timed in turns took 22 ms each vs 6 ms (each one's idle threads steal the other's cores), which made the
    export table's ordering decide its ratios. Spinning pays only on cores nothing else uses.
    """
    import onnxruntime as ort

    if graph_optimization not in GRAPH_LEVELS:
        raise ValueError(f"graph_optimization must be one of {GRAPH_LEVELS}, got {graph_optimization!r}")
    level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "layout": getattr(ort.GraphOptimizationLevel, "ORT_ENABLE_LAYOUT", ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[graph_optimization]
    opts = ort.SessionOptions()
    opts.graph_optimization_level = level
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=opts, providers=list(providers))


class Runner(Protocol):
    """One runtime's loaded model: ``run(images float32 [B, 3, H, W] in [0, 1])`` -> the outputs, in
    ``output_names`` order. ``fixed_batch``: the only batch size the model takes (None: any)."""

    output_names: list[str]
    fixed_batch: int | None

    def run(self, images: np.ndarray) -> list[np.ndarray]: ...


class OrtRunner:
    """:class:`Runner` over an ``onnxruntime.InferenceSession`` (see :func:`make_session`)."""

    def __init__(self, session: object) -> None:
        self.session = session
        inp = session.get_inputs()[0]
        self.input_name = inp.name
        b = inp.shape[0]
        self.fixed_batch = b if isinstance(b, int) and b > 0 else None
        self.output_names = [o.name for o in session.get_outputs()]

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self.output_names, {self.input_name: images})


def run_any_batch(runner: Runner, images: np.ndarray) -> list[np.ndarray]:
    """``runner.run`` on ``images [N, 3, H, W]`` of any ``N``: a fixed-batch runner gets chunks of its batch size, the
    last one zero-padded (the padding's outputs dropped)."""
    fb, n = runner.fixed_batch, len(images)
    if fb is None or n == fb:
        return runner.run(images)
    chunks = []
    for i in range(0, n, fb):
        part = images[i : i + fb]
        if len(part) < fb:
            part = np.concatenate([part, np.zeros((fb - len(part), *part.shape[1:]), part.dtype)])
        chunks.append(runner.run(part))
    return [np.concatenate([c[j] for c in chunks])[:n] for j in range(len(runner.output_names))]


class Predictor:
    """``predict(images [B, 3, H, W] float tensor in [0, 1])`` -> ``{output name: torch tensor}`` through any
    :class:`Runner`: what ``facetx.training.evaluation.evaluate`` and the parity check call in place of the network.

    A runner with a fixed batch size is fed in chunks of that size (the last chunk padded), so any batch works.
    """

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.output_names = list(runner.output_names)
        self.fixed_batch = runner.fixed_batch

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        return self.runner.run(images)

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        outs = run_any_batch(self.runner, images.detach().cpu().float().contiguous().numpy())
        return {name: torch.from_numpy(np.asarray(o)) for name, o in zip(self.output_names, outs, strict=True)}


class OrtPredictor(Predictor):
    """:class:`Predictor` over an ONNX Runtime session."""

    def __init__(self, session: object) -> None:
        super().__init__(OrtRunner(session))
        self.session = session


def set_metadata(model: onnx.ModelProto, props: Mapping[str, str]) -> None:
    """Replace ``metadata_props`` entries with ``props`` (strings) and keep the others."""
    keep = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for k, v in props.items():
        if not isinstance(v, str):
            raise TypeError(f"ONNX metadata value for {k!r} must be a string, got {type(v).__name__}")
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
