"""Multitask loss: weights the task losses and skips tasks whose labels are masked out."""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from facetx.loss.margin import MarginSoftmax

TASK_KEYS = {"recognition": "has_identity", "landmarks": "has_landmarks", "expression": "has_expression",
             "spoof": "has_spoof"}  # fmt: skip


class MultiTaskLoss(nn.Module):
    """``forward(outputs, batch)`` -> ``{"loss": weighted sum, "<task>": unweighted task loss, ...}``.

    A task contributes only through the samples whose ``has_<task>`` mask is True; a batch without any contributes an
    exact zero (still attached to the graph, so DDP sees every parameter used). A task whose network output is absent
    (e.g. a model without a spoof head) is skipped; a task with weight 0 is skipped.
    """

    def __init__(
        self,
        recognition: MarginSoftmax | None = None,
        landmarks: nn.Module | None = None,
        weights: Mapping[str, float] | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.recognition = recognition
        self.landmarks = landmarks
        self.weights = {"recognition": 1.0, "landmarks": 1.0, "expression": 1.0, "spoof": 1.0, **(weights or {})}
        unknown = set(self.weights) - set(TASK_KEYS)
        if unknown:
            raise ValueError(f"unknown task weight(s) {sorted(unknown)}; expected a subset of {sorted(TASK_KEYS)}")
        self.label_smoothing = label_smoothing

    def task_losses(
        self, out: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        parts: dict[str, torch.Tensor] = {}

        def masked(task: str, pred_key: str) -> tuple[torch.Tensor, torch.Tensor] | None:
            if self.weights[task] == 0 or pred_key not in out:
                return None
            mask = batch[TASK_KEYS[task]]
            return out[pred_key], mask

        if (m := masked("recognition", "embedding")) is not None and self.recognition is not None:
            emb, mask = m
            # a collective classifier (Partial FC) runs on every rank every step, labelled samples or not
            if mask.any() or getattr(self.recognition, "collective", False):
                parts["recognition"] = self.recognition(emb[mask], batch["identity"][mask])
            else:  # the class centres stay in the graph too
                parts["recognition"] = emb.sum() * 0.0 + sum(p.sum() for p in self.recognition.parameters()) * 0.0
        if (m := masked("landmarks", "landmarks")) is not None and self.landmarks is not None:
            pred, mask = m
            parts["landmarks"] = self.landmarks(pred[mask], batch["landmarks"][mask]) if mask.any() else pred.sum() * 0
        for task, key in (("expression", "expression_logits"), ("spoof", "spoof_logits")):
            if (m := masked(task, key)) is not None:
                logits, mask = m
                parts[task] = (
                    F.cross_entropy(logits[mask], batch[task][mask], label_smoothing=self.label_smoothing)
                    if mask.any()
                    else logits.sum() * 0.0
                )
        return parts

    def forward(self, out: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        parts = self.task_losses(out, batch)
        if not parts:
            raise ValueError("no task loss applies: the model has no head for any weighted task")
        total = sum(self.weights[t] * v for t, v in parts.items())
        return {"loss": total, **parts}
