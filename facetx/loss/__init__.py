"""Losses: margin softmax (ArcFace/CosFace; sharded over the ranks: Partial FC), landmark losses, the multitask
loss, distillation."""

from facetx.loss.distill import DistillationLoss, FeatureProjector
from facetx.loss.landmarks import L1Loss, WingLoss
from facetx.loss.margin import MarginSoftmax
from facetx.loss.multitask import MultiTaskLoss
from facetx.loss.partial_fc import PartialFC

__all__ = ["DistillationLoss", "FeatureProjector", "L1Loss", "MarginSoftmax", "MultiTaskLoss", "PartialFC", "WingLoss"]
