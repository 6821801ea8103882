"""A minimal reader for TFLite flatbuffers (no TensorFlow): tensors, constant data, operators and their options.

Covers what MediaPipe's BlazeFace models use (CONV_2D, DEPTHWISE_CONV_2D, MAX_POOL_2D, ADD, PAD, RELU, RESHAPE,
CONCATENATION, RESIZE_BILINEAR, DEPTH_TO_SPACE, DENSIFY, DEQUANTIZE). Sparse constants (TFLite ``SparsityParameters``,
as in the pruned ``face_detection_full_range_sparse.tflite``) are densified on reading, and constant fp16/int8 weights
behind DENSIFY and DEQUANTIZE ops are folded into dense float32 constants, so :attr:`TfliteGraph.ops` lists only
compute ops. Slot numbers follow TFLite's ``schema.fbs``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# BuiltinOperator codes (schema.fbs) of the ops this reader knows by name; others read as "BUILTIN_<code>".
_OP_NAMES = {
    0: "ADD",
    2: "CONCATENATION",
    3: "CONV_2D",
    4: "DEPTHWISE_CONV_2D",
    5: "DEPTH_TO_SPACE",
    6: "DEQUANTIZE",
    14: "LOGISTIC",
    17: "MAX_POOL_2D",
    19: "RELU",
    21: "RELU6",
    22: "RESHAPE",
    23: "RESIZE_BILINEAR",
    34: "PAD",
    54: "PRELU",
    124: "DENSIFY",
}
# TensorType -> numpy dtype (little-endian, as TFLite stores buffers)
_DTYPES = {0: "<f4", 1: "<f2", 2: "<i4", 3: "u1", 4: "<i8", 6: "?", 7: "<i2", 9: "i1"}
_PADDING = {0: "SAME", 1: "VALID"}
_ACTIVATION = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}


@dataclass(frozen=True)
class TfliteTensor:
    """One tensor: ``shape`` as TFLite stores it (NHWC activations; conv kernels ``[O, H, W, I]``, depthwise
    ``[1, H, W, C]``), ``data`` for constants (float32 after dequantization), else None."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    data: np.ndarray | None


@dataclass(frozen=True)
class TfliteOp:
    """One operator: ``type`` (e.g. ``"CONV_2D"``), tensor indices, and its builtin options as a plain dict."""

    type: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TfliteGraph:
    """The main subgraph of a model, with DENSIFY and DEQUANTIZE ops of constants folded away."""

    tensors: list[TfliteTensor]
    ops: list[TfliteOp]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]

    def const(self, index: int) -> np.ndarray:
        """The constant data of tensor ``index``; raises if it is an activation."""
        data = self.tensors[index].data
        if data is None:
            raise ValueError(f"tensor {index} ({self.tensors[index].name!r}) is not a constant")
        return data


class _Reader:
    """Raw field access over the flatbuffer bytes (offsets per the flatbuffers binary format)."""

    def __init__(self, buf: bytes) -> None:
        from flatbuffers.table import Table

        self._table_cls = Table
        self.buf = bytearray(buf)

    def table(self, pos: int) -> Any:
        return self._table_cls(self.buf, pos)

    def root(self) -> Any:
        from flatbuffers import encode, packer

        return self.table(encode.Get(packer.uoffset, self.buf, 0))

    @staticmethod
    def _off(t: Any, slot: int) -> int:
        return t.Offset(4 + 2 * slot)

    def scalar(self, t: Any, slot: int, fmt: str, default: float | int = 0) -> Any:
        o = self._off(t, slot)
        if not o:
            return default
        return np.frombuffer(self.buf, dtype=fmt, count=1, offset=t.Pos + o)[0].item()

    def array(self, t: Any, slot: int, fmt: str) -> np.ndarray:
        o = self._off(t, slot)
        if not o:
            return np.zeros(0, dtype=fmt)
        return np.frombuffer(self.buf, dtype=fmt, count=t.VectorLen(o), offset=t.Vector(o))

    def tables(self, t: Any, slot: int) -> list[Any]:
        o = self._off(t, slot)
        if not o:
            return []
        start = t.Vector(o)
        return [self.table(t.Indirect(start + 4 * i)) for i in range(t.VectorLen(o))]

    def string(self, t: Any, slot: int) -> str:
        o = self._off(t, slot)
        return t.String(t.Pos + o).decode("utf-8") if o else ""

    def sub_table(self, t: Any, slot: int) -> Any | None:
        o = self._off(t, slot)
        return self.table(t.Indirect(t.Pos + o)) if o else None


