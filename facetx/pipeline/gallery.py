"""The gallery of enrolled faces: names and L2-normalized embeddings of one model, saved as a pickle-free ``.npz``,
searched by cosine similarity (brute force in numpy, or a faiss flat inner-product index).

A gallery remembers the ``facetx.fingerprint`` of the model that embedded it: embeddings of another model live in
another space, and matching them gives confident nonsense, so :meth:`Gallery.load` refuses them.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from facetx.errors import UserError

#: the ``format`` array of a gallery file (a version, should the layout ever change)
FORMAT = "facetx.gallery/1"
BACKENDS = ("numpy", "faiss")


class GalleryError(UserError, ValueError):
    """A gallery file that is missing, not a facetx gallery, or built with another model."""


def _normalized(x: np.ndarray, what: str) -> np.ndarray:
    """Rows of ``x`` ``[N, E]`` scaled to unit L2 norm (float32); a zero row cannot be and is refused."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms == 0).any() or not np.isfinite(norms).all():
        raise ValueError(f"{what}: an embedding is zero or not finite, it has no direction to compare")
    return np.ascontiguousarray(x / norms)


class GalleryIndex(Protocol):
    """Nearest gallery entry by inner product (cosine for unit vectors)."""

    def search(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``queries [M, E]`` float32 unit rows -> ``(entry index [M] int64, similarity [M] float32)``."""
        ...


class NumpyIndex:
    """Brute force: one ``[M, E] @ [E, N]`` matrix product and an argmax per query (BLAS; no extra dependency)."""

    def __init__(self, embeddings: np.ndarray) -> None:
        self.embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)

    def search(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sims = queries @ self.embeddings.T  # [M, N]
        best = sims.argmax(axis=1)
        return best.astype(np.int64), sims[np.arange(len(sims)), best]


class FaissIndex:
    """faiss-cpu ``IndexFlatIP``: exact inner-product search (the same answers as :class:`NumpyIndex`)."""

    def __init__(self, embeddings: np.ndarray) -> None:
        try:
            import faiss
        except ImportError:
            raise GalleryError(
                "gallery backend 'faiss' needs faiss-cpu, which is not installed: pip install faiss-cpu "
                "(or the gallery extra: pip install -e '.[gallery]'), or use backend='numpy'"
            ) from None
        emb = np.ascontiguousarray(embeddings, dtype=np.float32)
        self.index = faiss.IndexFlatIP(emb.shape[1])
        self.index.add(emb)

    def search(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sims, ids = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), 1)
        return ids[:, 0].astype(np.int64), sims[:, 0]


def make_index(embeddings: np.ndarray, backend: str = "numpy") -> GalleryIndex:
    """An index over ``embeddings [N, E]`` (unit rows, N >= 1): ``backend`` one of :data:`BACKENDS`."""
    if backend == "numpy":
        return NumpyIndex(embeddings)
    if backend == "faiss":
        return FaissIndex(embeddings)
    raise GalleryError(f"gallery backend {backend!r} is unknown; expected one of {', '.join(BACKENDS)}")


def _other_model(gallery: str, built_with: str, this: str) -> str:
    return (
        f"gallery {gallery} was built with model fingerprint {built_with}, this model is {this}: rebuild it with enroll"
    )


@dataclass
class Gallery:
    """Enrolled faces of one model: ``names [N]`` (one per entry; a person may have several entries),
    ``embeddings [N, E]`` float32 with unit rows, the model's ``fingerprint`` (``facetx.fingerprint`` of its ONNX
    metadata) and ``model`` name (for messages). Not saved: ``backend`` (one of :data:`BACKENDS`) that
    :meth:`search` / :meth:`match` use, and the ``path`` it was loaded from."""

    names: list[str]
    embeddings: np.ndarray
    fingerprint: str
    model: str
    backend: str = "numpy"
    path: Path | None = field(default=None, compare=False)
    _index: GalleryIndex | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise GalleryError(f"gallery backend {self.backend!r} is unknown; expected one of {', '.join(BACKENDS)}")
        self.names = [str(n) for n in self.names]
        self.embeddings = np.ascontiguousarray(self.embeddings, dtype=np.float32)
        if self.embeddings.ndim != 2 or len(self.embeddings) != len(self.names):
            raise ValueError(
                f"gallery: {len(self.names)} names need embeddings [{len(self.names)}, E], got "
                f"{list(self.embeddings.shape)}"
            )

    @classmethod
    def empty(cls, dim: int, fingerprint: str, model: str, backend: str = "numpy") -> Gallery:
        """A gallery without entries for ``dim``-dimensional embeddings."""
        return cls([], np.zeros((0, dim), np.float32), fingerprint, model, backend)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def add(self, name: str, embeddings: np.ndarray) -> None:
        """Enroll ``embeddings`` ``[E]`` or ``[k, E]`` (any scale: they are L2-normalized here) as ``name``."""
        e = np.asarray(embeddings, dtype=np.float32)
        e = e[None] if e.ndim == 1 else e
        if e.ndim != 2 or e.shape[1] != self.dim:
            raise GalleryError(f"gallery holds {self.dim}-d embeddings, got {list(e.shape)} for {name!r}")
        self.embeddings = np.concatenate([self.embeddings, _normalized(e, f"gallery entry {name!r}")])
        self.names += [str(name)] * len(e)
        self._index = None  # built for the old entries

    def index(self) -> GalleryIndex:
        """The :attr:`backend` search index over the current entries (built once, rebuilt after :meth:`add`)."""
        if self._index is None:
            self._index = make_index(self.embeddings, self.backend)
        return self._index

    def search(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Best entry per query: ``queries [M, E]`` (normalized here) -> ``(entry index [M] int64, cosine [M])``;
        an empty gallery gives index -1 and similarity nan."""
        q = np.asarray(queries, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise GalleryError(
                f"gallery of {self.model} holds {self.dim}-d embeddings, the queries are {list(q.shape)}"
            )
        if len(self) == 0 or len(q) == 0:
            return np.full(len(q), -1, np.int64), np.full(len(q), np.nan, np.float32)
        return self.index().search(_normalized(q, "gallery query"))

    def match(self, queries: np.ndarray, threshold: float) -> list[tuple[str | None, float]]:
        """``(name, cosine)`` of the best entry per query; the name is None ("unknown") unless cosine > ``threshold``
        (the model's ``recognition.threshold``: the rule its FAR was measured with)."""
        best, sims = self.search(queries)
        return [
            (self.names[i] if i >= 0 and s > threshold else None, float(s)) for i, s in zip(best, sims, strict=True)
        ]

    def save(self, path: str | Path) -> None:
        """Write ``path`` (``.npz``, no pickled objects) atomically: a crash never leaves half a gallery."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            np.savez(
                f,
                format=np.array(FORMAT),
                names=np.array(self.names, dtype=str),  # unicode, not object: loads without pickle
                embeddings=self.embeddings,
                fingerprint=np.array(self.fingerprint),
                model=np.array(self.model),
            )
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path, fingerprint: str | None = None, backend: str = "numpy") -> Gallery:
        """Read a gallery written by :meth:`save`, searched with ``backend``; with ``fingerprint`` (the model's
        ``facetx.fingerprint``), refuse one built with another model. Every refusal is one :class:`GalleryError`
        line."""
        path = Path(path)
        if not path.is_file():
            raise GalleryError(f"gallery {path}: no such file; build one with enroll")
        try:
            data = np.load(path, allow_pickle=False)
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise GalleryError(f"gallery {path}: found a single .npy array, expected a facetx gallery .npz")
            with data:
                arrays = {k: data[k] for k in data.files}
        except GalleryError:  # a ValueError too: already the one line
            raise
        except ValueError as e:  # numpy's refusal of pickled data: a pickle (or any non-numpy file), object arrays
            raise GalleryError(
                f"gallery {path}: not a facetx gallery .npz, numpy reads pickled (object) data in it, which a gallery "
                "never holds and which is not loaded (unpickling can run code)"
                if "pickle" in str(e) or "Object arrays" in str(e)
                else f"gallery {path}: not a facetx gallery .npz ({e})"
            ) from None
        except (OSError, EOFError, zipfile.BadZipFile) as e:  # truncated or corrupted archive
            raise GalleryError(f"gallery {path}: unreadable .npz ({type(e).__name__}: {e})") from None
        gallery = cls._from_arrays(arrays, path, backend)
        if fingerprint is not None:
            check_gallery_model(gallery, fingerprint)
        return gallery

    @classmethod
    def _from_arrays(cls, arrays: dict[str, np.ndarray], path: Path, backend: str) -> Gallery:
        """Check the arrays of a gallery file (names, dtypes, shapes, unit rows) and build the gallery."""
        missing = [k for k in ("format", "names", "embeddings", "fingerprint", "model") if k not in arrays]
        if missing:
            raise GalleryError(
                f"gallery {path}: not a facetx gallery (lacks {', '.join(missing)}; has {', '.join(sorted(arrays))})"
            )
        if str(arrays["format"]) != FORMAT:
            raise GalleryError(f"gallery {path}: format {str(arrays['format'])!r}, expected {FORMAT!r}")
        names, emb = arrays["names"], arrays["embeddings"]
        for key in ("fingerprint", "model"):
            if arrays[key].dtype.kind != "U" or arrays[key].ndim != 0:
                raise GalleryError(
                    f"gallery {path}: {key} is {arrays[key].dtype}{list(arrays[key].shape)}, expected a string"
                )
        if names.dtype.kind != "U" or names.ndim != 1:
            raise GalleryError(f"gallery {path}: names are {names.dtype}{list(names.shape)}, expected strings [N]")
        if emb.dtype != np.float32 or emb.ndim != 2 or len(emb) != len(names):
            raise GalleryError(
                f"gallery {path}: embeddings are {emb.dtype}{list(emb.shape)}, expected float32 [{len(names)}, E]"
            )
        if len(emb) and not np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-3):
            raise GalleryError(f"gallery {path}: embeddings are not L2-normalized, expected unit rows")
        return cls(names.tolist(), emb, str(arrays["fingerprint"]), str(arrays["model"]), backend, path)


def check_gallery_model(gallery: Gallery, fingerprint: str, model_path: str | None = None) -> None:
    """Refuse (one :class:`GalleryError` line) a ``gallery`` built with another model than the one whose
    ``facetx.fingerprint`` is ``fingerprint`` (``model_path``: that model's file, named in the message)."""
    if gallery.fingerprint != fingerprint:
        this = fingerprint if model_path is None else f"{fingerprint} ({model_path})"
        raise GalleryError(_other_model(str(gallery.path or "in memory"), gallery.fingerprint, this))
