import torch

from facetx import metrics


def test_verification_accuracy_separable_and_random() -> None:
    same = torch.tensor([1, 0] * 50).bool()
    scores = same.float() + 0.01 * torch.arange(100) / 100
    acc, std = metrics.verification_accuracy(scores, same)
    assert acc == 1.0 and std == 0.0
    g = torch.Generator().manual_seed(0)
    rand = torch.rand(2000, generator=g)
    acc, _ = metrics.verification_accuracy(rand, torch.rand(2000, generator=g) > 0.5)
    assert 0.4 < acc < 0.6


def test_threshold_is_chosen_on_other_folds() -> None:
    # one fold of perfectly inverted scores cannot be rescued by a threshold learned on the other nine
    same = torch.tensor([1, 0] * 50).bool()
    scores = same.float().clone()
    scores[:10] = 1 - scores[:10]
    acc, _ = metrics.verification_accuracy(scores, same)
    assert abs(acc - 0.9) < 1e-6


def test_tar_at_far() -> None:
    impostor = torch.linspace(0, 1, 1001)  # threshold at far=1e-2 -> 10 impostors above
    genuine = torch.tensor([0.995, 0.985, 0.5, 0.2])
    assert metrics.tar_at_far(genuine, impostor, 1e-2) == 0.25


def test_threshold_at_far_known_answer_and_measured_far() -> None:
    # 1000 impostors 0.000, 0.001, ..., 0.999 (shuffled): at FAR 1e-2 ten may be accepted, so t = 0.989
    impostor = (torch.arange(1000) / 1000.0)[torch.randperm(1000, generator=torch.Generator().manual_seed(0))]
    t = metrics.threshold_at_far(impostor, 1e-2)
    assert abs(t - 0.989) < 1e-6
    assert int((impostor > t).sum()) == 10
    assert metrics.threshold_at_far(impostor, 0.0) == float(impostor.max())  # nothing accepted
    hundred = torch.arange(100) / 100.0  # 0.29 * 100 is 28.999999999999996 in floats: still 29 allowed above
    assert int((hundred > metrics.threshold_at_far(hundred, 0.29)).sum()) == 29
    # ties at the threshold are rejected: the measured FAR stays <= far, it never goes above
    tied = torch.cat([torch.zeros(990), torch.full((10,), 0.5)])
    for far in (1e-3, 5e-3, 1e-2, 2e-2, 0.1):
        t = metrics.threshold_at_far(tied, far)
        assert float((tied > t).float().mean()) <= far
    g = torch.Generator().manual_seed(1)
    for n, far in ((997, 1e-3), (5000, 1e-3), (12345, 3e-3)):
        scores = torch.randn(n, generator=g)
        t = metrics.threshold_at_far(scores, far)
        accepted = int((scores > t).sum())
        assert accepted / n <= far and accepted == int(far * n)  # distinct scores: exactly floor(far * n) accepted
    # tar_at_far uses the same threshold
    genuine = torch.tensor([0.995, 0.99, 0.989, 0.5])
    assert metrics.tar_at_far(genuine, impostor, 1e-2) == 0.5
    assert metrics.threshold_at_far(torch.empty(0), 1e-3) != metrics.threshold_at_far(torch.empty(0), 1e-3)  # nan


def test_all_pair_scores_counts() -> None:
    emb = torch.eye(4)
    labels = torch.tensor([0, 0, 1, 1])
    gen, imp = metrics.all_pair_scores(emb, labels)
    assert gen.numel() == 2 and imp.numel() == 4


def test_nme_and_accuracy_and_acer() -> None:
    target = torch.zeros(2, 3, 2)
    target[:, 1, 0] = 10.0  # inter-ocular distance 10
    pred = target.clone()
    pred[0, :, 1] += 1.0  # every point 1 off on face 0
    assert abs(metrics.landmark_nme(pred, target, (0, 1)) - 0.05) < 1e-6
    assert metrics.accuracy(torch.tensor([[0.0, 1.0], [1.0, 0.0]]), torch.tensor([1, 1])) == 0.5
    logits = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])  # predicted live, spoof, live, live
    e = metrics.spoof_errors(logits, torch.tensor([0, 1, 1, 0]))  # one of two attacks accepted, no live rejected
    assert e == {"apcer": 0.5, "bpcer": 0.0, "acer": 0.25}
