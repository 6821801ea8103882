"""BlazeFace networks (MediaPipe's short-range 128x128 and full-range 192x192 face detectors) in PyTorch.

The layer layout mirrors the TFLite graphs op for op, so weights convert one conv at a time
(:func:`facetx.detect.weights.load_blazeface`). TFLite "SAME" padding is asymmetric for stride 2 (extra row/column at
the bottom/right), hence the explicit padding in :class:`SameConv`.
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
    """``nn.Conv2d`` with TensorFlow "SAME" padding (asymmetric for even inputs at stride 2)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(in_ch, out_ch, kernel, stride=stride, padding=0, groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        if k == 1 and s == 1:
            return super().forward(x)
        top, bottom = same_pads(x.shape[-2], k, s)
        left, right = same_pads(x.shape[-1], k, s)
        return super().forward(F.pad(x, (left, right, top, bottom)))


def _dw(ch: int, stride: int = 1) -> SameConv:
    return SameConv(ch, ch, 3, stride=stride, groups=ch)


class BlazeBlock(nn.Module):
    """Residual block: depthwise 3x3 (stride 1 or 2) then 1x1 conv; with ``mid_ch`` a "double" block
    (dw, 1x1 down to ``mid_ch``, ReLU, dw, 1x1 up). Skip path: 2x2 max pool at stride 2, zero channel padding when
    ``out_ch > in_ch``. Output ``relu(branch(x) + skip(x))``."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, mid_ch: int | None = None) -> None:
        super().__init__()
        if out_ch < in_ch or stride not in (1, 2):
            raise ValueError(f"BlazeBlock expects out_ch >= in_ch and stride 1 or 2, got {in_ch}->{out_ch} s{stride}")
        self.stride = stride
        self.extra_channels = out_ch - in_ch
        # registration order = TFLite execution order (the weight converter relies on it)
        if mid_ch is None:
            self.convs = nn.ModuleList([_dw(in_ch, stride), SameConv(in_ch, out_ch, 1)])
        else:
            self.convs = nn.ModuleList(
                [_dw(in_ch, stride), SameConv(in_ch, mid_ch, 1), _dw(mid_ch), SameConv(mid_ch, out_ch, 1)]
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.convs[0](x)
        h = self.convs[1](h)
        if len(self.convs) == 4:
            h = self.convs[3](self.convs[2](F.relu(h)))
        skip = F.max_pool2d(x, 2, 2, ceil_mode=True) if self.stride == 2 else x
        if self.extra_channels:
            skip = F.pad(skip, (0, 0, 0, 0, 0, self.extra_channels))
        return F.relu(h + skip)


def _flatten_head(x: torch.Tensor, values: int) -> torch.Tensor:
    """NCHW head output -> ``[B, H*W*anchors, values]`` in TFLite's (y, x, anchor) order."""
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, values)


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


class _TopDown(nn.Module):
    """FPN step: ReLU(1x1 conv) of the coarse map, upsampled 2x (bilinear, half-pixel), plus ReLU(1x1 conv) of the
    skip map, then residual "double" blocks."""

    def __init__(self, coarse_ch: int, skip_ch: int, out_ch: int, num_blocks: int) -> None:
        super().__init__()
        self.coarse = SameConv(coarse_ch, out_ch, 1)
        self.skip = SameConv(skip_ch, out_ch, 1)
        self.blocks = nn.ModuleList(BlazeBlock(out_ch, out_ch, 1, out_ch // 2) for _ in range(num_blocks))

    def forward(self, coarse: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(F.relu(self.coarse(coarse)), size=skip.shape[-2:], mode="bilinear", align_corners=False)
        x = F.relu(self.skip(skip)) + up
        for block in self.blocks:
            x = block(x)
        return x


class _FullRange(nn.Module):
    """Full-range backbone: 192x192 -> 6x6 through double blocks, then an FPN back up to 48x48; 1 anchor per cell."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = SameConv(3, 32, 3, stride=2)
        # (in, out, stride, mid) per block; the outputs of blocks 4, 7 and 10 feed the FPN
        spec = [
            (32, 32, 1, 8), (32, 32, 1, 8),
            (32, 48, 2, 12), (48, 48, 1, 12), (48, 64, 1, 16),
            (64, 96, 2, 24), (96, 128, 1, 32), (128, 128, 1, 32),
            (128, 144, 2, 36), (144, 192, 1, 48), (192, 256, 1, 64),
            (256, 384, 2, 96), (384, 384, 1, 96), (384, 384, 1, 96), (384, 384, 1, 96),
        ]  # fmt: skip
        self.blocks = nn.ModuleList(BlazeBlock(*s) for s in spec)
        self.taps = (4, 7, 10)
        self.up12 = _TopDown(384, 256, 96, 2)
        self.up24 = _TopDown(96, 128, 64, 2)
        self.up48 = _TopDown(64, 64, 48, 1)
        self.cls = SameConv(48, 1, 1)
        self.reg = SameConv(48, 16, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.relu(self.stem(x))
        taps = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.taps:
                taps.append(x)
        f48, f24, f12 = taps
        x = self.up12(x, f12)
        x = self.up24(x, f24)
        x = self.up48(x, f48)
        return _flatten_head(self.reg(x), 16), _flatten_head(self.cls(x), 1)


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
