"""insightface verification packs (.bin): Python 3 and Python 2 pickles read back; malicious or non-plain pickles are
refused without running code; structure errors name the file."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from facetx.data.formats import DataFormatError, VerificationBin, verification_sets
from facetx.data.formats.io import encode_image
from facetx.data.formats.writers import write_verification_bin


def images(n: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [
        encode_image(np.kron(rng.integers(0, 256, (4, 4, 3)), np.ones((28, 28, 1))).astype(np.uint8)) for _ in range(n)
    ]


@pytest.mark.parametrize("python2", [False, True])
def test_write_and_read_back(tmp_path: Path, python2: bool) -> None:
    imgs, same = images(8), [True, False, False, True]
    path = tmp_path / "lfw.bin"
    write_verification_bin(path, imgs, same, python2=python2)
    ds = VerificationBin(path)
    assert (ds.name, ds.verification_name, ds.flip_tta, len(ds)) == ("lfw", "lfw", True, 8)
    assert ds.pairs.dtype == torch.int64
    assert ds.pairs.tolist() == [[0, 1, 1], [2, 3, 0], [4, 5, 0], [6, 7, 1]]
    s = ds[3]
    assert s["image"].shape == (3, 112, 112) and int(s["index"]) == 3
    assert not any(bool(s[f"has_{t}"]) for t in ("identity", "landmarks", "expression", "spoof"))
    assert ds.images == imgs


def test_python2_pack_needs_bytes_encoding(tmp_path: Path) -> None:
    path = tmp_path / "agedb_30.bin"
    write_verification_bin(path, images(2), [True], python2=True)
    data = path.read_bytes()
    assert data[:2] == b"\x80\x02" and b"_codecs" not in data  # protocol 2, images as BINSTRING (str)
    with pytest.raises(UnicodeDecodeError):  # what a plain Python 3 load does with these str-typed JPEGs
        pickle.loads(data)
    assert pickle.loads(data, encoding="bytes")[0] == images(2)
    assert len(VerificationBin(path)) == 2


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.bin"
    path.write_bytes(pickle.dumps((_Exploit(marker), [True]), protocol=2))
    with pytest.raises(DataFormatError, match=r"evil\.bin: refusing to load: the pickle references posix\.system"):
        VerificationBin(path)
    assert not marker.exists()
    # the same payload in the image list, and with the newest protocol
    path.write_bytes(pickle.dumps(([_Exploit(marker)], [True]), protocol=pickle.HIGHEST_PROTOCOL))
    with pytest.raises(DataFormatError, match=r"refusing to load"):
        VerificationBin(path)
    assert not marker.exists()


def test_non_plain_pickles_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "np.bin"
    path.write_bytes(pickle.dumps((images(2), np.array([True]))))
    with pytest.raises(DataFormatError, match=r"np\.bin: refusing to load: the pickle references numpy"):
        VerificationBin(path)
    # Python 3 below protocol 3 stores bytes through a global call: refused too, with a hint
    path.write_bytes(pickle.dumps((images(2), [True]), protocol=2))
    with pytest.raises(DataFormatError, match=r"references _codecs\.encode.*re-save the pack with protocol 4"):
        VerificationBin(path)


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ([b"x"], r"expected a pickled pair \(list of image bytes, list of bool\), got list of length 1"),
        (("a", [True]), r"the first element must be a list of encoded image bytes, got str"),
        ((images(2), ["yes"]), r"the second element must be a list of bool"),
        ((images(3), [True]), r"3 images for 1 pairs \(expected 2 images per pair"),
        ((images(2), [2]), r"same-identity flags must be 0/1"),
    ],
)
def test_bad_structure(tmp_path: Path, obj: object, message: str) -> None:
    path = tmp_path / "cfp_fp.bin"
    path.write_bytes(pickle.dumps(obj))
    with pytest.raises(DataFormatError, match=r"cfp_fp\.bin: " + message):
        VerificationBin(path)


def test_truncated_pack_missing_file_and_corrupt_image(tmp_path: Path) -> None:
    path = tmp_path / "lfw.bin"
    write_verification_bin(path, images(4), [True, False])
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(DataFormatError, match=r"lfw\.bin: not a readable pickle"):
        VerificationBin(path)
    with pytest.raises(DataFormatError, match=r"missing\.bin: does not exist \(expected a verification pack"):
        VerificationBin(tmp_path / "missing.bin")
    write_verification_bin(path, [*images(3), b"garbage"], [True, False])
    ds = VerificationBin(path)
    with pytest.raises(DataFormatError, match=r"lfw\.bin: image 3: cannot decode the image payload"):
        ds[3]


def test_verification_sets_from_paths(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    for p in [tmp_path / "lfw.bin", tmp_path / "cfp_fp.bin", tmp_path / "a" / "lfw.bin"]:
        write_verification_bin(p, images(2), [True])
    sets = verification_sets([tmp_path / "lfw.bin", tmp_path / "cfp_fp.bin"], layout=98)
    assert [s.verification_name for s in sets] == ["lfw", "cfp_fp"] and sets[0].num_landmarks == 98
    assert verification_sets(None) == [] and verification_sets([]) == []
    with pytest.raises(DataFormatError, match=r"several packs share the file stem \['lfw'\]"):
        verification_sets([tmp_path / "lfw.bin", tmp_path / "a" / "lfw.bin"])
