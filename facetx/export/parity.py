"""Numerical parity of an exported graph with the PyTorch network on real inputs: fail loudly, never ship drift."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

Predict = Callable[[torch.Tensor], Mapping[str, torch.Tensor]]


class ParityError(RuntimeError):
    """The exported model's outputs differ from the PyTorch network's beyond the tolerance."""


@torch.no_grad()
def output_agreement(
    reference: Predict, candidate: Predict, images: torch.Tensor, names: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Per output: ``{"min_cosine", "mean_cosine", "max_abs_diff"}`` over the samples of ``images [B, 3, H, W]``.

    Cosine similarity is taken per sample over the flattened output (``[B, ...]`` -> ``[B, D]``).
    """
    ref, got = reference(images), candidate(images)
    stats = {}
    for name in names:
        if name not in got:
            raise ParityError(f"exported model has no output {name!r} (it has {sorted(got)})")
        a = ref[name].detach().float().cpu().flatten(1)
        b = got[name].detach().float().cpu().flatten(1)
        if a.shape != b.shape:
            raise ParityError(f"output {name!r}: shape {tuple(b.shape)} differs from PyTorch's {tuple(a.shape)}")
        cos = F.cosine_similarity(a.double(), b.double(), dim=1, eps=1e-12)
        stats[name] = {
            "min_cosine": float(cos.min()),
            "mean_cosine": float(cos.mean()),
            "max_abs_diff": float((a - b).abs().max()),
        }
    return stats


def _worst(a: float, b: float) -> float:
    """The smaller cosine; NaN (a broken output) wins."""
    return math.nan if math.isnan(a) or math.isnan(b) else min(a, b)


def check_parity(
    reference: Predict,
    candidate: Predict,
    batches: Sequence[torch.Tensor],
    names: Sequence[str],
    min_cosine: float = 0.9999,
    label: str = "model.onnx",
) -> dict[str, dict[str, float]]:
    """Compare ``candidate`` with ``reference`` on every batch; raise :class:`ParityError` if any output's smallest
    per-sample cosine is below ``min_cosine`` (or NaN). Returns the merged statistics (worst case over batches)."""
    if not batches:
        raise ValueError("check_parity needs at least one batch of real images")
    merged: dict[str, dict[str, float]] = {}
    for images in batches:
        for name, s in output_agreement(reference, candidate, images, names).items():
            m = merged.setdefault(name, {"min_cosine": 1.0, "mean_cosine": 1.0, "max_abs_diff": 0.0})
            m["min_cosine"] = _worst(m["min_cosine"], s["min_cosine"])
            m["mean_cosine"] = _worst(m["mean_cosine"], s["mean_cosine"])
            m["max_abs_diff"] = max(m["max_abs_diff"], s["max_abs_diff"])
    bad = {n: s["min_cosine"] for n, s in merged.items() if not s["min_cosine"] >= min_cosine}
    if bad:
        detail = ", ".join(f"{n}: min cosine {c:.6f}" for n, c in bad.items())
        raise ParityError(f"{label}: outputs differ from PyTorch (need cosine >= {min_cosine} per output): {detail}")
    return merged
