"""Face detection on whole images: letterbox -> BlazeFace -> decode -> weighted NMS -> original pixel coordinates,
and alignment of a detection to the ArcFace 112x112 template.

Pixel coordinates follow :mod:`facetx.detect.align`: OpenCV's convention, integer values are pixel centers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from facetx.detect.align import ARCFACE_TEMPLATE, similarity_transform, transform_points
from facetx.detect.anchors import decode_boxes, get_spec, sigmoid_scores, ssd_anchors, weighted_nms
from facetx.detect.blazeface import BlazeFace

#: ratio of the ArcFace template's mouth width to its eye distance (29.18 / 35.24), used to place mouth corners
_MOUTH_TO_EYE = float(
    np.linalg.norm(ARCFACE_TEMPLATE[4] - ARCFACE_TEMPLATE[3])
    / np.linalg.norm(ARCFACE_TEMPLATE[1] - ARCFACE_TEMPLATE[0])
)


@dataclass(frozen=True)
class Face:
    """One detection in original-image pixels: ``box [4]`` (x1, y1, x2, y2), ``score`` in (0, 1), ``keypoints [6, 2]``
    in BlazeFace order (:data:`facetx.detect.anchors.KEYPOINT_NAMES`: right eye, left eye, nose tip, mouth center,
    right ear tragion, left ear tragion; "right" = the subject's right = image left)."""

    box: np.ndarray
    score: float
    keypoints: np.ndarray

    def to_dict(self, decimals: int = 2) -> dict:
        """JSON-ready ``{"box": [...], "score": s, "keypoints": [[x, y], ...]}``."""
        return {
            "box": [round(float(v), decimals) for v in self.box],
            "score": round(float(self.score), 4),
            "keypoints": [[round(float(x), decimals), round(float(y), decimals)] for x, y in self.keypoints],
        }


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Fit ``image [H, W, 3]`` into a ``size x size`` square keeping its aspect ratio, centered, zero-padded
    (MediaPipe's ``keep_aspect_ratio`` + ``BORDER_ZERO``). Returns ``(square, matrix [2, 3])``; the matrix maps
    image pixels to square pixels (for :func:`facetx.detect.align.transform_points`)."""
    h, w = image.shape[:2]
    scale = size / max(h, w)
    nw, nh = max(1, min(size, round(w * scale))), max(1, min(size, round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (nw, nh), interpolation=interp)
    left, top = (size - nw) // 2, (size - nh) // 2
    square = np.zeros((size, size, image.shape[2]), dtype=image.dtype)
    square[top : top + nh, left : left + nw] = resized
    sx, sy = nw / w, nh / h
    # cv2.resize maps pixel centers as x' = (x + 0.5) * sx - 0.5
    matrix = np.array([[sx, 0, 0.5 * sx - 0.5 + left], [0, sy, 0.5 * sy - 0.5 + top]], dtype=np.float64)
    return square, matrix


def _invert_affine(m: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(np.asarray(m, dtype=np.float64))


class FaceDetector:
    """MediaPipe's BlazeFace face detector on whole images.

    ``model``: ``"short"`` (128x128 input, faces within ~2 m) or ``"full"`` (192x192, smaller faces).
    ``min_score`` / ``nms_iou`` default to MediaPipe's (0.5 short, 0.6 full; IoU 0.3). ``net`` overrides the network
    (else MediaPipe's converted weights are loaded from ``weights_dir``, see :mod:`facetx.detect.weights`).
    """

    def __init__(
        self,
        model: str = "short",
        min_score: float | None = None,
        nms_iou: float | None = None,
        weights_dir: str | Path | None = None,
        net: BlazeFace | None = None,
    ) -> None:
        self.spec = get_spec(model)
        self.min_score = self.spec.min_score if min_score is None else float(min_score)
        self.nms_iou = self.spec.nms_iou if nms_iou is None else float(nms_iou)
        if not 0.0 <= self.min_score <= 1.0:
            raise ValueError(f"min_score must be in [0, 1], got {self.min_score}")
        if net is None:
            from facetx.detect.weights import load_blazeface

            net = load_blazeface(model, weights_dir)
        if net.spec.name != model:
            raise ValueError(f"FaceDetector(model={model!r}) got a BlazeFace({net.spec.name!r}) network")
        self.net = net.eval()
        self.anchors = ssd_anchors(self.spec)

    @property
    def input_size(self) -> int:
        return self.spec.input_size

    def preprocess(self, images: list[np.ndarray]) -> tuple[torch.Tensor, list[np.ndarray]]:
        """uint8 RGB ``[H, W, 3]`` images -> network input ``[B, 3, S, S]`` in ``[0, 1]`` and each letterbox matrix."""
        batch, matrices = [], []
        for i, image in enumerate(images):
            if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
                raise ValueError(f"image {i}: expected a uint8 RGB array [H, W, 3], got {got}")
            square, m = letterbox(image, self.input_size)
            batch.append(square)
            matrices.append(m)
        x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float().div_(255.0)
        return x, matrices

    def postprocess(self, regressors: np.ndarray, logits: np.ndarray, matrix: np.ndarray) -> list[Face]:
        """One image's raw outputs (``[N, 16]``, ``[N, 1]``) -> faces in pixels of the image that ``matrix`` maps."""
        boxes, kps = decode_boxes(regressors, self.anchors, self.input_size)
        scores = sigmoid_scores(logits.reshape(-1), self.spec.score_clip)
        boxes, kps, scores = weighted_nms(boxes, kps, scores, self.nms_iou, self.min_score)
        inv = _invert_affine(matrix)
        s = self.input_size
        faces = []
        for box, kp, score in zip(boxes, kps, scores, strict=True):
            # normalized (pixel-edge) -> input pixel centers -> original image pixels
            corners = transform_points(box.reshape(2, 2) * s - 0.5, inv).reshape(4)
            faces.append(Face(corners.astype(np.float32), float(score), transform_points(kp * s - 0.5, inv)))
        return faces

    @torch.inference_mode()
    def detect_batch(self, images: list[np.ndarray]) -> list[list[Face]]:
        """Faces per image, best score first."""
        if not images:
            return []
        x, matrices = self.preprocess(images)
        reg, cls = self.net(x)
        reg, cls = reg.numpy(), cls.numpy()
        return [self.postprocess(reg[i], cls[i], matrices[i]) for i in range(len(images))]

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in one uint8 RGB ``[H, W, 3]`` image, best score first."""
        return self.detect_batch([image])[0]


def mouth_corners(keypoints: np.ndarray) -> np.ndarray:
    """Five ArcFace-order points ``[5, 2]`` (image-left eye, image-right eye, nose, left/right mouth corner) from
    BlazeFace keypoints ``[6, 2]``: the mouth corners are placed at the mouth center +- half the template's mouth
    width, scaled by the detected eye distance, along the eye axis."""
    kp = np.asarray(keypoints, dtype=np.float32)
    eye_l, eye_r, nose, mouth = kp[0], kp[1], kp[2], kp[3]
    half = (eye_r - eye_l) * (_MOUTH_TO_EYE / 2)
    return np.stack([eye_l, eye_r, nose, mouth - half, mouth + half]).astype(np.float32)


def alignment_matrix(keypoints: np.ndarray, size: int = 112, mode: str = "four") -> np.ndarray:
    """Similarity ``[2, 3]`` mapping a detection's keypoints ``[6, 2]`` onto the ArcFace template scaled to ``size``.

    ``mode="four"``: fit eyes, nose tip and mouth center to the template's eyes, nose and mouth-corner midpoint.
    ``mode="five"``: fit the five points of :func:`mouth_corners` to the full template.
    """
    template = ARCFACE_TEMPLATE * (size / 112.0)
    kp = np.asarray(keypoints, dtype=np.float32)
    if kp.shape != (6, 2):
        raise ValueError(f"expected BlazeFace keypoints of shape (6, 2), got {kp.shape}")
    if mode == "four":
        dst = np.concatenate([template[:3], template[3:].mean(0, keepdims=True)])
        return similarity_transform(kp[:4], dst)
    if mode == "five":
        return similarity_transform(mouth_corners(kp), template)
    raise ValueError(f"unknown alignment mode {mode!r}; expected 'four' or 'five'")


def align_detection(
    image: np.ndarray, face: Face | np.ndarray, size: int = 112, mode: str = "four"
) -> tuple[np.ndarray, np.ndarray]:
    """Warp ``image`` to a ``size x size`` ArcFace-aligned crop of ``face`` (a :class:`Face` or its keypoints
    ``[6, 2]``). Returns ``(crop, matrix [2, 3])`` like :func:`facetx.detect.align.align_face`."""
    kp = face.keypoints if isinstance(face, Face) else face
    m = alignment_matrix(kp, size, mode)
    crop = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return crop, m