def _options(r: _Reader, op_type: str, t: Any | None) -> dict[str, Any]:
    """Decode the builtin options table of the ops BlazeFace uses (slot numbers from schema.fbs)."""
    if t is None:
        return {}
    i32, i8 = "<i4", "i1"
    if op_type == "CONV_2D":
        return {
            "padding": _PADDING[r.scalar(t, 0, i8)],
            "stride_w": r.scalar(t, 1, i32),
            "stride_h": r.scalar(t, 2, i32),
            "activation": _ACTIVATION[r.scalar(t, 3, i8)],
            "dilation_w": r.scalar(t, 4, i32, 1),
            "dilation_h": r.scalar(t, 5, i32, 1),
        }
    if op_type == "DEPTHWISE_CONV_2D":
        return {
            "padding": _PADDING[r.scalar(t, 0, i8)],
            "stride_w": r.scalar(t, 1, i32),
            "stride_h": r.scalar(t, 2, i32),
            "depth_multiplier": r.scalar(t, 3, i32),
            "activation": _ACTIVATION[r.scalar(t, 4, i8)],
            "dilation_w": r.scalar(t, 5, i32, 1),
            "dilation_h": r.scalar(t, 6, i32, 1),
        }
    if op_type == "MAX_POOL_2D":
        return {
            "padding": _PADDING[r.scalar(t, 0, i8)],
            "stride_w": r.scalar(t, 1, i32),
            "stride_h": r.scalar(t, 2, i32),
            "filter_w": r.scalar(t, 3, i32),
            "filter_h": r.scalar(t, 4, i32),
            "activation": _ACTIVATION[r.scalar(t, 5, i8)],
        }
    if op_type == "ADD":
        return {"activation": _ACTIVATION[r.scalar(t, 0, i8)]}
    if op_type == "CONCATENATION":
        return {"axis": r.scalar(t, 0, i32), "activation": _ACTIVATION[r.scalar(t, 1, i8)]}
    if op_type == "DEPTH_TO_SPACE":
        return {"block_size": r.scalar(t, 0, i32)}
    if op_type == "RESHAPE":
        return {"new_shape": tuple(int(v) for v in r.array(t, 0, i32))}
    if op_type == "RESIZE_BILINEAR":
        return {"align_corners": bool(r.scalar(t, 2, "u1")), "half_pixel_centers": bool(r.scalar(t, 3, "u1"))}
    return {}


def _dequantize(data: np.ndarray, r: _Reader, tensor_table: Any, name: str) -> np.ndarray:
    """Dequantized float32 copy of a constant: fp16 casts; int8/uint8 use the tensor's (per-axis) scale/zero point."""
    if data.dtype == np.float16 or data.dtype == np.float32:
        return data.astype(np.float32)
    q = r.sub_table(tensor_table, 4)
    scale = r.array(q, 2, "<f4") if q is not None else np.zeros(0, np.float32)
    if not len(scale):
        raise ValueError(f"constant {name!r} of dtype {data.dtype} has no quantization scale")
    zero = r.array(q, 3, "<i8")
    axis = r.scalar(q, 6, "<i4")
    shape = [1] * data.ndim
    if len(scale) > 1:
        shape[axis] = len(scale)
    zero = zero if len(zero) else np.zeros(1, np.int64)
    return ((data.astype(np.float32) - zero.reshape(shape)) * scale.reshape(shape)).astype(np.float32)


