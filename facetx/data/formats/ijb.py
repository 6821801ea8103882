"""IJB-B / IJB-C 1:1 template verification, in the layout insightface distributes (arcface_torch's ``eval_ijbc.py``):

    ROOT/meta/ijbc_face_tid_mid.txt          ``<image> <template id> <media id>`` per face
    ROOT/meta/ijbc_template_pair_label.txt   ``<template id> <template id> <1 same | 0 different>`` per pair
    ROOT/meta/ijbc_name_5pts_score.txt       ``<image> x1 y1 ... x5 y5 <detector score>`` per face, same order
    ROOT/loose_crop/<image>                  the loose face crops the 5 points refer to

(``ijbb_...`` for IJB-B.) Each face is aligned from its five points to the ArcFace template. The evaluator
(:func:`facetx.metrics.template_features`, :func:`facetx.metrics.template_pair_scores`) sums each face's embedding
with its flip's, weights it by the detector score, averages the faces of one media (a video's frames), sums the
media of a template, and scores a pair by the cosine of its two template features, as arcface_torch does.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from facetx.data.contract import IMAGE_SIZE
from facetx.data.formats.base import Face, FormatDataset
from facetx.data.formats.errors import DataFormatError
from facetx.data.formats.io import read_image, require_dir, require_file
from facetx.data.landmarks import LandmarkLayout
from facetx.detect.align import align_face

#: the FARs at which IJB-B/C 1:1 results are reported (arcface_torch's table columns)
IJB_FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
_KINDS = ("ijbc", "ijbb")


def _rows(path: Path, fields: int, what: str) -> list[list[str]]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != fields:
                raise DataFormatError(f"{path}:{n}: {len(parts)} fields, expected {fields} ({what})")
            rows.append(parts)
    if not rows:
        raise DataFormatError(f"{path}: no lines (expected {what})")
    return rows


def _numbers(rows: list[list[str]], cols: slice, dtype: type, path: Path, what: str) -> np.ndarray:
    try:
        return np.array([[dtype(v) for v in r[cols]] for r in rows], dtype=dtype)
    except ValueError as e:
        bad = next(n for n, r in enumerate(rows, 1) if not _parses(r[cols], dtype))
        raise DataFormatError(f"{path}:{bad}: {e} (expected {what})") from None


def _parses(values: list[str], dtype: type) -> bool:
    try:
        [dtype(v) for v in values]
    except ValueError:
        return False
    return True


def _kind(meta: Path) -> str:
    found = [k for k in _KINDS if (meta / f"{k}_face_tid_mid.txt").is_file()]
    if len(found) != 1:
        names = " or ".join(f"{k}_face_tid_mid.txt" for k in _KINDS)
        state = "both" if found else "neither"
        raise DataFormatError(f"{meta}: {state} of {names} (expected one IJB-B or IJB-C meta folder)")
    return found[0]


class IJBTemplates(FormatDataset):
    """The faces of one IJB-B/C release (``root`` holds ``meta/`` and ``loose_crop/``), in meta-file order.

    Attributes: ``templates``, ``medias`` int64 ``[N]``; ``detector_scores`` float32 ``[N]``; ``template_pairs``
    int64 ``[P, 3]`` = (template, template, same); ``fars`` the FARs to report. Samples carry no labels.
    """

    flip_tta = True
    fars = IJB_FARS

    def __init__(
        self, root: str | os.PathLike, layout: str | int | LandmarkLayout = "ibug68", name: str | None = None
    ) -> None:
        super().__init__(layout, transform=None, on_corrupt="fail")
        self.root = require_dir(root, "an IJB-B/C folder with meta/ and loose_crop/ (insightface's layout)")
        meta = require_dir(self.root / "meta", "the IJB meta folder (ijbc_face_tid_mid.txt, ...)")
        self.images_dir = require_dir(self.root / "loose_crop", "the IJB loose_crop image folder")
        kind = _kind(meta)
        self.verification_name = kind
        self.name = name or kind
        faces_path = require_file(meta / f"{kind}_face_tid_mid.txt", "the IJB face list")
        faces = _rows(faces_path, 3, "image template_id media_id")
        points_path = require_file(meta / f"{kind}_name_5pts_score.txt", "the IJB 5-point landmarks")
        points = _rows(points_path, 12, "image, 5 x y points, detector score")
        pairs_path = require_file(meta / f"{kind}_template_pair_label.txt", "the IJB template pairs")
        pairs = _rows(pairs_path, 3, "template_id template_id label")
        if len(points) != len(faces):
            raise DataFormatError(f"{points_path}: {len(points)} faces, but {faces_path.name} lists {len(faces)}")
        for n, (f, p) in enumerate(zip(faces, points, strict=True), 1):
            if f[0] != p[0]:
                raise DataFormatError(f"{points_path}:{n}: image {p[0]!r}, but {faces_path.name} has {f[0]!r} there")
        self.files = [f[0] for f in faces]
        ids = _numbers(faces, slice(1, 3), int, faces_path, "integer template and media ids")
        self.templates, self.medias = torch.from_numpy(ids[:, 0]), torch.from_numpy(ids[:, 1])
        values = _numbers(points, slice(1, 12), float, points_path, "numbers after the image name")
        self.points = values[:, :10].reshape(-1, 5, 2).astype(np.float32)  # [N, 5, 2] loose-crop pixels
        self.detector_scores = torch.from_numpy(values[:, 10].astype(np.float32))
        self.template_pairs = torch.from_numpy(_numbers(pairs, slice(0, 3), int, pairs_path, "integers"))
        self._check_pairs(pairs_path)
        self._set_length(len(self.files))

    def _check_pairs(self, path: Path) -> None:
        labels = self.template_pairs[:, 2]
        if not ((labels == 0) | (labels == 1)).all():
            raise DataFormatError(f"{path}: labels must be 0 or 1, found {sorted(set(labels.tolist()) - {0, 1})}")
        known = set(self.templates.tolist())
        unknown = sorted(set(self.template_pairs[:, :2].flatten().tolist()) - known)
        if unknown:
            raise DataFormatError(f"{path}: template {unknown[0]} has no face in the face list ({len(unknown)} such)")

    def _load(self, index: int) -> Face:
        image = read_image(self.images_dir / self.files[index])
        crop, _ = align_face(image, self.points[index], size=IMAGE_SIZE)
        return Face(image=crop)


def ijb_sets(roots: list[str | os.PathLike] | None, layout: str | int | LandmarkLayout = "ibug68") -> list:
    """One :class:`IJBTemplates` per root (``data.val_ijb``); two releases of the same kind would share metric names."""
    sets = [IJBTemplates(r, layout=layout) for r in (roots or [])]
    names = [s.verification_name for s in sets]
    if len(set(names)) != len(names):
        raise DataFormatError(f"val_ijb: two folders of the same release {names} (metric names would clash)")
    return sets
