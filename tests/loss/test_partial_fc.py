"""Partial FC: at sample_rate=1 the loss and gradients of the full margin softmax, in one process and over 2 gloo
ranks; sampling keeps the positives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from facetx.loss import MarginSoftmax, PartialFC
from facetx.loss.partial_fc import shard_range

C, D, B, WORLD = 11, 16, 6, 2  # 11 classes: shards of 6 and 5 rows
MARGIN = dict(scale=16.0, m1=1.0, m2=0.3, m3=0.1)


def _problem(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(WORLD * B, D, generator=g)
    labels = torch.randint(0, C, (WORLD * B,), generator=g)
    labels[:3] = torch.tensor([0, 6, 10])  # both shards hold positives
    return emb, labels, torch.randn(C, D, generator=g) * 0.1


def _full(emb: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
    """The single-process reference: loss, d loss / d weight, d loss / d embedding."""
    ref = MarginSoftmax(C, D, **MARGIN)
    ref.weight.data.copy_(weight)
    e = emb.clone().requires_grad_(True)
    loss = ref(e, labels)
    loss.backward()
    return loss.item(), ref.weight.grad, e.grad


def test_one_process_equals_the_full_margin_softmax() -> None:
    emb, labels, weight = _problem()
    pfc = PartialFC(C, D, **MARGIN)
    pfc.shard(0, 1)
    pfc.weight.data.copy_(weight)
    e = emb.clone().requires_grad_(True)
    loss = pfc(e, labels)
    loss.backward()
    ref_loss, ref_w, ref_e = _full(emb, labels, weight)
    assert loss.item() == pytest.approx(ref_loss, rel=1e-5)
    assert torch.allclose(pfc.weight.grad, ref_w, atol=1e-6) and torch.allclose(e.grad, ref_e, atol=1e-6)


def test_sampling_scores_every_positive_and_a_fraction_of_the_rest() -> None:
    emb, labels, _ = _problem()
    pfc = PartialFC(C, D, **MARGIN, sample_rate=0.5)
    pfc.shard(0, 1)
    weight, rows = pfc._centres(labels, torch.ones_like(labels, dtype=torch.bool))
    assert len(weight) == max(5, len(labels.unique()))
    picked = torch.nonzero((pfc.weight[:, None, :] == weight[None]).all(-1))[:, 0]  # which centres were scored
    assert set(labels.tolist()) <= set(picked.tolist())
    assert torch.equal(picked[rows], labels)  # each label points at its own centre among the scored
    pfc(emb.requires_grad_(True), labels).backward()
    unscored = sorted(set(range(C)) - set(picked.tolist()))
    assert pfc.weight.grad[unscored].abs().sum() == 0 and pfc.weight.grad[picked].abs().sum() > 0


def _rank(rank: int, out: str, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        torch.set_num_threads(1)
        emb, labels, weight = _problem()
        pfc = PartialFC(C, D, **MARGIN)
        pfc.shard(rank, WORLD)
        start, end = shard_range(C, rank, WORLD)
        pfc.weight.data.copy_(weight[start:end])
        # rank 1 has one sample fewer: ranks may hold different numbers of labelled samples
        n = B if rank == 0 else B - 1
        mine = emb[rank * B : rank * B + n].clone().requires_grad_(True)
        loss = pfc(mine, labels[rank * B : rank * B + n])
        loss.backward()
        torch.save({"loss": loss.item(), "weight_grad": pfc.weight.grad, "emb_grad": mine.grad}, f"{out}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_equal_the_full_classifier_on_the_global_batch(tmp_path: Path) -> None:
    port = 29500 + os.getpid() % 1000
    mp.start_processes(_rank, args=(str(tmp_path), port), nprocs=WORLD, start_method="spawn")
    emb, labels, weight = _problem()
    keep = torch.tensor([i for i in range(WORLD * B) if i != 2 * B - 1])  # rank 1's last sample was left out
    ref_loss, ref_w, ref_e = _full(emb[keep], labels[keep], weight)
    ref_e = torch.zeros(WORLD * B, D).index_copy(0, keep, ref_e)
    for rank in range(WORLD):
        got = torch.load(tmp_path / f"{rank}.pt")
        start, end = shard_range(C, rank, WORLD)
        n = B if rank == 0 else B - 1
        assert got["loss"] == pytest.approx(ref_loss, rel=1e-5)  # the global batch's mean, on every rank
        assert torch.allclose(got["weight_grad"], ref_w[start:end], atol=1e-6)  # its rows of the full gradient
        # x world size: DDP's averaging over the ranks turns it into the single-process backbone gradient
        assert torch.allclose(got["emb_grad"] / WORLD, ref_e[rank * B : rank * B + n], atol=1e-6)
