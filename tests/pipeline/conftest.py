"""Fixtures for the video pipeline: the committed test student, the scripted clip, an enrolled gallery."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

DATA = Path(__file__).resolve().parent / "data"
#: window_vit_nano trained with augment=tracking and exported to INT8 by scripts/make_pipeline_student.sh (seed 42);
#: the same export the README's pipeline figures come from. Committed so the suite needs no training run for it.
STUDENT = DATA / "student.int8.onnx"


@pytest.fixture(scope="session")
def student() -> Path:
    if not STUDENT.is_file():
        pytest.fail(f"{STUDENT} is missing: regenerate it with scripts/make_pipeline_student.sh")
    return STUDENT


@pytest.fixture(scope="session")
def clip():
    from facetx.data.synthetic.video import scripted_clip

    return scripted_clip()


def write_photos(photos: dict[str, list[np.ndarray]], root: Path) -> Path:
    """``root/<name>/<i>.png`` for each person's photos (the layout enroll reads)."""
    for name, images in photos.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(images):
            cv2.imwrite(str(root / name / f"{i}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return root


@pytest.fixture(scope="session")
def clip_gallery(clip, student: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A gallery of the clip's live identities, enrolled from other renders of them (3 photos each)."""
    from facetx.data.synthetic.video import gallery_photos
    from facetx.detect import FaceDetector
    from facetx.pipeline.enroll import enroll
    from facetx.pipeline.model import FaceModel

    live = sorted({f.identity for t in clip.truth for f in t.faces if not f.spoof})
    root = write_photos(gallery_photos(live, per_person=3), tmp_path_factory.mktemp("photos"))
    out = root / "gallery.npz"
    enroll(root, FaceModel(student), [FaceDetector("short"), FaceDetector("full")], out)
    return out
