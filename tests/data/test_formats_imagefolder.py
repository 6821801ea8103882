"""Identity folders: classes from sorted folder names, resizing, empty folders, bad input, the data=imagefolder config
(with verification packs as held-out sets) and a few training steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate

from facetx.data.formats import DataFormatError, ImageFolderFaces
from facetx.data.formats.io import encode_image
from facetx.data.formats.writers import write_verification_bin

TRAIN_FAST = ["trainer.accelerator=cpu", "logger=csv", "model=tiny", "trainer.max_steps=2", "trainer.max_epochs=1",
              "trainer.val_check_interval=1.0", "trainer.log_every_n_steps=1", "trainer.enable_model_summary=false",
              "test=false", "data.batch_size=4", "data.eval_batch_size=10", "data.num_workers=0"]  # fmt: skip


def solid(value: int, size: int = 112) -> np.ndarray:
    return np.full((size, size, 3), (value, 255 - value, 128), np.uint8)


def write_folders(root: Path, counts: dict[str, int], size: int = 112) -> None:
    for name, n in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            ext = ".png" if i % 2 else ".jpg"
            (root / name / f"{i}{ext}").write_bytes(encode_image(solid(10 * i, size), ext))


def test_classes_are_sorted_folders(tmp_path: Path) -> None:
    write_folders(tmp_path, {"zoe": 2, "adam": 3, "mia": 1})
    (tmp_path / "empty").mkdir()
    (tmp_path / "adam" / "notes.txt").write_text("not an image")
    ds = ImageFolderFaces(tmp_path)
    assert ds.classes == ["adam", "mia", "zoe"] and ds.num_classes == 3 and len(ds) == 6
    assert [int(ds[i]["identity"]) for i in range(6)] == [0, 0, 0, 1, 2, 2]
    s = ds[1]
    assert bool(s["has_identity"]) and not bool(s["has_landmarks"]) and s["landmarks"].shape == (68, 2)
    np.testing.assert_allclose(s["image"][:, 50, 50].numpy() * 255, (10, 245, 128), atol=1)  # RGB, png exact


def test_other_sizes_are_resized_and_layout_is_the_runs(tmp_path: Path) -> None:
    write_folders(tmp_path, {"a": 1}, size=160)
    ds = ImageFolderFaces(tmp_path, layout=98)
    assert ds[0]["image"].shape == (3, 112, 112) and ds[0]["landmarks"].shape == (98, 2)


def test_bad_input(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match=r"faces: does not exist \(expected an image folder"):
        ImageFolderFaces(tmp_path / "faces")
    (tmp_path / "a").mkdir()
    (tmp_path / "loose.jpg").write_bytes(encode_image(solid(0)))
    with pytest.raises(
        DataFormatError, match=r"no identity sub-folder holds images .*expected root/<identity>/<image>"
    ):
        ImageFolderFaces(tmp_path)
    write_folders(tmp_path / "x", {"b": 2})
    (tmp_path / "x" / "b" / "0.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(DataFormatError, match=r"b/0\.jpg: cannot decode the image payload"):
        ImageFolderFaces(tmp_path / "x")[0]
    ds = ImageFolderFaces(tmp_path / "x", on_corrupt="skip")
    assert int(ds[0]["index"]) == 1 and ds.skipped == 1 and ds.scan() == [0]
    with pytest.raises(ValueError, match=r"on_corrupt must be one of \('skip', 'fail'\)"):
        ImageFolderFaces(tmp_path / "x", on_corrupt="ignore")


def test_config_with_val_bins(make_cfg, tmp_path: Path) -> None:
    root = tmp_path / "faces"
    write_folders(root, {"a": 2, "b": 2})
    write_verification_bin(tmp_path / "lfw.bin", [encode_image(solid(i)) for i in range(20)], [True, False] * 5)
    cfg = make_cfg(
        "train", ["data=imagefolder", f"data.root={root}", f"data.val_bins=[{tmp_path}/lfw.bin]"], fast=False
    )
    train = instantiate(cfg.data.train, _convert_="all")
    assert isinstance(train, ImageFolderFaces) and train.num_classes == 2
    assert list(cfg.data.val_bins) == [f"{tmp_path}/lfw.bin"]


def test_a_few_training_steps(make_cfg, tmp_path: Path) -> None:
    from facetx.training.run import train

    root = tmp_path / "faces"
    write_folders(root, {"a": 4, "b": 4, "c": 2})
    write_verification_bin(tmp_path / "lfw.bin", [encode_image(solid(i)) for i in range(20)], [True, False] * 5)
    overrides = [
        "data=imagefolder",
        f"data.root={root}",
        f"data.val_bins=[{tmp_path}/lfw.bin]",
        *TRAIN_FAST,
        "optimized_metric=val/lfw/acc",
    ]
    metrics = train(make_cfg("train", overrides, fast=False))
    assert metrics["train/global_step"] == 2 and 0.0 <= metrics["val/lfw/acc"] <= 1.0
