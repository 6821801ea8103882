"""Held-out metrics: verification (10-fold accuracy, TAR@FAR and its threshold), landmark NME, expression accuracy,
spoof ACER.

All functions take plain tensors (CPU is fine) and return Python floats, so the Lightning module, the export report and
the benchmark table compute the same numbers the same way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cosine_scores(embeddings: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of ``embeddings[pairs[:, 0]]`` and ``embeddings[pairs[:, 1]]``. ``embeddings``: ``[N, D]``."""
    e = F.normalize(embeddings.float(), dim=1)
    return (e[pairs[:, 0]] * e[pairs[:, 1]]).sum(dim=1)


def _best_threshold(scores: torch.Tensor, same: torch.Tensor) -> float:
    """Threshold maximizing accuracy of ``score > t``; candidates are midpoints of sorted scores."""
    s, order = torch.sort(scores)
    y = same[order].float()
    n = s.numel()
    # accuracy of predicting "same" for s > s[k] (k = -1 means all "same"): positives above + negatives at/below
    pos_above = y.sum() - torch.cumsum(y, 0)
    neg_below = torch.cumsum(1.0 - y, 0)
    acc = torch.cat([y.sum().view(1), pos_above + neg_below]) / n
    k = int(torch.argmax(acc))
    if k == 0:
        return float(s[0]) - 1e-6
    if k == n:
        return float(s[-1]) + 1e-6
    return float((s[k - 1] + s[k]) / 2)


def verification_accuracy(scores: torch.Tensor, same: torch.Tensor, folds: int = 10) -> tuple[float, float]:
    """LFW-protocol accuracy: for each of ``folds`` contiguous folds, the threshold is chosen on the other folds.

    Returns ``(mean accuracy, std over folds)``; scores are similarities (higher = more alike).
    """
    same = same.bool()
    n = scores.numel()
    if n < folds:
        raise ValueError(f"need at least {folds} pairs for {folds}-fold verification, got {n}")
    fold_ids = torch.arange(n) * folds // n
    accs = []
    for k in range(folds):
        test = fold_ids == k
        t = _best_threshold(scores[~test], same[~test])
        accs.append(((scores[test] > t) == same[test]).float().mean())
    a = torch.stack(accs)
    return float(a.mean()), float(a.std(unbiased=False))


def threshold_at_far(impostor: torch.Tensor, far: float) -> float:
    """The smallest impostor score ``t`` with at most ``floor(far * n)`` of the ``n`` ``impostor`` scores ``> t``.

    Accepting ``score > t`` then has a measured FAR <= ``far`` on these impostors (ties at ``t`` are rejected, so it
    can be lower). ``far = 0`` gives the highest impostor score. NaN without impostors.
    """
    if not 0.0 <= far < 1.0:
        raise ValueError(f"far must be in [0, 1), got {far}")
    n = impostor.numel()
    if n == 0:
        return float("nan")
    # the epsilon keeps e.g. 0.29 * 100 = 28.999999999999996 from allowing one impostor fewer than asked
    k = min(int(far * n + 1e-9), n - 1)  # impostors allowed above the threshold
    return float(torch.topk(impostor.flatten().float(), k + 1).values[-1])


def tar_at_far(genuine: torch.Tensor, impostor: torch.Tensor, far: float) -> float:
    """True accept rate (``score > t``) at ``t = threshold_at_far(impostor, far)``; NaN without genuine/impostors."""
    if impostor.numel() == 0 or genuine.numel() == 0:
        return float("nan")
    threshold = threshold_at_far(impostor, far)
    return float((genuine.float() > threshold).float().mean())


def all_pair_scores(embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Genuine and impostor cosine scores over all unordered pairs of ``embeddings [N, D]`` with identity ``labels``."""
    e = F.normalize(embeddings.float(), dim=1)
    sim = e @ e.T
    iu = torch.triu_indices(len(e), len(e), offset=1)
    s = sim[iu[0], iu[1]]
    same = labels[iu[0]] == labels[iu[1]]
    return s[same], s[~same]


def landmark_nme(pred: torch.Tensor, target: torch.Tensor, norm_indices: tuple[int, int]) -> float:
    """Mean over faces of mean point-to-point error / distance between ``target[norm_indices]`` (inter-ocular).

    ``pred``, ``target``: ``[B, K, 2]`` in the same units (normalized crop coordinates are fine: the ratio is unitless).
    """
    if pred.numel() == 0:
        return float("nan")
    i, j = norm_indices
    d = (target[:, i] - target[:, j]).norm(dim=-1).clamp_min(1e-6)  # [B]
    err = (pred - target).norm(dim=-1).mean(dim=-1)  # [B]
    return float((err / d).mean())


def accuracy(logits: torch.Tensor, target: torch.Tensor) -> float:
    if target.numel() == 0:
        return float("nan")
    return float((logits.argmax(dim=1) == target).float().mean())


def spoof_errors(logits: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """ISO/IEC 30107-3 rates at the argmax decision. ``target``: 1 = attack, 0 = bona fide (live).

    APCER: attacks accepted as live; BPCER: live rejected as attacks; ACER: their mean.
    """
    pred = logits.argmax(dim=1)
    attack, live = target == 1, target == 0
    apcer = float((pred[attack] == 0).float().mean()) if attack.any() else float("nan")
    bpcer = float((pred[live] == 1).float().mean()) if live.any() else float("nan")
    return {"apcer": apcer, "bpcer": bpcer, "acer": (apcer + bpcer) / 2}


def template_features(
    embeddings: torch.Tensor, templates: torch.Tensor, medias: torch.Tensor, weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """IJB template features, arcface_torch's ``image2template_feature``: face embeddings ``[N, D]`` (flip-summed,
    not normalized) times ``weights [N]`` (detector scores), averaged per (template, media), summed per template,
    then L2-normalized. Returns ``(template ids [T] sorted, features [T, D])``."""
    x = embeddings.double() * (1.0 if weights is None else weights.double()[:, None])
    # a media (one photo, or one video's frames) belongs to a template: key the pair
    media_keys, media_of = torch.unique(torch.stack([templates, medias], 1), dim=0, return_inverse=True)
    media_sum = torch.zeros(len(media_keys), x.shape[1], dtype=x.dtype).index_add_(0, media_of, x)
    media_mean = media_sum / torch.bincount(media_of, minlength=len(media_keys))[:, None]  # [M, D]
    ids, template_of = torch.unique(media_keys[:, 0], return_inverse=True)
    feats = torch.zeros(len(ids), x.shape[1], dtype=x.dtype).index_add_(0, template_of, media_mean)  # [T, D]
    return ids, F.normalize(feats, dim=1).float()


def template_pair_scores(ids: torch.Tensor, features: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """Cosine scores ``[P]`` of template pairs ``pairs [P, >=2]`` (template ids) from :func:`template_features`."""
    a = torch.searchsorted(ids, pairs[:, 0])
    b = torch.searchsorted(ids, pairs[:, 1])
    return (features[a] * features[b]).sum(dim=1)
