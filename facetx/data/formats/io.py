"""File and image helpers shared by the format readers: path checks and JPEG/PNG decode/encode (OpenCV, RGB)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from facetx.data.formats.errors import CorruptImageError, DataFormatError

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def require_dir(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a :class:`Path` if it is a directory, else a :class:`DataFormatError` saying what was expected."""
    p = Path(path).expanduser()
    if not p.is_dir():
        state = "is not a directory" if p.exists() else "does not exist"
        raise DataFormatError(f"{p}: {state} (expected {what})")
    if not os.access(p, os.R_OK | os.X_OK):  # else the first listing fails with a bare PermissionError
        raise DataFormatError(f"{p}: cannot list this folder (permission denied; expected {what})")
    return p


def require_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a :class:`Path` if it is a regular file, else a :class:`DataFormatError`."""
    p = Path(path).expanduser()
    if not p.is_file():
        state = "is not a file" if p.exists() else "does not exist"
        raise DataFormatError(f"{p}: {state} (expected {what})")
    if not os.access(p, os.R_OK):
        raise DataFormatError(f"{p}: cannot read this file (permission denied; expected {what})")
    return p


def decode_image(data: bytes | bytearray | memoryview, where: str) -> np.ndarray:
    """Encoded image bytes (JPEG, PNG, ...) -> uint8 ``[H, W, 3]`` RGB. Grayscale becomes three equal channels.

    ``where`` names the source in the error (``"train.rec: record 12"``); an undecodable payload raises
    :class:`CorruptImageError`.
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if img is None:
        raise CorruptImageError(f"{where}: cannot decode the image payload ({buf.size} bytes)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file -> uint8 ``[H, W, 3]`` RGB. Missing file: :class:`DataFormatError`; undecodable: corrupt."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise DataFormatError(f"{p}: image file does not exist") from None
    except OSError as e:
        raise DataFormatError(f"{p}: cannot read image file ({e.strerror})") from None
    return decode_image(data, str(p))


def encode_image(image: np.ndarray, ext: str = ".jpg", quality: int = 95) -> bytes:
    """uint8 ``[H, W, 3]`` RGB (or ``[H, W]`` gray) -> encoded bytes (``ext``: ``.jpg`` or ``.png``)."""
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"expected a uint8 [H, W, 3] RGB or [H, W] gray image, got {image.dtype} {image.shape}")
    bgr = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if ext.lower() in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, bgr, params)
    if not ok:
        raise ValueError(f"OpenCV could not encode an image as {ext}")
    return buf.tobytes()


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize to ``size x size`` (no-op when already that size); area filter when shrinking."""
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    interp = cv2.INTER_AREA if max(h, w) > size else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interp)
