"""Tracker logic with an oracle student (true landmarks and fixed per-person embeddings, mapped through each ROI):
ids stay while a face is in view, a face that leaves ends its track in that frame, an occluded face takes its id
back, the detector runs only when it has to; plus the One Euro filter."""

from __future__ import annotations

import numpy as np
import pytest

from facetx.detect.align import ARCFACE_TEMPLATE, transform_points
from facetx.detect.detector import Face
from facetx.pipeline.contracts import HeadOutputs
from facetx.pipeline.smoothing import Ema, OneEuroFilter
from facetx.pipeline.tracker import OneEuroSettings, Tracker, five_from_ibug68

W, H = 640, 360
#: a 68-point face: the ArcFace five points repeated into the iBUG groups the tracker reads (eyes, nose, mouth)
_BASE = np.zeros((68, 2), np.float32)
_BASE[:] = ARCFACE_TEMPLATE.mean(0)
_BASE[36:42], _BASE[42:48], _BASE[30], _BASE[48], _BASE[54] = ARCFACE_TEMPLATE


def face_points(center: tuple[float, float], scale: float) -> np.ndarray:
    """The 68 landmarks of a face at ``center`` (frame px), ``scale`` x the 112 template."""
    return (_BASE - 56.0) * scale + np.asarray(center, np.float32)


def detection(lm: np.ndarray) -> Face:
    five = five_from_ibug68(lm)
    kp = np.stack([five[0], five[1], five[2], (five[3] + five[4]) / 2, five[0] - 20, five[1] + 20])
    box = np.concatenate([lm.min(0) - 10, lm.max(0) + 10]).astype(np.float32)
    return Face(box, 0.9, kp.astype(np.float32))


def oracle(rois, faces: dict[int, tuple[np.ndarray, np.ndarray]]) -> HeadOutputs:
    """For each ROI: the face whose landmarks land nearest the crop center gives landmarks and embedding."""
    lms, embs = [], []
    for roi in rois:
        best = min(faces.values(), key=lambda f: np.linalg.norm(transform_points(f[0], roi.matrix).mean(0) - 56))
        lms.append(transform_points(best[0], roi.matrix))
        embs.append(best[1])
    n = len(rois)
    return HeadOutputs(np.array(embs, np.float32).reshape(n, -1), np.array(lms, np.float32).reshape(n, 68, 2),
                       np.full((n, 7), 1 / 7, np.float32), np.full(n, 0.9, np.float32))  # fmt: skip


def unit(k: int) -> np.ndarray:
    """Person ``k``'s embedding: orthogonal to everyone else's."""
    return np.eye(16, dtype=np.float32)[k]


def step(tracker: Tracker, index: int, faces: dict, detectable: set[int] | None = None):
    """One frame: detections of ``detectable`` faces when the tracker asks for them, then the oracle's outputs."""
    ran = tracker.needs_detection(index)
    if ran:
        dets = [detection(lm) for k, (lm, _) in faces.items() if detectable is None or k in detectable]
        rois = tracker.assign(dets, index)
    else:
        rois = tracker.rois()
    alive = tracker.update(rois, oracle(rois, faces), index, index / 30, (H, W, 3), threshold=0.5) if rois else []
    return ran, {t.id: t for t, _ in alive}


def test_moving_face_keeps_its_id_and_detector_runs_once():
    tracker = Tracker(max_faces=1, one_euro=OneEuroSettings(enabled=False))
    a = unit(0)
    ids, runs = set(), 0
    for i in range(30):
        faces = {0: (face_points((150 + 8 * i, 180 + 2 * np.sin(i)), 1.2 + 0.01 * i), a)}
        ran, alive = step(tracker, i, faces)
        runs += ran
        assert len(alive) == 1
        ids |= set(alive)
        # the tracked landmarks are the true ones (oracle), so the box follows the face
        track = next(iter(alive.values()))
        np.testing.assert_allclose(track.landmarks, faces[0][0], atol=1e-3)
    assert ids == {0}
    assert runs == 1  # max_faces reached after the first detection: landmarks carry the crop from then on


def test_detect_every_and_max_faces_drive_the_detector():
    tracker = Tracker(max_faces=2, detect_every=5, one_euro=OneEuroSettings(enabled=False))
    faces = {0: (face_points((200, 180), 1.0), unit(0))}
    runs = [step(tracker, i, faces)[0] for i in range(6)]
    assert all(runs)  # one face tracked, max_faces=2: the detector looks for a second one on every frame
    faces[1] = (face_points((450, 180), 1.0), unit(1))
    runs = [step(tracker, i, faces)[0] for i in range(6, 20)]
    assert runs[0] and runs[1:5] == [False] * 4 and runs[5]  # both tracked: then only every 5th frame


