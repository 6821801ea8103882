"""300-W: .pts files read back (1-based coordinates), alignment moves landmarks with the pixels, bad input, the
data=300w config and a few training steps."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from hydra.utils import instantiate

from facetx.data.formats import IBUG300W, DataFormatError
from facetx.data.formats.ibug300w import read_pts
from facetx.data.formats.io import encode_image
from facetx.data.formats.writers import write_pts
from facetx.data.landmarks import IBUG68
from facetx.detect.align import ARCFACE_TEMPLATE

TRAIN_FAST = ["trainer.accelerator=cpu", "logger=csv", "model=tiny", "trainer.max_steps=2", "trainer.max_epochs=1",
              "trainer.val_check_interval=1.0", "trainer.log_every_n_steps=1", "trainer.enable_model_summary=false",
              "test=false", "data.batch_size=4", "data.eval_batch_size=10", "data.num_workers=0"]  # fmt: skip
MONITOR_NME = ["optimized_metric=val/landmarks/nme", "callbacks.model_checkpoint.mode=min"]
RED = (255, 0, 0)


def ibug_face(seed: int, angle_deg: float = -15.0, scale: float = 1.6) -> tuple[np.ndarray, np.ndarray]:
    """A 260x240 photo whose 68 points map the ArcFace template's eye centers, nose tip and mouth corners by a
    similarity; the image-right outer eye corner (point 45) is marked red. Returns ``(image, points [68, 2])``."""
    rng = np.random.default_rng(seed)
    lm = rng.uniform(20, 92, (68, 2))
    for group, center in zip(IBUG68.five_point_groups[:2], ARCFACE_TEMPLATE[:2], strict=True):
        ring = np.stack([np.cos(np.arange(6) * np.pi / 3), np.sin(np.arange(6) * np.pi / 3)], 1) * (6, 3)
        lm[list(group)] = center + ring  # eye contour centered on the template eye
    lm[30], lm[48], lm[54] = ARCFACE_TEMPLATE[2:]
    a = np.deg2rad(angle_deg)
    rot = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    pts = (lm - 56) @ rot.T + (120, 130)
    img = np.full((260, 240, 3), 70, np.uint8)
    cv2.circle(img, tuple(int(round(v)) for v in pts[45]), 6, RED, -1)
    return img, pts


def write_300w(root: Path, subsets: dict[str, int]) -> None:
    k = 0
    for sub, n in subsets.items():
        (root / sub).mkdir(parents=True, exist_ok=True)
        for _ in range(n):
            img, pts = ibug_face(k)
            (root / sub / f"image_{k:04d}.png").write_bytes(encode_image(img, ".png"))
            write_pts(root / sub / f"image_{k:04d}.pts", pts)
            k += 1


def test_pts_round_trip_is_one_based(tmp_path: Path) -> None:
    pts = np.array([[0.0, 0.0], [10.5, 20.25]] + [[1.0, 2.0]] * 66)
    write_pts(tmp_path / "a.pts", pts)
    text = (tmp_path / "a.pts").read_text().splitlines()
    assert text[:4] == ["version: 1", "n_points: 68", "{", "1.000 1.000"] and text[-1] == "}"
    np.testing.assert_allclose(read_pts(tmp_path / "a.pts"), pts, atol=1e-3)


def test_read_back_and_alignment_moves_landmarks_with_pixels(tmp_path: Path) -> None:
    write_300w(tmp_path, {"afw": 2, "helen/trainset": 1, "ibug": 1})
    ds = IBUG300W(tmp_path, dirs=["afw", "helen/trainset"])
    assert (len(ds), ds.layout is IBUG68, ds.num_landmarks) == (3, True, 68)
    assert [p.name for p in ds.image_paths] == ["image_0000.png", "image_0001.png", "image_0002.png"]
    assert len(IBUG300W(tmp_path)) == 4  # no dirs: everything under root
    s = ds[2]
    lm = s["landmarks"].numpy() * 112
    eyes = np.stack([lm[list(g)].mean(0) for g in IBUG68.five_point_groups[:2]])
    np.testing.assert_allclose(eyes, ARCFACE_TEMPLATE[:2], atol=0.05)
    np.testing.assert_allclose(lm[[30, 48, 54]], ARCFACE_TEMPLATE[2:], atol=0.05)
    x, y = lm[45].round().astype(int)
    assert np.abs((s["image"][:, y, x].numpy() * 255) - RED).max() < 30


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version: 1\nn_points: 5\n{\n1 2\n}\n", r"n_points is 5, expected 68"),
        ("version: 1\nn_points: 68\n{\n" + "1 2\n" * 67 + "}\n", r"n_points says 68 but 67 point lines follow"),
        ("version: 1\nn_points: 68\n{\n" + "1 2\n" * 68, r"expected the points between '\{' and '\}' lines"),
        ("version: 1\nn_points: 68\n{\n" + "1 2 3\n" * 68 + "}\n", r"every point line must hold two finite numbers"),
        ("version: 1\nn_points: 68\n{\n" + "1 x\n" * 68 + "}\n", r"non-numeric point coordinate"),
        ("hello\n{\n}\n", r"line 1: expected 'version: 1', 'n_points: N' or '\{', got 'hello'"),
    ],
)
def test_bad_pts(tmp_path: Path, text: str, message: str) -> None:
    write_300w(tmp_path, {"afw": 1})
    (tmp_path / "afw" / "image_0000.pts").write_text(text)
    with pytest.raises(DataFormatError, match=r"image_0000\.pts: " + message):
        IBUG300W(tmp_path)


def test_missing_things(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match=r"no\.where: does not exist \(expected the 300-W folder"):
        IBUG300W(tmp_path / "no.where")
    write_300w(tmp_path, {"afw": 1})
    with pytest.raises(DataFormatError, match=r"lfpw: does not exist \(expected a 300-W subset folder\)"):
        IBUG300W(tmp_path, dirs=["afw", "lfpw"])
    with pytest.raises(DataFormatError, match=r"layout is .wflw98. \(98 points\): set data.num_landmarks=68"):
        IBUG300W(tmp_path, layout="wflw98")
    (tmp_path / "afw" / "image_0000.png").unlink()
    with pytest.raises(DataFormatError, match=r"image_0000\.pts: no image with the same stem"):
        IBUG300W(tmp_path)
    (tmp_path / "afw" / "image_0000.pts").unlink()
    with pytest.raises(DataFormatError, match=r"no \.pts files under"):
        IBUG300W(tmp_path)


def test_config_builds_the_usual_split(make_cfg, tmp_path: Path) -> None:
    root = tmp_path / "300W"
    write_300w(
        root, {"lfpw/trainset": 1, "helen/trainset": 1, "afw": 1, "lfpw/testset": 1, "helen/testset": 1, "ibug": 1}
    )
    cfg = make_cfg("train", ["data=300w", f"data.root={root}"], fast=False)
    train = instantiate(cfg.data.train, _convert_="all")
    (val,) = instantiate(cfg.data.val, _convert_="all")
    assert isinstance(train, IBUG300W) and len(train) == 3 and len(val) == 3 and val.name == "300w_full"


def test_a_few_training_steps(make_cfg, tmp_path: Path) -> None:
    from facetx.training.run import train

    root = tmp_path / "300W"
    write_300w(
        root, {"lfpw/trainset": 4, "helen/trainset": 2, "afw": 2, "lfpw/testset": 1, "helen/testset": 1, "ibug": 1}
    )
    cfg = make_cfg(
        "train", ["data=300w", f"data.root={root}", "~loss/recognition", *TRAIN_FAST, *MONITOR_NME], fast=False
    )
    metrics = train(cfg)
    assert metrics["train/global_step"] == 2 and metrics["val/landmarks/nme"] > 0
