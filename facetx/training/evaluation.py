"""Held-out evaluation shared by training, distillation and export: per-set accumulation, then metrics.

A held-out set may carry verification pairs (``pairs``, ``verification_name``), landmark/expression/spoof labels, or
both. :class:`HeldOutEvaluator` collects the network outputs of one set and turns them into flat metric keys without
the stage prefix (``recognition/acc``, ``landmarks/nme``, ...). Verification also reports, per FAR, the cosine
threshold (``recognition/threshold@far=1e-3``) and the pair counts it was measured on (``recognition/genuine_pairs``,
``recognition/impostor_pairs``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from facetx import metrics

_OUTPUT_KEYS = ("embedding", "landmarks", "expression_logits", "spoof_logits")
_BATCH_KEYS = ("index", "identity", "landmarks", "expression", "spoof", "has_identity", "has_landmarks",
               "has_expression", "has_spoof")  # fmt: skip


def _far_key(far: float, what: str = "tar") -> str:
    """``tar@far=1e-3`` (or ``threshold@far=1e-3`` for ``what="threshold"``)."""
    return f"{what}@far={far:.0e}".replace("e-0", "e-")


def threshold_key(far: float) -> str:
    """The metric key suffix of the verification threshold at ``far``: ``threshold@far=1e-3``."""
    return _far_key(far, "threshold")


class HeldOutEvaluator:
    """Collects outputs for one held-out data set and computes its metrics.

    Args:
        dataset: the held-out set (its ``pairs``, ``verification_name``, ``layout`` and ``flip_tta`` are read).
        fars: false-accept rates at which TAR is reported.
        raw_pixels: also score cosine similarity of raw pixels on the pairs (the difficulty baseline).
    """

    def __init__(self, dataset: Dataset, fars: Sequence[float] = (1e-3,), raw_pixels: bool = False) -> None:
        self.name = str(getattr(dataset, "name", "heldout"))
        self.verification_name: str | None = getattr(dataset, "verification_name", None)
        pairs = getattr(dataset, "pairs", None)
        self.pairs = None if pairs is None else torch.as_tensor(pairs, dtype=torch.long)
        layout = getattr(dataset, "layout", None)
        self.nme_indices = None if layout is None else tuple(layout.nme_indices)
        self.flip_tta = bool(getattr(dataset, "flip_tta", False))
        self.fars = tuple(getattr(dataset, "fars", fars))  # a benchmark's own FARs (IJB: 1e-6 ... 1e-1)
        # IJB-style 1:1 verification of templates (sets of faces), see facetx.data.formats.ijb
        self.templates = {k: getattr(dataset, k) for k in ("templates", "medias", "detector_scores", "template_pairs")
                          if hasattr(dataset, "template_pairs")}  # fmt: skip
        self.raw_pixels = raw_pixels and self.pairs is not None
        self._chunks: dict[str, list[torch.Tensor]] = {}

    def update(
        self,
        batch: Mapping[str, torch.Tensor],
        out: Mapping[str, torch.Tensor],
        out_flipped: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        """Add one batch. ``out_flipped``: outputs on horizontally flipped images (embeddings are summed)."""
        # the label "landmarks" and the prediction "landmarks" share a name: keep the label as "landmarks_target"
        rows = {("landmarks_target" if k == "landmarks" else k): batch[k] for k in _BATCH_KEYS if k in batch}
        for k in _OUTPUT_KEYS:
            if k in out:
                v = out[k]
                if k == "embedding" and out_flipped is not None:
                    v = v + out_flipped[k]
                rows[k] = v
        if self.raw_pixels:
            rows["pixels"] = F.normalize(batch["image"].flatten(1).float(), dim=1).half()
        for k, v in rows.items():
            self._chunks.setdefault(k, []).append(v.detach().cpu())

    def gathered(self, all_gather: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Concatenate the chunks (and, under DDP, gather ranks and drop the sampler's duplicate padding)."""
        data = {k: torch.cat(v) for k, v in self._chunks.items()}
        if all_gather is not None:
            data = {k: all_gather(v).flatten(0, 1).cpu() if v.ndim else v for k, v in data.items()}
        if "index" in data:
            _, first = np.unique(data["index"].numpy(), return_index=True)
            keep = torch.from_numpy(np.sort(first))
            data = {k: v[keep] for k, v in data.items()}
            order = torch.argsort(data["index"])
            data = {k: v[order] for k, v in data.items()}
        return data

    def compute(self, all_gather: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, float]:
        if not self._chunks:
            return {}
        d = self.gathered(all_gather)
        m: dict[str, float] = {}
        if self.pairs is not None and "embedding" in d:
            m.update(self._verification(d))
        if self.templates and "embedding" in d:
            m.update(self._template_verification(d))
        if "landmarks" in d and d["has_landmarks"].any() and self.nme_indices is not None:
            sel = d["has_landmarks"]
            m["landmarks/nme"] = metrics.landmark_nme(
                d["landmarks"][sel].float(), d["landmarks_target"][sel], self.nme_indices
            )
        if "expression_logits" in d and d["has_expression"].any():
            sel = d["has_expression"]
            m["expression/acc"] = metrics.accuracy(d["expression_logits"][sel], d["expression"][sel])
        if "spoof_logits" in d and d["has_spoof"].any():
            sel = d["has_spoof"]
            for k, v in metrics.spoof_errors(d["spoof_logits"][sel], d["spoof"][sel]).items():
                m[f"spoof/{k}"] = v
        return m

    def _template_verification(self, d: dict[str, torch.Tensor]) -> dict[str, float]:
        name = self.verification_name or self.name
        t = self.templates
        rows = d["index"] if "index" in d else torch.arange(len(d["embedding"]))
        if len(rows) != len(t["templates"]):
            raise ValueError(f"held-out set {self.name!r}: {len(rows)} of {len(t['templates'])} faces evaluated")
        ids, feats = metrics.template_features(
            d["embedding"], t["templates"][rows], t["medias"][rows], t["detector_scores"][rows]
        )
        scores = metrics.template_pair_scores(ids, feats, t["template_pairs"])
        same = t["template_pairs"][:, 2].bool()
        m = {f"{name}/{_far_key(far)}": metrics.tar_at_far(scores[same], scores[~same], far) for far in self.fars}
        m[f"{name}/genuine_pairs"] = float(same.sum())
        m[f"{name}/impostor_pairs"] = float((~same).sum())
        return m

    def _verification(self, d: dict[str, torch.Tensor]) -> dict[str, float]:
        name = self.verification_name or self.name
        # pairs refer to data set indices; the gathered rows are sorted by index
        pos = {int(i): r for r, i in enumerate(d["index"])} if "index" in d else None
        pairs = self.pairs
        if pos is not None:
            try:
                pairs = torch.tensor(
                    [[pos[int(i)], pos[int(j)], int(s)] for i, j, s in pairs.tolist()], dtype=torch.long
                )
            except KeyError as e:
                raise ValueError(
                    f"held-out set {self.name!r}: a verification pair refers to index {e}, not evaluated"
                ) from None
        scores = metrics.cosine_scores(d["embedding"], pairs[:, :2])
        same = pairs[:, 2].bool()
        acc, std = metrics.verification_accuracy(scores, same)
        m = {f"{name}/acc": acc, f"{name}/acc_std": std}
        # TAR@FAR: over all pairs of live, labelled images when identities are known (many more impostor pairs than
        # the pair list has, so FAR=1e-3 is measurable), else over the pair list.
        if "has_identity" in d and d["has_identity"].all():
            live = d["spoof"] != 1 if "spoof" in d else torch.ones(len(d["embedding"]), dtype=torch.bool)
            genuine, impostor = metrics.all_pair_scores(d["embedding"][live], d["identity"][live])
        else:
            genuine, impostor = scores[same], scores[~same]
        for far in self.fars:
            m[f"{name}/{_far_key(far)}"] = metrics.tar_at_far(genuine, impostor, far)
            # the cosine threshold of that TAR: export writes it into the model as the default match threshold
            m[f"{name}/{threshold_key(far)}"] = metrics.threshold_at_far(impostor, far)
        m[f"{name}/genuine_pairs"] = float(genuine.numel())
        m[f"{name}/impostor_pairs"] = float(impostor.numel())
        if self.raw_pixels and "pixels" in d:
            raw = metrics.cosine_scores(d["pixels"].float(), pairs[:, :2])
            m[f"{name}/raw_pixel_acc"] = metrics.verification_accuracy(raw, same)[0]
        return m