# SparseIndexVector union member -> numpy dtype of its ``values`` (Int32Vector, Uint16Vector, Uint8Vector)
_INDEX_DTYPES = {1: "<i4", 2: "<u2", 3: "u1"}


def _index_vector(r: _Reader, t: Any, type_slot: int) -> np.ndarray:
    """The ``values`` of a ``SparseIndexVector`` union field (type tag at ``type_slot``, table at the next slot)."""
    kind = r.scalar(t, type_slot, "u1")
    table = r.sub_table(t, type_slot + 1)
    if kind not in _INDEX_DTYPES or table is None:
        raise ValueError(f"unsupported or missing SparseIndexVector (type {kind})")
    return r.array(table, 0, _INDEX_DTYPES[kind]).astype(np.int64)


def densify(
    values: np.ndarray,
    shape: tuple[int, ...],
    traversal_order: list[int],
    block_map: list[int],
    dims: list[tuple[int, Any]],
) -> np.ndarray:
    """Dense array of ``shape`` from TFLite's sparse encoding (as ``sparsity_format_converter.cc``'s SparseToDense).

    ``values``: the stored non-zeros, in traversal order. ``traversal_order``: the order the ``len(shape)`` original
    and ``len(block_map)`` block dims are walked (block dims ``>= len(shape)``, after the original ones);
    ``block_map[k]``: the original dim block dim ``k`` splits. ``dims[level]``: ``(dense_size, None)`` for a DENSE
    level, ``(None, (segments, indices))`` for SPARSE_CSR (CSR: the children of position ``p`` of the level above are
    ``indices[segments[p]:segments[p + 1]]``). Missing entries are zero.
    """
    rank = len(shape)
    if sorted(traversal_order) != list(range(rank + len(block_map))) or len(dims) != len(traversal_order):
        raise ValueError(f"inconsistent sparsity: traversal order {traversal_order}, {len(dims)} dim metadata")
    # walk the levels breadth-first, vectorized: ``pos`` is each node's position in its level (the CSR parent index of
    # the next level), ``coords[level]`` its index along that level's dim; the final order is the depth-first one
    pos = np.zeros(1, np.int64)
    coords: list[np.ndarray] = []
    for dense_size, csr in dims:
        if csr is None:
            child = np.arange(dense_size, dtype=np.int64)
            coords = [np.repeat(c, dense_size) for c in coords] + [np.tile(child, len(pos))]
            pos = (pos[:, None] * dense_size + child[None, :]).ravel()
        else:
            segments, indices = csr
            if len(segments) < pos.max(initial=-1) + 2:
                raise ValueError("sparse dim metadata: array_segments too short")
            starts, counts = segments[pos], segments[pos + 1] - segments[pos]
            # concatenated ranges starts[j] .. starts[j] + counts[j]: positions in this level's array_indices
            new_pos = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
            coords = [np.repeat(c, counts) for c in coords] + [indices[new_pos]]
            pos = new_pos
    if len(pos) != len(values):
        raise ValueError(f"sparse tensor: the metadata address {len(pos)} values, the buffer holds {len(values)}")
    block_size = [dims[traversal_order.index(rank + k)][0] for k in range(len(block_map))]
    orig = [np.zeros(len(pos), np.int64) for _ in range(rank)]
    for level, dim in enumerate(traversal_order):
        if dim < rank:
            orig[dim] = coords[level]
    for level, dim in enumerate(traversal_order):
        if dim >= rank:  # a block dim: refine the original dim's block index to an element index
            k = dim - rank
            orig[block_map[k]] = orig[block_map[k]] * block_size[k] + coords[level]
    dense = np.zeros(shape, dtype=values.dtype)
    dense[tuple(orig)] = values
    return dense


