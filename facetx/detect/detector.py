"""Face detection on whole images or in a region: MediaPipe's pre-processing -> BlazeFace (ONNX Runtime) -> decoding
-> weighted NMS -> frame pixels, and alignment of a detection to the ArcFace 112x112 template.

Pre-processing reproduces MediaPipe's CPU ``ImageToTensorCalculator`` (``image_to_tensor_converter_opencv.cc``): the
region of interest (for a whole image: the image, padded to a square around its center, ``keep_aspect_ratio``) is
warped into the ``S x S`` input by the perspective transform that maps the ROI's corners onto the input's corners
(``cv::getPerspectiveTransform`` of ``cv::boxPoints``), bilinear, zero border, uint8, then scaled to floats.
Detections come back through the same matrix, as ``DetectionProjectionCalculator`` does, so on the same frame
:class:`FaceDetector` and MediaPipe's ``FaceDetection`` agree to float rounding.

Pixel coordinates follow :mod:`facetx.detect.align`: OpenCV's convention, integer values are pixel centers
(MediaPipe's relative coordinates times the image size are pixel *edges*: ours are those minus 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from facetx.detect.align import ARCFACE_TEMPLATE, similarity_transform
from facetx.detect.anchors import decode_boxes, get_spec, ssd_anchors, weighted_nms

if TYPE_CHECKING:
    from facetx.detect.blazeface import BlazeFace

#: ratio of the ArcFace template's mouth width to its eye distance (29.18 / 35.24), used to place mouth corners
_MOUTH_TO_EYE = float(
    np.linalg.norm(ARCFACE_TEMPLATE[4] - ARCFACE_TEMPLATE[3])
    / np.linalg.norm(ARCFACE_TEMPLATE[1] - ARCFACE_TEMPLATE[0])
)
BACKENDS = ("onnx", "torch")
_WARP_FLAGS = cv2.INTER_LINEAR  # MediaPipe's CPU converter default


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


def roi_matrix(
    center: tuple[float, float],
    size: tuple[float, float],
    rotation: float = 0.0,
    input_size: int = 128,
    keep_aspect_ratio: bool = True,
) -> np.ndarray:
    """``[2, 3]`` matrix mapping frame pixels to ``input_size``-square input pixels for MediaPipe's rotated ROI.

    ``center`` (x, y) and ``size`` (width, height) in frame pixels, ``rotation`` in radians (MediaPipe's
    ``RotatedRect``). ``keep_aspect_ratio`` first grows the ROI to a square (``PadRoi``: the input is square). The
    ROI's corners (``cv2.boxPoints``) map onto the input's corners (0 and ``input_size``) by
    ``cv2.getPerspectiveTransform``, exactly as ``ImageToTensorCalculator`` computes it.
    """
    w, h = np.float32(size[0]), np.float32(size[1])
    if not (w > 0 and h > 0):
        raise ValueError(f"ROI size must be positive, got {size}")
    if keep_aspect_ratio:  # PadRoi with a square tensor, in float32 like MediaPipe
        w = h = max(w, h)
    cx, cy = np.float32(center[0]), np.float32(center[1])
    angle = float(np.float32(rotation) * np.float32(180.0)) / np.pi  # rotation * 180.f / M_PI
    src = cv2.boxPoints(((float(cx), float(cy)), (float(w), float(h)), angle))
    s = float(input_size)
    dst = np.array([[0.0, s], [0.0, 0.0], [s, 0.0], [s, s]], dtype=np.float32)
    return cv2.getPerspectiveTransform(src, dst)[:2].copy()


def letterbox_matrix(height: int, width: int, input_size: int) -> np.ndarray:
    """MediaPipe's whole-image ROI (centered, padded to a square): ``[2, 3]`` frame pixels -> input pixels."""
    return roi_matrix((0.5 * width, 0.5 * height), (width, height), 0.0, input_size, keep_aspect_ratio=True)


