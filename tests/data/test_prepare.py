"""``facetx.data.prepare``: raw photos -> aligned 112x112 crops (imagefolder and insightface layouts) + summary."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from facetx.data.formats.errors import DataFormatError
from facetx.data.prepare import main, prepare, scan_source
from facetx.detect.align import ARCFACE_TEMPLATE
from facetx.detect.weights import FETCH_COMMAND, WeightsNotFoundError

skdata = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def detector():
    from facetx.detect.detector import FaceDetector

    try:
        return FaceDetector("short")  # the short-range model: faster, and the test photos hold large faces
    except WeightsNotFoundError as e:
        pytest.skip(f"BlazeFace weights not fetched (run `{FETCH_COMMAND}`): {e}")


def _write(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


@pytest.fixture()
def src(tmp_path: Path) -> Path:
    """alice: two photos of a face; bob: a faceless photo, two faces side by side, an unreadable file; carol: no
    face at all (gets no label)."""
    a = skdata.astronaut()
    root = tmp_path / "raw"
    _write(root / "alice" / "a1.jpg", a)
    _write(root / "alice" / "a2.png", np.ascontiguousarray(a[:300, 50:450][:, ::-1]))
    _write(root / "bob" / "coffee.jpg", skdata.coffee())
    head = a[30:250, 110:330]
    _write(root / "bob" / "two.jpg", np.ascontiguousarray(np.concatenate([head, head], axis=1)))
    (root / "bob" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    _write(root / "carol" / "rocket.jpg", skdata.rocket())
    (root / "notes.txt").write_text("not an image, ignored")
    return root


def _rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def _eyes_on_template(crop: np.ndarray, detector, tol: float = 5.0) -> bool:
    faces = detector.detect(crop)
    return len(faces) == 1 and np.linalg.norm(faces[0].keypoints[:2] - ARCFACE_TEMPLATE[:2], axis=1).max() < tol


def test_imagefolder_output_and_summary(src: Path, tmp_path: Path, detector) -> None:
    dst = tmp_path / "out"
    summary = prepare(src, dst, "imagefolder", detector, progress=False)
    assert summary.images == 6 and summary.written == 2 and summary.identities == 1
    assert summary.no_face == ["bob/coffee.jpg", "carol/rocket.jpg"]
    assert summary.several_faces == ["bob/two.jpg"]  # skipped by default
    assert summary.unreadable == ["bob/broken.jpg"]
    crops = sorted(p.relative_to(dst).as_posix() for p in dst.rglob("*.jpg"))
    assert crops == ["alice/a1.jpg", "alice/a2.jpg"]
    for p in dst.rglob("*.jpg"):
        crop = _rgb(p)
        assert crop.shape == (112, 112, 3)
        assert _eyes_on_template(crop, detector)
    assert (dst / "classes.txt").read_text() == "alice\n"
    assert json.loads((dst / "prepare_summary.json").read_text()) == summary.to_dict()
    report = summary.report()
    assert "unreadable: 1" in report and "bob/broken.jpg" in report and "several faces: 1" in report

    from facetx.data.formats.imagefolder import ImageFolderFaces

    ds = ImageFolderFaces(dst)
    assert ds.classes == ["alice"] and len(ds) == 2


def test_insightface_output_keeps_all_faces(src: Path, tmp_path: Path, detector) -> None:
    dst = tmp_path / "rec"
    summary = prepare(src, dst, "insightface", detector, multi="all", progress=False)
    assert summary.written == 4 and summary.identities == 2 and summary.several_faces == ["bob/two.jpg"]
    assert {p.name for p in dst.iterdir()} >= {"train.rec", "train.idx", "property"}
    assert (dst / "classes.txt").read_text() == "alice\nbob\n"

    from facetx.data.formats.insightface import InsightFaceRec

    ds = InsightFaceRec(dst)
    assert ds.num_classes == 2 and len(ds) == 4
    samples = [ds[i] for i in range(len(ds))]
    assert [int(s["identity"]) for s in samples] == [0, 0, 1, 1]
    crop = (samples[2]["image"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    assert _eyes_on_template(crop, detector, tol=10.0)  # a smaller face in the photo: coarser keypoints


def test_largest_face_policy(src: Path, tmp_path: Path, detector) -> None:
    summary = prepare(src, tmp_path / "o", "imagefolder", detector, multi="largest", progress=False)
    assert summary.written == 3 and summary.several_faces == ["bob/two.jpg"]
    assert (tmp_path / "o" / "bob" / "two.jpg").is_file()


def test_flat_source(tmp_path: Path, detector) -> None:
    root = tmp_path / "flat"
    _write(root / "x.jpg", skdata.astronaut())
    _write(root / "y.png", skdata.chelsea())
    assert scan_source(root) == [(None, [root / "x.jpg", root / "y.png"])]
    summary = prepare(root, tmp_path / "o", "imagefolder", detector, progress=False)
    assert summary.written == 1 and summary.no_face == ["y.png"] and summary.identities == 0
    assert (tmp_path / "o" / "x.jpg").is_file()


def test_bad_inputs(tmp_path: Path, src: Path, detector) -> None:
    with pytest.raises(DataFormatError, match="does not exist"):
        prepare(tmp_path / "nope", tmp_path / "o", detector=detector)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFormatError, match="no images"):
        scan_source(tmp_path / "empty")
    _write(src / "loose.jpg", skdata.astronaut())
    with pytest.raises(DataFormatError, match="both photos"):
        scan_source(src)
    (src / "loose.jpg").unlink()
    used = tmp_path / "used"
    used.mkdir()
    (used / "x").write_text("")
    with pytest.raises(DataFormatError, match="not an empty folder"):
        prepare(src, used, detector=detector)
    with pytest.raises(ValueError, match="format must be one of"):
        prepare(src, tmp_path / "o2", "lmdb", detector=detector)


def test_cli(src: Path, tmp_path: Path, detector, capsys) -> None:
    rc = main([str(src), str(tmp_path / "o"), "--model", "short", "--format", "insightface", "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "6 images -> 2 aligned faces, 1 identities" in out and "bob/broken.jpg" in out
    assert (tmp_path / "o" / "train.rec").is_file()
    rc = main([str(tmp_path / "missing"), str(tmp_path / "o3"), "--model", "short", "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 2 and "missing" in err and err.startswith("error:")


def test_aligned_crops_come_through_by_default(tmp_path: Path, detector) -> None:
    """Already aligned 112x112 crops are common input: the default (short + full range) finds them, with short
    range's higher score (astronaut crop 0.94 short / 0.82 full; insightface's 0.785 / 0.609); so do group photos
    (the next test)."""
    from facetx.data.prepare import make_detector
    from facetx.detect.detector import CombinedDetector, align_detection
    from tests.detect import photos

    (face,) = detector.detect(skdata.astronaut())
    root = tmp_path / "aligned"
    _write(root / "astronaut.png", align_detection(skdata.astronaut(), face)[0])
    hanks = photos.load("insightface_aligned")  # insightface's sample crop, when fetched into the cache
    if hanks is not None:
        _write(root / "hanks.png", hanks)
    names = sorted(p.name for p in root.iterdir())
    default = make_detector()
    assert isinstance(default, CombinedDetector)
    summary = prepare(root, tmp_path / "both", progress=False)  # the default detector
    assert summary.written == len(names) and summary.no_face == [] and summary.several_faces == []
    for p in (tmp_path / "both").glob("*.jpg"):
        assert _eyes_on_template(_rgb(p), detector)
    rc = main([str(root), str(tmp_path / "cli"), "--no-progress"])
    assert rc == 0 and len(list((tmp_path / "cli").glob("*.jpg"))) == len(names)


def test_group_photo_keeps_every_face_by_default(tmp_path: Path) -> None:
    """Three small LFW faces on a 640x360 canvas: short range alone finds one, the default finds all three."""
    from facetx.data.prepare import make_detector
    from tests.detect import photos

    root = tmp_path / "group"
    _write(root / "trio.png", photos.lfw_canvas((0, 1, 2)))
    assert len(make_detector("short").detect(photos.lfw_canvas((0, 1, 2)))) == 1
    summary = prepare(root, tmp_path / "o", multi="all", progress=False)
    assert summary.written == 3 and summary.several_faces == ["trio.png"]
