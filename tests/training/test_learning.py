"""A short real training run (tiny ViT, ~125 steps on the embedded faces) beats chance on held-out identities."""

from pathlib import Path

import torch

from facetx import metrics
from facetx.data.synthetic import SyntheticFaces
from facetx.training.run import train

VAL = "[{_target_: facetx.data.synthetic.SyntheticFaces, split: val, num_identities: 40, images_per_identity: 6, seed: 0, num_pairs: 600}]"  # noqa: E501


def _mean_shape_nme(num_train: int = 200) -> float:
    """NME of always predicting the training set's mean landmarks: the 'chance' level for landmarks."""
    train_set = SyntheticFaces("train", 100, 40, seed=0)
    mean = torch.stack([train_set[i]["landmarks"] for i in range(0, 4000, 4000 // num_train)]).mean(0)
    val = SyntheticFaces("val", 40, 6, seed=0, num_pairs=600)
    target = torch.stack([val[i]["landmarks"] for i in range(len(val))])
    return metrics.landmark_nme(mean.expand_as(target), target, val.layout.nme_indices)


def test_short_training_beats_chance(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg(
        "train",
        [
            "model=tiny",
            "data.train.num_identities=100",
            "data.train.images_per_identity=40",
            "data.batch_size=32",
            f"data.val={VAL}",
            "data.test=null",
            "data.num_workers=0",
            "test=false",
            "callbacks=none",
            "trainer.val_check_interval=1.0",
        ],
        fast=False,
    )
    m = train(cfg)
    assert m["train/global_step"] == 125
    raw = m["val/recognition/raw_pixel_acc"]
    assert m["val/recognition/acc"] >= max(0.68, raw + 0.08), m  # measured 0.755 vs raw pixels 0.578
    # landmarks are the slowest task at this budget (measured 0.150 vs 0.16 for the mean shape; the full teacher run
    # reaches 0.117): require only that the head beats the mean shape
    assert m["val/landmarks/nme"] < _mean_shape_nme(), m
    assert m["val/expression/acc"] > 1 / 7 + 0.04, m  # chance 0.143; measured 0.229
    assert m["val/spoof/acer"] < 0.48, m  # a constant guess scores 0.5; measured 0.448
