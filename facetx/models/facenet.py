"""FaceNet: backbone + task heads, returning ``dict[str, Tensor]`` in train and eval alike."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from facetx.models.backbone import TimmBackbone

HeadFactory = Callable[..., nn.Module]


class FaceNet(nn.Module):
    """``forward(image [B, 3, H, W] RGB in [0, 1])`` -> ``{head name: tensor, "feat.<i>": map}``.

    Input normalization lives in the network (``mean``/``std`` buffers), so a teacher and a student with different
    normalizations can share one data pipeline and the exported graph documents its own preprocessing.
    Head names are output names: ``embedding [B, 512]``, ``landmarks [B, K, 2]``, ``expression_logits [B, 7]``,
    ``spoof_logits [B, 2]``. A head class with ``reads_image = True`` reads the normalized image instead of the
    backbone's final map. ``feat.<i>`` are the backbone's intermediate maps ``[B, C_i, h_i, w_i]``.
    """

    def __init__(
        self,
        backbone: TimmBackbone,
        heads: Mapping[str, HeadFactory],
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleDict({name: self._build_head(make) for name, make in heads.items()})
        # heads whose class reads the normalized image instead of the final map (facetx.models.TextureHead)
        self.image_heads = frozenset(n for n, h in self.heads.items() if getattr(h, "reads_image", False))
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.channels_last = channels_last

    def _build_head(self, make: HeadFactory) -> nn.Module:
        if getattr(getattr(make, "func", make), "reads_image", False):  # a partial of an image-reading head class
            s = self.backbone.input_size
            return make(in_channels=3, grid=(s, s))
        return make(in_channels=self.backbone.num_features, grid=self.backbone.grid_size)

    @property
    def feature_names(self) -> list[str]:
        return [f"feat.{i}" for i in self.backbone.feature_indices]

    @property
    def output_names(self) -> list[str]:
        return list(self.heads.keys())

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (image - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        final, inter = self.backbone(x)
        out = {name: head(x if name in self.image_heads else final) for name, head in self.heads.items()}
        out.update(zip(self.feature_names, inter, strict=True))
        return out
