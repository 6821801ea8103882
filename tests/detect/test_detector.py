"""FaceDetector on real photos (skimage), alignment, the ``python -m facetx.detect`` CLI and ONNX export."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from facetx.detect.align import ARCFACE_TEMPLATE, transform_points
from facetx.detect.detector import FaceDetector, align_detection, alignment_matrix, letterbox, mouth_corners
from facetx.detect.weights import FETCH_COMMAND, WeightsNotFoundError

skdata = pytest.importorskip("skimage.data")


def _detector(model: str) -> FaceDetector:
    try:
        return FaceDetector(model)
    except WeightsNotFoundError as e:
        pytest.skip(f"BlazeFace weights not fetched (run `{FETCH_COMMAND}`): {e}")


@pytest.fixture(scope="module")
def short() -> FaceDetector:
    return _detector("short")


@pytest.fixture(scope="module")
def full() -> FaceDetector:
    return _detector("full")


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skdata.astronaut()


def _eye_error(keypoints: np.ndarray, mode: str) -> np.ndarray:
    m = alignment_matrix(keypoints, 112, mode)
    return np.linalg.norm(transform_points(keypoints[:2], m) - ARCFACE_TEMPLATE[:2], axis=1)


# --- letterbox ---


def test_letterbox_maps_pixels_into_the_square() -> None:
    image = np.full((100, 200, 3), 255, np.uint8)
    square, m = letterbox(image, 128)
    assert square.shape == (128, 128, 3)
    assert square[:31].max() == 0 and square[-31:].max() == 0 and square[40:90].min() == 255  # 64 rows + 2 x 32 pad
    # pixel edges of the image map onto the edges of the pasted region
    np.testing.assert_allclose(
        transform_points(np.array([[-0.5, -0.5], [199.5, 99.5]]), m), [[-0.5, 31.5], [127.5, 95.5]]
    )


# --- detection ---


@pytest.mark.parametrize("model", ["short", "full"])
def test_finds_the_astronaut(model: str, astronaut: np.ndarray, request: pytest.FixtureRequest) -> None:
    det: FaceDetector = request.getfixturevalue(model)
    faces = det.detect(astronaut)
    assert len(faces) == 1
    f = faces[0]
    x1, y1, x2, y2 = f.box
    assert 160 <= x1 <= 190 and 255 <= x2 <= 285 and 55 <= y1 <= 95 and 160 <= y2 <= 185, f.box
    assert f.score > 0.85
    kp = f.keypoints
    assert kp.shape == (6, 2)
    # the subject's right eye is on the image left; eyes above the nose tip, nose tip above the mouth
    assert kp[0, 0] < kp[1, 0] and max(kp[0, 1], kp[1, 1]) < kp[2, 1] < kp[3, 1]
    assert x1 <= kp[:4, 0].min() and kp[:4, 0].max() <= x2


@pytest.mark.parametrize("name", ["coffee", "chelsea", "rocket"])
def test_no_face_in_faceless_photos(name: str, short: FaceDetector) -> None:
    assert short.detect(getattr(skdata, name)()) == []


def test_coordinates_follow_the_letterbox(short: FaceDetector, astronaut: np.ndarray) -> None:
    """Same scale, different padding (crop keeps the long side): the face stays where it is in the photo."""
    (a,) = short.detect(astronaut)
    (b,) = short.detect(np.ascontiguousarray(astronaut[:400]))
    np.testing.assert_allclose(b.box, a.box, atol=3.0)
    np.testing.assert_allclose(b.keypoints[:4], a.keypoints[:4], atol=3.0)
    # and a mirrored photo gives the mirrored box
    (c,) = short.detect(np.ascontiguousarray(astronaut[:, ::-1]))
    w = astronaut.shape[1] - 1
    np.testing.assert_allclose([w - c.box[2], w - c.box[0]], a.box[[0, 2]], atol=3.0)


def test_min_score_and_batch(astronaut: np.ndarray) -> None:
    det = _detector("short")
    strict = FaceDetector("short", min_score=0.99, net=det.net)
    assert strict.detect(astronaut) == []
    batch = det.detect_batch([astronaut, skdata.coffee(), astronaut[::2, ::2].copy()])
    assert [len(b) for b in batch] == [1, 0, 1]
    np.testing.assert_allclose(batch[2][0].box, det.detect(astronaut)[0].box / 2, atol=4.0)
    with pytest.raises(ValueError, match=r"image 0: expected a uint8 RGB array"):
        det.detect(astronaut.astype(np.float32))


# --- alignment ---


@pytest.mark.parametrize("model", ["short", "full"])
def test_alignment_puts_the_eyes_on_the_template(model: str, astronaut: np.ndarray, request) -> None:
    det: FaceDetector = request.getfixturevalue(model)
    (face,) = det.detect(astronaut)
    crop, m = align_detection(astronaut, face)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    err = np.linalg.norm(transform_points(face.keypoints[:2], m) - ARCFACE_TEMPLATE[:2], axis=1)
    assert err.max() < 3.0, err
    # the chosen 4-point fit beats (or ties) the 5-point fit with synthesized mouth corners on the eyes
    assert _eye_error(face.keypoints, "four").max() <= _eye_error(face.keypoints, "five").max() + 1e-6
    # re-detecting on the aligned crop finds the eyes near the template too
    (again,) = det.detect(crop) if model == "short" else _detector("short").detect(crop)
    assert np.linalg.norm(again.keypoints[:2] - ARCFACE_TEMPLATE[:2], axis=1).max() < 4.0


def test_mouth_corners_are_symmetric_about_the_mouth_center() -> None:
    kp = np.array([[40, 50], [72, 50], [56, 70], [56, 90], [20, 55], [92, 55]], np.float32)
    p5 = mouth_corners(kp)
    np.testing.assert_allclose(p5[3:].mean(0), kp[3])
    ratio = np.linalg.norm(p5[4] - p5[3]) / np.linalg.norm(kp[1] - kp[0])
    t = ARCFACE_TEMPLATE
    assert ratio == pytest.approx(np.linalg.norm(t[4] - t[3]) / np.linalg.norm(t[1] - t[0]), rel=1e-5)
    with pytest.raises(ValueError, match="unknown alignment mode"):
        alignment_matrix(kp, mode="three")


def test_save_visualization(short: FaceDetector, astronaut: np.ndarray) -> None:
    """Writes /tmp/astronaut_det.png (box, keypoints, aligned crop) for a human to look at."""
    (face,) = short.detect(astronaut)
    vis = astronaut.copy()
    x1, y1, x2, y2 = (int(round(v)) for v in face.box)
    cv2.rectangle(vis, (x1, y1), (x2, y2), (0, 255, 0), 2)
    colors = [(255, 0, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255), (255, 255, 255)]
    for (x, y), c in zip(face.keypoints, colors, strict=True):
        cv2.circle(vis, (int(round(x)), int(round(y))), 4, c, -1)
    crop, _ = align_detection(astronaut, face)
    crop = cv2.resize(crop, (224, 224), interpolation=cv2.INTER_NEAREST)
    for x, y in ARCFACE_TEMPLATE * 2:
        cv2.drawMarker(crop, (int(round(x)), int(round(y))), (0, 255, 0), cv2.MARKER_CROSS, 10, 1)
    panel = np.zeros((vis.shape[0], 224, 3), np.uint8)
    panel[:224] = crop
    out = Path("/tmp/astronaut_det.png")
    try:
        cv2.imwrite(str(out), cv2.cvtColor(np.concatenate([vis, panel], 1), cv2.COLOR_RGB2BGR))
    except cv2.error:
        pytest.skip("cannot write /tmp/astronaut_det.png")
    assert out.is_file()


# --- CLI ---


def _write(path: Path, rgb: np.ndarray) -> Path:
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def test_cli_json_lines_and_unreadable_image(tmp_path: Path, astronaut: np.ndarray, capsys) -> None:
    from facetx.detect.__main__ import main

    _detector("short")
    face = _write(tmp_path / "astronaut.png", astronaut)
    empty = _write(tmp_path / "coffee.jpg", skdata.coffee())
    gray = tmp_path / "gray.png"
    cv2.imwrite(str(gray), cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY))
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    missing = tmp_path / "missing.png"
    rc = main([str(face), str(bad), str(empty), str(missing), str(gray), "--min-score", "0.6"])
    out, err = capsys.readouterr()
    assert rc == 1
    lines = [json.loads(line) for line in out.splitlines()]
    assert [d["image"] for d in lines] == [str(face), str(empty), str(gray)]
    (f,) = lines[0]["faces"]
    assert set(f) == {"box", "score", "keypoints"}
    assert len(f["box"]) == 4 and len(f["keypoints"]) == 6 and all(len(p) == 2 for p in f["keypoints"])
    assert 160 < f["box"][0] < 190 and 0.85 < f["score"] <= 1.0
    assert lines[1]["faces"] == [] and len(lines[2]["faces"]) == 1
    err_lines = err.strip().splitlines()
    assert len(err_lines) == 2 and str(bad) in err_lines[0] and str(missing) in err_lines[1]
    assert main([str(face), "--min-score", "1.5"]) == 2


def test_cli_entry_point_full_model(tmp_path: Path, astronaut: np.ndarray) -> None:
    _detector("full")
    face = _write(tmp_path / "a.jpg", astronaut)
    proc = subprocess.run(
        [sys.executable, "-m", "facetx.detect", "--model", "full", str(face)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    (line,) = proc.stdout.splitlines()
    d = json.loads(line)
    assert d["image"] == str(face) and len(d["faces"]) == 1


# --- ONNX ---


@pytest.mark.parametrize("model", ["short", "full"])
def test_onnx_export_matches_pytorch(model: str, tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort

    from facetx.detect.blazeface import export_onnx

    net = _detector(model).net
    path = export_onnx(net, tmp_path / f"blazeface_{model}.onnx")
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert "[0, 1]" in meta["input"]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    s = net.input_size
    x = torch.rand(3, 3, s, s, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = [t.numpy() for t in net(x)]
    got = sess.run(["regressors", "classificators"], {"image": x.numpy()})
    for a, b in zip(got, ref, strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=1e-3, rtol=1e-4)
