"""Losses: margin softmax (ArcFace/CosFace), landmark losses, the multitask loss, distillation."""

from facetx.losses.distill import DistillationLoss, FeatureProjector
from facetx.losses.landmarks import L1Loss, WingLoss
from facetx.losses.margin import MarginSoftmax
from facetx.losses.multitask import MultiTaskLoss

__all__ = ["DistillationLoss", "FeatureProjector", "L1Loss", "MarginSoftmax", "MultiTaskLoss", "WingLoss"]
