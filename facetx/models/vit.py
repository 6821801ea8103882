"""Face ViT variants for 112x112 crops with 14-px patches (8x8 = 64 tokens), registered with timm.

``timm.create_model("facevit_small_p14_112")`` etc. Our variants use no class token: the heads read the 8x8 token
grid (face recognition and landmarks need spatial layout, arcface_torch's ViT flattens the tokens for the same reason).
The windowed variants replace global self-attention by attention inside 4x4-token windows, shifted by half a window
on every other block (Swin-style) so information still crosses window borders.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from timm.layers import Mlp
from timm.layers.attention import Attention
from timm.models import register_model
from timm.models.vision_transformer import VisionTransformer, init_weights_vit_timm
from torch import nn
from torch.nn import functional as F

from facetx.errors import ConfigError

__all__ = ["PRUNED_KEYS", "FaceViT", "WindowAttention"]

#: what ``FaceViT(pruned=...)`` takes: per-block sizes, one entry per block
PRUNED_KEYS = ("heads", "mlp_hidden")


class WindowAttention(Attention):
    """timm's ``Attention`` applied within non-overlapping ``window x window`` token windows of a square grid.

    Same parameters as global attention (a drop-in ``attn_layer``); :class:`FaceViT` calls :meth:`configure` after
    construction because timm builds every block's attention with the same arguments.

    The cyclic shift and the window partition are one token permutation, applied as one gather (``_order``) before
    qkv and undone by another (``_inverse``) after proj (both act per token, so they commute with it), and the
    shifted windows' mask is a constant additive bias broadcast over the batch. Exported window_vit_nano (6 blocks):
    12 Gathers, no Slice or Concat and 20 Transposes where ``torch.roll`` + partition gave 3, 24, 15 and 32. In the
    old graph, Transposes, Splits and Concats took 23 % of the profiled ONNX Runtime time at batch 32 (2-core Xeon),
    FP32 and INT8 alike (only the GEMMs get faster in INT8); without the roll's share, FP32 ran 1.05-1.12x and
    dynamic INT8 1.09-1.14x faster, with outputs bit-identical in ONNX Runtime (within 1e-6 in PyTorch, whose float
    order differs).
    """

    def __init__(self, dim: int, num_heads: int = 8, **kwargs) -> None:
        super().__init__(dim, num_heads, **kwargs)
        self.configure(8, 4, 0)
        # True while torch-pruning traces the channel graph (see facetx.models.pruning): the shifted windows' bias
        # then stays off, because its [B, nW, H, w*w, d] view of q, k, v hides the head dim from torch-pruning's
        # head grouping; the mask acts on tokens only, so the channel dependencies are the same without it
        self.channel_trace = False

    def configure(self, grid: int, window: int, shift: int) -> None:
        """Window ``window`` tokens per side on a ``grid x grid`` token grid, cyclically shifted by ``shift``."""
        self.grid, self.window, self.shift = grid, window, shift
        g, w = grid, window
        pos = torch.arange(g * g).view(g, g)
        if shift:
            pos = torch.roll(pos, shifts=(-shift, -shift), dims=(0, 1))  # what lands at each place after the roll
        order = pos.view(g // w, w, g // w, w).permute(0, 2, 1, 3).reshape(-1)  # [g*g] window-major token order
        # non-persistent: derived from grid/window/shift, so checkpoints stay as they were
        self.register_buffer("_order", order, persistent=False)
        self.register_buffer("_inverse", torch.argsort(order), persistent=False)
        mask = self._mask()
        bias = None if mask is None else torch.zeros(mask.shape).masked_fill(~mask, float("-inf"))
        self.register_buffer("_bias", bias, persistent=False)

    def _mask(self) -> torch.Tensor | None:
        """Boolean ``[nW, 1, w*w, w*w]`` mask (True = may attend) for cyclically shifted windows."""
        if self.shift == 0:
            return None
        g, w, s = self.grid, self.window, self.shift
        region = torch.zeros(g, g, dtype=torch.long)
        cuts = (slice(0, g - w), slice(g - w, g - s), slice(g - s, g))
        n = 0
        for hs in cuts:
            for ws in cuts:
                region[hs, ws] = n
                n += 1
        r = region.view(g // w, w, g // w, w).permute(0, 2, 1, 3).reshape(-1, w * w)  # [nW, w*w]
        return (r[:, :, None] == r[:, None, :]).unsqueeze(1)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        if attn_mask is not None or is_causal:
            raise ValueError("WindowAttention builds its own mask; attn_mask/is_causal are not supported")
        b, n, c = x.shape
        g, w, h, d = self.grid, self.window, self.num_heads, self.head_dim
        if n != g * g:
            raise ValueError(f"WindowAttention expects {g}x{g} = {g * g} tokens, got {n}")
        nw = (g // w) ** 2
        x = x[:, self._order].reshape(b * nw, w * w, c)  # [B*nW, w*w, C], window by window
        gate = self.gate(x).sigmoid() if self.gate is not None else None
        # timm's own qkv layout (torch-pruning's dependency graph follows it to couple q, k, v with proj)
        qkv = self.qkv(x).reshape(b * nw, w * w, 3, h, d).permute(2, 0, 3, 1, 4)  # [3, B*nW, H, w*w, d]
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        drop = self.attn_drop.p if self.training else 0.0
        bias = None if self.channel_trace else self._bias
        if bias is not None:
            # [B, nW, H, w*w, d] so the bias [nW, 1, w*w, w*w] broadcasts over B and H: no per-call mask repeat
            q, k, v = (t.reshape(b, nw, h, w * w, d) for t in (q, k, v))
            if bias.dtype != q.dtype:  # autocast / half precision: sdpa wants the query's dtype
                bias = bias.to(q.dtype)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=drop)  # [..., H, w*w, d]
        x = x.reshape(b * nw, h, w * w, d).transpose(1, 2).reshape(b, n, self.attn_dim)  # [B, nW*w*w, H*d]
        x = self.norm(x)
        if gate is not None:
            x = x * gate
        x = self.proj_drop(self.proj(x))
        return x[:, self._inverse]  # [B, g*g, C], back in grid order


class FaceViT(VisionTransformer):
    """timm ``VisionTransformer`` with optional window attention (``window`` tokens per side; ``None`` = global).

    ``pruned``: per-block sizes of a structurally pruned network (:mod:`facetx.models.pruning` writes them into the
    run config), ``{"heads": [h_0, ...], "mlp_hidden": [n_0, ...]}`` with one entry per block; either key may be
    left out. A block with ``h`` heads keeps the unpruned ``head_dim`` (``qkv: C -> 3*h*head_dim``, ``proj:
    h*head_dim -> C``); one with ``n`` MLP channels has ``fc1: C -> n``, ``fc2: n -> C``. The residual width ``C``
    never changes, so the heads and distillation projections of a pruned student fit as before.
    """

    def __init__(self, window: int | None = None, pruned: Mapping[str, Sequence[int]] | None = None, **kwargs) -> None:
        if window is not None:
            kwargs["attn_layer"] = WindowAttention
        super().__init__(**kwargs)
        if window is not None:
            grid = self.patch_embed.grid_size
            if grid[0] != grid[1] or grid[0] % window or self.num_prefix_tokens:
                raise ValueError(f"window attention needs a square grid divisible by {window} and no prefix tokens")
            for i, blk in enumerate(self.blocks):
                blk.attn.configure(grid[0], window, window // 2 if i % 2 else 0)
        if pruned is not None:
            self._resize_blocks(pruned)

    def _resize_blocks(self, pruned: Mapping[str, Sequence[int]]) -> None:
        """Rebuild each block's qkv/proj and fc1/fc2 at the sizes of ``pruned`` (fresh timm init: a pruned
        network's weights come from its checkpoint)."""
        if not isinstance(pruned, Mapping) or set(pruned) - set(PRUNED_KEYS):
            found = sorted(pruned) if isinstance(pruned, Mapping) else repr(pruned)
            raise ConfigError(f"model_kwargs.pruned: expected a mapping with keys {list(PRUNED_KEYS)}, got {found}")
        depth = len(self.blocks)
        for key, sizes in pruned.items():
            ok = isinstance(sizes, Sequence) and not isinstance(sizes, str) and len(sizes) == depth
            if not ok or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in sizes):
                raise ConfigError(
                    f"model_kwargs.pruned.{key}: expected {depth} positive integers (one per block), got {sizes!r}"
                )
        for i, blk in enumerate(self.blocks):
            attn, mlp = blk.attn, blk.mlp
            if "heads" in pruned and pruned["heads"][i] != attn.num_heads:
                h = pruned["heads"][i]
                if not isinstance(attn.norm, nn.Identity) or attn.gate is not None:
                    raise ConfigError(
                        f"model_kwargs.pruned.heads[{i}]={h}: block {i}'s attention cannot change its head count"
                        " (scale_attn_norm or gating sizes its layers by the head count)"
                    )
                attn.qkv = _linear_like(attn.qkv, attn.qkv.in_features, 3 * h * attn.head_dim)
                attn.proj = _linear_like(attn.proj, h * attn.head_dim, attn.proj.out_features)
                attn.num_heads, attn.attn_dim = h, h * attn.head_dim  # read by Attention.forward
            if "mlp_hidden" in pruned and pruned["mlp_hidden"][i] != mlp.fc1.out_features:
                n = pruned["mlp_hidden"][i]
                if type(mlp) is not Mlp or not isinstance(mlp.norm, nn.Identity) or not isinstance(mlp.fc1, nn.Linear):
                    raise ConfigError(
                        f"model_kwargs.pruned.mlp_hidden[{i}]={n}: block {i}'s {type(mlp).__name__} cannot be resized"
                        " (only timm's linear Mlp without scale_mlp_norm)"
                    )
                mlp.fc1 = _linear_like(mlp.fc1, mlp.fc1.in_features, n)
                mlp.fc2 = _linear_like(mlp.fc2, n, mlp.fc2.out_features)


