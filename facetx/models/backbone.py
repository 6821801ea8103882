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
        was_training = self.model.training
        self.model.eval()
        self.dropped = self._drop_unreached_modules()
        with torch.no_grad():
            final, inter = self(torch.zeros(1, 3, input_size, input_size))
        self.model.train(was_training)
        # checkpoints written before the drop still hold those modules' tensors: they are ignored, not refused
        self._register_load_state_dict_pre_hook(self._skip_dropped_keys)
        self.num_features = final.shape[1]  # C of the final map
        self.grid_size: tuple[int, int] = (final.shape[2], final.shape[3])
        self.feature_info: list[tuple[int, tuple[int, int]]] = [(f.shape[1], (f.shape[2], f.shape[3])) for f in inter]

    def _drop_unreached_modules(self) -> list[str]:
        """Replace with ``nn.Identity`` each module that ``forward`` never reaches; return their names.

        Built with ``num_classes=0``, timm models keep what only ``forward_head`` uses (a ViT's ``fc_norm`` under
        average pooling, EfficientViT's pre-logits ``head``). Their parameters would get no gradient, which DDP
        refuses at the first step, and would count in the parameter totals.
        """
        with torch.enable_grad():
            final, inter = self(torch.zeros(2, 3, self.input_size, self.input_size))
            (final.sum() + sum(f.sum() for f in inter)).backward()
        unreached = {n for n, p in self.model.named_parameters() if p.grad is None}
        self.model.zero_grad(set_to_none=True)
        dropped: list[str] = []
        for name, module in list(self.model.named_modules()):
            if not name or any(name.startswith(f"{d}.") for d in dropped):
                continue
            params = [f"{name}.{n}" for n, _ in module.named_parameters()]
            if params and all(p in unreached for p in params):
                parent, _, child = name.rpartition(".")
                setattr(self.model.get_submodule(parent), child, nn.Identity())
                dropped.append(name)
        return dropped

    def _skip_dropped_keys(self, state_dict: dict, prefix: str, *args: object) -> None:
        for key in [k for k in state_dict if any(k.startswith(f"{prefix}model.{d}.") for d in self.dropped)]:
            del state_dict[key]

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