def _sparse_constant(r: _Reader, sparsity: Any, raw: np.ndarray, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """Densify a constant whose tensor carries ``SparsityParameters`` (slot 6 of ``Tensor``)."""
    traversal = [int(v) for v in r.array(sparsity, 0, "<i4")]
    block_map = [int(v) for v in r.array(sparsity, 1, "<i4")]
    dims: list[tuple[int, Any]] = []
    for d in r.tables(sparsity, 2):
        if r.scalar(d, 0, "i1") == 0:  # DENSE
            dims.append((r.scalar(d, 1, "<i4"), None))
        else:  # SPARSE_CSR
            dims.append((None, (_index_vector(r, d, 2), _index_vector(r, d, 4))))
    if block_map and any(dims[traversal.index(len(shape) + k)][1] is not None for k in range(len(block_map))):
        raise ValueError("sparse block dims must be DENSE")
    return densify(np.frombuffer(raw.tobytes(), dtype=dtype), shape, traversal, block_map, dims)


def read_tflite(source: str | Path | bytes) -> TfliteGraph:
    """Parse a ``.tflite`` file (a path or its bytes) into a :class:`TfliteGraph` of its first subgraph."""
    buf = Path(source).read_bytes() if isinstance(source, str | Path) else bytes(source)
    where = str(source) if isinstance(source, str | Path) else "<bytes>"
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ValueError(f"{where}: not a TFLite flatbuffer (expected file identifier 'TFL3')")
    r = _Reader(buf)
    model = r.root()
    codes = [max(r.scalar(oc, 0, "i1"), r.scalar(oc, 3, "<i4")) for oc in r.tables(model, 1)]
    subgraphs = r.tables(model, 2)
    if not subgraphs:
        raise ValueError(f"{where}: the model has no subgraph")
    buffers = r.tables(model, 4)
    sg = subgraphs[0]

    tensor_tables = r.tables(sg, 0)
    tensors: list[TfliteTensor] = []
    for t in tensor_tables:
        name = r.string(t, 3)
        shape = tuple(int(v) for v in r.array(t, 0, "<i4"))
        type_code = r.scalar(t, 1, "i1")
        if type_code not in _DTYPES:
            raise ValueError(f"{where}: tensor {name!r} has unsupported TensorType {type_code}")
        dtype = np.dtype(_DTYPES[type_code])
        raw = r.array(buffers[r.scalar(t, 2, "<u4")], 0, "u1") if buffers else np.zeros(0, np.uint8)
        sparsity = r.sub_table(t, 6)
        if not len(raw):
            data = None
        elif sparsity is not None:  # its DENSIFY op is folded below: the tensor reads as its dense value already
            data = _sparse_constant(r, sparsity, raw, dtype, shape)
        else:
            data = np.frombuffer(raw.tobytes(), dtype=dtype).reshape(shape).copy()
        tensors.append(TfliteTensor(name, shape, dtype.name, data))

    ops: list[TfliteOp] = []
    for t in r.tables(sg, 3):
        code = codes[r.scalar(t, 0, "<u4")]
        op_type = _OP_NAMES.get(code, f"BUILTIN_{code}")
        inputs = tuple(int(v) for v in r.array(t, 1, "<i4"))
        outputs = tuple(int(v) for v in r.array(t, 2, "<i4"))
        if op_type == "DENSIFY" and tensors[inputs[0]].data is not None:
            src, dst = tensors[inputs[0]], tensors[outputs[0]]
            tensors[outputs[0]] = TfliteTensor(dst.name, dst.shape, src.dtype, src.data)
            continue
        if op_type == "DEQUANTIZE" and tensors[inputs[0]].data is not None:
            src, dst = tensors[inputs[0]], tensors[outputs[0]]
            tensors[outputs[0]] = TfliteTensor(
                dst.name, dst.shape, "float32", _dequantize(src.data, r, tensor_tables[inputs[0]], src.name)
            )
            continue
        ops.append(TfliteOp(op_type, inputs, outputs, _options(r, op_type, r.sub_table(t, 4))))
    inputs = tuple(int(v) for v in r.array(sg, 1, "<i4"))
    outputs = tuple(int(v) for v in r.array(sg, 2, "<i4"))
    return TfliteGraph(tensors, ops, inputs, outputs)