def _linear_like(layer: nn.Linear, in_features: int, out_features: int) -> nn.Linear:
    """A freshly initialised ``nn.Linear`` with ``layer``'s bias, device and dtype and the given sizes."""
    w = layer.weight
    new = nn.Linear(in_features, out_features, bias=layer.bias is not None, device=w.device, dtype=w.dtype)
    init_weights_vit_timm(new)
    return new


def _facevit(pretrained: bool, defaults: dict, kwargs: dict) -> FaceViT:
    if pretrained:
        raise ValueError("facetx face ViTs have no hub weights: use pretrained=False and checkpoint_path=<local file>")
    base = dict(img_size=112, patch_size=14, class_token=False, global_pool="avg", num_classes=0)
    # timm.create_model passes its hub bookkeeping to every entry point; our models have no hub config.
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)
    return FaceViT(**{**base, **defaults, **kwargs})


@register_model
def facevit_small_p14_112(pretrained: bool = False, **kwargs) -> FaceViT:
    """ViT-S (384-d, 12 blocks, 6 heads, 21.7M params) on 112x112, 64 tokens: the default teacher."""
    return _facevit(pretrained, dict(embed_dim=384, depth=12, num_heads=6), kwargs)


@register_model
def facevit_base_p14_112(pretrained: bool = False, **kwargs) -> FaceViT:
    """ViT-B (768-d, 12 blocks, 12 heads) on 112x112: a bigger teacher for GPU runs."""
    return _facevit(pretrained, dict(embed_dim=768, depth=12, num_heads=12), kwargs)


