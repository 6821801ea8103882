"""Partial FC (insightface's arcface_torch): the margin classifier's class centres sharded over the ranks.

A margin softmax over millions of identities does not fit on one GPU (10M x 512 float32 is 20 GB before optimizer
state). Each rank keeps ``1 / world_size`` of the centres, the embeddings of the whole global batch are gathered, and
each rank scores them against its own centres (and, with ``sample_rate < 1``, against the positives plus a random
fraction of its other centres). The softmax is normalized across ranks: the row maximum and the sum of exponentials
are all-reduced. Each rank owns its shard, so the shard stays out of DDP's gradient averaging (``shard_params``).

At ``sample_rate=1`` the loss and every gradient equal those of :class:`~facetx.loss.margin.MarginSoftmax` over the
global batch: the shard's gradient is its rows of the full classifier's, and the embedding gradient is scaled by the
world size so that DDP's averaging of the backbone gradients gives back the single-process gradient.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from facetx.loss.margin import target_margin


def shard_range(num_classes: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows ``[start, end)`` of rank ``rank``: the first ``num_classes % world_size`` ranks hold one more."""
    base, extra = divmod(num_classes, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


class _GatherRows(torch.autograd.Function):
    """``[B, D]`` per rank -> ``[world * B, D]``; the backward sums every rank's gradient for this rank's rows."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.rows = dist.get_rank(), x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad)  # each rank's loss has a part for every rank's rows
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def _gather(x: torch.Tensor) -> torch.Tensor:
    """All ranks' ``x`` (equal shapes), concatenated, no gradient."""
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def _summed(x: torch.Tensor) -> torch.Tensor:
    """The sum of ``x`` over the ranks as a value; the gradient reaches this rank's ``x`` only (each rank computes
    the same loss, so summing the gradient as well would count it once per rank)."""
    total = x.detach().clone()
    dist.all_reduce(total)
    return x + (total - x.detach())


class PartialFC(nn.Module):
    """Sharded margin softmax: ``forward(embedding [B, E], target [B])`` -> the mean cross-entropy over the global
    batch (the same value on every rank).

    Args:
        num_classes: identities in the training data.
        embedding_size: the embedding head's size.
        scale, m1, m2, m3: the margin ``s * cos(m1 * theta + m2) - s * m3`` as in ``MarginSoftmax``.
        sample_rate: the fraction of each shard's centres scored per step (positives always are); 1 scores all.

    The centres exist once :meth:`shard` has run (Lightning's ``setup``, when the ranks are known; with one
    process it keeps all of them). Every rank must call ``forward`` every step, with or without labelled samples.
    """

    #: collective: every rank calls it every step (MultiTaskLoss does, even with no labelled sample in its batch)
    collective = True

    def __init__(
        self,
        num_classes: int,
        embedding_size: int = 512,
        scale: float = 64.0,
        m1: float = 1.0,
        m2: float = 0.5,
        m3: float = 0.0,
        sample_rate: float = 1.0,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"Partial FC needs at least 2 identity classes, got num_classes={num_classes}")
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError(f"loss.recognition.sample_rate={sample_rate}: expected a fraction in (0, 1]")
        self.num_classes, self.embedding_size = num_classes, embedding_size
        self.scale, self.m1, self.m2, self.m3, self.sample_rate = scale, m1, m2, m3, sample_rate
        self.rank, self.world_size = 0, 1
        self.start, self.end = 0, 0
        self.weight = nn.Parameter(torch.empty(0, embedding_size))  # [C_local, E] once sharded

    def shard(self, rank: int, world_size: int, generator: torch.Generator | None = None) -> None:
        """Keep the centres of rank ``rank``: ``shard_range`` rows, initialized N(0, 0.01) as MarginSoftmax's."""
        self.rank, self.world_size = rank, world_size
        self.start, self.end = shard_range(self.num_classes, rank, world_size)
        weight = torch.empty(self.end - self.start, self.embedding_size, device=self.weight.device)
        self.weight = nn.Parameter(weight.normal_(0.0, 0.01, generator=generator))

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        # checkpoints hold all centres (facetx.training.sharding gathers them): keep this rank's rows
        key = prefix + "weight"
        full = state_dict.get(key)
        if full is not None and full.shape[0] == self.num_classes and self.weight.shape[0] != self.num_classes:
            state_dict[key] = full[self.start : self.end]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def logits(self, embedding: torch.Tensor) -> torch.Tensor:
        """``s * cos(theta) [B, num_classes]``, for metrics and logit distillation (one process only)."""
        if self.world_size > 1:
            raise ValueError(
                f"loss.recognition: Partial FC holds 1/{self.world_size} of the class centres per rank; logit "
                "distillation (distill.weights.kd_recognition) needs them all: set it to 0, or use "
                "loss/recognition=arcface"
            )
        return self.scale * F.linear(F.normalize(embedding.float(), dim=1), F.normalize(self.weight.float(), dim=1))

    def _global_batch(self, embedding: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every rank's embeddings and labels (``[N, E]``, ``[N]``); ranks may hold different counts."""
        if self.world_size == 1:
            return embedding, target
        counts = _gather(torch.tensor([len(target)], device=target.device))
        pad = int(counts.max()) - len(target)
        emb = torch.cat([embedding, embedding.new_zeros(pad, embedding.shape[1])])
        labels = _gather(torch.cat([target, target.new_full((pad,), -1)]))
        # x world_size on the way back: DDP averages the backbone's gradients over the ranks, while this loss is
        # already the mean over the global batch
        w = self.world_size
        scaled = emb * w - emb.detach() * (w - 1)
        emb_all = _GatherRows.apply(scaled)  # [world * max_B, E]
        keep = labels >= 0
        return emb_all[keep], labels[keep]

    def _centres(self, labels: torch.Tensor, local: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The scored centres ``[C_s, E]`` and each local label's row among them."""
        rel = (labels - self.start).clamp(min=0)
        n_local = self.end - self.start
        if self.sample_rate >= 1.0 or not self.training:
            return self.weight, rel
        positive = torch.unique(rel[local])
        num = max(int(self.sample_rate * n_local), len(positive))
        score = torch.rand(n_local, device=self.weight.device)
        score[positive] = 2.0  # positives first
        index = torch.topk(score, num).indices.sort().values
        return self.weight[index], torch.searchsorted(index, rel)

    def forward(self, embedding: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.weight.shape[0] == 0:
            raise RuntimeError("PartialFC: call shard(rank, world_size) first (FaceModule.setup does)")
        emb, labels = self._global_batch(embedding, target)  # [N, E], [N]
        if len(labels) == 0:  # no labelled sample on any rank: an exact zero that keeps everything in the graph
            return embedding.sum() * 0.0 + self.weight.sum() * 0.0
        local = (labels >= self.start) & (labels < self.end)
        weight, rows = self._centres(labels, local)
        cos = F.linear(F.normalize(emb.float(), dim=1), F.normalize(weight.float(), dim=1)).clamp(-1.0, 1.0)
        idx = local.nonzero().squeeze(1)
        cos = cos.index_put((idx, rows[idx]), target_margin(cos[idx, rows[idx]], self.m1, self.m2, self.m3))
        logits = self.scale * cos  # [N, C_s]
        top = logits.detach().max(dim=1).values
        if self.world_size > 1:
            dist.all_reduce(top, op=dist.ReduceOp.MAX)
        sum_exp = torch.exp(logits - top[:, None]).sum(dim=1)
        positive = logits.new_zeros(len(labels)).index_put((idx,), logits[idx, rows[idx]])
        if self.world_size > 1:
            sum_exp, positive = _summed(sum_exp), _summed(positive)
        return (sum_exp.log() + top - positive).mean()
