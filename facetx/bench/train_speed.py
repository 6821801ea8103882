"""Training throughput benchmark (not a test): ``python -m facetx.bench.train_speed [--model teacher] ...``.

Measures, on the same network, loss, optimizer and batch:
1. a plain PyTorch loop (forward, multitask loss, backward, AdamW step) on in-memory batches;
2. the same through Lightning (``FaceModule`` + ``Trainer``), reporting the framework's overhead against (1);
3. the data pipeline alone: synthetic rendering + augmentation + contract conversion, images/s in one process (what
   one DataLoader worker delivers).
Prints a Markdown table and writes it as JSON next to the run (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import open_dict
from torch.utils.data import DataLoader, Dataset

CONF = str(Path(__file__).resolve().parents[2] / "conf")


class _FixedBatches(Dataset):
    """``n`` pre-built samples served from memory, so (1) and (2) time the same compute."""

    def __init__(self, samples: list[dict[str, torch.Tensor]]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.samples[i]


def _compose(overrides: list[str]):
    with initialize_config_dir(version_base="1.3", config_dir=CONF):
        cfg = compose(config_name="train", overrides=overrides)
    return cfg


def _build(cfg, num_classes: int):
    with open_dict(cfg):
        cfg.loss.recognition.num_classes = num_classes
    net = instantiate(cfg.model, _convert_="all")
    loss = instantiate(cfg.loss, _convert_="all")
    return net, loss


def bench_plain(cfg, samples, batch: int, steps: int, warmup: int) -> float:
    net, loss = _build(cfg, num_classes=int(max(s["identity"] for s in samples)) + 1)
    net.train()
    params = list(net.parameters()) + list(loss.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4)
    loader = DataLoader(_FixedBatches(samples), batch_size=batch, shuffle=True, drop_last=True)
    it = iter(loader)
    times = []
    for i in range(warmup + steps):
        try:
            b = next(it)
        except StopIteration:
            it = iter(loader)
            b = next(it)
        t0 = time.perf_counter()
        out = net(b["image"])
        total = loss(out, b)["loss"]
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return batch * len(times) / sum(times)


def bench_lightning(cfg, samples, batch: int, steps: int, warmup: int) -> float:
    import pytorch_lightning as pl

    from facetx.training.module import FaceModule

    net, loss = _build(cfg, num_classes=int(max(s["identity"] for s in samples)) + 1)
    module = FaceModule(net, loss, optimizer=lambda m: torch.optim.AdamW(m.parameters(), lr=1e-4))

    class Timer(pl.Callback):
        def __init__(self) -> None:
            self.t0 = 0.0
            self.times: list[float] = []

        def on_train_batch_start(self, trainer, *args) -> None:
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, *args) -> None:
            if trainer.global_step > warmup:
                self.times.append(time.perf_counter() - self.t0)

    timer = Timer()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=warmup + steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        gradient_clip_val=1.0,
        callbacks=[timer],
    )
    loader = DataLoader(_FixedBatches(samples), batch_size=batch, shuffle=True, drop_last=True)
    trainer.fit(module, train_dataloaders=loader)
    return batch * len(timer.times) / sum(timer.times)


def bench_data(augment: str, n: int) -> float:
    cfg = _compose([f"augment={augment}"])
    ds = instantiate(cfg.data.train, _convert_="all")
    t0 = time.perf_counter()
    for i in range(n):
        ds[i]
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="teacher", help="a conf/model option (default: teacher)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=6, help="timed steps (after --warmup)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads (pinned and reported)")
    ap.add_argument("--data-images", type=int, default=300, help="images rendered per data-pipeline measurement")
    ap.add_argument("--out", default="outputs/bench/train_speed.json")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = _compose([f"model={args.model}", "augment=none"])
    ds = instantiate(cfg.data.train, _convert_="all")
    samples = [ds[i] for i in range(args.batch * 2)]
    plain = bench_plain(cfg, samples, args.batch, args.steps, args.warmup)
    lightning = bench_lightning(_compose([f"model={args.model}", "augment=none"]), samples, args.batch, args.steps,
                                args.warmup)  # fmt: skip
    data = {a: bench_data(a, args.data_images) for a in ("none", "default", "strong")}
    result = {
        "model": args.model,
        "batch": args.batch,
        "threads": args.threads,
        "train_images_per_s_plain_torch": plain,
        "train_images_per_s_lightning": lightning,
        "lightning_overhead": 1 - lightning / plain,
        "data_images_per_s_per_worker": data,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "load_average": os.getloadavg(),
    }
    rows = [
        ("training, plain PyTorch loop", f"{plain:.1f} img/s"),
        ("training, Lightning (FaceModule)", f"{lightning:.1f} img/s"),
        ("Lightning overhead vs plain loop", f"{100 * result['lightning_overhead']:.1f} %"),
        *[(f"data pipeline, augment={a} (1 worker)", f"{v:.0f} img/s") for a, v in data.items()],
    ]
    print(f"\nmodel={args.model} batch={args.batch} threads={args.threads} torch={torch.__version__}")
    print("| measurement | value |\n|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
