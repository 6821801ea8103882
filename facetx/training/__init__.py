"""Training: LightningModules, evaluation, metrics, checkpoints and the run entry points."""

from facetx.training.distill import DistillModule
from facetx.training.module import FaceModule

__all__ = ["DistillModule", "FaceModule"]
