"""FER2013: CSV read back, label order mapped onto EXPRESSIONS by name, Usage splits, bad rows, the data=fer2013
config and a few training steps."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from hydra.utils import instantiate

from facetx.data.contract import EXPRESSIONS
from facetx.data.formats import FER2013, DataFormatError
from facetx.data.formats.fer2013 import FER_TO_EXPRESSION
from facetx.data.formats.writers import write_fer2013_csv

TRAIN_FAST = ["trainer.accelerator=cpu", "logger=csv", "model=tiny", "trainer.max_steps=2", "trainer.max_epochs=1",
              "trainer.val_check_interval=1.0", "trainer.log_every_n_steps=1", "trainer.enable_model_summary=false",
              "test=false", "data.batch_size=4", "data.eval_batch_size=10", "data.num_workers=0"]  # fmt: skip
FER_NAMES = ["Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral"]  # FER2013's documented order
CONTRACT_NAME = {"Angry": "anger", "Disgust": "disgust", "Fear": "fear", "Happy": "happy", "Sad": "sad",
                 "Surprise": "surprise", "Neutral": "neutral"}  # fmt: skip


def gray(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (48, 48)).astype(np.uint8)


def rows(usages: dict[str, int]) -> list[tuple[int, np.ndarray, str]]:
    out, k = [], 0
    for usage, n in usages.items():
        for _ in range(n):
            out.append((k % 7, gray(k), usage))
            k += 1
    return out


def test_label_mapping_by_name() -> None:
    assert [EXPRESSIONS[FER_TO_EXPRESSION[i]] for i in range(7)] == [CONTRACT_NAME[n] for n in FER_NAMES]


def test_read_back_splits(tmp_path: Path) -> None:
    data = rows({"Training": 9, "PublicTest": 3, "PrivateTest": 2})
    write_fer2013_csv(tmp_path / "fer2013.csv", data)
    train = FER2013(tmp_path)
    assert (len(train), train.name, train.tasks) == (9, "fer2013_training", ("expression",))
    for i in range(9):
        s = train[i]
        assert int(s["expression"]) == EXPRESSIONS.index(CONTRACT_NAME[FER_NAMES[data[i][0]]])
        assert bool(s["has_expression"]) and not bool(s["has_identity"]) and not bool(s["has_landmarks"])
        img = s["image"]
        assert img.shape == (3, 112, 112) and bool((img[0] == img[1]).all() and (img[1] == img[2]).all())
        # the 48x48 face is upsampled: shrunk back, it matches the source pixels (not another row's)
        back = cv2.resize((img[0].numpy() * 255).astype(np.float32), (48, 48), interpolation=cv2.INTER_AREA)
        assert np.corrcoef(back.ravel(), data[i][1].ravel())[0, 1] > 0.8
    np.testing.assert_array_equal(train.pixels[4], data[4][1])
    assert len(FER2013(tmp_path / "fer2013.csv", usage="PublicTest")) == 3
    assert len(FER2013(tmp_path, usage=["PublicTest", "PrivateTest"])) == 5
    with pytest.raises(ValueError, match=r"usage must be among"):
        FER2013(tmp_path, usage="Validation")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: ["9", r[1], r[2]], r"line 3: emotion '9' is outside 0-6"),
        (
            lambda r: [r[0], r[1].rsplit(" ", 1)[0], r[2]],
            r"line 3: expected 2304 integer pixel values \(48x48\), got 2303",
        ),
        (lambda r: [r[0], r[1].replace("1", "x", 1), r[2]], r"line 3: expected 2304 .*some are not integers"),
        (lambda r: [r[0], "300 " + r[1].split(" ", 1)[1], r[2]], r"line 3: pixel values must be integers 0-255"),
        (lambda r: [r[0], r[1], "Validation"], r"line 3: Usage 'Validation' is not one of Training, PublicTest"),
        (lambda r: [r[0], r[1]], r"line 3: expected 3 columns, got 2"),
    ],
)
def test_bad_rows(tmp_path: Path, edit, message: str) -> None:
    path = tmp_path / "fer2013.csv"
    write_fer2013_csv(path, rows({"Training": 3}))
    lines = path.read_text().splitlines()
    lines[2] = ",".join(edit(lines[2].split(",")))
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=r"fer2013\.csv: " + message):
        FER2013(tmp_path)


def test_bad_header_and_missing(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match=r"fer2013\.csv: does not exist \(expected the FER2013 CSV"):
        FER2013(tmp_path)
    (tmp_path / "fer2013.csv").write_text("label,pixels\n1,0\n")
    with pytest.raises(DataFormatError, match=r"line 1: header lacks column\(s\) \['emotion', 'Usage'\]"):
        FER2013(tmp_path)
    write_fer2013_csv(tmp_path / "fer2013.csv", rows({"Training": 2}))
    with pytest.raises(DataFormatError, match=r"no rows with Usage in \['PrivateTest'\]"):
        FER2013(tmp_path, usage="PrivateTest")


def test_config_builds_the_three_splits(make_cfg, tmp_path: Path) -> None:
    root = tmp_path / "fer"
    root.mkdir()
    write_fer2013_csv(root / "fer2013.csv", rows({"Training": 5, "PublicTest": 3, "PrivateTest": 2}))
    cfg = make_cfg("train", ["data=fer2013", f"data.root={root}"], fast=False)
    train = instantiate(cfg.data.train, _convert_="all")
    val, test = (instantiate(cfg.data[k], _convert_="all") for k in ("val", "test"))
    assert len(train) == 5 and [len(v) for v in val] == [3] and [len(t) for t in test] == [2]


def test_a_few_training_steps(make_cfg, tmp_path: Path) -> None:
    from facetx.training.run import train

    root = tmp_path / "fer"
    root.mkdir()
    write_fer2013_csv(root / "fer2013.csv", rows({"Training": 10, "PublicTest": 7, "PrivateTest": 2}))
    cfg = make_cfg(
        "train",
        ["data=fer2013", f"data.root={root}", "~loss/recognition", *TRAIN_FAST, "optimized_metric=val/expression/acc"],
        fast=False,
    )
    metrics = train(cfg)
    assert metrics["train/global_step"] == 2 and 0.0 <= metrics["val/expression/acc"] <= 1.0
