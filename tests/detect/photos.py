"""Real face photos for the detector tests: always-there ones from skimage, optional ones from matplotlib and the cache.

- ``astronaut``: ``skimage.data.astronaut()`` (512x512, one face);
- ``lfw_trio`` / ``lfw_trio_b``: three 25x25 grayscale faces of ``skimage.data.lfw_subset()`` upscaled to 120x120
  (bicubic) on a gray 640x360 canvas: a multi-face frame at video size;
- ``grace_hopper``: matplotlib's ``sample_data/grace_hopper.jpg``, when matplotlib is installed;
- ``insightface_group`` / ``insightface_aligned``: ``t1.jpg`` (a 1280x886 group photo) and
  ``Tom_Hanks_54745.png`` (an aligned 112x112 crop) of the insightface 2.1 sdist, which
  ``scripts/fetch_blazeface.sh`` caches in ``<cache>/photos`` (third-party pictures: not kept in the repo).

:func:`load` returns None for a photo that is not available; :func:`why_missing` says why.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np


def lfw_canvas(indices: tuple[int, ...], size: int = 120, canvas: tuple[int, int] = (360, 640)) -> np.ndarray:
    """``len(indices)`` LFW faces (``skimage.data.lfw_subset()``) upscaled to ``size`` and spaced evenly across a
    gray ``canvas`` (H, W): uint8 RGB."""
    from skimage import data

    faces = data.lfw_subset()
    image = np.full((*canvas, 3), 128, np.uint8)
    gap = (canvas[1] - len(indices) * size) // (len(indices) + 1)
    y = (canvas[0] - size) // 2
    for k, i in enumerate(indices):
        face = cv2.resize((faces[i] * 255).round().astype(np.uint8), (size, size), interpolation=cv2.INTER_CUBIC)
        x = gap + k * (size + gap)
        image[y : y + size, x : x + size] = face[..., None]
    return image


def _read_rgb(path: Path) -> np.ndarray | None:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR) if path.is_file() else None
    return None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _cached(name: str) -> np.ndarray | None:
    from facetx.detect.weights import cache_dir

    return _read_rgb(cache_dir() / "photos" / name)


def _grace_hopper() -> np.ndarray | None:
    try:
        import matplotlib
    except ImportError:
        return None
    return _read_rgb(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")


def _astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


PHOTOS: dict[str, Callable[[], np.ndarray | None]] = {
    "astronaut": _astronaut,
    "lfw_trio": lambda: lfw_canvas((0, 1, 2)),
    "lfw_trio_b": lambda: lfw_canvas((10, 30, 60)),
    "grace_hopper": _grace_hopper,
    "insightface_group": lambda: _cached("insightface_t1.jpg"),
    "insightface_aligned": lambda: _cached("insightface_Tom_Hanks_54745.png"),
}


def load(name: str) -> np.ndarray | None:
    """The uint8 RGB photo ``name`` (a key of :data:`PHOTOS`), or None when it is not available here."""
    return PHOTOS[name]()


def why_missing(name: str) -> str:
    """Why :func:`load` returned None for ``name``."""
    if name == "grace_hopper":
        return "matplotlib (with its sample_data/grace_hopper.jpg) is not installed in this venv"
    return f"{name}: not in <cache>/photos (run `bash scripts/fetch_blazeface.sh`)"
