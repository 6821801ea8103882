"""insightface verification packs (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``, ...).

A pack is a pickle of ``(list of JPEG bytes, list of bool)``: images ``2i`` and ``2i + 1`` form pair ``i``. Packs come
from the internet, so they are read with an unpickler that resolves no global at all: plain containers, bytes, str,
numbers and bools load; anything that would import or call code (``os.system`` via a reduce, numpy arrays, ...) is
refused with an error naming the file. Packs written by Python 2 store images as ``str``; ``encoding="bytes"``
loads those as bytes.
"""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Sequence

import torch

from facetx.data.contract import IMAGE_SIZE
from facetx.data.formats.base import Face, FormatDataset
from facetx.data.formats.errors import CorruptImageError, DataFormatError
from facetx.data.formats.io import decode_image, require_file, resize_square
from facetx.data.landmarks import LandmarkLayout


class _PlainUnpickler(pickle.Unpickler):
    """Resolves no global, so no pickle opcode can reach a callable."""

    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file, encoding="bytes")
        self.source = source

    def find_class(self, module: str, name: str) -> object:
        hint = (
            "; Python 3 pickles bytes that way below protocol 3: re-save the pack with protocol 4"
            if (module, name) == ("_codecs", "encode")
            else " (not a plain pack, possibly malicious)"
        )
        raise DataFormatError(
            f"{self.source}: refusing to load: the pickle references {module}.{name}, but a verification pack may"
            f" hold only lists of image bytes and bools{hint}"
        )


def load_plain_pickle(path: str | os.PathLike) -> object:
    """Unpickle ``path`` allowing only built-in plain data (no globals); errors name the file."""
    p = require_file(path, "a verification pack (.bin)")
    try:
        with open(p, "rb") as f:
            return _PlainUnpickler(f, str(p)).load()
    except DataFormatError:
        raise
    except Exception as e:  # truncated or not a pickle: UnpicklingError, EOFError, ValueError, ...
        raise DataFormatError(f"{p}: not a readable pickle ({type(e).__name__}: {e})") from None


class VerificationBin(FormatDataset):
    """The images of one verification pack, in file order; ``pairs`` int64 ``[P, 3]`` = ``(2i, 2i + 1, same)``.

    Samples carry no labels (verification uses ``pairs``). ``flip_tta`` tells the evaluator to sum the embeddings of
    each image and its horizontal flip, as insightface reports these sets. A corrupt image always fails: a skipped
    image would change the pairs.
    """

    flip_tta = True

    def __init__(
        self, path: str | os.PathLike, layout: str | int | LandmarkLayout = "ibug68", name: str | None = None
    ) -> None:
        super().__init__(layout, transform=None, on_corrupt="fail")
        self.path = require_file(path, "a verification pack (.bin)")
        self.verification_name = self.path.stem
        self.name = name or self.verification_name
        obj = load_plain_pickle(self.path)
        self.images, issame = self._check(obj)
        same = torch.tensor([int(s) for s in issame], dtype=torch.long)
        idx = torch.arange(len(issame), dtype=torch.long) * 2
        self.pairs = torch.stack([idx, idx + 1, same], dim=1)
        self._set_length(len(self.images))

    def _check(self, obj: object) -> tuple[list[bytes], list[bool]]:
        p = self.path
        if not (isinstance(obj, (tuple, list)) and len(obj) == 2):
            raise DataFormatError(f"{p}: expected a pickled pair (list of image bytes, list of bool), got {_kind(obj)}")
        images, issame = obj
        if not isinstance(images, (list, tuple)) or not all(isinstance(b, (bytes, bytearray)) for b in images):
            raise DataFormatError(f"{p}: the first element must be a list of encoded image bytes, got {_kind(images)}")
        if not isinstance(issame, (list, tuple)) or not all(isinstance(s, (bool, int)) for s in issame):
            raise DataFormatError(
                f"{p}: the second element must be a list of bool (same identity), got {_kind(issame)}"
            )
        if any(int(s) not in (0, 1) for s in issame):
            raise DataFormatError(f"{p}: same-identity flags must be 0/1 or bool")
        if len(images) != 2 * len(issame) or not issame:
            raise DataFormatError(
                f"{p}: {len(images)} images for {len(issame)} pairs (expected 2 images per pair, at least one pair)"
            )
        return list(images), list(issame)

    def _load(self, index: int) -> Face:
        where = f"{self.path}: image {index}"
        try:
            image = decode_image(self.images[index], where)
        except CorruptImageError as e:
            raise DataFormatError(str(e)) from None
        return Face(image=resize_square(image, IMAGE_SIZE))


def _kind(obj: object) -> str:
    n = f" of length {len(obj)}" if isinstance(obj, (list, tuple)) else ""
    return type(obj).__name__ + n


def verification_sets(paths: Sequence[str | os.PathLike] | None, layout: str | int | LandmarkLayout = "ibug68") -> list:
    """One :class:`VerificationBin` per path (``data.val_bins`` in the configs); ``None``/empty -> ``[]``."""
    sets = [VerificationBin(p, layout=layout) for p in (paths or [])]
    names = [s.verification_name for s in sets]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise DataFormatError(f"val_bins: several packs share the file stem {sorted(dup)} (metric names would clash)")
    return sets
