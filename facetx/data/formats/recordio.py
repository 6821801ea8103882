"""MXNet RecordIO (``.rec`` + ``.idx``) in pure Python, as insightface packs (MS1M, Glint, WebFace) use it.

Framing (dmlc-core ``recordio.cc``), little-endian: each part is ``uint32 magic 0xced7230a``, ``uint32 lrec`` with
``cflag = lrec >> 29`` and ``length = lrec & (2**29 - 1)``, ``length`` bytes, zero padding to 4 bytes. The writer
splits a record wherever the magic occurs at a 4-aligned offset of the payload (cflag 1 = first part, 2 = middle,
3 = last; 0 = whole record); the reader joins the parts with the magic put back.

Record payload (``mxnet.recordio.pack``): ``IRHeader`` = struct ``IfQQ`` (flag, label, id, id2); when ``flag > 0``,
``flag`` float32 labels follow the header and ``label`` is unused. The ``.idx`` is text, one ``"<key>\\t<offset>"``
per line.
"""

from __future__ import annotations

import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from facetx.data.formats.errors import DataFormatError
from facetx.data.formats.io import require_file

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_LEN_MASK = (1 << 29) - 1
_IR_HEADER = struct.Struct("<IfQQ")  # IRHeader: flag, label, id, id2
IR_SIZE = _IR_HEADER.size  # 24


@dataclass(frozen=True)
class IRHeader:
    """``flag``: number of float32 labels after the header (0: ``label`` is the scalar label); ``label``: a float or
    a float32 array ``[flag]``; ``id``/``id2``: record ids."""

    flag: int
    label: float | np.ndarray
    id: int
    id2: int


def pack_record(label: float | np.ndarray | list[float], payload: bytes, id: int = 0, id2: int = 0) -> bytes:
    """``mxnet.recordio.pack``: a scalar label goes in the header (flag 0); an array goes after it (flag = size)."""
    if np.ndim(label) == 0:
        return _IR_HEADER.pack(0, float(label), id, id2) + payload
    arr = np.asarray(label, dtype="<f4").ravel()
    return _IR_HEADER.pack(arr.size, 0.0, id, id2) + arr.tobytes() + payload


def unpack_record(data: bytes, where: str) -> tuple[IRHeader, bytes]:
    """``mxnet.recordio.unpack``: record bytes -> (header, payload after the header and its labels)."""
    if len(data) < IR_SIZE:
        raise DataFormatError(f"{where}: record of {len(data)} bytes is shorter than its {IR_SIZE}-byte IRHeader")
    flag, label, id_, id2 = _IR_HEADER.unpack_from(data)
    rest = data[IR_SIZE:]
    if flag > 0:
        if len(rest) < 4 * flag:
            raise DataFormatError(f"{where}: IRHeader announces {flag} float32 labels but the record is too short")
        return IRHeader(flag, np.frombuffer(rest, dtype="<f4", count=flag).copy(), id_, id2), rest[4 * flag :]
    return IRHeader(flag, float(label), id_, id2), rest


def frame_record(record: bytes) -> bytes:
    """Record bytes -> the bytes a dmlc ``RecordIOWriter`` writes for it (split at aligned magic, padded)."""
    out = bytearray()
    n = len(record)
    if n >= 1 << 29:
        raise ValueError(f"RecordIO records must be shorter than 2**29 bytes, got {n}")
    start = 0
    i = record.find(_MAGIC_BYTES)
    while i != -1:
        if i % 4 == 0:  # dmlc splits only at 4-aligned occurrences
            out += _MAGIC_BYTES + struct.pack("<I", (1 if start == 0 else 2) << 29 | (i - start)) + record[start:i]
            start = i + 4
            i = record.find(_MAGIC_BYTES, start)
        else:
            i = record.find(_MAGIC_BYTES, i + 1)
    out += _MAGIC_BYTES + struct.pack("<I", (3 if start else 0) << 29 | (n - start)) + record[start:]
    out += b"\0" * (-n % 4)
    return bytes(out)


def read_framed(fh: BinaryIO, offset: int, where: str) -> bytes:
    """Read the (possibly multi-part) record starting at byte ``offset`` of an open ``.rec``."""
    fh.seek(offset)
    parts = []
    pos = offset
    while True:
        head = fh.read(8)
        if len(head) < 8:
            raise DataFormatError(f"{where}: file ends inside the record header at byte {pos} (truncated .rec?)")
        magic, lrec = struct.unpack("<II", head)
        if magic != MAGIC:
            raise DataFormatError(
                f"{where}: no RecordIO magic at byte {pos} (found {magic:#010x}):"
                " truncated .idx, or one for another .rec?"
            )
        cflag, length = lrec >> 29, lrec & _LEN_MASK
        padded = length + (-length % 4)
        body = fh.read(padded)
        if len(body) < padded:
            raise DataFormatError(
                f"{where}: record at byte {pos} needs {padded} bytes but the file ends after {len(body)}"
                " (truncated .rec?)"
            )
        parts.append(body[:length])
        pos += 8 + padded
        if cflag in (0, 3):
            return _MAGIC_BYTES.join(parts)
        if cflag not in (1, 2):
            raise DataFormatError(f"{where}: invalid continuation flag {cflag} at byte {pos}")


