import math

import pytest
import torch
import torch.nn.functional as F

from facetx.loss import L1Loss, MarginSoftmax, MultiTaskLoss, WingLoss


def _emb(b: int = 6, d: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, d, generator=g), torch.randint(0, 5, (b,), generator=g)


def test_zero_margin_is_scaled_cosine_softmax() -> None:
    emb, y = _emb()
    loss = MarginSoftmax(num_classes=5, embedding_size=16, scale=30.0, m1=1.0, m2=0.0, m3=0.0)
    cos = F.normalize(emb) @ F.normalize(loss.weight).T
    assert torch.allclose(loss(emb, y), F.cross_entropy(30.0 * cos, y), atol=1e-5)


def test_arcface_target_logit_is_cos_theta_plus_m() -> None:
    emb, y = _emb()
    loss = MarginSoftmax(num_classes=5, embedding_size=16, scale=10.0, m2=0.5)
    cos = (F.normalize(emb) @ F.normalize(loss.weight).T).clamp(-1, 1)
    logits = loss.margin_logits(emb, y)
    theta = torch.acos(cos[torch.arange(6), y])
    expected = torch.where(theta < math.pi - 0.5, torch.cos(theta + 0.5), cos[torch.arange(6), y] - math.sin(0.5) * 0.5)
    assert torch.allclose(logits[torch.arange(6), y], 10.0 * expected, atol=1e-4)
    other = torch.ones_like(cos, dtype=torch.bool)
    other[torch.arange(6), y] = False
    assert torch.allclose(logits[other], 10.0 * cos[other], atol=1e-5)


def test_cosface_subtracts_margin_and_margins_raise_the_loss() -> None:
    emb, y = _emb()
    plain = MarginSoftmax(num_classes=5, embedding_size=16, scale=16.0, m2=0.0)
    cosface = MarginSoftmax(num_classes=5, embedding_size=16, scale=16.0, m2=0.0, m3=0.35)
    cosface.load_state_dict(plain.state_dict())
    diff = plain.margin_logits(emb, y) - cosface.margin_logits(emb, y)
    assert torch.allclose(diff[torch.arange(6), y], torch.full((6,), 16.0 * 0.35), atol=1e-4)
    assert cosface(emb, y) > plain(emb, y)


def _outputs_and_batch(b: int = 4, k: int = 68) -> tuple[dict, dict]:
    torch.manual_seed(0)
    out = {
        "embedding": torch.randn(b, 16, requires_grad=True),
        "landmarks": torch.rand(b, k, 2, requires_grad=True),
        "expression_logits": torch.randn(b, 7, requires_grad=True),
        "spoof_logits": torch.randn(b, 2, requires_grad=True),
    }
    batch = {
        "identity": torch.randint(0, 5, (b,)),
        "landmarks": torch.rand(b, k, 2),
        "expression": torch.randint(0, 7, (b,)),
        "spoof": torch.randint(0, 2, (b,)),
        **{f"has_{t}": torch.ones(b, dtype=torch.bool) for t in ("identity", "landmarks", "expression", "spoof")},
    }
    return out, batch


def test_masked_tasks_contribute_nothing() -> None:
    loss = MultiTaskLoss(recognition=MarginSoftmax(5, 16, scale=16.0), landmarks=WingLoss())
    out, batch = _outputs_and_batch()
    full = loss(out, batch)
    assert set(full) == {"loss", "recognition", "landmarks", "expression", "spoof"}
    # mask expression on every sample: its part is exactly zero and the total drops by exactly its weighted loss
    batch_masked = dict(batch, has_expression=torch.zeros(4, dtype=torch.bool))
    part = loss(out, batch_masked)
    assert part["expression"].item() == 0.0
    assert torch.allclose(part["loss"], full["loss"] - full["expression"], atol=1e-5)
    # garbage labels under a False mask change nothing (they are never read)
    batch_garbage = dict(batch_masked, expression=torch.full((4,), 999))
    assert torch.allclose(loss(out, batch_garbage)["loss"], part["loss"])
    # a partially masked task is the loss over the labelled samples only
    mask = torch.tensor([True, False, True, False])
    partial = loss(out, dict(batch, has_spoof=mask))["spoof"]
    assert torch.allclose(partial, F.cross_entropy(out["spoof_logits"][mask], batch["spoof"][mask]))
    # the zero is still attached to the graph (DDP must see every parameter used)
    part["loss"].backward()
    assert out["expression_logits"].grad is not None and out["expression_logits"].grad.abs().sum() == 0


def test_task_weights_and_unknown_weight_names() -> None:
    out, batch = _outputs_and_batch()
    base = MultiTaskLoss(weights={"recognition": 0.0, "landmarks": 0.0, "spoof": 0.0})
    assert set(base(out, batch)) == {"loss", "expression"}
    with pytest.raises(ValueError, match="unknown task weight"):
        MultiTaskLoss(weights={"expresion": 1.0})


def test_wing_and_l1_in_pixels() -> None:
    pred, target = torch.zeros(1, 1, 2), torch.zeros(1, 1, 2)
    target[..., 0] = 1.0 / 112  # one pixel off in x
    assert torch.allclose(L1Loss()(pred, target), torch.tensor(0.5))
    wing = WingLoss(w=10.0, epsilon=2.0)
    assert torch.allclose(wing(pred, target), torch.tensor(10 * math.log(1 + 1 / 2) / 2), atol=1e-5)
    far = torch.zeros(1, 1, 2)
    far[..., 0] = 20.0 / 112
    assert torch.allclose(wing(pred, far), torch.tensor((20.0 - wing.c) / 2), atol=1e-4)
