"""One backbone interface over timm models: a final feature map plus named intermediate maps."""

from __future__ import annotations

from collections.abc import Sequence

import timm
import torch
from torch import nn

import facetx.models.vit  # noqa: F401  (registers the facevit_* models with timm)


class TimmBackbone(nn.Module):
    """A timm model used as a feature extractor at 112x112.

    ``forward(x [B, 3, H, W])`` returns ``(final [B, C, h, w], intermediates)``: the last feature map after the
    model's final norm/conv (ViT tokens are reshaped to their ``8 x 8`` grid) and one ``[B, C_i, h_i, w_i]`` map per
    entry of ``feature_indices`` (timm block/stage indices; negative counts from the end), for distillation.

    Args:
        name: a timm model name (ours: ``facevit_*``; timm's: ``mobilevit_s``, ``fastvit_t8``, ...).
        feature_indices: intermediate blocks/stages to return.
        model_kwargs: passed to the model constructor (typos raise ``TypeError``).
        checkpoint_path: local weights loaded by timm after construction (nothing is downloaded).
        input_size: the crop size the network is built for; a dry run at this size fixes the output shapes.
    """

    def __init__(
        self,
        name: str,
        feature_indices: Sequence[int] = (),
        model_kwargs: dict | None = None,
        checkpoint_path: str | None = None,
        input_size: int = 112,
    ) -> None:
        super().__init__()
        kwargs = dict(model_kwargs or {})
        if "vit" in name and "mobilevit" not in name and "fastvit" not in name and "efficientvit" not in name:
            kwargs.setdefault("img_size", input_size)
        self.name = name
        self.model = timm.create_model(
            name, pretrained=False, num_classes=0, checkpoint_path=checkpoint_path or "", **kwargs
        )
        self.feature_indices = [int(i) for i in feature_indices]
        self.input_size = input_size
        self.num_prefix_tokens = int(getattr(self.model, "num_prefix_tokens", 0))
        with torch.no_grad():
            was_training = self.model.training
            self.model.eval()
            final, inter = self(torch.zeros(1, 3, input_size, input_size))
            self.model.train(was_training)
        self.num_features = final.shape[1]  # C of the final map
        self.grid_size: tuple[int, int] = (final.shape[2], final.shape[3])
        self.feature_info: list[tuple[int, tuple[int, int]]] = [(f.shape[1], (f.shape[2], f.shape[3])) for f in inter]

    def _to_map(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:
            return x
        x = x[:, self.num_prefix_tokens :]  # [B, N, D]
        n = x.shape[1]
        side = int(n**0.5)
        if side * side != n:
            raise ValueError(f"{self.name}: cannot reshape {n} tokens into a square grid")
        return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], side, side)  # [B, D, side, side]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if not self.feature_indices:
            return self._to_map(self.model.forward_features(x)), []
        final, inter = self.model.forward_intermediates(x, indices=self.feature_indices, output_fmt="NCHW")
        return self._to_map(final), list(inter)