def warp_to_input(image: np.ndarray, matrix: np.ndarray, size: int, out: np.ndarray | None = None) -> np.ndarray:
    """``image`` warped by ``matrix [2, 3]`` (frame -> input pixels) into a ``size x size`` uint8 square (``out`` if
    given): bilinear, zero border, as MediaPipe's CPU converter.

    ``cv2.warpPerspective`` with the affine as a 3x3 matrix rather than ``cv2.warpAffine``: the two round sample
    positions differently (to 1/32 pixel: half-to-even vs half-up), and MediaPipe uses the former. On a 250x250
    photo into 128x128 ``warpAffine`` gives different pixels for ~38 % of the input.
    """
    m3 = np.vstack([np.asarray(matrix, dtype=np.float64), [0.0, 0.0, 1.0]])
    return cv2.warpPerspective(image, m3, (size, size), dst=out, flags=_WARP_FLAGS, borderMode=cv2.BORDER_CONSTANT)


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Fit ``image [H, W, 3]`` into a ``size x size`` square keeping its aspect ratio, centered, zero-padded, as
    MediaPipe does (:func:`letterbox_matrix`, :func:`warp_to_input`). Returns ``(square, matrix [2, 3])``; the matrix
    maps image pixels to square pixels (for :func:`facetx.detect.align.transform_points`)."""
    m = letterbox_matrix(image.shape[0], image.shape[1], size)
    return warp_to_input(image, m, size), m


def input_to_frame(matrix: np.ndarray, size: int) -> np.ndarray:
    """``[2, 3]`` affine from normalized input coordinates (0..1 across the input, the decoder's) to frame pixels
    for the ROI ``matrix`` (frame -> input pixels), as ``DetectionProjectionCalculator`` projects (``u * size``
    through the inverse), then -0.5 from MediaPipe's pixel edges to OpenCV's pixel centers."""
    inv = cv2.invertAffineTransform(np.asarray(matrix, dtype=np.float64))
    return np.hstack([inv[:, :2] * size, inv[:, 2:] - 0.5])


def _check_image(image: object, i: int) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"image {i}: expected a uint8 RGB array [H, W, 3], got {got}")


class FaceDetector:
    """MediaPipe's BlazeFace face detector on whole images (:meth:`detect`) or in a region (:meth:`detect_in_roi`).

    ``model``: ``"short"`` (128x128 input, faces within ~2 m) or ``"full"`` (192x192, smaller faces).
    ``min_score`` / ``nms_iou`` default to MediaPipe's (0.5 short, 0.6 full; IoU 0.3).
    ``backend``: ``"onnx"`` (default: ONNX Runtime on the exported network, :func:`facetx.detect.weights.onnx_path`,
    ``threads`` intra-op threads (None: ORT's default), no spin-waiting) or ``"torch"`` (the PyTorch network, eager;
    it uses torch's global thread setting). ``net``: a :class:`facetx.detect.blazeface.BlazeFace` to run instead of
    MediaPipe's converted weights (implies ``backend="torch"``); else the weights come from ``weights_dir`` (see
    :mod:`facetx.detect.weights`).
    """

    def __init__(
        self,
        model: str = "short",
        min_score: float | None = None,
        nms_iou: float | None = None,
        weights_dir: str | Path | None = None,
        net: BlazeFace | None = None,
        backend: str | None = None,
        threads: int | None = 1,
    ) -> None:
        self.spec = get_spec(model)
        self.min_score = self.spec.min_score if min_score is None else float(min_score)
        self.nms_iou = self.spec.nms_iou if nms_iou is None else float(nms_iou)
        if not 0.0 <= self.min_score <= 1.0:
            raise ValueError(f"min_score must be in [0, 1], got {self.min_score}")
        backend = backend or ("torch" if net is not None else "onnx")
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
        if net is not None and backend != "torch":
            raise ValueError("FaceDetector(net=...) runs that PyTorch network: use backend='torch' with it")
        self.backend = backend
        self.net: BlazeFace | None = None
        self.session = None
        if backend == "torch":
            if net is None:
                from facetx.detect.weights import load_blazeface

                net = load_blazeface(model, weights_dir)
            if net.spec.name != model:
                raise ValueError(f"FaceDetector(model={model!r}) got a BlazeFace({net.spec.name!r}) network")
            self.net = net.eval()
        else:
            from facetx.detect.weights import onnx_path
            from facetx.runtime.sessions import make_session

            self.session = make_session(onnx_path(model, weights_dir), threads, spinning=False)
        self.anchors = ssd_anchors(self.spec)
        # sigmoid(x) >= p  <=>  x >= logit(p): compare raw logits first (cheap), score only those (a hair looser,
        # then the exact test on the sigmoid, so the boundary is MediaPipe's float comparison)
        p = self.min_score
        logit = -np.inf if p <= 0.0 else (np.inf if p >= 1.0 else float(np.log(p / (1.0 - p))))
        self._logit_min = min(logit - 1e-3, self.spec.score_clip)
        s = self.input_size
        self._square = np.zeros((s, s, 3), np.uint8)  # per-frame buffers: warp target and network input
        self._input = np.zeros((1, 3, s, s), np.float32)
        self._letterboxes: dict[tuple[int, int], np.ndarray] = {}
        self._binding = None
        if self.session is not None:
            self._bind_single()

    @property
    def input_size(self) -> int:
        return self.spec.input_size

    def _bind_single(self) -> None:
        """Bind the batch-1 input and outputs to preallocated arrays: a frame allocates nothing in ORT."""
        n = self.spec.num_anchors
        self._reg = np.zeros((1, n, 16), np.float32)
        self._cls = np.zeros((1, n, 1), np.float32)
        binding = self.session.io_binding()
        for name, arr, bind in (
            ("image", self._input, binding.bind_input),
            ("regressors", self._reg, binding.bind_output),
            ("classificators", self._cls, binding.bind_output),
        ):
            bind(name, "cpu", 0, np.float32, list(arr.shape), arr.ctypes.data)
        self._binding = binding

    def _letterbox(self, height: int, width: int) -> np.ndarray:
        key = (height, width)
        m = self._letterboxes.get(key)
        if m is None:
            if len(self._letterboxes) > 16:  # a stream has one frame size; a photo folder many
                self._letterboxes.clear()
            m = self._letterboxes[key] = letterbox_matrix(height, width, self.input_size)
        return m

    def _fill(self, image: np.ndarray, matrix: np.ndarray, out: np.ndarray) -> None:
        """Warp ``image`` into ``self._square`` and write it as ``[3, S, S]`` floats in ``[0, 1]`` into ``out``."""
        warp_to_input(image, matrix, self.input_size, out=self._square)
        # the network does x * 2 - 1 itself (MediaPipe feeds x * 2/255 - 1: the same up to float rounding)
        np.multiply(self._square.transpose(2, 0, 1), np.float32(1.0 / 255.0), out=out)

    def preprocess(
        self, images: list[np.ndarray], matrices: list[np.ndarray] | None = None
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """uint8 RGB ``[H, W, 3]`` images -> network input ``[B, 3, S, S]`` float32 in ``[0, 1]`` and each ROI matrix
        (frame -> input pixels; default: MediaPipe's whole-image letterbox, :func:`letterbox_matrix`). For one image
        the array is the detector's own input buffer, overwritten by its next call (a detector is not thread-safe)."""
        for i, image in enumerate(images):
            _check_image(image, i)
        if matrices is None:
            matrices = [self._letterbox(*image.shape[:2]) for image in images]
        s = self.input_size
        x = self._input if len(images) == 1 else np.empty((len(images), 3, s, s), np.float32)
        for i, (image, m) in enumerate(zip(images, matrices, strict=True)):
            self._fill(image, m, x[i])
        return x, list(matrices)

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw outputs ``regressors [B, N, 16]``, ``classificators [B, N, 1]`` for the input ``x [B, 3, S, S]``."""
        if self.net is not None:
            import torch

            with torch.inference_mode():
                reg, cls = self.net(torch.from_numpy(x))
            return reg.numpy(), cls.numpy()
        if x is self._input:  # the bound batch-1 buffers
            self.session.run_with_iobinding(self._binding)
            return self._reg, self._cls
        reg, cls = self.session.run(["regressors", "classificators"], {"image": x})
        return reg, cls

    def decode(self, regressors: np.ndarray, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One image's raw outputs (``[N, 16]``, ``[N]`` or ``[N, 1]``) -> faces after weighted NMS, in normalized
        input coordinates: ``boxes [F, 4]``, ``keypoints [F, 6, 2]``, ``scores [F]``.

        Only anchors whose logit passes the score threshold are scored and decoded (MediaPipe: clip to
        ``score_clip``, sigmoid, ``score >= min_score``; boxes with negative size dropped).
        """
        logits = logits.reshape(-1)
        idx = np.flatnonzero(logits >= self._logit_min)
        if idx.size:
            clip = np.float32(self.spec.score_clip)
            scores = np.float32(1.0) / (np.float32(1.0) + np.exp(-np.clip(logits[idx], -clip, clip)))
            keep = scores >= self.min_score
            idx, scores = idx[keep], scores[keep]
        if not idx.size:
            return np.zeros((0, 4), np.float32), np.zeros((0, 6, 2), np.float32), np.zeros(0, np.float32)
        boxes, kps = decode_boxes(regressors[idx], self.anchors[idx], self.input_size)
        return weighted_nms(boxes, kps, scores, self.nms_iou, self.min_score)

    def postprocess(self, regressors: np.ndarray, logits: np.ndarray, matrix: np.ndarray) -> list[Face]:
        """One image's raw outputs (``[N, 16]``, ``[N, 1]``) -> faces in pixels of the frame that ``matrix`` (frame
        -> input pixels) maps; a rotated ROI's box becomes the axis-aligned box around its projected corners."""
        boxes, kps, scores = self.decode(regressors, logits)
        if not len(scores):
            return []
        back = input_to_frame(matrix, self.input_size)
        x1, y1, x2, y2 = boxes.astype(np.float64).T
        corners = np.stack([np.stack([x1, y1], -1), np.stack([x2, y1], -1), np.stack([x2, y2], -1),
                            np.stack([x1, y2], -1)], axis=1)  # fmt: skip
        corners = corners @ back[:, :2].T + back[:, 2]  # [F, 4, 2]
        frame_boxes = np.concatenate([corners.min(1), corners.max(1)], axis=1).astype(np.float32)
        frame_kps = (kps.astype(np.float64) @ back[:, :2].T + back[:, 2]).astype(np.float32)
        return [Face(b, float(s), k) for b, s, k in zip(frame_boxes, scores, frame_kps, strict=True)]

    def detect_batch(self, images: list[np.ndarray]) -> list[list[Face]]:
        """Faces per image, best score first."""
        if not images:
            return []
        x, matrices = self.preprocess(images)
        reg, cls = self._run(x)
        return [self.postprocess(reg[i], cls[i], matrices[i]) for i in range(len(images))]

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in one uint8 RGB ``[H, W, 3]`` image, best score first."""
        return self.detect_batch([image])[0]

    def detect_in_roi(self, image: np.ndarray, matrix: np.ndarray) -> list[Face]:
        """Faces inside a region of ``image``: ``matrix [2, 3]`` maps frame pixels to detector-input pixels (an
        ``S x S`` square; a similarity for a rotated, scaled crop, e.g. from :func:`roi_matrix`). Results are in
        frame pixels, best score first. ``detect(image)`` is ``detect_in_roi(image, letterbox_matrix(H, W, S))``.

        Detections map back as MediaPipe maps them (:func:`input_to_frame`), so with MediaPipe's ROI matrices the
        results are MediaPipe's.
        """
        m = np.asarray(matrix, dtype=np.float64)
        if m.shape != (2, 3) or not np.isfinite(m).all() or abs(np.linalg.det(m[:, :2])) < 1e-12:
            raise ValueError(f"expected an invertible finite [2, 3] ROI matrix, got {np.asarray(matrix).tolist()}")
        x, _ = self.preprocess([image], [m])
        reg, cls = self._run(x)
        return self.postprocess(reg[0], cls[0], m)


def _box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    from facetx.detect.anchors import iou

    return iou(np.asarray(box, np.float64), np.asarray(boxes, np.float64).reshape(-1, 4))


class CombinedDetector:
    """Short- and full-range BlazeFace together: every short-range face, plus the full-range faces that overlap
    none of them (IoU <= ``iou``), best score first.

    For photos of unknown framing: short range alone misses small faces (a group photo), full range alone misses
    faces that fill the frame (an already aligned 112x112 crop); each finds what the other misses. Costs both runs.
    """

    def __init__(self, short: FaceDetector, full: FaceDetector, iou: float = 0.3) -> None:
        if short.spec.name != "short" or full.spec.name != "full":
            raise ValueError(
                f"CombinedDetector expects (short, full) detectors, got ({short.spec.name}, {full.spec.name})"
            )
        self.short, self.full, self.iou = short, full, float(iou)

    def merge(self, near: list[Face], far: list[Face]) -> list[Face]:
        """``near`` (short-range faces) plus the ``far`` (full-range) faces that overlap none of them."""
        faces = list(near)
        for face in far:
            if not faces or _box_iou(face.box, np.stack([f.box for f in faces])).max() <= self.iou:
                faces.append(face)
        return sorted(faces, key=lambda f: -f.score)

    def detect_batch(self, images: list[np.ndarray]) -> list[list[Face]]:
        """Faces per image, best score first."""
        near, far = self.short.detect_batch(images), self.full.detect_batch(images)
        return [self.merge(a, b) for a, b in zip(near, far, strict=True)]

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
