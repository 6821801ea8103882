"""The TensorRT stage of ``export.py`` (``export.tensorrt=true``): FP16 and INT8 engines, held-out metrics, parity.

INT8 uses explicit quantization from a Q/DQ graph. TensorRT needs symmetric (zero-point 0) int8 activations, so the
CPU's Q/DQ model is reused only when its recipe is symmetric; otherwise ``model.int8.trt.onnx`` is quantized with the
``tensorrt`` recipe from the same calibration cache, keeping the same nodes in FP32 for accuracy.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from facetx.export.data import ExportData
from facetx.export.parity import output_agreement
from facetx.export.tensorrt import TrtRunner, build_engine, unavailable_reason
from facetx.quant.recipe import recipe_for
from facetx.quant.static import quantize
from facetx.training.evaluation import evaluate

log = logging.getLogger(__name__)


def tensorrt_stage(
    cfg: DictConfig,
    data: ExportData,
    paths: dict[str, Path],
    out: Path,
    names: list[str],
    input_size: int,
    real: torch.Tensor,
    net: torch.nn.Module,
    int8: dict[str, Any] | None,
) -> dict[str, Any]:
    """Returns ``{"paths", "metrics", "report", "notes"}``; a missing TensorRT/CUDA is one note, not an error."""
    reason = unavailable_reason()
    if reason is not None:
        log.warning(reason)
        return {"paths": {}, "metrics": {}, "report": {"skipped": reason}, "notes": [reason]}
    e = cfg.export
    batches = (1, int(e.trt_opt_batch), int(e.trt_max_batch)) if e.dynamic_batch else (int(e.get("batch_size", 1)),) * 3
    built: dict[str, Path] = {}
    chw = (3, input_size, input_size)
    built["trt_fp16"] = build_engine(paths["fp32"], out / "model.fp16.engine", "fp16", input_chw=chw, batches=batches,
                                     workspace_gib=float(e.trt_workspace_gib))  # fmt: skip
    report: dict[str, Any] = {"batch_profile": list(batches)}
    if int8 is not None:
        res = int8["result"]
        if res.recipe.symmetric_activations and res.recipe.activation_type == "int8":
            qdq = paths["int8"]
        else:
            qdq = out / "model.int8.trt.onnx"
            trt_recipe = recipe_for("tensorrt").with_(nodes_to_exclude=res.recipe.nodes_to_exclude)
            quantize(int8["work"] / "model.pre.onnx", qdq, trt_recipe, int8["work"] / "calibration")
        built["trt_int8_qdq"] = qdq
        built["trt_int8"] = build_engine(qdq, out / "model.int8.engine", "int8", input_chw=chw, batches=batches,
                                         workspace_gib=float(e.trt_workspace_gib))  # fmt: skip
        report["int8_qdq_model"] = str(qdq)
    metrics, agreement = {}, {}
    for prec in ("fp16", "int8"):
        if f"trt_{prec}" in built:
            runner = TrtRunner(built[f"trt_{prec}"])
            bs = min(int(cfg.eval.batch_size), batches[2])  # the engine's profile ends at batches[2]
            metrics[f"tensorrt/{prec}"] = evaluate(runner, data.report, batch_size=bs)
            agreement[prec] = output_agreement(net, runner, real, names)
    report["agreement_with_torch"] = agreement
    return {"paths": built, "metrics": metrics, "report": report, "notes": []}
