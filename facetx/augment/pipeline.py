"""Landmark-aware augmentation of aligned face crops: a horizontal flip that swaps left/right points, then an
albumentations ``Compose`` of geometric, photometric and occlusion transforms that moves the landmarks with the image.
"""

from __future__ import annotations

import os
import random
import sys
import warnings
from collections.abc import Sequence

import albumentations as A
import numpy as np

from facetx.data.sampler import current_sample_key

# HorizontalFlip mirrors keypoints but keeps their labels (the left eye becomes a point on the right side still
# called "left eye"); FaceAugment flips itself with a flip map instead. The others mirror or rotate the face too.
_FORBIDDEN = ("HorizontalFlip", "VerticalFlip", "Transpose", "RandomRotate90", "D4", "SquareSymmetry")


def _check_albumentations() -> None:
    from packaging.version import Version

    if Version(A.__version__) < Version("2.0"):
        raise ImportError(
            f"facetx.augment needs albumentations>=2.0 (its argument names and seeding), found {A.__version__}"
        )


class FaceAugment:
    """Augment one aligned face crop and its landmarks together.

    Each call: with probability ``hflip_p`` mirror the image and the landmarks (``x' = W - 1 - x``, rows permuted by
    ``flip_map``), then apply ``transforms`` in order. Landmarks follow the image exactly; points that leave the image
    are kept (never dropped or reordered).

    Randomness: one numpy ``Generator`` and one ``random.Random`` drive the flip and every transform. In the training
    loader every sample is read under a :class:`facetx.data.sampler.SampleKey` ``(run seed, epoch, index)`` and the
    state is re-seeded from ``(seed, *key)`` per sample, so an augmented epoch is the same with any number of workers
    and after a resume. Called elsewhere, ``seed`` makes the sequence of outputs reproducible (``None``: fresh OS
    entropy), and inside a torch DataLoader worker the state is re-seeded once per worker from ``(seed, torch worker
    seed)``, since albumentations 2.0 does not do it and forked workers would otherwise share one stream.
    """

    def __init__(self, transforms: Sequence[A.BasicTransform], hflip_p: float = 0.5, seed: int | None = None) -> None:
        _check_albumentations()
        transforms = list(transforms)
        for i, t in enumerate(transforms):
            if not isinstance(t, (A.BasicTransform, A.BaseCompose)):
                raise ValueError(f"FaceAugment: transforms[{i}] must be an albumentations transform, got {type(t)}")
            if type(t).__name__ in _FORBIDDEN:
                raise ValueError(
                    f"FaceAugment: transforms[{i}] is {type(t).__name__}, which mirrors/rotates the face without"
                    " swapping left/right landmark labels; use hflip_p instead"
                )
        if not 0.0 <= float(hflip_p) <= 1.0:
            raise ValueError(f"FaceAugment: hflip_p must be in [0, 1], got {hflip_p}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
            raise ValueError(f"FaceAugment: seed must be a non-negative int or None, got {seed!r}")
        self.transforms = transforms
        self.hflip_p = float(hflip_p)
        self.seed = None if seed is None else int(seed)
        # strict=True turns a misspelled transform argument (albumentations only warns and drops it) into an error.
        with warnings.catch_warnings():
            # An empty or image-only list is fine here (landmarks then pass through unchanged).
            warnings.filterwarnings("ignore", message="Got processor for keypoints, but no transform to process it")
            self._compose = A.Compose(
                transforms,
                keypoint_params=A.KeypointParams(format="xy", remove_invisible=False),
                strict=True,
            )
        self._worker_key: tuple[int, int, int] | None = None
        self.reseed(self.seed)

    @property
    def is_identity(self) -> bool:
        """True when the pipeline changes nothing (no transforms, no flips): every call returns the same image."""
        return not self.transforms and self.hflip_p == 0.0

    def reseed(self, seed: int | Sequence[int] | None) -> None:
        """Reset the random state (``None``: fresh OS entropy); the flip and all transforms share it.

        albumentations' own ``Compose(seed=...)`` gives every transform a generator with the *same* seed, which
        correlates their draws; a shared generator does not.
        """
        rng = np.random.default_rng(np.random.SeedSequence(seed))
        py = random.Random(int(rng.integers(2**63)))
        self._rng = rng
        self._compose.set_random_state(rng, py)

    def _reseed_for_sample(self) -> None:
        # Inside the training loader (facetx.data.sampler.KeyedDataset) each sample's randomness is a function of
        # (augment seed, run seed, epoch, index): the same in any worker and after a resume, with no state to save.
        key = current_sample_key()
        if key is not None:
            self.reseed([*(() if self.seed is None else (self.seed,)), *key])
        else:
            self._reseed_for_worker()

    def _reseed_for_worker(self) -> None:
        # A DataLoader worker has imported torch.utils.data; otherwise we are not in one and need not import torch.
        data = sys.modules.get("torch.utils.data")
        if data is None:
            return
        info = data.get_worker_info()
        if info is None:
            return
        key = (os.getpid(), int(info.id), int(info.seed))
        if key != self._worker_key:
            self._worker_key = key
            self.reseed([int(info.seed)] if self.seed is None else [self.seed, int(info.seed)])

    def __call__(
        self, image: np.ndarray, landmarks: np.ndarray | None, flip_map: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """image: uint8 ``[H, W, 3]`` RGB; landmarks: ``[K, 2]`` OpenCV pixel ``(x, y)`` (integer = pixel center) or
        None; flip_map: int ``[K]``, index of each point's mirror partner (needed when ``hflip_p > 0``).

        Returns the augmented uint8 ``[H, W, 3]`` image and float32 ``[K, 2]`` landmarks (None if none were given).
        """
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
            raise ValueError(f"FaceAugment: image must be a uint8 [H, W, 3] RGB array, got {got}")
        if landmarks is not None:
            landmarks = np.asarray(landmarks, dtype=np.float32)
            if landmarks.ndim != 2 or landmarks.shape[1] != 2:
                raise ValueError(f"FaceAugment: landmarks must have shape [K, 2], got {landmarks.shape}")
            if self.hflip_p > 0.0:
                flip_map = self._check_flip_map(flip_map, len(landmarks))
        self._reseed_for_sample()

        h, w = image.shape[:2]
        if self.hflip_p > 0.0 and self._rng.random() < self.hflip_p:
            image = image[:, ::-1]
            if landmarks is not None:
                mirrored = np.stack([(w - 1) - landmarks[:, 0], landmarks[:, 1]], axis=1)
                landmarks = mirrored[flip_map]
        image = np.ascontiguousarray(image)
        if not self.transforms:
            return image, None if landmarks is None else landmarks.copy()

        if landmarks is None:
            out = self._compose(image=image)
            out_lm = None
        else:
            out = self._compose(image=image, keypoints=landmarks)
            out_lm = np.asarray(out["keypoints"], dtype=np.float32)[:, :2]
            if out_lm.shape != landmarks.shape:
                raise RuntimeError(f"FaceAugment: transforms returned {out_lm.shape} landmarks for {landmarks.shape}")
        out_img = out["image"]
        if out_img.shape != image.shape or out_img.dtype != np.uint8:
            raise ValueError(
                f"FaceAugment: transforms must keep the image shape and dtype ({image.shape} uint8), got"
                f" {out_img.shape} {out_img.dtype}; remove resizing/cropping transforms from the list"
            )
        return out_img, out_lm

    @staticmethod
    def _check_flip_map(flip_map: np.ndarray | None, k: int) -> np.ndarray:
        if flip_map is None:
            raise ValueError("FaceAugment: hflip_p > 0 and landmarks given but flip_map is None (need an int [K] map)")
        fm = np.asarray(flip_map)
        # A mirror pairing is symmetric: an int [K] permutation that is its own inverse (fm[fm] == identity).
        ok = (
            fm.shape == (k,)
            and np.issubdtype(fm.dtype, np.integer)
            and fm.min(initial=0) >= 0
            and fm.max(initial=-1) < k
        )
        if not ok or not np.array_equal(fm[fm], np.arange(k)):
            raise ValueError(
                f"FaceAugment: flip_map must be an int [{k}] permutation with flip_map[flip_map[i]] == i,"
                f" got {fm.tolist()}"
            )
        return fm

    def __repr__(self) -> str:
        names = ", ".join(type(t).__name__ for t in self.transforms)
        return f"FaceAugment(hflip_p={self.hflip_p}, seed={self.seed}, transforms=[{names}])"
