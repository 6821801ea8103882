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
