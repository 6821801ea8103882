"""facetx.augment: landmark-aware augmentation of aligned face crops (albumentations 2) and synthetic occluders."""

from facetx.augment.occlusion import KINDS, OcclusionMask
from facetx.augment.pipeline import FaceAugment

__all__ = ["KINDS", "FaceAugment", "OcclusionMask"]
