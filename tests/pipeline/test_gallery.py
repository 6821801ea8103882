"""The gallery: pickle-free .npz roundtrip, one-line refusals, numpy and faiss agree, threshold -> unknown."""

from __future__ import annotations

import importlib.util
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

from facetx.errors import UserError
from facetx.pipeline.gallery import FaissIndex, Gallery, GalleryError, NumpyIndex, check_gallery_model

FP = "0123456789abcdef"
HAS_FAISS = importlib.util.find_spec("faiss") is not None


def _unit(n: int, dim: int = 512, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _gallery(n: int = 6, dim: int = 32) -> Gallery:
    g = Gallery.empty(dim, FP, "tiny")
    emb = _unit(n, dim)
    for i in range(0, n, 2):  # two entries per person
        g.add(f"person{i // 2}", 3.0 * emb[i : i + 2])  # any scale: add normalizes
    return g


def test_roundtrip_keeps_names_embeddings_and_model(tmp_path: Path) -> None:
    g = _gallery()
    assert g.names == ["person0", "person0", "person1", "person1", "person2", "person2"]
    np.testing.assert_allclose(np.linalg.norm(g.embeddings, axis=1), 1.0, atol=1e-6)
    g.save(tmp_path / "g.npz")
    assert not list(tmp_path.glob("*.tmp"))  # the atomic write left nothing behind
    back = Gallery.load(tmp_path / "g.npz", fingerprint=FP)
    assert back.names == g.names and back.fingerprint == FP and back.model == "tiny"
    assert back.embeddings.dtype == np.float32 and np.array_equal(back.embeddings, g.embeddings)
    with np.load(tmp_path / "g.npz", allow_pickle=False) as raw:  # nothing in the file needs pickle
        assert raw["names"].dtype.kind == "U"
    empty = Gallery.empty(8, FP, "tiny")
    empty.save(tmp_path / "e.npz")
    assert len(Gallery.load(tmp_path / "e.npz")) == 0


def test_refuses_another_models_gallery_with_one_line(tmp_path: Path) -> None:
    _gallery().save(tmp_path / "g.npz")
    with pytest.raises(GalleryError) as e:
        Gallery.load(tmp_path / "g.npz", fingerprint="fedcba9876543210")
    msg = str(e.value)
    assert isinstance(e.value, UserError) and "\n" not in msg
    assert msg == (
        f"gallery {tmp_path / 'g.npz'} was built with model fingerprint {FP}, this model is fedcba9876543210: "
        "rebuild it with enroll"
    )
    loaded = Gallery.load(tmp_path / "g.npz")  # no fingerprint given: the pipeline checks it against its model
    with pytest.raises(GalleryError, match=r"g.npz was built with model fingerprint 0123456789abcdef, this model is "
                       r"fedcba9876543210 \(m.onnx\): rebuild it with enroll$"):  # fmt: skip
        check_gallery_model(loaded, "fedcba9876543210", "m.onnx")
    check_gallery_model(loaded, FP, "m.onnx")  # the same model: accepted


def test_refuses_files_that_are_not_galleries(tmp_path: Path) -> None:
    cases = {}
    cases["pickle.npz"] = pickle.dumps({"names": ["a"], "embeddings": _unit(1)})
    (tmp_path / "pickle.npz").write_bytes(cases["pickle.npz"])
    np.savez(tmp_path / "other.npz", weights=np.zeros(3))  # an .npz, but not a gallery
    np.savez(tmp_path / "objects.npz", format=np.array("facetx.gallery/1"), names=np.array(["a", 1], dtype=object),
             embeddings=_unit(2), fingerprint=np.array(FP), model=np.array("m"))  # fmt: skip
    np.savez(tmp_path / "f64.npz", format=np.array("facetx.gallery/1"), names=np.array(["a", "b"]),
             embeddings=_unit(2).astype(np.float64), fingerprint=np.array(FP), model=np.array("m"))  # fmt: skip
    np.savez(tmp_path / "rows.npz", format=np.array("facetx.gallery/1"), names=np.array(["a", "b", "c"]),
             embeddings=_unit(2), fingerprint=np.array(FP), model=np.array("m"))  # fmt: skip
    np.save(tmp_path / "single.npy", _unit(2))
    (tmp_path / "truncated.npz").write_bytes((tmp_path / "other.npz").read_bytes()[:40])
    expected = {
        "pickle.npz": "pickled (object) data",
        "other.npz": "lacks format, names, embeddings, fingerprint, model",
        "objects.npz": "pickled (object) data",
        "f64.npz": "embeddings are float64[2, 512], expected float32 [2, E]",
        "rows.npz": "expected float32 [3, E]",
        "single.npy": "single .npy array",
        "truncated.npz": "unreadable .npz",
        "missing.npz": "no such file",
    }
    for name, needle in expected.items():
        with pytest.raises(GalleryError) as e:
            Gallery.load(tmp_path / name, fingerprint=FP)
        assert needle in str(e.value) and str(tmp_path / name) in str(e.value) and "\n" not in str(e.value), name


def test_match_returns_none_below_the_threshold() -> None:
    g = _gallery()
    q = g.embeddings[[0, 3]] + 0.05 * _unit(2, g.dim, seed=1)  # near person0's first and person1's second entry
    assert [n for n, _ in g.match(q, threshold=0.5)] == ["person0", "person1"]
    (_, s0), (_, s1) = g.match(q, threshold=0.5)
    assert [n for n, _ in g.match(q, threshold=max(s0, s1))] == [None, None]  # accept only when similarity > t
    # a face unlike every entry: orthogonal to all of them, similarity 0
    basis = np.linalg.qr(g.embeddings.T)[0]  # [E, N] orthonormal basis of the entries' span
    r = _unit(1, g.dim, seed=5)
    stranger = r - (r @ basis) @ basis.T
    ((name, sim),) = g.match(stranger, threshold=0.3)
    assert name is None and abs(sim) < 1e-5
    name, sim = Gallery.empty(32, FP, "tiny").match(q[:1], threshold=0.3)[0]
    assert name is None and np.isnan(sim)
    with pytest.raises(GalleryError, match="32-d embeddings"):
        g.search(_unit(1, 16))


def test_numpy_and_faiss_agree_on_ten_thousand_entries() -> None:
    if not HAS_FAISS:
        pytest.skip("faiss-cpu is not installed (pip install faiss-cpu, or the gallery extra)")
    emb = _unit(10_000, 512, seed=2)
    queries = _unit(200, 512, seed=3)
    queries[:100] = emb[:100] + 0.3 * _unit(100, 512, seed=4)  # half near an entry, half random
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    i_np, s_np = NumpyIndex(emb).search(queries)
    i_fa, s_fa = FaissIndex(emb).search(queries)
    assert np.array_equal(i_np, i_fa) and np.array_equal(i_np[:100], np.arange(100))
    np.testing.assert_allclose(s_np, s_fa, atol=1e-5)
    names = [f"id{i}" for i in range(len(emb))]
    via_faiss = Gallery(names, emb, FP, "m", backend="faiss").match(queries, 0.5)
    via_numpy = Gallery(names, emb, FP, "m").match(queries, 0.5)
    assert [n for n, _ in via_faiss] == [n for n, _ in via_numpy] and via_numpy[0][0] == "id0"
    np.testing.assert_allclose([s for _, s in via_faiss], [s for _, s in via_numpy], atol=1e-5)


def test_unknown_backend_and_missing_faiss_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    g = _gallery()
    with pytest.raises(GalleryError, match="backend 'annoy' is unknown; expected one of numpy, faiss"):
        Gallery(g.names, g.embeddings, FP, "tiny", backend="annoy")
    monkeypatch.setitem(sys.modules, "faiss", None)  # what an environment without faiss-cpu looks like to import
    with pytest.raises(GalleryError, match=r"pip install faiss-cpu .*gallery extra"):
        Gallery(g.names, g.embeddings, FP, "tiny", backend="faiss").search(g.embeddings[:1])
