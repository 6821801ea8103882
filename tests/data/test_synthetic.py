"""The procedural face generator: determinism, sample contract, landmark/pixel agreement, splits, pairs, difficulty."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Subset

from facetx.data.contract import EXPRESSIONS
from facetx.data.landmarks import IBUG68
from facetx.data.synthetic import SyntheticFaces, dataset, geometry, identity, raw_pixel_verification, render
from facetx.metrics import cosine_scores, verification_accuracy


def test_same_seed_same_pixels_and_labels_different_seed_differs() -> None:
    a, b = SyntheticFaces("train", 3, 2, seed=7), SyntheticFaces("train", 3, 2, seed=7)
    c = SyntheticFaces("train", 3, 2, seed=8)
    for i in (0, 3, 5):
        ra, rb = a.render(i), b.render(i)
        assert np.array_equal(ra[0], rb[0]) and np.array_equal(ra[1], rb[1]) and ra[2:] == rb[2:]
        assert not np.array_equal(ra[0], c.render(i)[0])
    # an image does not depend on the data set size nor on which images were rendered before it
    d = SyntheticFaces("train", 10, 2, seed=7)
    assert np.array_equal(d.render(5)[0], a.render(5)[0])


def test_dataloader_workers_reproduce_the_main_process() -> None:
    ds = SyntheticFaces("train", 4, 2, seed=3)
    idx = [1, 4, 6, 7]
    loader = DataLoader(Subset(ds, idx), batch_size=2, num_workers=2)
    images = torch.cat([b["image"] for b in loader])
    expected = torch.stack([ds[i]["image"] for i in idx])
    assert torch.equal(images, expected)


def test_sample_contract() -> None:
    ds = SyntheticFaces("train", 3, 4, seed=0)
    assert len(ds) == 12 and ds.num_classes == 3 and ds.num_landmarks == 68 and ds.layout is IBUG68
    assert ds.pairs is None and ds.name == "synthetic" and ds.verification_name == "recognition"
    s = ds[9]
    assert s["image"].shape == (3, 112, 112) and s["image"].dtype == torch.float32
    assert 0.0 <= float(s["image"].min()) and float(s["image"].max()) <= 1.0
    assert s["landmarks"].shape == (68, 2) and s["landmarks"].dtype == torch.float32
    assert int(s["identity"]) == 2 and int(s["index"]) == 9
    assert 0 <= int(s["expression"]) < len(EXPRESSIONS) and int(s["spoof"]) in (0, 1)
    assert all(bool(s[f"has_{t}"]) for t in ("identity", "landmarks", "expression", "spoof"))
    image, lm, identity, expression, spoof = ds.render(9)
    assert image.shape == (112, 112, 3) and image.dtype == np.uint8
    assert lm.shape == (68, 2) and lm.dtype == np.float32
    torch.testing.assert_close(s["landmarks"], torch.from_numpy(lm / 112.0))
    assert (identity, expression, spoof) == (2, int(s["expression"]), int(s["spoof"]))
    with pytest.raises(IndexError):
        ds.render(12)


def test_transform_gets_the_flip_map_and_its_output_is_used() -> None:
    seen = {}

    def transform(image: np.ndarray, landmarks: np.ndarray, flip_map: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        seen["flip_map"] = flip_map
        return image[:, ::-1].copy(), landmarks * 0 + 56.0

    ds = SyntheticFaces("train", 2, 2, seed=0, transform=transform)
    s = ds[1]
    assert seen["flip_map"] is IBUG68.flip_map
    assert torch.equal(s["image"], torch.from_numpy(ds.render(1)[0][:, ::-1].copy()).permute(2, 0, 1).float() / 255)
    assert torch.allclose(s["landmarks"], torch.full((68, 2), 0.5))


def test_landmarks_inside_the_crop_and_on_the_drawn_features() -> None:
    ds = SyntheticFaces("train", 10, 4, seed=1, spoof_fraction=0.0)
    on, off = [], []
    for i in range(len(ds)):
        image, lm, *_ = ds.render(i)
        assert lm.min() >= 0 and lm.max() <= 111
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
        grad = np.hypot(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1))
        feature = lm[17:68]  # brows, nose, eyes, mouth: edges of drawn parts
        for pts, acc in ((feature, on), (feature + (5.0, 5.0), off)):
            x, y = np.clip(np.round(pts).astype(int), 0, 111).T
            acc.append(grad[y, x].mean())
    # feature landmarks sit on edges; the same layout moved by 7 px mostly lands on flat skin
    assert np.mean(on) > 1.5 * np.mean(off)


def test_eye_and_open_mouth_pixels_match_their_landmarks() -> None:
    idn = identity.sample_identity(np.random.default_rng(5))
    lm, parts, teeth, ears = geometry.head_geometry(
        idn, EXPRESSIONS.index("surprise"), 1.0, 0.0, 0.0, 0.0, 36.0, np.zeros(2)
    )
    bg = np.full((112, 112, 3), 128, np.uint8)
    img = render.paint_face(idn, lm, parts, teeth, ears, np.random.default_rng(0), bg, 36.0, 0.0, dataset.noise_bank(0))
    pix = img.astype(np.float32)

    def at(p: np.ndarray) -> np.ndarray:
        return pix[int(round(p[1])), int(round(p[0]))]

    skin = idn.skin.clip(0, 255)
    inner_mouth = (lm[62] + lm[66]) / 2
    assert np.abs(at(inner_mouth) - skin).sum() > 60  # the open mouth is drawn where its landmarks say
    for eye in (lm[36:42], lm[42:48]):
        box = pix[int(eye[:, 1].min()) : int(eye[:, 1].max()) + 1, int(eye[:, 0].min()) : int(eye[:, 0].max()) + 1]
        assert box.reshape(-1, 3).sum(1).min() < 120  # the pupil lies inside the eye's landmark box


def test_expressions_move_the_landmarks() -> None:
    idn = identity.sample_identity(np.random.default_rng(2))
    shapes = [geometry.head_geometry(idn, e, 1.0, 0.2, 0.1, 0.0, 33.0, np.zeros(2))[0] for e in range(len(EXPRESSIONS))]
    for a in range(len(shapes)):
        for b in range(a + 1, len(shapes)):
            moved = np.linalg.norm(shapes[a][17:] - shapes[b][17:], axis=1)
            assert moved.max() > 1.5, (EXPRESSIONS[a], EXPRESSIONS[b])
    mouth_h = [float(s[57, 1] - s[51, 1]) for s in shapes]
    assert mouth_h[EXPRESSIONS.index("surprise")] > 1.5 * mouth_h[EXPRESSIONS.index("neutral")]
    corners = [float(s[[48, 54], 1].mean() - s[[51, 57], 1].mean()) for s in shapes]  # corners above lip center
    assert (
        corners[EXPRESSIONS.index("happy")] < corners[EXPRESSIONS.index("neutral")] < corners[EXPRESSIONS.index("sad")]
    )


def test_spoof_artifacts_do_not_move_the_face() -> None:
    live = SyntheticFaces("train", 2, 3, seed=4, spoof_fraction=0.0)
    spoof = SyntheticFaces("train", 2, 3, seed=4, spoof_fraction=1.0)
    for i in range(len(live)):
        a, b = live.render(i), spoof.render(i)
        assert a[4] == 0 and b[4] == 1 and a[2:4] == b[2:4]
        np.testing.assert_array_equal(a[1], b[1])
        assert not np.array_equal(a[0], b[0])
    rate = np.mean([SyntheticFaces("train", 100, 4, seed=0).is_spoof(i) for i in range(400)])
    assert 0.18 < rate < 0.32


def test_spoof_cue_draws() -> None:
    """The default pool draws exactly as ``rng.choice(6, ...)`` did (every default render stays the same); a narrower
    pool (the video sprites leave out the print edge: their matte is the print's edge) draws only from it, 1-3 cues."""
    for seed in range(50):
        a, b = np.random.default_rng(seed), np.random.default_rng(seed)
        old = set(a.choice(6, size=int(a.integers(1, 4)), replace=False).tolist())
        assert render.draw_spoof_cues(b) == old and a.random() == b.random()
    sprite_pool = (0, 1, 3, 4, 5)
    drawn = [render.draw_spoof_cues(np.random.default_rng(s), sprite_pool) for s in range(300)]
    assert set().union(*drawn) == set(sprite_pool) and {len(d) for d in drawn} == {1, 2, 3}
    assert all(render.draw_spoof_cues(np.random.default_rng(s), (3,)) == {3} for s in range(5))
    with pytest.raises(ValueError, match="at least one"):
        render.draw_spoof_cues(np.random.default_rng(0), ())


def test_splits_have_different_identities() -> None:
    tr, va, te = (SyntheticFaces(s, 20, 2, seed=0, num_pairs=20, spoof_fraction=0.0) for s in ("train", "val", "test"))
    ids = {
        name: np.stack([d._identity(k).shape for k in range(20)]) for name, d in (("tr", tr), ("va", va), ("te", te))
    }
    for a, b in (("tr", "va"), ("tr", "te"), ("va", "te")):
        dist = np.abs(ids[a][:, None] - ids[b][None]).max(axis=(2, 3))  # [20, 20] between every two identities
        assert dist.min() > 1e-3
    assert not np.array_equal(tr.render(0)[0], va.render(0)[0])


def test_pairs_balanced_per_fold_live_and_unique() -> None:
    ds = SyntheticFaces("val", 30, 6, seed=2, num_pairs=200)
    p = ds.pairs
    assert p.shape == (200, 3) and p.dtype == torch.int64
    for fold in p.view(10, 20, 3):
        assert int(fold[:, 2].sum()) == 10
    same_id = (p[:, 0] // 6) == (p[:, 1] // 6)
    assert torch.equal(same_id, p[:, 2].bool())
    assert bool((p[:, 0] != p[:, 1]).all())
    assert not any(ds.is_spoof(int(i)) for i in p[:, :2].flatten())
    assert len({tuple(sorted(r[:2].tolist())) for r in p}) == 200
    assert torch.equal(p, SyntheticFaces("val", 30, 6, seed=2, num_pairs=200).pairs)


def test_pairs_fail_loudly_when_too_few_live_images() -> None:
    with pytest.raises(ValueError, match="same .* different distinct live pairs.*raise images_per_identity"):
        SyntheticFaces("val", 5, 2, seed=0, num_pairs=3000)
    with pytest.raises(ValueError, match="split"):
        SyntheticFaces("holdout", 5, 2)
    with pytest.raises(ValueError, match="no verification pairs"):
        raw_pixel_verification(SyntheticFaces("train", 2, 2))


def _attribute_probe(ds: SyntheticFaces) -> float:
    """Training-free identity probe: log-chroma of 3x3 patches at landmark-anchored spots (hair, skin, eyes, lips)."""
    feats = []
    for i in range(len(ds)):
        image, lm, *_ = ds.render(i)
        up = (lm[27] - lm[8]) / np.linalg.norm(lm[27] - lm[8])
        eye = np.linalg.norm(lm[36] - lm[45])
        brow = (lm[19] + lm[24]) / 2
        spots = [brow + up * eye * 0.6, brow + up * eye * 1.2, (lm[31] + lm[2]) / 2, (lm[35] + lm[14]) / 2,
                 (lm[51] + lm[62]) / 2, lm[36:42].mean(0), lm[42:48].mean(0), lm[19] - up * 1.5, lm[24] - up * 1.5,
                 lm[8] + up * eye * 0.2, lm[0] + np.array((up[1], -up[0])) * eye * 0.25]  # fmt: skip
        x, y = np.clip(np.round(np.array(spots)).astype(int), 1, 110).T
        patch = np.stack([image[y + dy, x + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)]).astype(np.float32).mean(0)
        c = np.log(patch + 10.0)
        feats.append((c - c.mean(0)).ravel())  # removes the global color cast and exposure
    f = np.stack(feats)
    f = torch.from_numpy((f - f.mean(0)) / (f.std(0) + 1e-6))
    return verification_accuracy(cosine_scores(f, ds.pairs), ds.pairs[:, 2])[0]


def test_difficulty_raw_pixels_fail_while_attributes_carry_identity() -> None:
    ds = SyntheticFaces("val", 50, 6, seed=0, num_pairs=600)
    raw = raw_pixel_verification(ds)
    probe = _attribute_probe(ds)
    assert raw <= 0.65, f"raw-pixel cosine verifies {raw:.3f} of pairs: nuisance too weak"
    assert probe >= 0.72, f"an attribute probe verifies only {probe:.3f}: identity attributes too weak"
    assert probe > raw + 0.1


def test_geometry_frontal_pose_places_eyes_like_an_arcface_crop() -> None:
    idn = identity.sample_identity(np.random.default_rng(9))
    lm, *_ = geometry.head_geometry(idn, 0, 0.0, 0.0, 0.0, 0.0, geometry.PX_PER_UNIT, np.zeros(2))
    eyes = IBUG68.five_points(lm)[:2]
    assert abs(eyes[:, 1].mean() - 0.45 * 112) < 3 and abs(eyes[:, 0].mean() - 56) < 3
    yawed, *_ = geometry.head_geometry(idn, 0, 0.0, math.radians(30), 0.0, 0.0, geometry.PX_PER_UNIT, np.zeros(2))
    w0, w1 = lm[16, 0] - lm[0, 0], yawed[16, 0] - yawed[0, 0]
    assert w1 < w0  # the face narrows when it turns (contour follows the silhouette)
