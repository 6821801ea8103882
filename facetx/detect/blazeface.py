"""BlazeFace networks (MediaPipe's short-range 128x128 and full-range 192x192 face detectors) in PyTorch.

The layer layout mirrors the TFLite graphs op for op, so weights convert one conv at a time
(:func:`facetx.detect.weights.load_blazeface`). Full range is ``face_detection_full_range_sparse.tflite``, the network
MediaPipe's FaceDetection runs (not the dense ``face_detection_full_range.tflite``, a different network). TFLite "SAME"
padding is asymmetric for stride 2 (extra row/column at the bottom/right), hence the explicit padding in
:class:`SameConv`; the full-range model pads 1 pixel on every side instead (PAD ops before VALID convs).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from facetx.detect.anchors import get_spec


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding (before, after) along one axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "SAME" padding (asymmetric for even inputs at stride 2), or with ``pad`` a
    symmetric explicit padding (TFLite's PAD op then a VALID conv); ``relu``: TFLite's fused ReLU activation."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int,
        stride: int = 1,
        groups: int = 1,
        pad: int | None = None,
        relu: bool = False,
    ) -> None:
        super().__init__(in_ch, out_ch, kernel, stride=stride, padding=pad or 0, groups=groups)
        self.explicit_pad = pad
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        if self.explicit_pad is None and (k > 1 or s > 1):
            # python ints, so an ONNX trace records constant pads (a traced x.shape[-2] would put ~1000 shape ops
            # into the graph, half of BlazeFace's run time in ONNX Runtime); the input size is fixed anyway
            top, bottom = same_pads(int(x.shape[-2]), k, s)
            left, right = same_pads(int(x.shape[-1]), k, s)
            if top == bottom and left == right:  # symmetric: the conv pads itself, no separate Pad op
                y = F.conv2d(x, self.weight, self.bias, self.stride, (top, left), self.dilation, self.groups)
                return F.relu(y) if self.relu else y
            x = F.pad(x, (left, right, top, bottom))
        y = super().forward(x)
        return F.relu(y) if self.relu else y


def _dw(ch: int, stride: int = 1) -> SameConv:
    return SameConv(ch, ch, 3, stride=stride, groups=ch)


class BlazeBlock(nn.Module):
    """Short-range residual block: depthwise 3x3 (stride 1 or 2) then 1x1 conv. Skip path: 2x2 max pool at stride 2,
    zero channel padding when ``out_ch > in_ch``. Output ``relu(branch(x) + skip(x))``."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        if out_ch < in_ch or stride not in (1, 2):
            raise ValueError(f"BlazeBlock expects out_ch >= in_ch and stride 1 or 2, got {in_ch}->{out_ch} s{stride}")
        self.stride = stride
        self.extra_channels = out_ch - in_ch
        # registration order = TFLite execution order (the weight converter relies on it)
        self.convs = nn.ModuleList([_dw(in_ch, stride), SameConv(in_ch, out_ch, 1)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.convs[1](self.convs[0](x))
        skip = F.max_pool2d(x, 2, 2, ceil_mode=True) if self.stride == 2 else x
        if self.extra_channels:
            skip = F.pad(skip, (0, 0, 0, 0, 0, self.extra_channels))
        return F.relu(h + skip)


def _flatten_head(x: torch.Tensor, values: int) -> torch.Tensor:
    """NCHW head output -> ``[B, H*W*anchors, values]`` in TFLite's (y, x, anchor) order."""
    per_image = int(x.shape[1]) * int(x.shape[2]) * int(x.shape[3]) // values  # a constant in an ONNX trace
    return x.permute(0, 2, 3, 1).reshape(-1, per_image, values)


class _ShortRange(nn.Module):
    """Short-range backbone: 128x128 -> features at 16x16 (88 ch) and 8x8 (96 ch); 2 and 6 anchors per cell."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = SameConv(3, 24, 5, stride=2)
        chans = [24, 24, 28, 32, 36, 42, 48, 56, 64, 72, 80, 88, 96, 96, 96, 96, 96]
        strides = {2: 2, 5: 2, 11: 2}  # block index -> stride
        self.blocks = nn.ModuleList(
            BlazeBlock(chans[i], chans[i + 1], strides.get(i, 1)) for i in range(len(chans) - 1)
        )
        self.split = 11  # blocks[:11] give the 16x16 map
        self.cls_16x16 = SameConv(88, 2, 1)
        self.cls_8x8 = SameConv(96, 6, 1)
        self.reg_16x16 = SameConv(88, 32, 1)
        self.reg_8x8 = SameConv(96, 96, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.relu(self.stem(x))
        for block in self.blocks[: self.split]:
            x = block(x)
        f16 = x
        for block in self.blocks[self.split :]:
            x = block(x)
        f8 = x
        cls = torch.cat([_flatten_head(self.cls_16x16(f16), 1), _flatten_head(self.cls_8x8(f8), 1)], dim=1)
        reg = torch.cat([_flatten_head(self.reg_16x16(f16), 16), _flatten_head(self.reg_8x8(f8), 16)], dim=1)
        return reg, cls


def _pdw(ch: int, stride: int = 1) -> SameConv:
    """Depthwise 3x3 after TFLite's explicit 1-pixel PAD (symmetric, unlike SAME at stride 2)."""
    return SameConv(ch, ch, 3, stride=stride, groups=ch, pad=1)


class _Residual(nn.Module):
    """Sparse full-range residual block: ``relu(x + up(dw(relu(down(dw(x))))))``, channels ``ch -> mid -> ch``."""

    def __init__(self, ch: int, mid: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(_pdw(ch), SameConv(ch, mid, 1, relu=True), _pdw(mid), SameConv(mid, ch, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.convs(x))


def _transition(in_ch: int, mid: int, out_ch: int) -> nn.Sequential:
    """Stride-2 block of the sparse full-range model, without a skip path: dw/2, 1x1+ReLU, dw, 1x1+ReLU."""
    return nn.Sequential(
        _pdw(in_ch, 2), SameConv(in_ch, mid, 1, relu=True), _pdw(mid), SameConv(mid, out_ch, 1, relu=True)
    )


class _Stage(nn.Module):
    """Encoder stage: its blocks, then (except the last stage) the FPN lateral 1x1+ReLU of its output."""

    def __init__(self, blocks: list[nn.Module], lateral: tuple[int, int] | None) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*blocks)
        self.lateral = SameConv(*lateral, 1, relu=True) if lateral else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = self.blocks(x)
        return x, (self.lateral(x) if self.lateral is not None else None)


class _Up(nn.Module):
    """FPN step: 1x1+ReLU of the coarse map, upsampled 2x (bilinear, half-pixel), plus the lateral, then residual
    blocks."""

    def __init__(self, coarse_ch: int, out_ch: int, num_blocks: int) -> None:
        super().__init__()
        self.coarse = SameConv(coarse_ch, out_ch, 1, relu=True)
        self.blocks = nn.Sequential(*(_Residual(out_ch, out_ch // 2) for _ in range(num_blocks)))

    def forward(self, coarse: torch.Tensor, lateral: torch.Tensor) -> torch.Tensor:
        size = (int(lateral.shape[-2]), int(lateral.shape[-1]))  # python ints: constants in an ONNX trace
        up = F.interpolate(self.coarse(coarse), size=size, mode="bilinear", align_corners=False)
        return self.blocks(lateral + up)


def _depth_to_space(x: torch.Tensor, block: int) -> torch.Tensor:
    """TFLite's DEPTH_TO_SPACE (DCR order: channel ``(i * block + j) * C + c`` goes to pixel offset ``(i, j)``) on
    NCHW ``[B, block^2 * C, H, W]`` -> ``[B, C, H * block, W * block]`` (``pixel_shuffle`` is CRD, another order)."""
    ch, h, w = (int(v) for v in x.shape[1:])  # python ints: constants in an ONNX trace; the batch stays -1 (dynamic)
    c = ch // (block * block)
    x = x.reshape(-1, block, block, c, h, w).permute(0, 3, 4, 1, 5, 2)
    return x.reshape(-1, c, h * block, w * block)


class _Head(nn.Module):
    """Sparse full-range head: 1x1 conv to ``4 * values`` channels at 48x48, depthwise 3x3 at stride 2 to 24x24, then
    depth-to-space (block 2) back to ``values`` channels at 48x48 (the TFLite graph's own layout)."""

    def __init__(self, in_ch: int, values: int) -> None:
        super().__init__()
        self.values = values
        self.conv = SameConv(in_ch, 4 * values, 1)
        self.dw = _pdw(4 * values, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _flatten_head(_depth_to_space(self.dw(self.conv(x)), 2), self.values)


class _FullRange(nn.Module):
    """Full-range backbone as MediaPipe runs it (``face_detection_full_range_sparse.tflite``, pruned weights):
    192x192 -> 6x6, an FPN back up to 48x48; 1 anchor per cell. Every 3x3 conv pads 1 pixel on each side."""

    def __init__(self) -> None:
        super().__init__()
        # registration order = TFLite execution order (the weight converter relies on it): each lateral runs right
        # after its stage, before the next stage's stride-2 block
        self.stem = SameConv(3, 32, 3, stride=2, pad=1, relu=True)
        self.stages = nn.ModuleList(
            [
                _Stage([_Residual(32, 8), _Residual(32, 8), _transition(32, 16, 64)]
                       + [_Residual(64, 16) for _ in range(2)], (64, 48)),  # 48x48
                _Stage([_transition(64, 32, 128)] + [_Residual(128, 32) for _ in range(2)], (128, 64)),  # 24x24
                _Stage([_transition(128, 48, 192)] + [_Residual(192, 48) for _ in range(2)], (192, 96)),  # 12x12
                _Stage([_transition(192, 96, 384)] + [_Residual(384, 96) for _ in range(3)], None),  # 6x6
            ]
        )  # fmt: skip
        self.up = nn.ModuleList([_Up(384, 96, 2), _Up(96, 64, 2), _Up(64, 48, 1)])
        self.cls = _Head(48, 1)
        self.reg = _Head(48, 16)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(x)
        laterals = []
        for stage in self.stages:
            x, lateral = stage(x)
            laterals.append(lateral)
        for up, lateral in zip(self.up, reversed(laterals[:-1]), strict=True):
            x = up(x, lateral)
        # the classifier runs first in the TFLite graph: keep that order for the converter
        cls = self.cls(x)
        return self.reg(x), cls


class BlazeFace(nn.Module):
    """MediaPipe BlazeFace detector network.

    ``forward(image)``: ``image`` float ``[B, 3, S, S]`` RGB in ``[0, 1]`` (S = 128 short, 192 full; letterboxed as
    :func:`facetx.detect.detector.letterbox` does), normalized internally to the model's ``[-1, 1]``.
    Returns ``(regressors [B, N, 16], classificators [B, N, 1])`` exactly as the TFLite model's outputs (N = 896 or
    2304; raw offsets in input pixels and raw score logits); decode with :mod:`facetx.detect.anchors`.
    """

    def __init__(self, model: str = "short") -> None:
        super().__init__()
        self.spec = get_spec(model)
        self.net = _ShortRange() if model == "short" else _FullRange()

    @property
    def input_size(self) -> int:
        return self.spec.input_size

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.spec.input_size
        if not torch.jit.is_tracing() and (image.ndim != 4 or tuple(image.shape[1:]) != (3, s, s)):
            raise ValueError(f"BlazeFace({self.spec.name}) expects images [B, 3, {s}, {s}], got {tuple(image.shape)}")
        return self.net(image * 2.0 - 1.0)


def export_onnx(net: BlazeFace, path: str | Path, opset: int = 17, dynamic_batch: bool = True) -> Path:
    """Export ``net`` to ONNX: input ``image`` float ``[B, 3, S, S]`` RGB in ``[0, 1]``, outputs ``regressors
    [B, N, 16]`` and ``classificators [B, N, 1]`` (decode with :mod:`facetx.detect.anchors`). Uses the TorchScript
    exporter (the dynamo one needs ``onnxscript``). The input convention is written into the model's metadata."""
    import onnx

    path = Path(path)
    s = net.input_size
    was_training = net.training
    net.eval()
    with warnings.catch_warnings():
        # the legacy exporter's deprecation notice and the tracer's shape-to-int notes (shapes are static here)
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (torch.rand(1, 3, s, s),),
            str(path),
            input_names=["image"],
            output_names=["regressors", "classificators"],
            dynamic_axes={"image": {0: "batch"}, "regressors": {0: "batch"}, "classificators": {0: "batch"}}
            if dynamic_batch
            else None,
            opset_version=opset,
            dynamo=False,
        )
    net.train(was_training)
    proto = onnx.load(str(path))
    meta = {
        "model": f"blazeface_{net.spec.name}",
        "input": f"image: float32 [B, 3, {s}, {s}] RGB in [0, 1], letterboxed (aspect kept, zero padding)",
        "outputs": "regressors [B, N, 16] raw offsets in input pixels; classificators [B, N, 1] score logits",
    }
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))
    return path
