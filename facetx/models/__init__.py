"""Models: timm backbones (with our registered face ViTs), task heads and :class:`FaceNet`."""

from facetx.models.backbone import TimmBackbone
from facetx.models.facenet import FaceNet
from facetx.models.heads import ClassifierHead, EmbeddingHead, LandmarkHead, TextureHead

__all__ = ["ClassifierHead", "EmbeddingHead", "FaceNet", "LandmarkHead", "TextureHead", "TimmBackbone"]
