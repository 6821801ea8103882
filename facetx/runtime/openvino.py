"""OpenVINO's CPU plugin behind the :class:`~facetx.runtime.sessions.Runner` interface.

OpenVINO reads our ONNX files directly (no IR conversion step): FP32 from ``model.onnx``, INT8 from the Q/DQ nodes
of ``model.int8.onnx`` (its low-precision transformations turn each Q/DQ pair into int8 kernels), BF16 from
``model.onnx`` with the ``bf16`` inference-precision hint. A model with a dynamic batch axis is compiled once per batch
size it sees, with that batch fixed: static shapes let the CPU plugin pick its kernels ahead of time (measured faster
than its dynamic-shape path at batch 1, see the export benchmark).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

#: facetx precision name -> OpenVINO's inference precision hint
PRECISION_HINTS = {"fp32": "f32", "int8": "f32", "bf16": "bf16"}  # int8 comes from the file's Q/DQ nodes


def openvino_missing() -> str | None:
    """None when ``openvino`` imports, else the one-line reason and the install command."""
    try:
        import openvino  # noqa: F401
    except ImportError as e:
        return f"the openvino package is not installed ({e}); pip install -e '.[openvino]'"
    return None


@lru_cache(maxsize=1)
def cpu_capabilities() -> frozenset[str]:
    """OpenVINO's ``OPTIMIZATION_CAPABILITIES`` of the CPU (``FP32``, ``INT8``, ``BF16`` where AMX/AVX512_BF16...)."""
    import openvino as ov

    return frozenset(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


class OpenVinoRunner:
    """:class:`~facetx.runtime.sessions.Runner` over OpenVINO's CPU plugin for the ONNX file at ``path``.

    ``threads``: ``INFERENCE_NUM_THREADS`` (None: OpenVINO's default, all cores); ``precision``: ``fp32``, ``int8``
    (the file must carry Q/DQ nodes) or ``bf16``; ``performance_hint``: ``LATENCY`` (one stream) or ``THROUGHPUT``.
    """

    def __init__(
        self,
        path: str | Path,
        threads: int | None = 2,
        precision: str = "fp32",
        performance_hint: str = "LATENCY",
    ) -> None:
        import openvino as ov

        if precision not in PRECISION_HINTS:
            raise ValueError(f"OpenVinoRunner: precision must be one of {sorted(PRECISION_HINTS)}, got {precision!r}")
        self.core = ov.Core()
        self.model = self.core.read_model(str(path))
        self.config = {"PERFORMANCE_HINT": performance_hint, "INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision]}
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = int(threads)
        self.input_name = self.model.inputs[0].get_any_name()
        self.output_names = [o.get_any_name() for o in self.model.outputs]
        batch = self.model.inputs[0].get_partial_shape()[0]
        self.fixed_batch = batch.get_length() if batch.is_static else None
        self._requests: dict[int, object] = {}

    def _request(self, batch: int) -> object:
        """An infer request of the model compiled for ``batch`` images (compiled on first use)."""
        request = self._requests.get(batch)
        if request is None:
            model = self.model.clone()
            if self.fixed_batch is None:
                shape = self.model.inputs[0].get_partial_shape()
                shape[0] = batch
                model.reshape({self.input_name: shape})
            request = self.core.compile_model(model, "CPU", self.config).create_infer_request()
            self._requests[batch] = request
        return request

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        request = self._request(len(images))
        request.infer({0: images}, share_inputs=True)
        # copies: the request's output buffers are overwritten by its next call
        return [np.array(request.get_output_tensor(i).data) for i in range(len(self.output_names))]
