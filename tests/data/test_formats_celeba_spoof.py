"""CelebA-Spoof: JSON labels and 224-relative *_BB.txt boxes read back (the crop lands on the face), bad input, the
data=celeba_spoof config and a few training steps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate

from facetx.data.formats import CelebASpoof, DataFormatError
from facetx.data.formats.celeba_spoof import TEST_LABELS, TRAIN_LABELS
from facetx.data.formats.io import encode_image
from facetx.data.formats.writers import celeba_spoof_label, write_celeba_spoof_box, write_celeba_spoof_labels

TRAIN_FAST = ["trainer.accelerator=cpu", "logger=csv", "model=tiny", "trainer.max_steps=2", "trainer.max_epochs=1",
              "trainer.val_check_interval=1.0", "trainer.log_every_n_steps=1", "trainer.enable_model_summary=false",
              "test=false", "data.batch_size=4", "data.eval_batch_size=10", "data.num_workers=0"]  # fmt: skip
MONITOR_ACER = ["optimized_metric=val/spoof/acer", "callbacks.model_checkpoint.mode=min"]
FACE, BACKGROUND = (200, 60, 30), (20, 40, 220)
H, W = 320, 200  # not square: the 224-relative box scales differently in x and y
BOX = (40, 180, 80, 80)  # x, y, w, h in image pixels


def write_celeba_spoof(root: Path, labels_file: str, split: str, spoof: list[int]) -> dict[str, list[int]]:
    table = {}
    for i, s in enumerate(spoof):
        rel = f"Data/{split}/{1000 + i}/{'spoof' if s else 'live'}/{500000 + i}.jpg"
        img = np.full((H, W, 3), BACKGROUND, np.uint8)
        x, y, w, h = BOX
        img[y : y + h, x : x + w] = FACE
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(encode_image(img, ".jpg", 95))
        write_celeba_spoof_box(root / rel, BOX, (H, W))
        table[rel] = celeba_spoof_label(s)
    write_celeba_spoof_labels(root / labels_file, table)
    return table


def test_read_back_and_box_crop_lands_on_the_face(tmp_path: Path) -> None:
    table = write_celeba_spoof(tmp_path, TRAIN_LABELS, "train", [0, 1, 1])
    bb = (tmp_path / next(iter(table))).with_name("500000_BB.txt").read_text().split()
    assert bb[:4] == [str(round(v)) for v in (40 * 224 / W, 180 * 224 / H, 80 * 224 / W, 80 * 224 / H)]
    ds = CelebASpoof(tmp_path)
    assert (len(ds), ds.tasks) == (3, ("spoof",))
    assert [int(ds[i]["spoof"]) for i in range(3)] == [0, 1, 1]
    s = ds[1]
    assert bool(s["has_spoof"]) and not (bool(s["has_identity"]) or bool(s["has_landmarks"]))
    img = (s["image"].permute(1, 2, 0).numpy() * 255).round()
    # box 80x80, crop side 1.3 * 80 around its center: the center is face, the corners background
    assert np.abs(img[56, 56] - FACE).max() < 30 and np.abs(img[42:70, 42:70] - FACE).max() < 40
    assert np.abs(img[2, 2] - BACKGROUND).max() < 30 and np.abs(img[109, 109] - BACKGROUND).max() < 30


@pytest.mark.parametrize(
    ("label", "message"),
    [
        ([0] * 43, r"Data/train/1000/live/500000\.jpg: expected a list of 44 ints, got 43 values"),
        ({"a": 1}, r"Data/train/1000/live/500000\.jpg: expected a list of 44 ints, got dict"),
        ([0] * 43 + [2], r"Data/train/1000/live/500000\.jpg: live/spoof label \(index 43\) must be 0 or 1, got 2"),
    ],
)
def test_bad_labels(tmp_path: Path, label: object, message: str) -> None:
    table = write_celeba_spoof(tmp_path, TRAIN_LABELS, "train", [0])
    (tmp_path / TRAIN_LABELS).write_text(json.dumps({k: label for k in table}))
    with pytest.raises(DataFormatError, match=r"train_label\.json: " + message):
        CelebASpoof(tmp_path)


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match=r"CelebA_Spoof: does not exist \(expected the CelebA-Spoof folder"):
        CelebASpoof(tmp_path / "CelebA_Spoof")
    table = write_celeba_spoof(tmp_path, TRAIN_LABELS, "train", [0, 1])
    with pytest.raises(DataFormatError, match=r"test_label\.json: does not exist"):
        CelebASpoof(tmp_path, labels=TEST_LABELS)
    (tmp_path / TEST_LABELS).write_text("{not json")
    with pytest.raises(DataFormatError, match=r"test_label\.json: not valid JSON"):
        CelebASpoof(tmp_path, labels=TEST_LABELS)
    first, second = (tmp_path / k for k in table)
    bb = first.with_name(first.stem + "_BB.txt")
    bb.write_text("12 30 0 40 0.9\n")
    with pytest.raises(DataFormatError, match=r"500000_BB\.txt: box width and height must be positive"):
        CelebASpoof(tmp_path)[0]
    bb.write_text("12 30 40\n")
    with pytest.raises(DataFormatError, match=r"500000_BB\.txt: expected one line 'x y w h score' \(5 numbers\)"):
        CelebASpoof(tmp_path)[0]
    bb.unlink()
    with pytest.raises(DataFormatError, match=r"500000_BB\.txt: box file does not exist"):
        CelebASpoof(tmp_path)[0]
    second.unlink()
    with pytest.raises(DataFormatError, match=r"500001\.jpg: image file does not exist"):
        CelebASpoof(tmp_path)[1]


def test_config_builds_train_and_test(make_cfg, tmp_path: Path) -> None:
    root = tmp_path / "CelebA_Spoof"
    write_celeba_spoof(root, TRAIN_LABELS, "train", [0, 1, 0])
    write_celeba_spoof(root, TEST_LABELS, "test", [1, 0])
    cfg = make_cfg("train", ["data=celeba_spoof", f"data.root={root}"], fast=False)
    train = instantiate(cfg.data.train, _convert_="all")
    (val,) = instantiate(cfg.data.val, _convert_="all")
    assert len(train) == 3 and train.transform is not None and (val.name, len(val)) == ("celeba_spoof_test", 2)


def test_a_few_training_steps(make_cfg, tmp_path: Path) -> None:
    from facetx.training.run import train

    root = tmp_path / "CelebA_Spoof"
    write_celeba_spoof(root, TRAIN_LABELS, "train", [0, 1] * 4)
    write_celeba_spoof(root, TEST_LABELS, "test", [1, 0, 1])
    cfg = make_cfg(
        "train", ["data=celeba_spoof", f"data.root={root}", "~loss/recognition", *TRAIN_FAST, *MONITOR_ACER], fast=False
    )
    metrics = train(cfg)
    assert metrics["train/global_step"] == 2 and 0.0 <= metrics["val/spoof/acer"] <= 1.0
