"""Landmark regression losses on normalized crop coordinates."""

from __future__ import annotations

import math

import torch
from torch import nn


class WingLoss(nn.Module):
    """Wing loss (Feng et al., CVPR 2018), computed in pixels of a ``crop_size`` crop.

    ``w`` and ``epsilon`` are in pixels (the paper's 10 / 2), so the log region covers the small errors that decide
    NME. Inputs ``[B, K, 2]`` in normalized coordinates; returns the mean over points and coordinates.
    """

    def __init__(self, w: float = 10.0, epsilon: float = 2.0, crop_size: float = 112.0) -> None:
        super().__init__()
        self.w, self.epsilon, self.crop_size = w, epsilon, crop_size
        self.c = w - w * math.log(1 + w / epsilon)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        d = (pred - target).abs() * self.crop_size
        loss = torch.where(d < self.w, self.w * torch.log1p(d / self.epsilon), d - self.c)
        return loss.mean()


class L1Loss(nn.Module):
    """Mean absolute error in pixels of a ``crop_size`` crop."""

    def __init__(self, crop_size: float = 112.0) -> None:
        super().__init__()
        self.crop_size = crop_size

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (pred - target).abs().mean() * self.crop_size
