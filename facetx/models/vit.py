"""Face ViT variants for 112x112 crops with 14-px patches (8x8 = 64 tokens), registered with timm.

``timm.create_model("facevit_small_p14_112")`` etc. Our variants use no class token: the heads read the 8x8 token
grid (face recognition and landmarks need spatial layout, arcface_torch's ViT flattens the tokens for the same reason).
The windowed variants replace global self-attention by attention inside 4x4-token windows, shifted by half a window
on every other block (Swin-style) so information still crosses window borders.
"""

from __future__ import annotations

import torch
from timm.layers.attention import Attention
from timm.models import register_model
from timm.models.vision_transformer import VisionTransformer

__all__ = ["FaceViT", "WindowAttention"]


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
    """timm ``VisionTransformer`` with optional window attention (``window`` tokens per side; ``None`` = global)."""

    def __init__(self, window: int | None = None, **kwargs) -> None:
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
