"""facetx.detect: MediaPipe BlazeFace face detection (ONNX Runtime; PyTorch port), and alignment to the ArcFace 112x112
template.

Public API (imported lazily, so ``facetx.detect.align`` stays light)::

    FaceDetector(model="short" | "full", min_score=None, nms_iou=None, weights_dir=None, backend="onnx" | "torch",
                 threads=1).detect(rgb_uint8) -> [Face]      # MediaPipe's pre-processing, ONNX Runtime
    FaceDetector.detect_in_roi(rgb_uint8, matrix [2, 3]) -> [Face]   # frame pixels -> detector-input pixels
    roi_matrix(center, size, rotation, input_size), letterbox_matrix(h, w, input_size) -> matrix [2, 3]
    CombinedDetector(short, full).detect(rgb_uint8) -> [Face]  # short-range faces + full-range ones they miss
    Face(box [4], score, keypoints [6, 2])          # original-image pixels
    align_detection(image, face, size=112, mode="four") -> (crop, matrix [2, 3])
    BlazeFace(model), load_blazeface(model), export_onnx(net, path), onnx_path(model) -> cached .onnx

CLI: ``python -m facetx.detect IMAGE [IMAGE ...]`` (one JSON line per image).
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "CombinedDetector": "facetx.detect.detector",
    "Face": "facetx.detect.detector",
    "FaceDetector": "facetx.detect.detector",
    "align_detection": "facetx.detect.detector",
    "alignment_matrix": "facetx.detect.detector",
    "letterbox": "facetx.detect.detector",
    "letterbox_matrix": "facetx.detect.detector",
    "roi_matrix": "facetx.detect.detector",
    "onnx_path": "facetx.detect.weights",
    "BlazeFace": "facetx.detect.blazeface",
    "export_onnx": "facetx.detect.blazeface",
    "load_blazeface": "facetx.detect.weights",
    "WeightsNotFoundError": "facetx.detect.weights",
    "KEYPOINT_NAMES": "facetx.detect.anchors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'facetx.detect' has no attribute {name!r}")
