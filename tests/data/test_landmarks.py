"""Landmark layouts: flip maps, NME corners, 5-point groups, lookup by name."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from facetx.data.landmarks import IBUG68, WFLW98, LandmarkLayout, get_layout
from facetx.data.synthetic.geometry import head_geometry
from facetx.data.synthetic.identity import sample_identity


@pytest.mark.parametrize("layout", [IBUG68, WFLW98])
def test_flip_map_is_an_involution(layout: LandmarkLayout) -> None:
    fm = layout.flip_map
    assert fm.shape == (layout.num_points,) and fm.dtype == np.int64
    assert np.array_equal(np.sort(fm), np.arange(layout.num_points))
    assert np.array_equal(fm[fm], np.arange(layout.num_points))
    assert not fm.flags.writeable


def test_ibug68_mirror_pairs() -> None:
    fm = IBUG68.flip_map
    for a, b in [(36, 45), (39, 42), (37, 44), (41, 46), (48, 54), (60, 64), (0, 16), (17, 26), (31, 35), (55, 59)]:
        assert fm[a] == b and fm[b] == a
    for center in (8, 27, 28, 29, 30, 33, 51, 57, 62, 66):
        assert fm[center] == center
    assert IBUG68.nme_indices == (36, 45)


def test_wflw98_mirror_pairs() -> None:
    fm = WFLW98.flip_map
    for a, b in [(60, 72), (64, 68), (96, 97), (76, 82), (0, 32), (33, 46), (38, 50), (55, 59), (88, 92), (87, 83)]:
        assert fm[a] == b and fm[b] == a
    for center in (16, 51, 54, 57, 79, 85, 90, 94):
        assert fm[center] == center
    assert WFLW98.nme_indices == (60, 72)


def test_ibug68_flip_of_a_frontal_synthetic_face_is_the_same_face() -> None:
    """Mirror x and permute by the flip map: a symmetric frontal face maps onto itself (left/right really swap)."""
    idn = sample_identity(np.random.default_rng(0))
    lm, *_ = head_geometry(idn, 0, 0.0, 0.0, 0.0, 0.0, 33.0, np.zeros(2))
    cx = lm[[36, 45], 0].mean()
    mirrored = lm.copy()
    mirrored[:, 0] = 2 * cx - mirrored[:, 0]
    flipped = mirrored[IBUG68.flip_map]
    eye_dist = np.linalg.norm(lm[36] - lm[45])
    assert np.abs(flipped - lm).max() < 0.02 * eye_dist
    # without the permutation the mirrored shape is far off (the test can fail)
    assert np.abs(mirrored - lm).max() > 0.5 * eye_dist
    assert math.isclose(float(lm[8, 0]), cx, abs_tol=0.02 * eye_dist)


def test_five_points_numpy_and_torch() -> None:
    lm = np.random.default_rng(0).uniform(0, 112, (2, 68, 2)).astype(np.float32)
    five = IBUG68.five_points(lm)
    assert five.shape == (2, 5, 2)
    np.testing.assert_allclose(five[:, 0], lm[:, 36:42].mean(1), rtol=1e-6)
    np.testing.assert_allclose(five[:, 4], lm[:, 54])
    t = IBUG68.five_points(torch.from_numpy(lm))
    assert isinstance(t, torch.Tensor) and torch.allclose(t, torch.from_numpy(five))
    w = np.arange(98 * 2, dtype=np.float32).reshape(98, 2)
    np.testing.assert_array_equal(WFLW98.five_points(w), w[[96, 97, 54, 76, 82]])
    with pytest.raises(ValueError, match="68"):
        IBUG68.five_points(w)


def test_get_layout() -> None:
    assert get_layout("ibug68") is IBUG68 and get_layout("wflw98") is WFLW98
    with pytest.raises(ValueError, match="unknown landmark layout 'aflw19'"):
        get_layout("aflw19")


def test_layout_rejects_a_bad_flip_map() -> None:
    with pytest.raises(ValueError, match="involution"):
        LandmarkLayout("bad", 3, np.array([1, 2, 0]), (0, 1), ((0,),) * 5)
    with pytest.raises(ValueError, match="permutation"):
        LandmarkLayout("bad", 3, np.array([0, 0, 1]), (0, 1), ((0,),) * 5)