def merge_set_metrics(per_set: Sequence[tuple[str, Mapping[str, float]]]) -> dict[str, float]:
    """Merge the metrics of several held-out sets; a key seen twice is prefixed by its set name the second time."""
    merged: dict[str, float] = {}
    for set_name, set_metrics in per_set:
        for k, v in set_metrics.items():
            merged[k if k not in merged else f"{set_name}/{k}"] = v
    return merged


@torch.no_grad()
def evaluate(
    predict: Callable[[torch.Tensor], Mapping[str, torch.Tensor]],
    datasets: Sequence[Dataset],
    batch_size: int = 64,
    fars: Sequence[float] = (1e-3,),
    raw_pixels: bool = False,
    num_workers: int = 0,
) -> dict[str, float]:
    """Run ``predict(images [B, 3, H, W] in [0, 1]) -> outputs`` over held-out sets; return merged metrics.

    ``predict`` may be a torch module or a wrapper around ONNX Runtime: the export report compares precisions this way.
    """
    per_set = []
    for ds in datasets:
        ev = HeldOutEvaluator(ds, fars=fars, raw_pixels=raw_pixels)
        for batch in DataLoader(ds, batch_size=batch_size, num_workers=num_workers):
            out = predict(batch["image"])
            flipped = predict(batch["image"].flip(-1)) if ev.flip_tta else None
            ev.update(batch, out, flipped)
        per_set.append((ev.name, ev.compute()))
    return merge_set_metrics(per_set)
