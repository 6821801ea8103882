"""What a LightningModule does for a loss with sharded class centres (:class:`facetx.loss.PartialFC`).

- ``setup``: each rank keeps its share of the centres, and DDP is told to leave them alone (each rank owns its shard;
  averaging shard gradients over ranks would mix different classes).
- checkpoints hold all centres and their optimizer moments, gathered shard by shard on rank 0 (one shard in flight
  at a time), so a run resumes with any number of ranks: each rank slices its rows back out.
- gradient clipping by norm uses the norm of the whole model, shards included, on every rank: clipping each rank by
  its own norm would scale the replicated parameters differently per rank and the replicas would drift apart.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from facetx.loss.partial_fc import PartialFC, shard_range

#: where a checkpoint records the optimizer slot of each sharded weight
SHARDS_KEY = "facetx_sharded"


def sharded_classifiers(module: nn.Module) -> list[tuple[str, PartialFC]]:
    return [(name, m) for name, m in module.named_modules() if isinstance(m, PartialFC)]


def setup_shards(module: nn.Module, rank: int, world_size: int) -> None:
    """Give each :class:`PartialFC` in ``module`` its rows (once; a re-run of ``setup`` keeps them)."""
    sharded = sharded_classifiers(module)
    for _, m in sharded:
        if m.weight.shape[0] == 0 or m.world_size != world_size:
            # one seed per rank: ranks with equal seeds would start two shards' centres at the same vectors
            g = torch.Generator().manual_seed(torch.initial_seed() % 2**31 + 7919 * rank)
            m.shard(rank, world_size, generator=g)
    if sharded:
        module._ddp_params_and_buffers_to_ignore = [f"{name}.weight" for name, _ in sharded]


def _param_index(optimizer: torch.optim.Optimizer, param: torch.Tensor) -> int | None:
    """``param``'s key in ``optimizer.state_dict()["state"]`` (parameters are numbered across groups in order)."""
    flat = [p for group in optimizer.param_groups for p in group["params"]]
    return next((i for i, p in enumerate(flat) if p is param), None)


def _gather_rows(x: torch.Tensor, m: PartialFC) -> torch.Tensor:
    """The full ``[num_classes, ...]`` tensor on rank 0 (CPU), from each rank's rows; other ranks get their own."""
    if m.world_size == 1:
        return x
    parts = []
    for r in range(m.world_size):
        start, end = shard_range(m.num_classes, r, m.world_size)
        buf = x.contiguous() if r == m.rank else x.new_empty((end - start, *x.shape[1:]))
        dist.broadcast(buf, src=r)
        if m.rank == 0:
            parts.append(buf.cpu())
    return torch.cat(parts) if m.rank == 0 else x


def gather_shards(module: nn.Module, checkpoint: dict[str, Any], optimizers: Iterable[torch.optim.Optimizer]) -> None:
    """``on_save_checkpoint`` (every rank calls it): put all centres and their optimizer moments into
    ``checkpoint`` and record each weight's optimizer slot for the resume."""
    optimizers = list(optimizers)
    record = {}
    for name, m in sharded_classifiers(module):
        key = f"{name}.weight"
        checkpoint["state_dict"][key] = _gather_rows(m.weight.detach(), m)
        slots = []
        for opt, opt_state in zip(optimizers, checkpoint.get("optimizer_states", []), strict=False):
            idx = _param_index(opt, m.weight)
            slots.append(idx)
            if idx is None or idx not in opt_state["state"]:
                continue
            # Optimizer.state_dict() hands out the live per-parameter state dicts: gather into a copy
            state = opt_state["state"][idx] = dict(opt_state["state"][idx])
            for k, v in list(state.items()):
                if torch.is_tensor(v) and v.shape == m.weight.shape:
                    state[k] = _gather_rows(v, m)
        record[key] = {"optimizer_index": slots, "num_classes": m.num_classes, "world_size": m.world_size}
    if record:
        checkpoint[SHARDS_KEY] = record


def slice_shards(module: nn.Module, checkpoint: dict[str, Any]) -> None:
    """``on_load_checkpoint``: keep this rank's rows of the stored optimizer moments (the weights are sliced by
    ``PartialFC`` itself when the state dict loads)."""
    record = checkpoint.get(SHARDS_KEY, {})
    for name, m in sharded_classifiers(module):
        slots = record.get(f"{name}.weight", {}).get("optimizer_index", [])
        for idx, opt_state in zip(slots, checkpoint.get("optimizer_states", []), strict=False):
            state = opt_state["state"].get(idx, {}) if idx is not None else {}
            for k, v in list(state.items()):
                if torch.is_tensor(v) and v.ndim and v.shape[0] == m.num_classes != m.end - m.start:
                    state[k] = v[m.start : m.end].clone()


def clip_grad_norm_across_shards(module: nn.Module, optimizer: torch.optim.Optimizer, max_norm: float) -> bool:
    """Clip by the norm of all gradients, shards of every rank included; False when ``module`` has no shards over
    several ranks (the caller clips as usual)."""
    shards = [m.weight for _, m in sharded_classifiers(module) if m.world_size > 1]
    if not shards:
        return False
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    own = [p.grad for p in shards if p.grad is not None]
    replicated = [g for g in grads if not any(g is o for o in own)]
    sq_shards = sum((g.float().pow(2).sum() for g in own), torch.zeros((), device=grads[0].device))
    dist.all_reduce(sq_shards)  # the replicated gradients are equal on every rank after DDP's all-reduce
    sq = sum((g.float().pow(2).sum() for g in replicated), torch.zeros_like(sq_shards)) + sq_shards
    coef = (max_norm / (sq.sqrt() + 1e-6)).clamp(max=1.0)  # torch.nn.utils.clip_grad_norm_'s rule
    for g in grads:
        g.mul_(coef.to(g.dtype))
    return True


class ShardHooks:
    """LightningModule hooks for sharded centres (list it before ``pl.LightningModule``; ``setup`` calls
    :func:`setup_shards` itself): checkpoints with all centres, and clipping by the norm across ranks."""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        gather_shards(self, checkpoint, self.trainer.optimizers)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        slice_shards(self, checkpoint)

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:  # fmt: skip
        norm = gradient_clip_algorithm in (None, "norm")
        if not (gradient_clip_val and norm and clip_grad_norm_across_shards(self, optimizer, gradient_clip_val)):
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