def _idx_well_formed(data: bytes) -> bool:
    """True when ``data`` is exactly lines of ``<digits><tabs/spaces><digits>`` (blank lines allowed).

    Vectorized (byte classes -> runs -> the run pattern digit, separator, digit, newline), since MS1M's index has
    ~6M lines.
    """
    a = np.frombuffer(data, dtype=np.uint8)
    if a.size == 0:
        return True
    cls = np.full(a.shape, 3, dtype=np.uint8)  # 3: anything else
    cls[(a >= 48) & (a <= 57)] = 0
    cls[(a == 9) | (a == 32)] = 1
    cls[(a == 10) | (a == 13)] = 2
    runs = cls[np.concatenate(([0], np.flatnonzero(cls[1:] != cls[:-1]) + 1))]
    if runs[0] == 2:
        runs = runs[1:]
    if runs.size and runs[-1] != 2:
        runs = np.append(runs, np.uint8(2))
    return runs.size % 4 == 0 and bool(np.all(runs.reshape(-1, 4) == np.array([0, 1, 0, 2], dtype=np.uint8)))


def _parse_idx(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``.idx`` text -> (keys, offsets) int64 arrays sorted by key; any malformed line is a one-line error."""
    data = path.read_bytes()
    if _idx_well_formed(data):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy may flag text-mode fromstring; the text was checked above
            flat = np.fromstring(data, dtype=np.int64, sep=" ") if data.strip() else np.zeros(0, np.int64)
    else:  # unusual spacing or a bad line: parse line by line, naming the first bad one
        rows = []
        for no, ln in enumerate(data.splitlines(), 1):
            fields = ln.split()
            if not fields:
                continue
            if len(fields) != 2 or not all(f.isdigit() for f in fields):
                shown = ln[:60].decode("utf-8", "replace")
                raise DataFormatError(f"{path}: line {no}: expected '<index>\\t<byte offset>', got {shown!r}")
            rows.extend(int(f) for f in fields)
        flat = np.asarray(rows, dtype=np.int64)
    pairs = flat.reshape(-1, 2)
    order = np.argsort(pairs[:, 0], kind="stable")
    keys, offsets = pairs[order, 0], pairs[order, 1]
    if keys.size and np.any(keys[1:] == keys[:-1]):
        dup = int(keys[1:][keys[1:] == keys[:-1]][0])
        raise DataFormatError(f"{path}: record index {dup} appears twice")
    return keys, offsets


class IndexedRecordReader:
    """Random access to a ``.rec`` through its ``.idx``. Safe with DataLoader workers: the file is opened lazily in
    each process (a handle is never shared across fork, and is dropped when pickled for spawn).
    """

    def __init__(self, rec_path: str | os.PathLike, idx_path: str | os.PathLike) -> None:
        self.rec_path = require_file(rec_path, "an MXNet RecordIO .rec file")
        self.idx_path = require_file(idx_path, "the .idx index of " + self.rec_path.name)
        self.keys, self.offsets = _parse_idx(self.idx_path)
        if self.keys.size == 0:
            raise DataFormatError(f"{self.idx_path}: index is empty")
        self.file_size = self.rec_path.stat().st_size
        self._fh: BinaryIO | None = None
        self._pid = -1
        self._check_extent()

    def _check_extent(self) -> None:
        # a truncated .rec loses its last records; a truncated .idx usually ends in a cut-off offset
        beyond = np.nonzero(self.offsets + 8 > self.file_size)[0]
        if beyond.size:
            k = int(beyond[0])
            raise DataFormatError(
                f"{self.idx_path}: record {int(self.keys[k])} is at byte {int(self.offsets[k])}, beyond the end of"
                f" {self.rec_path.name} ({self.file_size} bytes): truncated .rec (or an .idx of another file)?"
            )
        unaligned = np.nonzero(self.offsets % 4 != 0)[0]
        if unaligned.size:
            k = int(unaligned[0])
            raise DataFormatError(
                f"{self.idx_path}: record {int(self.keys[k])} has byte offset {int(self.offsets[k])}, not a multiple"
                " of 4 as RecordIO offsets are: truncated or corrupt .idx?"
            )
        for k in {int(np.argmax(self.offsets)), len(self.keys) - 1}:
            self.read(int(self.keys[k]))
        self.close()

    def __contains__(self, key: int) -> bool:
        pos = int(np.searchsorted(self.keys, key))
        return pos < self.keys.size and int(self.keys[pos]) == key

    def offset(self, key: int) -> int:
        pos = int(np.searchsorted(self.keys, key))
        if pos >= self.keys.size or int(self.keys[pos]) != key:
            raise DataFormatError(f"{self.idx_path}: has no record {key}")
        return int(self.offsets[pos])

    def _handle(self) -> BinaryIO:
        if self._fh is None or self._pid != os.getpid():
            self._fh = open(self.rec_path, "rb")  # noqa: SIM115 - kept open for the life of this process
            self._pid = os.getpid()
        return self._fh

    def read_at(self, offset: int, key: int) -> bytes:
        return read_framed(self._handle(), offset, f"{self.rec_path}: record {key}")

    def read(self, key: int) -> bytes:
        """Raw record bytes of ``key`` (header and payload)."""
        return self.read_at(self.offset(key), key)

    def close(self) -> None:
        if self._fh is not None and self._pid == os.getpid():
            self._fh.close()
        self._fh = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_fh"], state["_pid"] = None, -1
        return state
