"""WFLW: annotation lines read back, alignment moves landmarks with the pixels (marks test), flip map, bad input,
the data=wflw config and a few training steps."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from hydra.utils import instantiate

from facetx.augment import FaceAugment
from facetx.data.formats import WFLW, DataFormatError
from facetx.data.formats.io import encode_image
from facetx.data.formats.wflw import TEST_LIST, TRAIN_LIST
from facetx.data.formats.writers import wflw_line
from facetx.data.landmarks import WFLW98
from facetx.detect.align import ARCFACE_TEMPLATE

TRAIN_FAST = ["trainer.accelerator=cpu", "logger=csv", "model=tiny", "trainer.max_steps=2", "trainer.max_epochs=1",
              "trainer.val_check_interval=1.0", "trainer.log_every_n_steps=1", "trainer.enable_model_summary=false",
              "test=false", "data.batch_size=4", "data.eval_batch_size=10", "data.num_workers=0"]  # fmt: skip
MONITOR_NME = ["optimized_metric=val/landmarks/nme", "callbacks.model_checkpoint.mode=min"]
RED, GREEN = (255, 0, 0), (0, 255, 0)


def wflw_face(seed: int, angle_deg: float = 20.0, scale: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """A 320x300 RGB photo whose face is the ArcFace template rotated by ``angle_deg`` and scaled by ``scale``;
    the outer eye corners (points 60 and 72) are marked red and green. Returns ``(image, landmarks [98, 2])``."""
    rng = np.random.default_rng(seed)
    lm = rng.uniform(20, 92, (98, 2))  # template (crop) coordinates
    lm[96], lm[97], lm[54], lm[76], lm[82] = ARCFACE_TEMPLATE  # pupils, nose tip, mouth corners: the 5 points
    lm[60], lm[72] = ARCFACE_TEMPLATE[0] - (12, 0), ARCFACE_TEMPLATE[1] + (12, 0)
    a = np.deg2rad(angle_deg)
    rot = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    pts = (lm - 56) @ rot.T + (160 + rng.uniform(-10, 10), 150 + rng.uniform(-10, 10))
    img = np.full((300, 320, 3), 90, np.uint8)
    for k, color in ((60, RED), (72, GREEN)):
        cv2.circle(img, tuple(int(round(v)) for v in pts[k]), 7, color, -1)
    return img, pts


def write_wflw(root: Path, n_train: int = 3, n_test: int = 2, angle_deg: float = 20.0) -> list[np.ndarray]:
    """A WFLW tree with the standard file names; returns the landmarks of every face (train, then test)."""
    ann = root / TRAIN_LIST
    ann.parent.mkdir(parents=True)
    (root / "WFLW_images" / "1--Handshaking").mkdir(parents=True)
    all_pts = []
    for path, start, n in ((TRAIN_LIST, 0, n_train), (TEST_LIST, n_train, n_test)):
        lines = []
        for i in range(start, start + n):
            img, pts = wflw_face(i, angle_deg)
            rel = f"1--Handshaking/1_Handshaking_{i}.jpg"
            (root / "WFLW_images" / rel).write_bytes(encode_image(img, ".jpg", 95))
            box = (*pts.min(0), *pts.max(0))
            lines.append(wflw_line(pts, box, [0, 1, 0, 0, 1, 0], rel))
            all_pts.append(pts)
        (root / path).write_text("\n".join(lines) + "\n")
    return all_pts


def color_at(sample: dict, point: np.ndarray) -> np.ndarray:
    x, y = (np.asarray(point) * 112).round().astype(int)
    return (sample["image"][:, y, x].numpy() * 255).round()


def test_read_back_and_alignment_moves_landmarks_with_pixels(tmp_path: Path) -> None:
    pts = write_wflw(tmp_path)
    ds = WFLW(tmp_path)
    assert (len(ds), ds.layout is WFLW98, ds.num_landmarks, ds.tasks) == (3, True, 98, ("landmarks",))
    assert ds.attributes.tolist() == [[0, 1, 0, 0, 1, 0]] * 3
    np.testing.assert_allclose(ds.landmarks[1], pts[1], atol=1e-4)  # the file keeps 6 decimals
    for i in range(3):
        s = ds[i]
        assert bool(s["has_landmarks"]) and not bool(s["has_identity"]) and s["landmarks"].shape == (98, 2)
        lm = s["landmarks"].numpy()
        # the five points went exactly onto the ArcFace template (in normalized crop coordinates)
        five = lm[[96, 97, 54, 76, 82]] * 112
        np.testing.assert_allclose(five, ARCFACE_TEMPLATE, atol=0.05)
        # the eye-corner marks are where the transformed landmarks say
        assert np.abs(color_at(s, lm[60]) - RED).max() < 40
        assert np.abs(color_at(s, lm[72]) - GREEN).max() < 40
        # and the NME normalizer is the outer-eye-corner distance, WFLW's
        assert WFLW98.nme_indices == (60, 72)


def test_flip_uses_the_wflw_flip_map(tmp_path: Path) -> None:
    write_wflw(tmp_path, n_train=1)
    ds = WFLW(tmp_path, transform=FaceAugment([], hflip_p=1.0, seed=0))
    lm = ds[0]["landmarks"].numpy()
    # after the mirror, the image-left outer eye corner (point 60) is the originally image-right one (green)
    assert np.abs(color_at(ds[0], lm[60]) - GREEN).max() < 40
    assert np.abs(color_at(ds[0], lm[72]) - RED).max() < 40


def test_bad_field_count(tmp_path: Path) -> None:
    write_wflw(tmp_path)
    ann = tmp_path / TRAIN_LIST
    lines = ann.read_text().splitlines()
    lines[1] = " ".join(lines[1].split()[2:])  # two coordinates short
    ann.write_text("\n".join(lines) + "\n")
    msg = (
        r"list_98pt_rect_attr_train\.txt: line 2: expected 207 fields"
        r" \(196 landmark coords, 4 box, 6 attributes, path\), got 205$"
    )
    with pytest.raises(DataFormatError, match=msg):
        WFLW(tmp_path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda f: f[:5] + ["nan?"] + f[6:], r"line 1: non-numeric coordinate, box or attribute field"),
        (lambda f: f[:5] + ["inf"] + f[6:], r"line 1: landmark or box coordinates are not finite"),
        (lambda f: f[:-2] + ["2", f[-1]], r"line 1: attribute flags must be 0 or 1, got \[0, 1, 0, 0, 1, 2\]"),
        (lambda f: f[:-1] + ["1--Handshaking/missing.jpg"], r"line 1: image .*missing\.jpg does not exist"),
    ],
)
def test_bad_lines(tmp_path: Path, edit, message: str) -> None:
    write_wflw(tmp_path, n_train=1)
    ann = tmp_path / TRAIN_LIST
    ann.write_text(" ".join(edit(ann.read_text().split())) + "\n")
    with pytest.raises(DataFormatError, match=r"list_98pt_rect_attr_train\.txt: " + message):
        WFLW(tmp_path)


def test_missing_files_layout_and_corrupt_images(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match=r"nowhere: does not exist \(expected the WFLW folder"):
        WFLW(tmp_path / "nowhere")
    write_wflw(tmp_path, n_train=2)
    with pytest.raises(
        DataFormatError, match=r"the annotations have 98 landmarks but the data config's layout is 'ibug68'"
    ):
        WFLW(tmp_path, layout="ibug68")
    with pytest.raises(DataFormatError, match=r"other\.txt: does not exist \(expected a WFLW annotation list"):
        WFLW(tmp_path, annotations="other.txt")
    (tmp_path / "WFLW_images" / "1--Handshaking" / "1_Handshaking_0.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(DataFormatError, match=r"1_Handshaking_0\.jpg: cannot decode the image payload"):
        WFLW(tmp_path)[0]
    ds = WFLW(tmp_path, on_corrupt="skip")
    assert int(ds[0]["index"]) == 1 and ds.skipped == 1


def test_config_builds_train_and_test_lists(make_cfg, tmp_path: Path) -> None:
    root = tmp_path / "WFLW"
    write_wflw(root)
    cfg = make_cfg("train", ["data=wflw", f"data.root={root}"], fast=False)
    assert cfg.data.num_landmarks == 98
    train = instantiate(cfg.data.train, _convert_="all")
    val = instantiate(cfg.data.val, _convert_="all")
    assert isinstance(train, WFLW) and len(train) == 3 and train.transform is not None
    assert [(v.name, len(v), v.transform) for v in val] == [("wflw_test", 2, None)]


def test_a_few_training_steps(make_cfg, tmp_path: Path) -> None:
    from facetx.training.run import train

    root = tmp_path / "WFLW"
    write_wflw(root, n_train=8, n_test=3)
    cfg = make_cfg(
        "train", ["data=wflw", f"data.root={root}", "~loss/recognition", *TRAIN_FAST, *MONITOR_NME], fast=False
    )
    metrics = train(cfg)
    assert metrics["train/global_step"] == 2
    assert metrics["val/landmarks/nme"] > 0
