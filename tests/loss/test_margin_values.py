"""Known values of MarginSoftmax's target logits against insightface's margin formulas (written here with math).

insightface (arcface_torch ``CombinedMarginLoss`` and the older ``ArcFace`` with ``easy_margin=False``; the MXNet
combined margin) puts ``cos(m1 * theta + m2) - m3`` on the target logit. Where ``m1 * theta + m2`` passes pi, ArcFace
falls back to the linear ``cos(theta) - sin(pi - m) * m``; MarginSoftmax generalizes that to combined margins as
``cos(theta) - sin(pi - limit) * m1 * m2`` with ``limit = (pi - m2) / m1`` and then subtracts ``m3`` once.
"""

from __future__ import annotations

import math

import pytest
import torch

from facetx.loss import MarginSoftmax

SCALE = 64.0
#: angles (radians) between embedding and target center; the last ones pass the limit where a limit exists
THETAS = {
    "arcface": [0.3, 1.2, 2.5, 2.9, 3.1],  # limit pi - 0.5 = 2.642
    "cosface": [0.3, 1.2, 2.5, 3.1],  # no angular margin, no limit
    "combined_1.0_0.3_0.2": [0.3, 1.2, 2.7, 3.0, 3.1],  # limit pi - 0.3 = 2.842
    "combined_0.9_0.4_0.15": [0.3, 1.2, 2.9, 3.08, 3.12],  # limit (pi - 0.4) / 0.9 = 3.046
}
MARGINS = {
    "arcface": (1.0, 0.5, 0.0),
    "cosface": (1.0, 0.0, 0.35),
    "combined_1.0_0.3_0.2": (1.0, 0.3, 0.2),
    "combined_0.9_0.4_0.15": (0.9, 0.4, 0.15),
}


def expected_target_cosine(theta: float, m1: float, m2: float, m3: float) -> float:
    """The target cosine after the margin, from the formula (not from the code under test)."""
    if m1 == 1.0 and m2 == 0.0:
        return math.cos(theta) - m3  # CosFace
    limit = (math.pi - m2) / m1
    if theta < limit:
        return math.cos(m1 * theta + m2) - m3
    return math.cos(theta) - math.sin(math.pi - limit) * m1 * m2 - m3


def _at_angles(thetas: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings at ``thetas`` from class 0's center in the (x, y) plane; class 1 sits at +90 deg, class 2 at 180."""
    emb = torch.zeros(len(thetas), 8)
    emb[:, 0] = torch.tensor([math.cos(t) for t in thetas])
    emb[:, 1] = torch.tensor([math.sin(t) for t in thetas])
    target = torch.zeros(len(thetas), dtype=torch.long)
    return emb, target


def _loss(m1: float, m2: float, m3: float) -> MarginSoftmax:
    loss = MarginSoftmax(num_classes=3, embedding_size=8, scale=SCALE, m1=m1, m2=m2, m3=m3)
    with torch.no_grad():
        loss.weight.zero_()
        loss.weight[0, 0], loss.weight[1, 1], loss.weight[2, 0] = 1.0, 1.0, -1.0
    return loss


@pytest.mark.parametrize("name", list(MARGINS))
def test_target_logits_equal_the_formula(name: str) -> None:
    m1, m2, m3 = MARGINS[name]
    thetas = THETAS[name]
    emb, target = _at_angles(thetas)
    logits = _loss(m1, m2, m3).margin_logits(emb, target).double() / SCALE
    want = torch.tensor([expected_target_cosine(t, m1, m2, m3) for t in thetas], dtype=torch.float64)
    torch.testing.assert_close(logits[:, 0], want, atol=1e-6, rtol=0)
    # the other classes keep their plain cosine: sin(theta) to the center at +90 deg, -cos(theta) to the one at 180
    torch.testing.assert_close(logits[:, 1], torch.tensor([math.sin(t) for t in thetas], dtype=torch.float64),
                               atol=1e-6, rtol=0)  # fmt: skip
    torch.testing.assert_close(logits[:, 2], torch.tensor([-math.cos(t) for t in thetas], dtype=torch.float64),
                               atol=1e-6, rtol=0)  # fmt: skip


def test_every_combined_case_reaches_the_fallback_branch() -> None:
    """The angle lists above exercise both sides of the limit wherever there is one (else the test proves little)."""
    for name, (m1, m2, _) in MARGINS.items():
        if m2 == 0.0 and m1 == 1.0:
            continue
        limit = (math.pi - m2) / m1
        assert min(THETAS[name]) < limit < max(THETAS[name]) <= math.pi, name


def test_arcface_matches_insightface_in_cosine_terms() -> None:
    """insightface's ArcFace (easy_margin=False): where(cos > cos(pi - m), cos*cos_m - sin*sin_m, cos - sin(pi-m)*m)."""
    m = 0.5
    th, mm = math.cos(math.pi - m), math.sin(math.pi - m) * m
    thetas = THETAS["arcface"]
    emb, target = _at_angles(thetas)
    got = _loss(1.0, m, 0.0).margin_logits(emb, target)[:, 0].double() / SCALE
    want = []
    for t in thetas:
        c, s = math.cos(t), math.sin(t)
        want.append(c * math.cos(m) - s * math.sin(m) if c > th else c - mm)
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), atol=1e-6, rtol=0)
    # spot values by hand: cos(0.3 + 0.5) = 0.6967067; past the limit cos(3.1) - sin(0.5) * 0.5 = -1.2388434
    assert got[0].item() == pytest.approx(0.6967067093, abs=1e-6)
    assert got[-1].item() == pytest.approx(-0.9991351503 - 0.4794255386 * 0.5, abs=1e-6)


def test_combined_margin_subtracts_m3_once_past_the_limit() -> None:
    """Past the limit the combined margin is the ArcFace fallback minus m3 -- once, as everywhere else."""
    m1, m2, m3 = 1.0, 0.3, 0.2
    emb, target = _at_angles([3.0])
    with_m3 = _loss(m1, m2, m3).margin_logits(emb, target)[0, 0].item() / SCALE
    without = _loss(m1, m2, 0.0).margin_logits(emb, target)[0, 0].item() / SCALE
    assert with_m3 == pytest.approx(without - m3, abs=1e-6)
    assert with_m3 == pytest.approx(math.cos(3.0) - math.sin(0.3) * 0.3 - 0.2, abs=1e-6)
