"""The checkpoints are what they claim: ``last.ckpt`` holds the weights ``metrics.json`` reports, so ``export.py``
reproduces the run's test accuracy; the best checkpoint holds the weights of the score it is named for."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from facetx.export import pipeline
from facetx.export.data import build_export_data
from facetx.training.checkpoint import load_checkpoint, load_face_net
from facetx.training.evaluation import evaluate
from facetx.training.run import train
from tests.conftest import FAST, compose_config

# 7 steps over 4-batch epochs: validation at steps 2, 4, 6 and the final 7 (not a validation interval), last.ckpt
# every 3 steps (3, 6): nothing but the final save holds step 7
RUN = ["model=tiny", "trainer.max_steps=7", "trainer.max_epochs=-1", "trainer.val_check_interval=0.5",
       "callbacks.last_checkpoint.every_n_train_steps=3", "test=true"]  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    cfg = compose_config("train", [*FAST, *RUN], out)
    with open_dict(cfg):  # debug=fast has no test split: test on held-out identities of their own
        cfg.data.test = [{**cfg.data.val[0], "split": "test"}]
    train(cfg)
    return out


def test_last_ckpt_holds_the_reported_step(run_dir: Path) -> None:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train/global_step"] == 7
    assert load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 7


def test_export_reproduces_the_runs_test_accuracy(run_dir: Path, tmp_path: Path) -> None:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    overrides = [f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", "quant=none",
                 "export.fixed_batch_variant=false", "export.parity_images=4", "bench.batches=[1]", "bench.runs=2",
                 "bench.min_runs=1", "bench.warmup=0", "bench.seconds_per_case=0.05"]  # fmt: skip
    report = pipeline.export(compose_config("export", overrides, tmp_path))
    assert report["held_out_split"] == "test"
    torch_fp32 = report["metrics"]["torch/fp32"]
    for key in ("recognition/acc", "landmarks/nme", "expression/acc", "spoof/acer"):
        assert torch_fp32[key] == pytest.approx(metrics[f"test/{key}"], abs=1e-6), key


def test_best_ckpt_holds_the_weights_of_its_score(run_dir: Path) -> None:
    (best,) = (run_dir / "checkpoints").glob("best-step*.ckpt")
    ckpt = load_checkpoint(best)
    state = next(v for k, v in ckpt["callbacks"].items() if k.startswith("ModelCheckpoint"))
    assert best.name == f"best-step{ckpt['global_step']:06d}.ckpt"
    net, config = load_face_net(best)
    data = build_export_data(config, split="val")
    with torch.no_grad():
        acc = evaluate(net, data.select, batch_size=20)["recognition/acc"]
    assert acc == pytest.approx(float(state["best_model_score"]), abs=1e-6)
