"""The batch contract: one dict per sample, the same in train and eval, for every data source.

Keys (per sample; a batch adds a leading ``B``):

- ``image``: float32 ``[3, 112, 112]``, RGB in ``[0, 1]``. Networks normalize internally (each its own mean/std),
  so one data pipeline can feed a teacher and a student with different normalizations.
- ``identity``: int64 ``[]``, class index among the training identities (``-1`` when absent).
- ``landmarks``: float32 ``[K, 2]``, ``(x, y)`` in **normalized crop coordinates**: OpenCV pixel coordinates (integer
  values are pixel centers, as ``cv2.warpAffine`` and albumentations use them) divided by the crop size (112), so a
  point on the crop's center pixel column 56 has ``x = 0.5`` (zeros when absent).
- ``expression``: int64 ``[]``, index into :data:`EXPRESSIONS` (``-1`` when absent).
- ``spoof``: int64 ``[]``, ``0`` live, ``1`` attack (``-1`` when absent).
- ``has_identity``, ``has_landmarks``, ``has_expression``, ``has_spoof``: bool ``[]`` label masks. A source that lacks a
  task sets its mask to False and never invents a label.
- ``index``: int64 ``[]``, the sample's index in its data set (verification pairs refer to it).
"""

from __future__ import annotations

import numpy as np
import torch

TASKS: tuple[str, ...] = ("identity", "landmarks", "expression", "spoof")
EXPRESSIONS: tuple[str, ...] = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger")
SPOOF_CLASSES: tuple[str, ...] = ("live", "spoof")
IMAGE_SIZE = 112


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` RGB -> float32 ``[3, H, W]`` in ``[0, 1]``."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 [H, W, 3] RGB image, got {image.dtype} {image.shape}")
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)


def make_sample(
    image: np.ndarray,
    *,
    index: int,
    num_landmarks: int,
    identity: int | None = None,
    landmarks: np.ndarray | None = None,
    expression: int | None = None,
    spoof: int | None = None,
) -> dict[str, torch.Tensor]:
    """Build one sample of the contract from an aligned uint8 RGB crop and whatever labels the source has.

    ``landmarks`` are given in pixels of ``image`` (``[K, 2]``) and stored normalized by the image width/height.
    """
    h, w = image.shape[:2]
    if landmarks is not None:
        landmarks = np.asarray(landmarks, dtype=np.float32)
        if landmarks.shape != (num_landmarks, 2):
            raise ValueError(f"expected landmarks of shape ({num_landmarks}, 2), got {landmarks.shape}")
        lm = torch.from_numpy(landmarks / np.array([w, h], dtype=np.float32))
    else:
        lm = torch.zeros(num_landmarks, 2)
    return {
        "image": image_to_tensor(image),
        "identity": torch.tensor(-1 if identity is None else int(identity), dtype=torch.long),
        "landmarks": lm,
        "expression": torch.tensor(-1 if expression is None else int(expression), dtype=torch.long),
        "spoof": torch.tensor(-1 if spoof is None else int(spoof), dtype=torch.long),
        "has_identity": torch.tensor(identity is not None),
        "has_landmarks": torch.tensor(landmarks is not None),
        "has_expression": torch.tensor(expression is not None),
        "has_spoof": torch.tensor(spoof is not None),
        "index": torch.tensor(int(index), dtype=torch.long),
    }
