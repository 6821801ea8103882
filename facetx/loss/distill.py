"""Knowledge distillation from a frozen teacher: outputs, embedding geometry, internal features, landmarks.

Follows DeiT's ``DistillationLoss`` pattern: one module wraps the student's task loss and adds the distillation terms;
the teacher's outputs arrive already computed under ``no_grad`` (the caller owns the frozen teacher).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from facetx.errors import ConfigError
from facetx.loss.margin import MarginSoftmax
from facetx.loss.multitask import MultiTaskLoss

FeatureInfo = Mapping[str, tuple[int, tuple[int, int]]]  # name -> (channels, (h, w))
FEATURE_LOSSES = ("mse", "cosine")
#: the network outputs each output term compares (teacher's and student's)
TERM_OUTPUTS = {"kd_expression": "expression_logits", "kd_spoof": "spoof_logits", "kd_recognition": "embedding",
                "embedding": "embedding", "relational": "embedding", "landmarks_kd": "landmarks"}  # fmt: skip


def kd_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton's soft-target loss: ``KL(p_teacher^T || p_student^T) * T^2``, mean over the batch.

    The ``T * T`` factor keeps the gradient scale of the soft term independent of ``T`` (soft-target gradients shrink
    as ``1 / T^2``), so the distillation weight means the same thing at every temperature.
    """
    t = temperature
    log_p_s = F.log_softmax(student_logits.float() / t, dim=1)
    log_p_t = F.log_softmax(teacher_logits.float() / t, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * (t * t)


def kd_hard(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """DeiT's hard distillation: cross-entropy against the teacher's argmax."""
    return F.cross_entropy(student_logits, teacher_logits.argmax(dim=1))


def relational(student_emb: torch.Tensor, teacher_emb: torch.Tensor) -> torch.Tensor:
    """MSE between the batch's pairwise cosine-similarity matrices: the embedding geometry verification relies on."""
    s = F.normalize(student_emb.float(), dim=1)
    t = F.normalize(teacher_emb.float(), dim=1)
    return F.mse_loss(s @ s.T, t @ t.T)


class FeatureProjector(nn.Module):
    """Maps a student map ``[B, Cs, hs, ws]`` to the teacher's ``[B, Ct, ht, wt]``: 1x1 conv, then resampling.

    Resampling is bilinear (a 7x7 or 4x4 CNN stage onto the teacher's 8x8 token grid), or area pooling when the
    student map is larger than the teacher's.
    """

    def __init__(self, student_channels: int, teacher_channels: int, teacher_grid: tuple[int, int]) -> None:
        super().__init__()
        self.proj = nn.Conv2d(student_channels, teacher_channels, 1)
        self.grid = tuple(teacher_grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # [B, Ct, hs, ws]
        if tuple(x.shape[-2:]) == self.grid:
            return x
        if x.shape[-2] >= self.grid[0] and x.shape[-1] >= self.grid[1]:
            return F.adaptive_avg_pool2d(x, self.grid)
        return F.interpolate(x, size=self.grid, mode="bilinear", align_corners=False)  # [B, Ct, ht, wt]


def feature_distance(student: torch.Tensor, teacher: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-position distance between projected student and teacher maps ``[B, C, h, w]``.

    Teacher features are layer-normalized over channels first (token features have a few huge channels; raw MSE
    would be dominated by them).
    """
    t = F.layer_norm(teacher.float().permute(0, 2, 3, 1), teacher.shape[1:2]).permute(0, 3, 1, 2)
    if kind == "mse":
        return F.mse_loss(student.float(), t)
    if kind == "cosine":
        return (1 - F.cosine_similarity(student.float(), t, dim=1)).mean()
    raise ConfigError(f"distill.feature_loss={kind!r}: expected one of {', '.join(FEATURE_LOSSES)}")


def pair_features(
    pairs: int | Sequence[Sequence[int]], teacher: Sequence[str], student: Sequence[str]
) -> list[tuple[str, str]]:
    """Resolve ``feature_pairs``: an int N pairs the N deepest maps of each net; a list gives (teacher, student)
    feature indices as they appear in each model's ``backbone.feature_indices``."""
    if isinstance(pairs, int):
        if pairs > min(len(teacher), len(student)):
            raise ConfigError(
                f"distill.feature_pairs={pairs} but the teacher returns {len(teacher)} feature maps and the student "
                f"{len(student)}: lower it or add backbone.feature_indices"
            )
        return list(zip(teacher[len(teacher) - pairs :], student[len(student) - pairs :], strict=True))
    out = []
    for t, s in pairs:
        tn, sn = f"feat.{t}", f"feat.{s}"
        if tn not in teacher or sn not in student:
            raise ConfigError(f"distill.feature_pairs: ({t}, {s}) not among teacher {teacher} / student {student}")
        out.append((tn, sn))
    return out


class DistillationLoss(nn.Module):
    """Student task loss + distillation terms; ``forward(student_out, teacher_out, batch)`` -> ``{"loss", parts}``.

    Terms (each weighted by ``weights[<name>]``; weight 0 skips it):
    ``kd_expression``, ``kd_spoof``, ``kd_recognition`` (KL at ``temperature`` or hard; recognition class logits need
    the teacher's classifier), ``embedding`` (1 - cosine between embeddings), ``relational`` (similarity matrices),
    ``features`` (projected student maps vs teacher maps, mean over pairs), ``landmarks_kd`` (the task's landmark
    loss against the teacher's predictions). The task loss's parts keep their names and enter with weight ``task``.

    ``teacher_classes``: ``match`` (the teacher's classifier has exactly the distillation data's identity classes) or
    ``prefix`` (the teacher trained on a superset whose first N classes are the data's N: a bigger run of the
    synthetic generator with the same seed, or a ``mix`` whose first source is the distillation data).

    ``teacher_outputs`` / ``student_outputs``: the networks' output names (``FaceNet.output_names``). When given, a
    term with a non-zero weight that could never be computed (an output one network lacks, no teacher classifier,
    the task loss part it reuses switched off) is a :class:`ConfigError` here instead of a term silently left out.
    """

    TERMS = ("task", "kd_expression", "kd_spoof", "kd_recognition", "embedding", "relational", "features",
             "landmarks_kd")  # fmt: skip

    def __init__(
        self,
        task_loss: MultiTaskLoss,
        student_features: FeatureInfo,
        teacher_features: FeatureInfo,
        weights: Mapping[str, float],
        temperature: float = 4.0,
        kd_type: str = "soft",
        feature_pairs: int | Sequence[Sequence[int]] = 1,
        feature_loss: str = "mse",
        teacher_classifier: MarginSoftmax | None = None,
        teacher_classes: str = "match",
        teacher_outputs: Sequence[str] | None = None,
        student_outputs: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        unknown = set(weights) - set(self.TERMS)
        if unknown:
            raise ConfigError(f"unknown distill weight(s) {sorted(unknown)}; expected a subset of {list(self.TERMS)}")
        if kd_type not in ("soft", "hard"):
            raise ConfigError(f"distill.kd_type must be 'soft' or 'hard', got {kd_type!r}")
        if teacher_classes not in ("match", "prefix"):
            raise ConfigError(f"distill.teacher_classes must be 'match' or 'prefix', got {teacher_classes!r}")
        if feature_loss not in FEATURE_LOSSES:  # else it fails only at the first training step
            raise ConfigError(f"distill.feature_loss={feature_loss!r}: expected one of {', '.join(FEATURE_LOSSES)}")
        self.task_loss = task_loss
        self.weights = {t: 0.0 for t in self.TERMS} | {"task": 1.0} | dict(weights)
        self.temperature, self.kd_type, self.feature_loss = temperature, kd_type, feature_loss
        self.pairs = pair_features(feature_pairs, list(teacher_features), list(student_features))
        if self.weights["features"] and not self.pairs:
            raise ConfigError(
                f"distill.weights.features={self.weights['features']:g} but distill.feature_pairs={feature_pairs!r}"
                " pairs no feature maps, so the term would be zero: set distill.feature_pairs or"
                " distill.weights.features=0"
            )
        self.projectors = nn.ModuleDict(
            {s.replace(".", "_"): FeatureProjector(student_features[s][0], *teacher_features[t]) for t, s in self.pairs}
        )
        self.teacher_classifier = teacher_classifier
        if teacher_classifier is not None:
            teacher_classifier.requires_grad_(False)
            student_cls = task_loss.recognition
            n_t = teacher_classifier.num_classes
            n_s = n_t if student_cls is None else student_cls.num_classes
            if n_s != n_t and not (teacher_classes == "prefix" and n_s < n_t):
                raise ConfigError(
                    f"kd_recognition needs the teacher's identity classes: teacher has {n_t}, the distillation data "
                    f"{n_s}; set distill.weights.kd_recognition=0 (or distill.teacher_classes=prefix when the data's "
                    "classes are the teacher's first ones)"
                )
            self.num_student_classes = n_s
        if teacher_outputs is not None:
            self._check_terms(list(teacher_outputs), None if student_outputs is None else list(student_outputs))

    def _check_terms(self, teacher_outputs: list[str], student_outputs: list[str] | None) -> None:
        """Refuse every weighted term that :meth:`forward` would skip for good (see the class doc)."""
        for term, key in TERM_OUTPUTS.items():
            w = self.weights[term]
            if not w:
                continue
            for net, outputs in (("teacher", teacher_outputs), ("student", student_outputs)):
                if outputs is not None and key not in outputs:
                    raise ConfigError(
                        f"distill.weights.{term}={w:g}: the {net} has no {key} output (its outputs: "
                        f"{', '.join(outputs) or 'none'}); set distill.weights.{term}=0"
                    )
        w = self.weights["kd_recognition"]
        if w and self.teacher_classifier is None:
            raise ConfigError(
                f"distill.weights.kd_recognition={w:g}: the teacher has no identity classifier (its checkpoint holds"
                " no loss.recognition weights), so there are no class logits to distill; set"
                " distill.weights.kd_recognition=0"
            )
        if w and self.task_loss.recognition is None:
            raise ConfigError(
                f"distill.weights.kd_recognition={w:g}: the student has no identity classifier (loss.recognition is"
                " off: the data has no identity labels); set distill.weights.kd_recognition=0"
            )
        w = self.weights["landmarks_kd"]
        if w and self.task_loss.landmarks is None:
            raise ConfigError(
                f"distill.weights.landmarks_kd={w:g}: the term reuses loss.landmarks, which is off; set"
                " distill.weights.landmarks_kd=0"
            )

    def teacher_keys(self) -> list[str]:
        """The teacher outputs this loss reads (what a teacher-output cache must keep)."""
        w = self.weights
        keys = [k for k, t in (("expression_logits", "kd_expression"), ("spoof_logits", "kd_spoof")) if w[t]]
        if w["kd_recognition"] or w["embedding"] or w["relational"]:
            keys.append("embedding")
        if w["landmarks_kd"]:
            keys.append("landmarks")
        if w["features"]:
            keys += [t for t, _ in self.pairs]
        return keys

    def _kd(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return kd_kl(s, t, self.temperature) if self.kd_type == "soft" else kd_hard(s, t)

    def forward(
        self,
        student: Mapping[str, torch.Tensor],
        teacher: Mapping[str, torch.Tensor],
        batch: Mapping[str, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        w = self.weights
        parts = self.task_loss.task_losses(student, batch)
        terms: dict[str, torch.Tensor] = {}
        for task, key in (("kd_expression", "expression_logits"), ("kd_spoof", "spoof_logits")):
            if w[task] and key in student and key in teacher:
                terms[task] = self._kd(student[key], teacher[key])
        if w["kd_recognition"] and self.teacher_classifier is not None and self.task_loss.recognition is not None:
            s_logits = self.task_loss.recognition.logits(student["embedding"])
            with torch.no_grad():
                # [B, N_teacher] -> [B, N]: with teacher_classes=prefix the data's classes are the first N
                t_logits = self.teacher_classifier.logits(teacher["embedding"])[:, : self.num_student_classes]
            terms["kd_recognition"] = self._kd(s_logits, t_logits)
        if w["embedding"]:
            terms["embedding"] = (
                1 - F.cosine_similarity(student["embedding"].float(), teacher["embedding"].float())
            ).mean()
        if w["relational"]:
            terms["relational"] = relational(student["embedding"], teacher["embedding"])
        if w["features"] and self.pairs:
            terms["features"] = torch.stack(
                [
                    feature_distance(self.projectors[s.replace(".", "_")](student[s]), teacher[t], self.feature_loss)
                    for t, s in self.pairs
                ]
            ).mean()
        if w["landmarks_kd"] and self.task_loss.landmarks is not None and "landmarks" in teacher:
            terms["landmarks_kd"] = self.task_loss.landmarks(student["landmarks"], teacher["landmarks"])
        task_total = sum(self.task_loss.weights[t] * v for t, v in parts.items())
        total = w["task"] * task_total + sum(w[k] * v for k, v in terms.items())
        return {"loss": total, **parts, **terms}
