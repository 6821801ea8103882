"""ONNX ``metadata_props`` that let a consumer use the graph without facetx: preprocessing, outputs, label names,
the model fingerprint galleries are keyed on, and (written after evaluation, see :mod:`facetx.export.calibration`)
the calibrated match threshold and the landmark template; :data:`CALIBRATION_DOCS` says what each of those holds."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import torch

import facetx
from facetx.data.contract import EXPRESSIONS, SPOOF_CLASSES
from facetx.data.landmarks import LAYOUTS

#: output name -> what it holds (also written into the metadata)
OUTPUT_DOCS = {
    "embedding": "float32 [N, E] identity embedding, not L2-normalized (normalize, then cosine similarity)",
    "landmarks": "float32 [N, K, 2] (x, y) in normalized crop coordinates: OpenCV pixel coordinates / input size",
    "expression_logits": "float32 [N, C] expression logits (softmax for probabilities), classes in expression.classes",
    "spoof_logits": "float32 [N, 2] anti-spoofing logits, classes in spoof.classes",
}


#: the keys that identify and calibrate a model file -> what they hold (listed in report.json under "calibration")
CALIBRATION_DOCS = {
    "facetx.fingerprint": "sha256 (first 16 hex digits) of the trained network's state_dict tensors in sorted key "
    "order: the weights, not the file, so the FP32, fixed-batch and INT8 exports of one checkpoint share it; a gallery "
    "built with another fingerprint holds embeddings of another model and must be rebuilt",
    "recognition.threshold": "cosine similarity threshold of this file's own embeddings (match when similarity > t) "
    "at which at most recognition.far of the held-out impostor pairs are accepted",
    "recognition.far": "the false-accept rate recognition.threshold was calibrated at",
    "recognition.threshold_split": "the held-out split the threshold was measured on (test, or val without test sets)",
    "recognition.threshold_pairs": 'JSON {"genuine": n, "impostor": n}: the pair counts behind the threshold',
    "landmarks.template": "JSON [[x, y], ...] mean ground-truth landmarks of the held-out images in normalized crop "
    "coordinates (landmarks.units): where a tracker puts the predicted landmarks to frame the next crop",
}


def model_fingerprint(net: torch.nn.Module) -> str:
    """``facetx.fingerprint``: sha256 of every ``state_dict`` entry (name, dtype, shape, bytes) in sorted key order,
    first 16 hex digits. Computed from the weights, so every export of one checkpoint carries the same one."""
    h = hashlib.sha256()
    state = net.state_dict()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        # viewed as bytes: works for every dtype (numpy has no bfloat16)
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def layout_name(num_landmarks: int) -> str:
    """The landmark layout with ``num_landmarks`` points (``ibug68``, ``wflw98``); ``"unknown"`` if none matches."""
    for name, layout in LAYOUTS.items():
        if layout.num_points == num_landmarks:
            return name
    return "unknown"


def build_metadata(
    output_names: Sequence[str],
    mean: Sequence[float],
    std: Sequence[float],
    input_size: int,
    num_landmarks: int | None,
    num_expressions: int | None,
    source_checkpoint: str | Path,
    model_name: str,
    precision: str = "fp32",
    fingerprint: str | None = None,
) -> dict[str, str]:
    """String key/value pairs for ``onnx.ModelProto.metadata_props`` (lists as JSON). ``fingerprint``: the
    :func:`model_fingerprint` of the exported network."""
    meta = {
        "facetx.version": facetx.__version__,
        "facetx.source_checkpoint": str(source_checkpoint),
        "facetx.model": model_name,
        "facetx.precision": precision,
    }
    if fingerprint is not None:
        meta["facetx.fingerprint"] = fingerprint
    meta |= {
        "input.name": "image",
        "input.format": f"float32 [N, 3, {input_size}, {input_size}] NCHW, RGB, values in [0, 1] (pixel / 255)",
        "input.size": json.dumps([input_size, input_size]),
        "input.mean": json.dumps([float(m) for m in mean]),
        "input.std": json.dumps([float(s) for s in std]),
        "input.normalization": "applied inside the graph: (image - mean) / std; feed raw [0, 1] RGB",
        "input.alignment": f"ArcFace 5-point similarity alignment to a {input_size}x{input_size} crop",
        "outputs": json.dumps(list(output_names)),
    }
    for name in output_names:
        if name in OUTPUT_DOCS:
            meta[f"output.{name}"] = OUTPUT_DOCS[name]
    if "landmarks" in output_names and num_landmarks:
        meta["landmarks.count"] = str(int(num_landmarks))
        meta["landmarks.layout"] = layout_name(int(num_landmarks))
        meta["landmarks.units"] = "normalized crop coordinates: (x, y) pixel / input size, pixel centers at integers"
    if "expression_logits" in output_names:
        classes = list(EXPRESSIONS[: num_expressions or len(EXPRESSIONS)])
        meta["expression.classes"] = json.dumps(classes)
    if "spoof_logits" in output_names:
        meta["spoof.classes"] = json.dumps(list(SPOOF_CLASSES))
    return meta
