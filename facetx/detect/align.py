"""Face alignment: similarity transforms to the ArcFace 112x112 five-point template, and box-based crops.

All coordinates are OpenCV pixel coordinates (integer = pixel center), the convention of ``cv2.warpAffine``.
"""

from __future__ import annotations

import cv2
import numpy as np

#: insightface's ArcFace template for 112x112 crops: left eye, right eye, nose tip, left and right mouth corners
#: ("left" = image left, i.e. the subject's right eye).
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping ``src [N, 2]`` onto ``dst [N, 2]``.

    Umeyama's closed form (no reflection). Returns the ``[2, 3]`` matrix for ``cv2.warpAffine``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"expected two matching [N>=2, 2] point sets, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    e = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        e[1, 1] = -1
    rot = u @ e @ vt
    var_s = (s**2).sum() / len(src)
    scale = (sig * np.diag(e)).sum() / max(var_s, 1e-12)
    t = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, t[:, None]]).astype(np.float32)


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a ``[2, 3]`` affine ``matrix`` to ``points [N, 2]``."""
    pts = np.asarray(points, dtype=np.float32)
    return pts @ matrix[:, :2].T + matrix[:, 2]


def align_face(image: np.ndarray, points5: np.ndarray, size: int = 112) -> tuple[np.ndarray, np.ndarray]:
    """Warp ``image`` so that ``points5 [5, 2]`` land on the ArcFace template (scaled to ``size``).

    Returns ``(crop [size, size, C], matrix [2, 3])``; map landmarks into the crop with :func:`transform_points`.
    """
    template = ARCFACE_TEMPLATE * (size / 112.0)
    m = similarity_transform(points5, template)
    crop = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return crop, m


def box_crop(
    image: np.ndarray, box: tuple[float, float, float, float], size: int = 112, margin: float = 1.3
) -> tuple[np.ndarray, np.ndarray]:
    """Square crop around ``box = (x1, y1, x2, y2)`` enlarged by ``margin``, resized to ``size``.

    For sources with a face box but no landmarks. Returns ``(crop, matrix [2, 3])`` like :func:`align_face`.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    if not (x2 > x1 and y2 > y1):
        raise ValueError(f"expected a box (x1, y1, x2, y2) with x2 > x1 and y2 > y1, got {box}")
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    side = max(x2 - x1, y2 - y1) * margin
    scale = size / side
    # maps the box center to the crop center (pixel-center convention: center of a size-wide crop is (size-1)/2)
    m = np.array(
        [[scale, 0, (size - 1) / 2 - scale * cx], [0, scale, (size - 1) / 2 - scale * cy]],
        dtype=np.float32,
    )
    crop = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return crop, m
