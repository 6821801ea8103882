"""Task heads. Each reads the backbone's final map ``[B, C, h, w]`` and returns one tensor.

Heads are configured as partials (``_partial_: true``); :class:`facetx.models.FaceNet` completes them with the
backbone's ``in_channels`` and ``grid`` so one YAML fits every backbone.
"""

from __future__ import annotations

import torch
from torch import nn


class _Reduce(nn.Sequential):
    """1x1 conv + BN + PReLU: shrink channels before flattening the spatial grid."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels), nn.PReLU(out_channels)
        )


class EmbeddingHead(nn.Module):
    """Recognition embedding ``[B, embedding_size]`` (not normalized; the margin loss normalizes).

    Flattens the grid instead of pooling it, as insightface's backbones do: where a feature sits on the face matters.
    Ends in BatchNorm1d like arcface_torch's ``features`` layer.
    """

    def __init__(
        self,
        in_channels: int,
        grid: tuple[int, int],
        embedding_size: int = 512,
        reduce_channels: int = 64,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.reduce = _Reduce(in_channels, reduce_channels)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(reduce_channels * grid[0] * grid[1], embedding_size, bias=False)
        self.bn = nn.BatchNorm1d(embedding_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduce(x).flatten(1)  # [B, r*h*w]
        return self.bn(self.fc(self.dropout(x)))  # [B, E]


class LandmarkHead(nn.Module):
    """Landmarks ``[B, K, 2]`` in normalized crop coordinates (pixel / crop size, see the batch contract)."""

    def __init__(
        self,
        in_channels: int,
        grid: tuple[int, int],
        num_landmarks: int,
        reduce_channels: int = 32,
        hidden: int = 256,
    ) -> None:
        super().__init__()
        self.num_landmarks = num_landmarks
        self.reduce = _Reduce(in_channels, reduce_channels)
        self.mlp = nn.Sequential(
            nn.Linear(reduce_channels * grid[0] * grid[1], hidden),
            nn.PReLU(hidden),
            nn.Linear(hidden, 2 * num_landmarks),
        )
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.constant_(self.mlp[-1].bias, 0.5)  # start at the crop center

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mlp(self.reduce(x).flatten(1))  # [B, 2K]
        return x.view(-1, self.num_landmarks, 2)  # [B, K, 2]


class ClassifierHead(nn.Module):
    """Linear classifier ``[B, num_classes]`` logits (expression, spoof).

    ``pool="avg"`` reads the pooled map (any grid); ``pool="flatten"`` keeps positions (1x1 reduce, flatten, MLP):
    expressions live in a few tokens (mouth, brows) that average pooling dilutes among the rest of the face.
    """

    def __init__(
        self,
        in_channels: int,
        grid: tuple[int, int],
        num_classes: int,
        pool: str = "avg",
        hidden: int = 0,
        reduce_channels: int = 32,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if pool == "avg":
            layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.LayerNorm(in_channels)]
            width = in_channels
        elif pool == "flatten":
            layers = [_Reduce(in_channels, reduce_channels), nn.Flatten(1)]
            width = reduce_channels * grid[0] * grid[1]
        else:
            raise ValueError(f"ClassifierHead pool must be 'avg' or 'flatten', got {pool!r}")
        layers.append(nn.Dropout(dropout))
        if hidden:
            layers += [nn.Linear(width, hidden), nn.GELU()]
        layers.append(nn.Linear(hidden or width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
