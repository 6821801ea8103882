"""The ``best`` artifact of an export on this machine: the fastest measured runtime x precision within the accuracy
budget, per batch size, written to ``best.json`` for the video pipeline (``runtime=best``) and ``make bench``.

Speed is the row's ``speed_vs_ort_fp32`` (a ratio measured in the same interleaved rounds, so it holds on a loaded
machine); accuracy is the held-out verification accuracy of that runtime x precision against ONNX Runtime FP32 on the
same pairs. A row without held-out metrics (torch eager, TensorRT on another device) is never chosen.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: runtimes the video pipeline can run an artifact in (facetx.pipeline.model)
DEPLOYABLE = ("onnxruntime", "openvino", "tflite")
REFERENCE = "onnxruntime/fp32"


def choose_best(
    rows: Sequence[Mapping[str, Any]],
    metrics: Mapping[str, Mapping[str, float]],
    files: Mapping[tuple[str, str, str], Path],
    metric: str | None,
    budget_pt: float,
) -> dict[int, dict[str, Any]]:
    """Batch size -> the chosen row's runtime, precision, graph, file and why. ``files`` maps (runtime, precision,
    graph) to the artifact it ran; ``metric``: the verification accuracy key (None: speed alone decides, stated)."""
    ref = metrics.get(REFERENCE, {})
    chosen: dict[int, dict[str, Any]] = {}
    for batch in sorted({int(r["batch"]) for r in rows}):
        candidates = []
        for r in rows:
            key = (str(r["runtime"]), str(r["precision"]), str(r["graph"]))
            if int(r["batch"]) != batch or key[0] not in DEPLOYABLE or key not in files:
                continue
            m = metrics.get(f"{key[0]}/{key[1]}")
            if m is None or r.get("speed_vs_ort_fp32") is None:
                continue
            drop = None if metric is None else 100.0 * (float(ref[metric]) - float(m[metric]))
            if drop is not None and drop > budget_pt:
                continue
            candidates.append((float(r["speed_vs_ort_fp32"]), key, drop))
        if not candidates:
            continue
        speed, (runtime, precision, graph), drop = max(candidates, key=lambda c: c[0])
        chosen[batch] = {
            "runtime": runtime,
            "precision": precision,
            "graph": graph,
            "file": files[(runtime, precision, graph)].name,
            "speed_vs_ort_fp32": speed,
            "metric": metric,
            "drop_pt": None if drop is None else round(drop, 3),
            "budget_pt": budget_pt,
            "candidates": len(candidates),
        }
    return chosen


def write_best(path: Path, chosen: Mapping[int, Mapping[str, Any]], context: Mapping[str, Any]) -> None:
    """``best.json``: ``{"by_batch": {"1": {...}, "32": {...}}, **context}``, replaced atomically."""
    payload = {"by_batch": {str(b): dict(c) for b, c in chosen.items()}, **context}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_best(path: Path, batch: int = 1) -> dict[str, Any]:
    """The choice for ``batch`` in ``best.json`` (the smallest batch measured if ``batch`` was not)."""
    by_batch = json.loads(Path(path).read_text())["by_batch"]
    if str(batch) in by_batch:
        return by_batch[str(batch)]
    return by_batch[min(by_batch, key=int)]
