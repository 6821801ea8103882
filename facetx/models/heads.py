"""Task heads. Each reads the backbone's final map ``[B, C, h, w]`` and returns one tensor, except a head whose class
sets ``reads_image = True`` (:class:`TextureHead`), which reads the normalized input image ``[B, 3, H, W]``.

Heads are configured as partials (``_partial_: true``); :class:`facetx.models.FaceNet` completes them with the
backbone's ``in_channels`` and ``grid`` (an image head: 3 and the input size) so one YAML fits every backbone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

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


class TextureHead(nn.Module):
    """Classifier ``[B, num_classes]`` logits from the image itself (liveness): a small strided CNN of its own.

    Print and replay cues (moire, colour banding, a compressed tone range, a print's edge) are pixel statistics that
    the recognition features are trained to be invariant to: on the synthetic data, the spoof head on the backbone's
    final map of window_vit_nano let 65 % of the held-out attacks pass at ACER 33 % (the 5x larger teacher: 52 %,
    27 %), and learned only the tone-range cue. This branch sees the pixels and shares no weights, so the spoof loss
    does not fight recognition. ``widths``: channels of the stride-2 3x3 convs (4 of them: 112 -> 7); the logits read
    the global mean of the last map (statistics) and its ``reduce_channels`` x 7 x 7 flattened map (where: a print's
    edge lies along the crop border). 0.02 GFLOPs at 112x112 (the export table: window_vit_nano 0.169 -> 0.189).
    ``lr_scale``: its learning rate as a multiple of the optimizer's. ``spectral``: the logits also read the global
    log-energy of the luminance in ``len(spectral_freqs) x spectral_orientations`` fixed oriented band-pass filters
    (:func:`oriented_bandpass_bank`; ``spectral_freqs`` in cycles/px of the input), a local power spectrum: a
    print's or a screen's moire is a narrow peak there, which the strided CNN learns late (see texture_spoof.yaml).
    +0.02 GFLOPs (the export table: window_vit_nano 0.189 -> 0.209).
    """

    reads_image: ClassVar[bool] = True

    def __init__(
        self,
        in_channels: int,
        grid: tuple[int, int],
        num_classes: int,
        widths: Sequence[int] = (16, 32, 64, 64),
        reduce_channels: int = 8,
        lr_scale: float = 1.0,
        spectral: bool = False,
        spectral_freqs: Sequence[float] = (0.15, 0.25, 0.35, 0.45),
        spectral_orientations: int = 8,
    ) -> None:
        super().__init__()
        if not widths:
            raise ValueError("TextureHead widths must name at least one conv width")
        if not lr_scale > 0:
            raise ValueError(f"TextureHead lr_scale must be > 0, got {lr_scale}")
        # read by facetx.training.module.apply_lr_scales: this branch is trained by the spoof loss alone, and under
        # Adam its step does not grow with the loss weight, so its rate is the lever (texture_spoof.yaml: measured)
        self.lr_scale = float(lr_scale)
        layers: list[nn.Module] = []
        c = in_channels
        for w in widths:
            layers += [nn.Conv2d(c, int(w), 3, 2, 1, bias=False), nn.BatchNorm2d(int(w)), nn.ReLU(inplace=True)]
            c = int(w)
        self.body = nn.Sequential(*layers)
        h, w = grid
        for _ in widths:  # each conv: ceil(n / 2) with padding 1
            h, w = math.ceil(h / 2), math.ceil(w / 2)
        self.reduce = nn.Conv2d(c, reduce_channels, 1)
        self.bank: torch.Tensor | None
        if spectral:
            self.register_buffer("bank", oriented_bandpass_bank(spectral_freqs, spectral_orientations))
            bands = self.bank.shape[0] // 2
            self.band_norm: nn.Module = nn.BatchNorm1d(bands)  # log-energies differ by orders of magnitude per band
        else:
            self.bank, self.band_norm, bands = None, nn.Identity(), 0
        self.fc = nn.Linear(c + reduce_channels * h * w + bands, num_classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        f = self.body(image)  # [B, C, h, w]
        parts = [f.mean((2, 3)), self.reduce(f).flatten(1)]  # [B, C], [B, r*h*w]
        if self.bank is not None:
            luma = image.mean(1, keepdim=True)  # [B, 1, H, W]
            k = self.bank.shape[-1]
            # stride 2 is enough: cos^2 + sin^2 of a quadrature pair is smooth, the energy does not alias
            r = nn.functional.conv2d(luma, self.bank, stride=2, padding=k // 2)  # [B, 2*bands, H/2, W/2]
            energy = r.unflatten(1, (-1, 2)).pow(2).sum(2)  # [B, bands, H/2, W/2]
            parts.append(self.band_norm(torch.log(energy + 1e-4).mean((2, 3))))  # [B, bands]
        return self.fc(torch.cat(parts, 1))  # [B, classes]


def oriented_bandpass_bank(freqs: Sequence[float], orientations: int, size: int = 7) -> torch.Tensor:
    """Quadrature pairs of zero-mean, unit-norm Gabor filters: ``[2 * len(freqs) * orientations, 1, size, size]``,
    for each frequency (cycles/px, in (0, 0.5)) and orientation (``pi * o / orientations``) a cos then a sin filter.
    The Gaussian envelope's sigma is ``0.56 / f`` (about one octave of bandwidth)."""
    if not freqs or orientations < 1:
        raise ValueError(f"oriented_bandpass_bank: needs frequencies, orientations >= 1, got {freqs}, {orientations}")
    if not all(0.0 < f < 0.5 for f in freqs):  # at 0.5 the sin filter of 0 deg is zero on the pixel grid
        raise ValueError(f"oriented_bandpass_bank: frequencies must be in (0, 0.5) cycles/px, got {list(freqs)}")
    r = torch.arange(size, dtype=torch.float32) - size // 2
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    filters = []
    for f in freqs:
        envelope = torch.exp(-(xx**2 + yy**2) * (f / 0.56) ** 2 / 2)
        for o in range(orientations):
            a = math.pi * o / orientations
            phase = 2 * math.pi * f * (xx * math.cos(a) + yy * math.sin(a))
            for w in (torch.cos(phase) * envelope, torch.sin(phase) * envelope):
                w = w - w.mean()  # no response to flat regions: brightness is the tone cue's business
                filters.append(w / w.norm())
    return torch.stack(filters)[:, None]
