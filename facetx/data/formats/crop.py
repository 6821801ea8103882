"""One way to crop faces for every source: landmark sources are aligned to the ArcFace template through the five
points their layout derives from the landmarks (the same warp the real-time pipeline applies to detector keypoints);
box-only sources get a square box crop. Landmarks always go through the same matrix as the pixels.
"""

from __future__ import annotations

import numpy as np

from facetx.data.contract import IMAGE_SIZE
from facetx.data.landmarks import LandmarkLayout
from facetx.detect.align import align_face, box_crop, transform_points


def align_by_landmarks(
    image: np.ndarray, landmarks: np.ndarray, layout: LandmarkLayout, size: int = IMAGE_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """Warp the face so that ``layout.five_points(landmarks)`` fit the ArcFace template.

    ``image``: uint8 ``[H, W, 3]``; ``landmarks``: ``[K, 2]`` pixels. Returns ``(crop [size, size, 3],
    landmarks [K, 2] float32 in crop pixels)``.
    """
    landmarks = np.asarray(landmarks, dtype=np.float32)
    crop, m = align_face(image, layout.five_points(landmarks), size=size)
    return crop, transform_points(landmarks, m).astype(np.float32)


def crop_by_box(
    image: np.ndarray, box_xyxy: tuple[float, float, float, float], size: int = IMAGE_SIZE, margin: float = 1.3
) -> np.ndarray:
    """Square crop around a face box ``(x1, y1, x2, y2)`` in pixels, enlarged by ``margin``, resized to ``size``."""
    crop, _ = box_crop(image, box_xyxy, size=size, margin=margin)
    return crop
