"""The pipeline end to end on the scripted synthetic clip (ground truth) and on a clip made from a real photo."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from facetx.pipeline import FacePipeline
from facetx.pipeline.contracts import Frame
from facetx.pipeline.scoring import score_clip

# Measured with tests/pipeline/data/student.int8.onnx on the default scripted clip (AMD EPYC, AVX2; the README's
# pipeline section): recall 0.850, NME 0.188, identity named right 0.38 of matched live faces at the calibrated
# threshold (0.821 at FAR=1e-3: the rest stay "unknown"), never a wrong name, nearest gallery name right 1.00, 12 false
# faces in 199 matched. The bounds leave room for ISA-dependent INT8 rounding, not for a regression.
MIN_RECALL = 0.80
MAX_LANDMARK_NME = 0.21
MIN_IDENTITY_TOP1 = 0.30


def run_clip(pipe: FacePipeline, clip) -> list:
    pipe.reset()
    return [pipe.process(Frame(image, i, i / clip.fps)) for i, image in enumerate(clip.frames)]


@pytest.fixture(scope="module")
def tracked(student: Path, clip, clip_gallery: Path):
    pipe = FacePipeline.from_config([f"model={student}", "gallery=numpy", f"gallery.path={clip_gallery}"])
    return pipe, run_clip(pipe, clip)


def test_scripted_clip_tracks_identifies_and_ends_tracks(tracked, clip):
    pipe, results = tracked
    live = {f.name for t in clip.truth for f in t.faces if not f.spoof}
    score = score_clip(results, clip.truth, enrolled=live, gallery=pipe.gallery)
    report = score.as_dict()
    assert score.recall >= MIN_RECALL, report
    assert score.id_switches == 0, report
    assert all(n == 1 for n in score.tracks_per_actor.values()), report  # one id per actor for the whole clip
    assert score.landmark_nme <= MAX_LANDMARK_NME, report
    assert score.identity_top1 >= MIN_IDENTITY_TOP1, report
    assert score.identity_precision >= 0.98, report  # the calibrated threshold names nobody wrongly
    assert score.identity_top1_closed >= 0.95, report
    leaver = clip.actor("leaver").actor_id
    assert score.end_delay[leaver] <= 1, report  # its track ends within one frame of the face leaving
    assert score.false_faces <= 0.08 * score.matched, report
    # the detector ran only when needed (max_faces=4: while fewer are tracked it looks on every frame, as MediaPipe)
    assert sum(r.detected for r in results) <= 0.95 * len(results)


@pytest.mark.xfail(
    strict=True,
    reason="the test student's spoof head (model/heads=texture_spoof) is weak on the clip's only cue, moire: held-out "
    "AUC 0.78 on moire alone, 99 % of those attacks pass at 0.5; the clip's print scores 0.88 live in the 2 frames "
    "it is matched vs 0.81-0.92 for the live faces (MediaPipe's own FaceDetection, like ours, finds the print only in "
    "the last 3 frames, 72-74, once it is wholly inside the frame); strict, so a better student flags it",
)
def test_spoof_face_scores_below_every_live_face(tracked, clip):
    from facetx.data.synthetic.video import match_detections

    _, results = tracked
    per_actor: dict[tuple[int, bool], list[float]] = {}
    for r, t in zip(results, clip.truth, strict=True):
        boxes = np.array([f.box for f in r.faces]).reshape(-1, 4)
        eyes = np.array([f.keypoints[:2] for f in r.faces]).reshape(-1, 2, 2)
        for tf, j in zip(t.faces, match_detections(t.faces, boxes, eyes), strict=True):
            if j >= 0 and tf.visible >= 0.6:
                per_actor.setdefault((tf.actor_id, tf.spoof), []).append(float(r.faces[j].live_score))
    spoof = [np.mean(v) for (_, is_spoof), v in per_actor.items() if is_spoof]
    live = [np.mean(v) for (_, is_spoof), v in per_actor.items() if not is_spoof]
    assert spoof and live
    assert max(spoof) < 0.5 <= min(live), per_actor


def test_one_euro_filter_reduces_landmark_jitter(student: Path, clip):
    """One Euro on vs off, measured: the smoothed landmarks move less from frame to frame on the still-ish mover."""
    jitter = {}
    for enabled in (True, False):
        pipe = FacePipeline.from_config([f"model={student}", f"tracker.one_euro.enabled={str(enabled).lower()}"])
        results = run_clip(pipe, clip)
        mover = clip.actor("mover").actor_id
        lm = []
        for r, t in zip(results, clip.truth, strict=True):
            truth = t.face(mover)
            faces = [f for f in r.faces if truth is not None and f.landmarks is not None]
            near = [f for f in faces if np.abs(f.landmarks.mean(0) - truth.landmarks.mean(0)).max() < 30]
            if near:
                lm.append(near[0].landmarks - truth.landmarks)  # error, so the face's own motion cancels out
        err = np.stack(lm)
        jitter[enabled] = float(np.linalg.norm(np.diff(err, axis=0), axis=-1).mean())
    assert jitter[True] < jitter[False], jitter


def test_astronaut_clip_one_track_following_the_face(student: Path):
    from skimage import data

    from facetx.data.synthetic.video import photo_clip
    from facetx.detect import FaceDetector

    # the face and shoulders (in the whole photo the face is too small for the short-range detector once the photo
    # is fitted to a 640x360 frame)
    photo = np.ascontiguousarray(data.astronaut()[0:300, 75:375])
    face = FaceDetector("short").detect(photo)[0]
    clip = photo_clip(photo, frames=40, seed=0)
    pipe = FacePipeline.from_config([f"model={student}", "tracker.max_faces=1"])
    ids, errors = set(), []
    for i, image in enumerate(clip.frames):
        faces = pipe.get(image, timestamp=i / clip.fps)
        assert len(faces) == 1, i
        ids.add(faces[0].track_id)
        eyes = clip.to_frame(face.keypoints[:2], i)
        iod = float(np.linalg.norm(eyes[1] - eyes[0]))
        errors.append(float(np.linalg.norm(faces[0].keypoints[:2] - eyes, axis=1).max()) / iod)
    assert ids == {0}
    assert np.median(errors) < 0.25, errors


def test_cli_writes_video_jsonl_and_summary(student: Path, clip, clip_gallery: Path, tmp_path: Path, run_script):
    from facetx.data.synthetic.video import write_video

    video = write_video(clip, tmp_path / "clip.mp4")
    out = tmp_path / "run"
    proc = run_script("facetx.pipeline", f"source={video}", f"model={student}", "gallery=numpy",
                      f"gallery.path={clip_gallery}", f"hydra.run.dir={out}", "output.progress=false")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = (out / "faces.jsonl").read_text().splitlines()
    assert len(lines) == len(clip.frames)
    names = {f.name for t in clip.truth for f in t.faces}
    for i, line in enumerate(lines):
        rec = json.loads(line)
        assert rec["frame"] == i and isinstance(rec["timestamp"], float) and isinstance(rec["detector_ran"], bool)
        for face in rec["faces"]:
            assert set(face) == {"track_id", "box", "score", "keypoints", "landmarks", "identity", "similarity",
                                 "expression", "expression_probs", "live_score", "roi"}  # fmt: skip
            assert len(face["box"]) == 4 and len(face["keypoints"]) == 6 and len(face["landmarks"]) == 68
            assert face["identity"] == "unknown" or face["identity"] in names
            assert face["expression"] in face["expression_probs"]
            assert abs(sum(face["expression_probs"].values()) - 1) < 0.01 and 0 <= face["live_score"] <= 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == len(clip.frames) and summary["faces"] > 0
    assert set(summary["stages"]) == {"decode", "detect", "align", "infer", "track", "draw", "write"}
    assert summary["fps_end_to_end"] > 0
    cap = cv2.VideoCapture(str(out / "annotated.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == len(clip.frames)
    cap.release()