def test_face_leaving_the_frame_ends_its_track_within_one_frame():
    tracker = Tracker(max_faces=1, one_euro=OneEuroSettings(enabled=False))
    a = unit(0)
    ended_at = None
    for i in range(40):
        x = 400 + 12 * i
        faces = {0: (face_points((x, 180), 1.0), a)}
        _, alive = step(tracker, i, faces)
        if not alive and ended_at is None:
            ended_at = i
            inside = np.mean(faces[0][0][:, 0] < W)  # fraction of the true landmarks still in the frame
            break
    assert ended_at is not None
    assert inside < 0.6  # ended as about half of the face (and its crop) crossed the frame border, not later


def test_occluded_face_takes_its_id_back_and_another_face_does_not():
    tracker = Tracker(max_faces=2, reid_frames=30, one_euro=OneEuroSettings(enabled=False))
    a, b, c = unit(0), unit(1), unit(2)
    left, right = face_points((150, 180), 1.0), face_points((450, 180), 1.0)
    for i in range(5):
        _, alive = step(tracker, i, {0: (left, a), 1: (right, b)})
    ids = {k: alive[k].id for k in alive}
    assert len(ids) == 2
    # face b's crop now shows someone else (c): its track ends on the embedding check...
    _, alive = step(tracker, 5, {0: (left, a), 1: (right, c)})
    assert len(alive) == 1
    # ...c is detected as a new face with a new id...
    _, alive = step(tracker, 6, {0: (left, a), 1: (right, c)})
    assert len(set(alive) - set(ids.values())) == 1
    # ...and when b is back in that place, c's track ends and b takes its old id back
    for i in range(7, 10):
        _, alive = step(tracker, i, {0: (left, a), 1: (right, b)})
    assert set(alive) == set(ids.values())


def test_face_passing_behind_another_keeps_its_id_and_a_duplicate_ends_for_good():
    tracker = Tracker(max_faces=2, reid_frames=30, one_euro=OneEuroSettings(enabled=False))
    a, b = unit(0), unit(1)
    front = face_points((150, 180), 1.0)
    for i in range(3):
        _, alive = step(tracker, i, {0: (front, a), 1: (face_points((450, 180), 1.0), b)})
    ids = {k: alive[k].id for k in alive}
    # b passes behind a: their crops overlap (IoU > 0.5) and one of the two tracks is dropped...
    for i, x in enumerate((300, 200, 165, 165), start=3):
        _, alive = step(tracker, i, {0: (front, a), 1: (face_points((x, 180), 1.0), b)})
    assert ids[0] in alive
    # ...but b is another person, hidden and not gone: when it comes out again it takes its own id back
    for i, x in enumerate((230, 300, 380), start=7):
        _, alive = step(tracker, i, {0: (front, a), 1: (face_points((x, 180), 1.0), b)})
    assert set(alive) == set(ids.values())
    # two tracks of one person on one face: the younger is a duplicate and cannot take an id back later
    tracker = Tracker(max_faces=2, reid_frames=30, one_euro=OneEuroSettings(enabled=False))
    step(tracker, 0, {0: (front, a)})
    _, alive = step(tracker, 1, {0: (front, a), 1: (face_points((165, 180), 1.0), a)})
    assert len(alive) == 1 and not tracker.ended


def test_detection_mode_runs_the_detector_every_frame_and_ends_undetected_faces():
    tracker = Tracker(mode="detection", max_faces=4, one_euro=OneEuroSettings(enabled=False))
    faces = {0: (face_points((200, 180), 1.0), unit(0))}
    for i in range(3):
        ran, alive = step(tracker, i, faces)
        assert ran and list(alive) == [0]
    ran, alive = step(tracker, 3, faces, detectable=set())
    assert ran and not alive


def test_one_euro_smooths_jitter_and_follows_motion():
    rng = np.random.default_rng(0)
    f = OneEuroFilter(min_cutoff=1.0, beta=10.0)
    still = np.array([[100.0, 100.0]], np.float32)
    raw, smooth = [], []
    for i in range(60):
        x = still + rng.normal(0, 1.0, size=(1, 2)).astype(np.float32)
        raw.append(x)
        smooth.append(f(x, i / 30, scale=100.0))
    assert np.std(np.array(smooth[10:])) < 0.5 * np.std(np.array(raw[10:]))
    f.reset()
    lag = []
    for i in range(60):  # a face moving 3 face widths per second: the filter must not trail far behind
        x = np.array([[100.0 + 10 * i, 100.0]], np.float32)
        lag.append(float(x[0, 0] - f(x, i / 30, scale=100.0)[0, 0]))
    assert abs(lag[-1]) < 10.0  # under one frame of motion
    with pytest.raises(ValueError, match="min_cutoff"):
        OneEuroFilter(min_cutoff=0)


def test_ema():
    e = Ema(0.5)
    e(np.array([1.0]))
    np.testing.assert_allclose(e(np.array([0.0])), [0.5])
