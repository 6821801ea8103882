"""LiteRT (TFLite) models behind the :class:`~facetx.runtime.sessions.Runner` interface: ``ai_edge_litert``'s
``Interpreter`` with its default XNNPACK delegate, the CPU runtime MediaPipe uses.

A ``.tflite`` from ``litert-torch`` has a static batch (the XNNPACK delegate cannot reshape it: the ViT's reshapes
bake the batch in), so a file serves one batch size; :class:`BatchSizes` puts several files (batch 1, batch 32) behind
one runner that picks the file by the batch it is given. Outputs are read through the model's signature, whose output
names are our head names (``embedding``, ``landmarks``, ...) when the converted module returned a dict.

Heavy imports happen inside the functions; this module imports no other facetx package.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: the signature litert-torch writes for a module converted without a name
DEFAULT_SIGNATURE = "serving_default"


def _quantize(x: np.ndarray, detail: Mapping[str, Any]) -> np.ndarray:
    """Float -> the integer dtype of a quantized input (per-tensor scale and zero point)."""
    scale, zero = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(detail["dtype"])


def _dequantize(x: np.ndarray, detail: Mapping[str, Any]) -> np.ndarray:
    """A quantized output back to float32; float outputs pass through."""
    if not np.issubdtype(x.dtype, np.integer):
        return x
    scale, zero = detail["quantization"]
    return ((x.astype(np.float32) - zero) * scale).astype(np.float32)


class LiteRtRunner:
    """:class:`~facetx.runtime.sessions.Runner` over one ``.tflite`` file: ``run(images float32 [B, 3, H, W] in
    [0, 1])`` -> the outputs in ``output_names`` order, ``B`` = ``fixed_batch`` (the file's static batch).

    ``threads``: the interpreter's (and XNNPACK's) thread count, None for LiteRT's default. ``output_names``: the
    order to return the signature's outputs in (each must be a signature output name); None: the order the converted
    module returned them in (output tensor index). ``xnnpack=False`` runs LiteRT's built-in kernels only (a
    comparison, not what MediaPipe does). A quantized input or output (full-integer I/O) is (de)quantized here, so
    callers always see float32.
    """

    def __init__(
        self,
        path: str | Path,
        threads: int | None = 2,
        output_names: Sequence[str] | None = None,
        signature: str | None = None,
        xnnpack: bool = True,
    ) -> None:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        self.path = Path(path)
        resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        self.interpreter = Interpreter(
            model_path=str(self.path), num_threads=threads, experimental_op_resolver_type=resolver
        )
        self.interpreter.allocate_tensors()  # applies the XNNPACK delegate
        signatures = self.interpreter.get_signature_list()
        if not signatures:
            raise ValueError(f"{self.path}: the model has no signature (not a litert-torch export?)")
        self.signature = signature or (DEFAULT_SIGNATURE if DEFAULT_SIGNATURE in signatures else next(iter(signatures)))
        if self.signature not in signatures:
            raise ValueError(f"{self.path}: no signature {self.signature!r} (it has {sorted(signatures)})")
        runner = self.interpreter.get_signature_runner(self.signature)
        inputs = runner.get_input_details()
        if len(inputs) != 1:
            raise ValueError(f"{self.path}: expected one image input, the signature has {sorted(inputs)}")
        self.input_name, self._input = next(iter(inputs.items()))
        outputs = runner.get_output_details()
        if output_names is None:
            # the signature lists its outputs sorted by name; the subgraph's output list keeps the order the module
            # returned them in (ai-edge-quantizer keeps it too, though its dequantized tensors get new indices)
            order = [d["index"] for d in self.interpreter.get_output_details()]
            output_names = sorted(outputs, key=lambda n: order.index(outputs[n]["index"]))
        unknown = [n for n in output_names if n not in outputs]
        if unknown:
            raise ValueError(f"{self.path}: no signature output(s) {unknown} (it has {sorted(outputs)})")
        self.output_names = list(output_names)
        self._outputs = [outputs[n] for n in self.output_names]
        self.input_shape = tuple(int(d) for d in self._input["shape"])
        self.fixed_batch: int | None = self.input_shape[0]

    def xnnpack_partitions(self) -> int:
        """How many partitions the XNNPACK delegate took: more than one means operators it does not take (run by
        LiteRT's own kernels) sit between them, on every call."""
        w = self.interpreter._interpreter  # the node names are only on the wrapper (no public accessor)
        return sum(w.NodeName(i) == "DELEGATE" for i in range(w.NumNodes()))

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        x = np.ascontiguousarray(images, dtype=np.float32)
        if x.shape != self.input_shape:
            raise ValueError(f"{self.path.name}: input of shape {x.shape}, the model takes {self.input_shape}")
        if self._input["dtype"] != np.float32:
            x = _quantize(x, self._input)
        it = self.interpreter
        it.set_tensor(self._input["index"], x)
        it.invoke()
        return [_dequantize(it.get_tensor(d["index"]), d) for d in self._outputs]


class BatchSizes:
    """One :class:`~facetx.runtime.sessions.Runner` over fixed-batch runners of the same model (e.g. batch 1 and
    32): a batch of ``B`` images goes through the largest runner whose batch fits, repeatedly; a remainder smaller
    than every batch is zero-padded. ``fixed_batch`` is None (any batch works); with a batch-1 runner none is padded.
    """

    def __init__(self, runners: Sequence[Any]) -> None:
        if not runners:
            raise ValueError("BatchSizes needs at least one runner")
        self.runners = {int(r.fixed_batch): r for r in sorted(runners, key=lambda r: r.fixed_batch)}
        names = {tuple(r.output_names) for r in self.runners.values()}
        if len(names) != 1:
            raise ValueError(f"BatchSizes: the runners' outputs differ: {sorted(names)}")
        self.output_names = list(names.pop())
        self.fixed_batch: int | None = None

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        n, i, parts = len(images), 0, []
        while i < n:
            batch = max((b for b in self.runners if b <= n - i), default=min(self.runners))
            part = images[i : i + batch]
            if len(part) < batch:
                part = np.concatenate([part, np.zeros((batch - len(part), *part.shape[1:]), part.dtype)])
            parts.append(self.runners[batch].run(part))
            i += batch
        if len(parts) == 1 and len(parts[0][0]) == n:
            return parts[0]
        return [np.concatenate([p[j] for p in parts])[:n] for j in range(len(self.output_names))]


def open_runner(
    paths: Mapping[int, str | Path],
    threads: int | None = 2,
    output_names: Sequence[str] | None = None,
) -> LiteRtRunner | BatchSizes:
    """A runner over ``{batch: .tflite path}``: the one file's :class:`LiteRtRunner`, or a :class:`BatchSizes`."""
    runners = [LiteRtRunner(p, threads, output_names) for p in paths.values()]
    return runners[0] if len(runners) == 1 else BatchSizes(runners)
