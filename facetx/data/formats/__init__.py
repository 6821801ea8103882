"""Readers for the face data formats the field uses (pure Python: no mxnet, no tensorflow), and writers for them.

Every reader is a Dataset of contract samples (:mod:`facetx.data.contract`) that fills only the tasks its format
labels. Bad input raises :class:`DataFormatError` with one line naming the file and what was wrong.
"""

from facetx.data.formats.celeba_spoof import CelebASpoof
from facetx.data.formats.errors import CorruptImageError, DataFormatError
from facetx.data.formats.fer2013 import FER2013
from facetx.data.formats.ibug300w import IBUG300W
from facetx.data.formats.ijb import IJBTemplates, ijb_sets
from facetx.data.formats.imagefolder import ImageFolderFaces
from facetx.data.formats.insightface import InsightFaceRec
from facetx.data.formats.verification import VerificationBin, verification_sets
from facetx.data.formats.wflw import WFLW
from facetx.data.formats.writers import RecordIOWriter

__all__ = [
    "FER2013",
    "IBUG300W",
    "IJBTemplates",
    "WFLW",
    "CelebASpoof",
    "CorruptImageError",
    "DataFormatError",
    "ImageFolderFaces",
    "InsightFaceRec",
    "RecordIOWriter",
    "VerificationBin",
    "ijb_sets",
    "verification_sets",
]
