"""Margin-based softmax for face recognition (ArcFace, CosFace, SphereFace-style combined margins).

As in insightface's arcface_torch, the class-center matrix lives here, in the loss, not in the network: the exported
network ends at the embedding, and the classifier is thrown away after training.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def target_margin(c: torch.Tensor, m1: float, m2: float, m3: float) -> torch.Tensor:
    """The target cosine with the combined margin: ``cos(m1 * theta + m2) - m3`` for ``c = cos(theta)``."""
    if m1 == 1.0 and m2 == 0.0:
        return c - m3
    theta = torch.acos(c.clamp(-1 + 1e-7, 1 - 1e-7))
    phi = torch.cos(m1 * theta + m2)
    # cos(m1*theta + m2) stops decreasing once the angle passes pi: fall back to a linear penalty there
    # (insightface's "easy margin = False" branch) so the target logit stays monotonic in theta. The additive
    # m3 is not part of the fallback: it is subtracted once below, on both sides of the limit.
    limit = (math.pi - m2) / m1
    phi = torch.where(theta < limit, phi, c - math.sin(math.pi - limit) * m2 * m1)
    return phi - m3


class MarginSoftmax(nn.Module):
    """Combined margin ``s * cos(m1 * theta + m2) - s * m3`` on the target logit; plain ``s * cos(theta)`` elsewhere.

    ArcFace: ``m1=1, m2=0.5, m3=0``; CosFace: ``m1=1, m2=0, m3=0.35``; all zero margins give a scaled cosine softmax.
    Past ``theta = limit = (pi - m2) / m1`` the target cosine is ``cos(theta) - sin(pi - limit) * m1 * m2 - m3``
    (for ArcFace insightface's ``cos(theta) - sin(pi - m) * m``).
    ``forward(embedding [B, E], target [B])`` returns the mean cross-entropy; :meth:`logits` gives the margin-free
    ``s * cos(theta) [B, num_classes]`` (for metrics and logit distillation).
    """

    def __init__(
        self,
        num_classes: int,
        embedding_size: int = 512,
        scale: float = 64.0,
        m1: float = 1.0,
        m2: float = 0.5,
        m3: float = 0.0,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"margin softmax needs at least 2 identity classes, got num_classes={num_classes}")
        self.num_classes, self.scale = num_classes, scale
        self.m1, self.m2, self.m3 = m1, m2, m3
        self.label_smoothing = label_smoothing
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size))
        nn.init.normal_(self.weight, std=0.01)

    def cosine(self, embedding: torch.Tensor) -> torch.Tensor:
        """``cos(theta) [B, num_classes]`` between normalized embeddings and class centers."""
        return F.linear(F.normalize(embedding.float(), dim=1), F.normalize(self.weight.float(), dim=1))

    def logits(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.scale * self.cosine(embedding)

    def margin_logits(self, embedding: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        cos = self.cosine(embedding).clamp(-1.0, 1.0)
        idx = torch.arange(len(target), device=cos.device)
        cos = cos.index_put((idx, target), target_margin(cos[idx, target], self.m1, self.m2, self.m3))
        return self.scale * cos

    def forward(self, embedding: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.margin_logits(embedding, target), target, label_smoothing=self.label_smoothing)
