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

from facetx.export.contracts import Int8Stage, OnnxArtifacts, Source, StageOutput
from facetx.export.data import ExportData
from facetx.export.parity import output_agreement
from facetx.export.settings import ExportSettings
from facetx.export.tensorrt import TrtRunner, build_engine, unavailable_reason
from facetx.quant.recipe import recipe_for
from facetx.quant.static import quantize
from facetx.training.evaluation import evaluate

log = logging.getLogger(__name__)


def tensorrt_stage(
    *,
    source: Source,
    data: ExportData,
    onnx: OnnxArtifacts,
    int8: Int8Stage | None,
    out: Path,
    settings: ExportSettings,
    eval_batch_size: int,
    real: torch.Tensor,
) -> StageOutput:
    """FP16 (and INT8) engines with held-out metrics and agreement; a missing TensorRT/CUDA is one note."""
    reason = unavailable_reason()
    if reason is not None:
        log.warning(reason)
        return StageOutput(report={"skipped": reason}, notes=[reason])
    e = settings
    batches = (1, e.trt_opt_batch, e.trt_max_batch) if e.dynamic_batch else (e.batch_size,) * 3
    chw = (3, source.input_size, source.input_size)
    built: dict[str, Path] = {}
    built["trt_fp16"] = build_engine(
        onnx.paths["fp32"],
        out / "model.fp16.engine",
        "fp16",
        input_chw=chw,
        batches=batches,
        workspace_gib=e.trt_workspace_gib,
    )
    report: dict[str, Any] = {"batch_profile": list(batches)}
    if int8 is not None and int8.result is not None:
        res = int8.result
        if res.recipe.symmetric_activations and res.recipe.activation_type == "int8":
            qdq = int8.paths.get("int8_qdq", int8.paths["int8"])
        else:
            qdq = out / "model.int8.trt.onnx"
            trt_recipe = recipe_for("tensorrt").with_(nodes_to_exclude=res.recipe.nodes_to_exclude)
            quantize(int8.work / "model.pre.onnx", qdq, trt_recipe, int8.work / "calibration")
        built["trt_int8_qdq"] = qdq
        built["trt_int8"] = build_engine(
            qdq, out / "model.int8.engine", "int8", input_chw=chw, batches=batches, workspace_gib=e.trt_workspace_gib
        )
        report["int8_qdq_model"] = str(qdq)
    metrics, agreement = {}, {}
    for precision in ("fp16", "int8"):
        if f"trt_{precision}" in built:
            runner = TrtRunner(built[f"trt_{precision}"])
            batch = min(eval_batch_size, batches[2])  # the engine's profile ends at batches[2]
            metrics[f"tensorrt/{precision}"] = evaluate(runner, data.report, batch_size=batch)
            agreement[precision] = output_agreement(source.net, runner, real, source.names)
    report["agreement_with_torch"] = agreement
    return StageOutput(paths=built, metrics=metrics, report=report)
