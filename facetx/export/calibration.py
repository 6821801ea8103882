"""The calibration stage of ``export.py``: once every held-out metric is known, write each ONNX file's own match
threshold at :data:`FAR`, the pair counts behind it, the model fingerprint and the landmark template into its
``metadata_props`` (the keys of :data:`facetx.export.metadata.CALIBRATION_DOCS`)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch.utils.data import Dataset

from facetx.export.contracts import Calibration
from facetx.export.data import ExportData
from facetx.export.metadata import CALIBRATION_DOCS
from facetx.runtime.sessions import set_metadata
from facetx.training.evaluation import threshold_key

log = logging.getLogger(__name__)

#: the false-accept rate of the default match threshold (1 impostor in 1000 accepted)
FAR = 1e-3

#: ``paths`` key of an ONNX file -> the held-out metrics (``runtime/precision``) measured on that graph: the fixed
#: batch-1 variant is the FP32 graph at another input shape (parity-checked), so it shares model.onnx's numbers
THRESHOLD_SOURCES = {
    "fp32": "onnxruntime/fp32",
    "fp32_b1": "onnxruntime/fp32",
    "int8": "onnxruntime/int8",
    "openvino_int8": "openvino/int8",  # the Q/DQ file tuned in OpenVINO: its threshold from its OpenVINO metrics
}


@dataclass(frozen=True)
class Threshold:
    """A verification threshold read from held-out metrics: ``value`` (cosine, accept when ``> value``) at ``far``,
    measured on ``genuine`` / ``impostor`` pairs; ``metric`` is the key it came from."""

    value: float
    far: float
    genuine: int
    impostor: int
    metric: str


def verification_threshold(metrics: Mapping[str, float], far: float = FAR) -> Threshold | None:
    """The threshold at ``far`` of the first verification set in ``metrics`` (the one
    :func:`~facetx.training.evaluation.merge_set_metrics` keeps unprefixed); None if no set reports one."""
    suffix = "/" + threshold_key(far)
    for key, value in metrics.items():
        if key.endswith(suffix):
            name = key[: -len(suffix)]
            genuine, impostor = metrics.get(f"{name}/genuine_pairs"), metrics.get(f"{name}/impostor_pairs")
            if genuine is None or impostor is None or not np.isfinite(value):
                return None
            return Threshold(float(value), far, int(genuine), int(impostor), key)
    return None


def landmark_template(datasets: Sequence[Dataset]) -> np.ndarray | None:
    """``[K, 2]`` float64 mean ground-truth landmarks (normalized crop coordinates) over the labelled images of
    ``datasets``; None when none has landmark labels."""
    total, count = None, 0
    for ds in datasets:
        for i in range(len(ds)):
            sample = ds[i]
            if "landmarks" not in sample or not bool(sample.get("has_landmarks", torch.tensor(True))):
                continue
            lm = sample["landmarks"].double().numpy()
            total = lm.copy() if total is None else total + lm
            count += 1
    return None if total is None else total / count


def _save_atomically(model: onnx.ModelProto, path: Path) -> None:
    """Replace ``path`` only once the new file is complete (an interrupted export never leaves half a model)."""
    tmp = path.with_name(path.name + ".tmp")
    onnx.save(model, str(tmp))
    os.replace(tmp, path)


def calibration_stage(
    *,
    paths: Mapping[str, Path],
    metrics: Mapping[str, Mapping[str, float]],
    data: ExportData,
    fingerprint: str,
    far: float = FAR,
) -> Calibration:
    """Rewrite the metadata of every ONNX file in ``paths`` (keys of :data:`THRESHOLD_SOURCES`; engines are skipped)
    with ``fingerprint``, its own threshold at ``far`` and the landmark template of ``data.report``."""
    template = landmark_template(data.report)
    notes: list[str] = []
    written: dict[str, dict[str, str]] = {}
    for kind, source in THRESHOLD_SOURCES.items():
        if kind not in paths:
            continue
        path = Path(paths[kind])
        model = onnx.load(str(path))
        props = {"facetx.fingerprint": fingerprint}
        threshold = verification_threshold(metrics.get(source, {}), far)
        if threshold is None:
            notes.append(f"{path.name}: no verification threshold at FAR {far:g} ({source} has none); not written")
        else:
            props |= {
                "recognition.threshold": repr(threshold.value),
                "recognition.far": repr(far),
                "recognition.threshold_split": data.report_split,
                "recognition.threshold_pairs": json.dumps(
                    {"genuine": threshold.genuine, "impostor": threshold.impostor}
                ),
            }
        outputs = {o.name: o for o in model.graph.output}
        if template is not None and "landmarks" in outputs:
            k = outputs["landmarks"].type.tensor_type.shape.dim[1].dim_value
            if k and k != len(template):
                notes.append(f"{path.name}: the held-out landmarks have {len(template)} points, the model {k}")
            else:
                props["landmarks.template"] = json.dumps(
                    [[round(float(x), 5), round(float(y), 5)] for x, y in template]
                )
        set_metadata(model, props)
        _save_atomically(model, path)
        written[path.name] = props
        log.info(
            "%s: threshold %s at FAR %g on %s pairs (%s), fingerprint %s",
            path.name,
            props.get("recognition.threshold", "none"),
            far,
            props.get("recognition.threshold_pairs", "no"),
            data.report_split,
            fingerprint,
        )
    report = {
        "far": far,
        "split": data.report_split,
        "fingerprint": fingerprint,
        "keys": {k: v for k, v in CALIBRATION_DOCS.items() if any(k in p for p in written.values())},
        "files": written,
    }
    return Calibration(report=report, notes=notes, metadata=written)
