"""Partial FC checkpoints across rank counts: a one-process checkpoint resumes on 2 gloo ranks, the 2 ranks take a
clipped AdamW step on the halves of a batch, and the checkpoint they gather equals one process taking the same step
on the whole batch (weights, all centres and their AdamW moments)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from facetx.loss import PartialFC
from facetx.loss.partial_fc import shard_range
from facetx.training.sharding import clip_grad_norm_across_shards, gather_shards, setup_shards, slice_shards

C, D, B, WORLD = 11, 8, 8, 2  # 11 classes: shards of 6 and 5 rows; 8 samples, 4 per rank
MAX_NORM = 0.05  # small enough that every step here is clipped


class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(5, D)  # replicated over the ranks
        self.loss = PartialFC(C, D, scale=16.0, m2=0.3, sample_rate=1.0)


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(B, 5, generator=g), torch.randint(0, C, (B,), generator=g)


def _optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=0.1)


def _checkpoint(model: nn.Module, opt: torch.optim.Optimizer) -> dict:
    ckpt = {"state_dict": model.state_dict(), "optimizer_states": [opt.state_dict()]}
    gather_shards(model, ckpt, [opt])
    return ckpt


def _resume(ckpt: dict, rank: int, world: int) -> tuple[_Toy, torch.optim.Optimizer]:
    """What Lightning does: setup, on_load_checkpoint, the state dict, then the optimizer state."""
    model = _Toy()
    setup_shards(model, rank, world)
    slice_shards(model, ckpt)
    model.load_state_dict(ckpt["state_dict"])
    opt = _optimizer(model)
    opt.load_state_dict(ckpt["optimizer_states"][0])
    return model, opt


def _step(model: _Toy, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, world: int) -> None:
    opt.zero_grad()
    model.loss(model.embed(x), y).backward()
    if world > 1:
        for p in model.embed.parameters():  # DDP's averaging of the replicated gradients
            dist.all_reduce(p.grad)
            p.grad /= world
        assert clip_grad_norm_across_shards(model, opt, MAX_NORM)
    else:
        assert torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM) > MAX_NORM
    opt.step()


def _first_run() -> dict:
    torch.manual_seed(0)
    model = _Toy()
    setup_shards(model, 0, 1)
    opt = _optimizer(model)
    x, y = _batch()
    _step(model, opt, x, y, 1)
    return _checkpoint(model, opt)


def _rank(rank: int, path: str, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        torch.set_num_threads(1)
        ckpt = torch.load(f"{path}/one.pt")
        model, opt = _resume(ckpt, rank, WORLD)
        start, end = shard_range(C, rank, WORLD)
        assert torch.equal(model.loss.weight.detach(), ckpt["state_dict"]["loss.weight"][start:end])
        x, y = _batch()
        half = slice(rank * B // WORLD, (rank + 1) * B // WORLD)
        _step(model, opt, x[half], y[half], WORLD)
        two = _checkpoint(model, opt)
        if rank == 0:
            torch.save(two, f"{path}/two.pt")
    finally:
        dist.destroy_process_group()


def test_a_one_process_checkpoint_resumes_on_two_ranks_and_gathers_back(tmp_path: Path) -> None:
    one = _first_run()
    torch.save(one, tmp_path / "one.pt")
    port = 29500 + (os.getpid() + 500) % 1000
    mp.start_processes(_rank, args=(str(tmp_path), port), nprocs=WORLD, start_method="spawn")

    ref, ref_opt = _resume(torch.load(tmp_path / "one.pt"), 0, 1)
    _step(ref, ref_opt, *_batch(), 1)
    want = _checkpoint(ref, ref_opt)
    got = torch.load(tmp_path / "two.pt")
    assert got["state_dict"]["loss.weight"].shape == (C, D)  # all centres, gathered from the 2 shards
    for key, value in want["state_dict"].items():
        assert torch.allclose(got["state_dict"][key], value, atol=1e-6), key
    slot = want["facetx_sharded"]["loss.weight"]["optimizer_index"][0]
    for idx, state in want["optimizer_states"][0]["state"].items():
        for name in ("exp_avg", "exp_avg_sq"):
            mine = got["optimizer_states"][0]["state"][idx][name]
            assert mine.shape == state[name].shape, (idx, name)
            assert torch.allclose(mine, state[name], atol=1e-6), (idx, name, idx == slot)
