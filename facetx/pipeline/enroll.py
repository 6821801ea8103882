"""``python -m facetx.pipeline.enroll photos=DIR model=OUT/model.int8.onnx [out=gallery.npz]``: a gallery file.

``DIR`` holds one subfolder of photos per person (the folder name is the identity). Each photo: detect (the
``detector`` group; a photo where it finds nothing is tried with the full-range model, and a photo of the model's
input size where neither finds a face is taken as an already aligned crop), take the largest face, align it like the
pipeline does, embed it. The gallery stores one float32 embedding per photo, the names and the model's fingerprint
(``.npz``, no pickle); photos without a face are listed in ``enroll_summary.json`` and do not stop the run.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import hydra
import numpy as np
from omegaconf import DictConfig

from facetx.data.formats.io import IMAGE_EXTENSIONS
from facetx.errors import ConfigError, exit_on_user_error
from facetx.pipeline.config import CONFIG_DIR

if TYPE_CHECKING:
    from facetx.pipeline.model import FaceModel
    from facetx.pipeline.pipeline import Detector

log = logging.getLogger(__name__)


@dataclass
class EnrollSummary:
    """Counts per run and the photos (relative to ``photos``) that gave no embedding."""

    people: int = 0
    photos: int = 0
    enrolled: int = 0
    as_aligned_crop: int = 0
    no_face: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)


def _largest(faces: list) -> object | None:
    return max(faces, key=lambda f: float((f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))) if faces else None


def enroll(photos: str | Path, model: FaceModel, detectors: list[Detector], out: str | Path) -> EnrollSummary:
    """Build and save the gallery of ``photos`` with ``model`` (a :class:`~facetx.pipeline.model.FaceModel`);
    ``detectors`` are tried in order until one finds a face."""
    from facetx.pipeline.gallery import Gallery
    from facetx.pipeline.tracker import detection_alignment, five_point_template

    root = Path(photos)
    if not root.is_dir():
        raise ConfigError(f"photos={root}: no such folder; expected one subfolder of photos per person")
    people = sorted(p for p in root.iterdir() if p.is_dir())
    if not people:
        raise ConfigError(
            f"photos={root}: no subfolders; expected one subfolder of photos per person (DIR/<name>/*.jpg)"
        )
    info = model.info
    s = info.input_size
    five = five_point_template(info.template, s)  # align like the pipeline does
    gallery = None
    summary = EnrollSummary(people=len(people))
    for person in people:
        crops = []
        for path in sorted(p for p in person.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS):
            summary.photos += 1
            rel = str(path.relative_to(root))
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                summary.unreadable.append(rel)
                continue
            image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            face = None
            for detector in detectors:
                face = _largest(detector.detect(image))
                if face is not None:
                    break
            if face is not None:
                crops.append(
                    cv2.warpAffine(image, detection_alignment(face.keypoints, five), (s, s), flags=cv2.INTER_LINEAR)
                )
            elif image.shape[:2] == (s, s):  # already an aligned crop (e.g. a prepared data set)
                crops.append(image)
                summary.as_aligned_crop += 1
            else:
                summary.no_face.append(rel)
        if not crops:
            continue
        out_heads = model(np.stack(crops))
        if out_heads.embedding is None:
            raise ConfigError(f"model={info.path}: the export has no embedding output; a gallery needs one")
        if gallery is None:
            gallery = Gallery.empty(out_heads.embedding.shape[1], info.fingerprint, info.model)
        gallery.add(person.name, out_heads.embedding)
        summary.enrolled += len(crops)
    if summary.photos == 0:
        raise ConfigError(f"photos={root}: no images ({', '.join(IMAGE_EXTENSIONS)}) in its person subfolders")
    if gallery is None or len(gallery) == 0:
        raise ConfigError(f"photos={root}: no face found in any of {summary.photos} photos; nothing to enroll")
    gallery.save(out)
    return summary


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="enroll")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    from facetx.pipeline.config import _instantiate, build_model, check_threads, require_model
    from facetx.training.config_checks import check_required

    require_model(cfg)
    check_required(cfg)
    check_threads(cfg)
    model = build_model(cfg)
    detectors = [_instantiate(cfg.detector, "detector")]
    if cfg.detector.get("model") == "short" and cfg.get("fallback_full", True):
        detectors.append(_instantiate(cfg.detector, "detector", {"model": "full"}))
    summary = enroll(cfg.photos, model, detectors, cfg.out)
    path = Path(cfg.paths.output_dir) / "enroll_summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"gallery": str(cfg.out), **summary.__dict__}, indent=2) + "\n")
    log.info("enrolled %d photos of %d people into %s (%d without a face: %s)", summary.enrolled, summary.people,
             cfg.out, len(summary.no_face), path)  # fmt: skip


if __name__ == "__main__":
    main()
