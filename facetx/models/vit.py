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

from facetx.errors import ConfigError

__all__ = ["PRUNED_KEYS", "FaceViT", "WindowAttention"]

#: what ``FaceViT(pruned=...)`` takes: per-block sizes, one entry per block
PRUNED_KEYS = ("heads", "mlp_hidden")


class WindowAttention(Attention):
    """timm's ``Attention`` applied within non-overlapping ``window x window`` token windows of a square grid.

    Same parameters as global attention (a drop-in ``attn_layer``); ``grid`` and ``shift`` are set by
    :class:`FaceViT` after construction because timm builds every block's attention with the same arguments.
    """

    grid: int = 8
    window: int = 4
    shift: int = 0

    def _mask(self, device: torch.device) -> torch.Tensor | None:
        """Boolean ``[nW, 1, w*w, w*w]`` mask (True = may attend) for cyclically shifted windows."""
        if self.shift == 0:
            return None
        g, w, s = self.grid, self.window, self.shift
        region = torch.zeros(g, g, dtype=torch.long, device=device)
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
        g, w = self.grid, self.window
        if n != g * g:
            raise ValueError(f"WindowAttention expects {g}x{g} = {g * g} tokens, got {n}")
        x = x.view(b, g, g, c)
        if self.shift:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
        nw = (g // w) ** 2
        x = x.view(b, g // w, w, g // w, w, c).permute(0, 1, 3, 2, 4, 5).reshape(b * nw, w * w, c)  # [B*nW, w*w, C]
        mask = self._mask(x.device)
        if mask is not None:
            mask = mask.repeat(b, 1, 1, 1)  # [B*nW, 1, w*w, w*w]
        x = super().forward(x, attn_mask=mask)
        x = x.view(b, g // w, g // w, w, w, c).permute(0, 1, 3, 2, 4, 5).reshape(b, g, g, c)
        if self.shift:
            x = torch.roll(x, shifts=(self.shift, self.shift), dims=(1, 2))
        return x.reshape(b, n, c)


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
                blk.attn.grid, blk.attn.window = grid[0], window
                blk.attn.shift = window // 2 if i % 2 else 0
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
