"""facetx.augment: landmarks follow the image (marks test), flip permutation, identity, seeding, occluders."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from facetx.augment import FaceAugment, OcclusionMask

CONF = Path(__file__).resolve().parents[2] / "conf" / "augment"
# ArcFace-style 5 points on a 112 crop: left eye, right eye, nose, left mouth corner, right mouth corner.
POINTS = np.array([[38, 52], [74, 52], [56, 72], [42, 92], [70, 92]], dtype=np.float32)
FLIP_MAP = np.array([1, 0, 2, 4, 3])
# Pure hues: blending with the black background (interpolation) scales a colour but keeps its direction.
COLORS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [255, 0, 255]], dtype=np.float64)


def load(name: str, **overrides: object) -> FaceAugment:
    return instantiate(OmegaConf.load(CONF / f"{name}.yaml"), **overrides)


def marked_image(h: int = 112, w: int = 112) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    for (x, y), c in zip(POINTS.astype(int), COLORS, strict=True):
        img[y - 2 : y + 3, x - 2 : x + 3] = c
    return img


def mark_centroid(img: np.ndarray, color: np.ndarray) -> np.ndarray | None:
    """Intensity-weighted centroid (x, y) of the pixels whose colour points along ``color``."""
    f = img.astype(np.float64)
    norm = np.linalg.norm(f, axis=2)
    cos = (f @ (color / np.linalg.norm(color))) / np.maximum(norm, 1e-9)
    sel = (norm > 40) & (cos > 0.97)
    if not sel.any():
        return None
    ys, xs = np.nonzero(sel)
    wts = norm[sel]
    return np.array([(xs * wts).sum() / wts.sum(), (ys * wts).sum() / wts.sum()])


def random_image(seed: int = 0, h: int = 112, w: int = 112) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("name", ["default", "strong"])
@pytest.mark.parametrize("hflip_p", [0.0, 1.0])
def test_landmarks_land_on_marks(name: str, hflip_p: float) -> None:
    # Geometric part of the real config (photometric/occlusion would recolour the marks), same FaceAugment path.
    geometric = [t for t in load(name).transforms if isinstance(t, A.DualTransform)]
    assert geometric, f"{name}.yaml has no geometric transform"
    img = marked_image()
    checked, moved = 0, 0
    for seed in range(40):
        aug = FaceAugment(geometric, hflip_p=hflip_p, seed=seed)
        out, lm = aug(img, POINTS, FLIP_MAP)
        assert lm.shape == POINTS.shape and lm.dtype == np.float32
        moved += int(np.abs(lm - POINTS).max() > 0.5)
        for k in range(len(POINTS)):
            x, y = lm[k]
            if not (5 <= x <= 106 and 5 <= y <= 106):  # a mark cut by the border has a biased centroid
                continue
            # After a flip, point k is the mirror partner's mark (left eye of the new image = old right eye).
            src = FLIP_MAP[k] if hflip_p == 1.0 else k
            c = mark_centroid(out, COLORS[src])
            assert c is not None, f"seed {seed}: mark of point {src} vanished"
            assert np.abs(c - lm[k]).max() < 0.5, f"seed {seed}, point {k}: landmark {lm[k]} but mark at {c}"
            checked += 1
    assert checked >= 0.8 * 40 * len(POINTS)
    assert moved >= 20  # the geometric transforms really ran


@pytest.mark.parametrize("shape", [(112, 112), (64, 96)])
def test_flip_is_exact_mirror_with_permutation(shape: tuple[int, int]) -> None:
    h, w = shape
    img = random_image(1, h, w)
    lm = np.array([[0.0, 1.0], [w - 1.0, 2.0], [10.25, 3.5], [3.0, h - 1.0], [20.0, 7.0]], np.float32)
    out, out_lm = FaceAugment([], hflip_p=1.0, seed=0)(img, lm, FLIP_MAP)
    np.testing.assert_array_equal(out, img[:, ::-1])
    mirrored = np.stack([(w - 1) - lm[:, 0], lm[:, 1]], axis=1)
    np.testing.assert_allclose(out_lm, mirrored[FLIP_MAP])
    # x' = W - 1 - x: a point on the first pixel column lands on the last one.
    assert out_lm[1, 0] == w - 1 and out_lm[0, 0] == 0.0


def test_none_is_identity() -> None:
    aug = load("none")
    img = random_image(2)
    for _ in range(5):
        out, lm = aug(img, POINTS, None)
        np.testing.assert_array_equal(out, img)
        np.testing.assert_array_equal(lm, POINTS)
    out, lm = aug(img, None, None)
    np.testing.assert_array_equal(out, img)
    assert lm is None


@pytest.mark.parametrize("name", ["none", "default", "strong"])
def test_shapes_and_dtypes(name: str) -> None:
    aug = load(name, seed=3)
    for i, (h, w) in enumerate([(112, 112), (112, 112), (80, 100)]):
        img = random_image(i, h, w)
        out, lm = aug(img, POINTS, FLIP_MAP)
        assert out.shape == img.shape and out.dtype == np.uint8
        assert lm.shape == POINTS.shape and lm.dtype == np.float32 and np.isfinite(lm).all()
        out, lm = aug(img, None, None)
        assert out.shape == img.shape and out.dtype == np.uint8 and lm is None


@pytest.mark.parametrize("name", ["default", "strong"])
def test_seeded_determinism(name: str) -> None:
    img = random_image(4)

    def run(seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
        aug = load(name, seed=seed)
        return [aug(img, POINTS, FLIP_MAP) for _ in range(8)]

    a, b, c = run(7), run(7), run(8)
    for (ia, la), (ib, lb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(la, lb)
    assert any(not np.array_equal(ia, ic) for (ia, _), (ic, _) in zip(a, c, strict=True))
    assert len({x.tobytes() for x, _ in a}) > 1  # one instance still varies from call to call


def test_bad_input_raises() -> None:
    img = random_image(5)
    with pytest.raises(ValueError, match="flip_map"):
        FaceAugment([], hflip_p=0.5, seed=0)(img, POINTS, None)
    with pytest.raises(ValueError, match="flip_map"):
        FaceAugment([], hflip_p=0.5, seed=0)(img, POINTS, np.array([1, 2, 0, 4, 3]))  # not a mirror pairing
    FaceAugment([], hflip_p=0.0)(img, POINTS, None)  # no flip: no map needed
    with pytest.raises(ValueError, match="HorizontalFlip"):
        FaceAugment([A.HorizontalFlip(p=0.5)])
    with pytest.raises(ValueError, match="hflip_p"):
        FaceAugment([], hflip_p=1.5)
    with pytest.raises(ValueError, match="uint8"):
        FaceAugment([], hflip_p=0.0)(img.astype(np.float32), None, None)
    with pytest.raises(ValueError, match="shape"):
        FaceAugment([A.Resize(64, 64, p=1.0)], hflip_p=0.0)(img, POINTS, None)
    with pytest.raises(ValueError, match="rotat"), pytest.warns(UserWarning):
        FaceAugment([A.Affine(rotat=10)])  # misspelled argument: albumentations alone would only warn
    with pytest.raises(ValueError, match="kinds"):
        OcclusionMask(kinds=("scarf",))


@pytest.mark.parametrize("kind", ["rectangle", "hand", "glasses"])
def test_occlusion_changes_pixels_not_landmarks(kind: str) -> None:
    img = np.full((112, 112, 3), 128, np.uint8)
    for seed in range(5):
        aug = FaceAugment([OcclusionMask(kinds=(kind,), p=1.0)], hflip_p=0.0, seed=seed)
        out, lm = aug(img, POINTS, None)
        np.testing.assert_array_equal(lm, POINTS)
        changed = np.abs(out.astype(int) - img.astype(int)).sum(axis=2) > 10
        assert changed.mean() > 0.02, f"{kind} seed {seed}: only {changed.mean():.3f} of the pixels changed"
        rows = np.nonzero(changed)[0]
        if kind == "glasses":  # around the eyes of an aligned crop
            assert 0.3 * 112 < rows.mean() < 0.6 * 112
        if kind == "hand":  # skin coloured: red above blue
            mean = out[changed].astype(float).mean(axis=0)
            assert mean[0] > mean[2]
    a = FaceAugment([OcclusionMask(p=1.0)], hflip_p=0.0, seed=11)
    b = FaceAugment([OcclusionMask(p=1.0)], hflip_p=0.0, seed=11)
    for _ in range(4):
        np.testing.assert_array_equal(a(img, None, None)[0], b(img, None, None)[0])


class _AugDataset:
    def __init__(self, aug: FaceAugment) -> None:
        self.aug = aug
        self.img = random_image(6)

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> np.ndarray:
        return self.aug(self.img, POINTS, FLIP_MAP)[0]


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
@pytest.mark.parametrize("seed", [None, 5])
def test_dataloader_workers_get_distinct_streams(seed: int | None) -> None:
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    def run() -> list[np.ndarray]:
        torch.manual_seed(0)
        loader = DataLoader(
            _AugDataset(load("strong", seed=seed)), batch_size=None, num_workers=2, multiprocessing_context="fork"
        )
        return [np.asarray(x) for x in loader]

    first = run()
    # Samples 0 and 1 are the first draw of worker 0 and worker 1: equal if both inherited one forked state.
    assert not np.array_equal(first[0], first[1])
    for x, y in zip(first, run(), strict=True):  # worker seeds follow torch.manual_seed
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("name", ["default", "strong"])
def test_occluders_drawn_before_the_warp(name: str) -> None:
    # Glasses are placed where alignment puts the eyes, so they must be drawn before the face is rotated/shifted.
    kinds = [type(t) for t in load(name).transforms]
    assert kinds.index(OcclusionMask) < kinds.index(A.Affine)
