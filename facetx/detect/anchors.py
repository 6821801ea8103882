"""SSD anchors, box/keypoint decoding and weighted NMS ("blending"), as MediaPipe's face detection graphs do them.

References (MediaPipe): ``ssd_anchors_calculator.cc`` (anchors), ``tensors_to_detections_calculator.cc`` (decoding),
``non_max_suppression_calculator.cc`` (WEIGHTED algorithm, IoU), and the options of
``face_detection_{short,full}_range.pbtxt`` / ``face_detection.pbtxt`` collected in :data:`SPECS`.

Coordinates here are normalized to the square model input: ``(0, 0)`` its top-left corner, ``(1, 1)`` its bottom-right
corner (pixel-edge convention, the one MediaPipe's anchors use).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NUM_KEYPOINTS = 6
#: BlazeFace keypoint order (MediaPipe names; "right" is the subject's right, i.e. the image left for a frontal face)
KEYPOINT_NAMES: tuple[str, ...] = (
    "right_eye",
    "left_eye",
    "nose_tip",
    "mouth_center",
    "right_ear_tragion",
    "left_ear_tragion",
)


@dataclass(frozen=True)
class DetectorSpec:
    """Graph options of one BlazeFace variant.

    ``strides`` and ``interpolated_scale_aspect_ratio`` feed the SSD anchor generator (fixed anchor size 1, offset
    0.5, a single aspect ratio 1.0); ``min_score``, ``score_clip`` and ``nms_iou`` the decoder and the NMS.
    """

    name: str
    input_size: int
    strides: tuple[int, ...]
    interpolated_scale_aspect_ratio: float
    num_anchors: int
    min_score: float
    score_clip: float = 100.0
    nms_iou: float = 0.3


SPECS: dict[str, DetectorSpec] = {
    "short": DetectorSpec("short", 128, (8, 16, 16, 16), 1.0, 896, min_score=0.5),
    "full": DetectorSpec("full", 192, (4,), 0.0, 2304, min_score=0.6),
}


def get_spec(model: str) -> DetectorSpec:
    """The :class:`DetectorSpec` of ``"short"`` or ``"full"``."""
    if model not in SPECS:
        raise ValueError(f"unknown BlazeFace model {model!r}; expected one of {sorted(SPECS)}")
    return SPECS[model]


def ssd_anchors(spec: DetectorSpec) -> np.ndarray:
    """Anchor centers ``[N, 2]`` (x, y), normalized, in the order of the model's outputs.

    Consecutive layers with the same stride share one feature map; each contributes one anchor per cell for aspect
    ratio 1.0, plus one for the interpolated scale when ``interpolated_scale_aspect_ratio == 1.0`` (so 2 per layer).
    Anchor width/height are fixed to 1 (MediaPipe's ``fixed_anchor_size``), hence not returned.
    """
    centers: list[np.ndarray] = []
    layer = 0
    strides = spec.strides
    while layer < len(strides):
        per_cell = 0
        last = layer
        while last < len(strides) and strides[last] == strides[layer]:
            per_cell += 2 if spec.interpolated_scale_aspect_ratio == 1.0 else 1
            last += 1
        size = int(np.ceil(spec.input_size / strides[layer]))
        grid = (np.arange(size, dtype=np.float32) + 0.5) / size
        yy, xx = np.meshgrid(grid, grid, indexing="ij")
        cell = np.stack([xx.ravel(), yy.ravel()], axis=1)
        centers.append(np.repeat(cell, per_cell, axis=0))
        layer = last
    anchors = np.concatenate(centers).astype(np.float32)
    if len(anchors) != spec.num_anchors:
        raise AssertionError(f"{spec.name}: generated {len(anchors)} anchors, expected {spec.num_anchors}")
    return anchors


def decode_boxes(raw: np.ndarray, anchors: np.ndarray, input_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode regressors ``raw [..., N, 16]`` into boxes ``[..., N, 4]`` (x1, y1, x2, y2), keypoints ``[..., N, 6, 2]``.

    Layout per anchor: box center offset (x, y) and size (w, h), then 6 keypoint offsets (x, y), all in input pixels
    (``x_scale = y_scale = w_scale = h_scale = input_size``), relative to the anchor center.
    """
    raw = np.asarray(raw, dtype=np.float32) / float(input_size)
    center = raw[..., 0:2] + anchors
    half = raw[..., 2:4] / 2
    boxes = np.concatenate([center - half, center + half], axis=-1)
    keypoints = raw[..., 4:].reshape(*raw.shape[:-1], NUM_KEYPOINTS, 2) + anchors[:, None, :]
    return boxes, keypoints


def sigmoid_scores(logits: np.ndarray, clip: float = 100.0) -> np.ndarray:
    """Scores from raw logits, clipped to ``[-clip, clip]`` first (MediaPipe's ``score_clipping_thresh``)."""
    x = np.clip(np.asarray(logits, dtype=np.float64), -clip, clip)
    return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box ``[4]`` against ``boxes [M, 4]`` (x1, y1, x2, y2); 0 where the union is empty."""
    ix = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = ix * iy
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def weighted_nms(
    boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou_threshold: float = 0.3, min_score: float = 0.5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MediaPipe's WEIGHTED non-max suppression for one image.

    Detections with ``score >= min_score`` (and a non-empty box) are visited by decreasing score; each round takes
    the best remaining one and every remaining detection whose IoU with it exceeds ``iou_threshold``, outputs their
    score-weighted mean box and keypoints with the best one's score, and removes them.
    Inputs ``boxes [N, 4]``, ``keypoints [N, K, 2]``, ``scores [N]``; returns the same three, one row per face.
    """
    valid = (scores >= min_score) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    idx = np.flatnonzero(valid)
    idx = idx[np.argsort(-scores[idx], kind="stable")]
    out_boxes, out_kps, out_scores = [], [], []
    while len(idx):
        best = idx[0]
        overlap = iou(boxes[best], boxes[idx]) > iou_threshold
        overlap[0] = True  # the best one blends with itself even if its box is degenerate for IoU
        members = idx[overlap]
        w = scores[members][:, None]
        out_boxes.append((boxes[members] * w).sum(0) / w.sum())
        out_kps.append((keypoints[members] * w[:, :, None]).sum(0) / w.sum())
        out_scores.append(scores[best])
        idx = idx[~overlap]
    k = keypoints.shape[1]
    return (
        np.asarray(out_boxes, dtype=np.float32).reshape(-1, 4),
        np.asarray(out_kps, dtype=np.float32).reshape(-1, k, 2),
        np.asarray(out_scores, dtype=np.float32),
    )