@register_model
def facevit_tiny_p14_112(pretrained: bool = False, **kwargs) -> FaceViT:
    """ViT-Ti (192-d, 12 blocks, 3 heads) on 112x112."""
    return _facevit(pretrained, dict(embed_dim=192, depth=12, num_heads=3), kwargs)


def _arcface_vit(embed_dim: int, depth: int) -> dict:
    # arcface_torch backbones/vit.py: 9-px patches (112 // 9 = 12 -> 144 tokens over 108 of the 112 px), 8 heads,
    # MLP ratio 4 with ReLU6, no qkv bias, learned positions, no class token
    return dict(patch_size=9, embed_dim=embed_dim, depth=depth, num_heads=8, act_layer="relu6", qkv_bias=False)


@register_model
def facevit_arcface_t_p9_112(pretrained: bool = False, **kwargs) -> FaceViT:
    """arcface_torch's ViT-T (``vit_t_dp005_mask0``): 256-d, 12 blocks, 8 heads, 144 tokens."""
    return _facevit(pretrained, _arcface_vit(256, 12), kwargs)


@register_model
def facevit_arcface_s_p9_112(pretrained: bool = False, **kwargs) -> FaceViT:
    """arcface_torch's ViT-S (``vit_s_dp005_mask_0``): 512-d, 12 blocks, 8 heads, 144 tokens."""
    return _facevit(pretrained, _arcface_vit(512, 12), kwargs)


@register_model
def facevit_arcface_b_p9_112(pretrained: bool = False, **kwargs) -> FaceViT:
    """arcface_torch's ViT-B (``vit_b_dp005_mask_005``): 512-d, 24 blocks, 8 heads, 144 tokens."""
    return _facevit(pretrained, _arcface_vit(512, 24), kwargs)


@register_model
def facevit_window_tiny_p14_112(pretrained: bool = False, **kwargs) -> FaceViT:
    """Windowed-attention ViT-Ti: 4x4-token windows, shifted on odd blocks; 8 blocks for real-time students."""
    return _facevit(pretrained, dict(embed_dim=192, depth=8, num_heads=3, window=4), kwargs)


@register_model
def facevit_window_nano_p14_112(pretrained: bool = False, **kwargs) -> FaceViT:
    """Windowed-attention ViT-Nano (128-d, 6 blocks, 2 heads): the default student, >= 5x faster than the teacher
    at batch 1 on 2 CPU cores (ONNX Runtime)."""
    return _facevit(pretrained, dict(embed_dim=128, depth=6, num_heads=2, window=4), kwargs)


@register_model
def facevit_window_small_p14_112(pretrained: bool = False, **kwargs) -> FaceViT:
    """Windowed-attention ViT-S: 4x4-token windows, shifted on odd blocks."""
    return _facevit(pretrained, dict(embed_dim=384, depth=12, num_heads=6, window=4), kwargs)
