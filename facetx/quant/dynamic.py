"""ONNX Runtime dynamic INT8, the candidate beside static Q/DQ on CPUs with int8 dot products (VNNI, AMX).

MatMul and Gemm weights are stored int8; activations are quantized per call from their own range
(``DynamicQuantizeLinear`` -> ``MatMulInteger``, fused by ONNX Runtime), so nothing is calibrated and no Q/DQ pair
surrounds every op. Measured by the export on a 2-core Xeon with AMX (the distilled window_vit_nano of the README,
one interleaved run): static Q/DQ 1.23x / 0.99x FP32 at batch 1 / 32, dynamic 1.48x / 1.22x. The export times both
and keeps the faster within the accuracy budget (:func:`choose_kind`); runtimes that need explicit Q/DQ (OpenVINO,
TensorRT) keep the static file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

#: ``quant.dynamic``: off; auto (try it where the CPU has VNNI or AMX); measure (try it on any CPU); force (keep it
#: whenever it is within the accuracy budget, whatever the timing: tests, and users who know their CPU)
DYNAMIC_MODES = ("off", "auto", "measure", "force")


def build_dynamic(pre_path: str | Path, out_path: str | Path) -> Path:
    """Dynamic INT8 of the pre-processed FP32 model: int8 MatMul/Gemm weights (per tensor: ONNX Runtime's fused
    dynamic MatMul kernels take one weight scale), activations quantized at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(pre_path),
        str(out_path),
        weight_type=QuantType.QInt8,
        per_channel=False,
        op_types_to_quantize=["MatMul", "Gemm"],
    )
    return Path(out_path)


def wants_dynamic(mode: str, regime: str) -> bool:
    """Whether the export builds and measures the dynamic candidate for ``mode`` on a CPU of ``regime``."""
    if mode not in DYNAMIC_MODES:
        from facetx.errors import ConfigError

        raise ConfigError(f"quant.dynamic={mode!r}: expected one of {list(DYNAMIC_MODES)}")
    return mode in ("measure", "force") or (mode == "auto" and regime in ("vnni", "amx"))


def choose_kind(mode: str, speed: Mapping[str, Mapping[int, float]], within_budget: bool, margin: float = 0.05) -> str:
    """``"dynamic"`` or ``"static"``: ``speed[kind][batch]`` is the speed-up over FP32 per batch size; dynamic wins
    when it is within the accuracy budget and its slowest batch size beats static's by ``margin``."""
    if not within_budget:
        return "static"
    if mode == "force":
        return "dynamic"
    return "dynamic" if min(speed["dynamic"].values()) > min(speed["static"].values()) * (1 + margin) else "static"
