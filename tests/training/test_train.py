"""train.py end to end on the real configs (tiny model, few steps): outputs, checkpoint contract, resume."""

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from facetx.training.checkpoint import load_checkpoint, load_face_net
from facetx.training.run import train

REQUIRED = ["val/recognition/acc", "val/recognition/tar@far=1e-3", "val/landmarks/nme", "val/expression/acc",
            "val/spoof/acer", "val/recognition/raw_pixel_acc"]  # fmt: skip


def test_train_writes_the_output_contract(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg("train", ["model=tiny"])
    metrics = train(cfg)
    for key in REQUIRED:
        assert key in metrics, key
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk == pytest.approx(metrics)
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert list((tmp_path / "checkpoints").glob("best-*.ckpt"))
    assert list((tmp_path / "csv").glob("version_*/metrics.csv"))
    # the checkpoint rebuilds the network without Lightning or the YAML, and loads weights-only
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    config = ckpt["facetx"]["config"]
    assert config["model_name"] == "tiny" and config["loss"]["recognition"]["num_classes"] == 8
    net, _ = load_face_net(tmp_path / "checkpoints" / "last.ckpt")
    x = torch.rand(2, 3, 112, 112)
    state = {k[4:]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    assert all(torch.equal(net.state_dict()[k], v) for k, v in state.items())
    out = net(x)
    assert out["embedding"].shape == (2, 512) and out["landmarks"].shape == (2, 68, 2)


class _StopAt(pl.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step >= self.step:
            raise RuntimeError("simulated crash")  # a run killed mid-way: only what was checkpointed survives


def test_resume_from_last_ckpt(make_cfg, tmp_path: Path, monkeypatch) -> None:
    overrides = [
        "model=tiny",
        "trainer.max_steps=8",
        "trainer.max_epochs=-1",
        "callbacks.periodic_checkpoint.every_n_train_steps=3",
    ]
    cfg = make_cfg("train", overrides)
    import facetx.training.run as run

    real = run.build_callbacks
    monkeypatch.setattr(run, "build_callbacks", lambda c, r: [*real(c, r), _StopAt(5)])
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg)
    last = tmp_path / "checkpoints" / "last.ckpt"
    # periodic save at step 3, then the end-of-epoch validation (4 batches an epoch) refreshed last.ckpt at step 4
    assert load_checkpoint(last)["global_step"] == 4
    assert not (tmp_path / "metrics.json").exists()
    monkeypatch.setattr(run, "build_callbacks", real)
    cfg = make_cfg("train", [*overrides, f"ckpt_path={last}"])
    metrics = train(cfg)
    assert metrics["train/global_step"] == 8
    ckpt = load_checkpoint(last)
    assert ckpt["global_step"] == 8
    # the learning-rate schedule continued instead of restarting: OneCycle's step count covers the whole run
    assert ckpt["lr_schedulers"][0]["_step_count"] == 9
