"""Score a pipeline run against a scripted clip's ground truth (:mod:`facetx.data.synthetic.video`): detection recall,
id switches, landmark error in frame pixels, identity top-1, liveness, and how fast a track ends after its face left.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from facetx.data.synthetic.video import FrameTruth, match_detections
from facetx.pipeline.contracts import FrameResult


@dataclass
class ClipScore:
    """``recall``: matched / truth faces at least ``min_visible`` visible; ``id_switches``: changes of the track id
    matched to one actor between the frames it is matched in (re-appearing after an occlusion with another id counts);
    ``tracks_per_actor``: distinct ids each actor got; ``landmark_px``: median per-face mean landmark error in frame
    pixels, ``landmark_nme``: the same over the inter-ocular distance; ``identity_top1``: matched live faces named as
    their actor (enrolled actors only); ``live_accuracy``: matched faces whose live score is on the right side of 0.5;
    ``end_delay``: per actor that left the frame, the frames after it was gone (under ``gone_below`` of its landmarks
    in the frame) in which its last track was still reported (0: the track ended by then); ``false_faces``: reported
    faces matching no truth face."""

    frames: int = 0
    truth_faces: int = 0
    matched: int = 0
    id_switches: int = 0
    tracks_per_actor: dict[int, int] = field(default_factory=dict)
    landmark_px: float = float("nan")
    landmark_nme: float = float("nan")
    identity_top1: float = float("nan")
    identity_precision: float = float("nan")
    identity_top1_closed: float = float("nan")
    live_accuracy: float = float("nan")
    spoof_live_score: float = float("nan")
    end_delay: dict[int, int] = field(default_factory=dict)
    false_faces: int = 0

    @property
    def recall(self) -> float:
        return self.matched / self.truth_faces if self.truth_faces else float("nan")

    def as_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items()}
        d["recall"] = self.recall
        return d


def score_clip(
    results: Sequence[FrameResult],
    truth: Sequence[FrameTruth],
    enrolled: set[str] | None = None,
    min_visible: float = 0.6,
    gone_below: float = 0.05,
    gallery: object | None = None,
) -> ClipScore:
    """Match each frame's faces to the truth (box IoU >= 0.5 or both eyes on the face) and score the run."""
    s = ClipScore(frames=len(results))
    last_id: dict[int, int] = {}
    ids: dict[int, set[int]] = {}
    errors_px, errors_nme, names, live_ok, spoof_scores = [], [], [], [], []
    named, closed = [], []
    lingering: dict[int, int] = {}
    left_at: dict[int, int] = {}
    seen_in: set[int] = set()
    for result, frame_truth in zip(results, truth, strict=True):
        visible = [f for f in frame_truth.faces if f.visible >= min_visible]
        for f in frame_truth.faces:
            if f.in_frame >= min_visible:
                seen_in.add(f.actor_id)
        gone = set()
        for actor in seen_in:
            t = frame_truth.face(actor)
            if t is None or t.in_frame < gone_below:
                gone.add(actor)
                left_at.setdefault(actor, result.index)
        faces = result.faces
        present = {f.track_id for f in faces}
        for actor in gone:  # the actor's last track still reported while its face is out of the frame
            if actor in last_id and last_id[actor] in present:
                lingering[actor] = lingering.get(actor, 0) + 1
        boxes = np.array([f.box for f in faces], np.float64).reshape(-1, 4)
        eyes = np.array([f.keypoints[:2] for f in faces], np.float64).reshape(-1, 2, 2)
        # match against every truth face (occluded ones too), so a face on a hidden actor is not a false face
        match = match_detections(frame_truth.faces, boxes, eyes)
        used = {j for j in match if j >= 0}
        s.false_faces += len(faces) - len(used)
        s.truth_faces += len(visible)
        for t, j in zip(frame_truth.faces, match, strict=True):
            if j < 0:
                continue
            face = faces[j]
            if t.visible < min_visible:
                continue
            s.matched += 1
            if t.actor_id in last_id and last_id[t.actor_id] != face.track_id:
                s.id_switches += 1
            last_id[t.actor_id] = face.track_id
            ids.setdefault(t.actor_id, set()).add(face.track_id)
            if face.landmarks is not None and len(face.landmarks) == len(t.landmarks):
                err = float(np.linalg.norm(face.landmarks - t.landmarks, axis=1).mean())
                errors_px.append(err)
                errors_nme.append(err / max(float(np.linalg.norm(t.points5[1] - t.points5[0])), 1e-6))
            if face.identity is not None:
                named.append(face.identity == t.name)
            if not t.spoof and (enrolled is None or t.name in enrolled):
                names.append(face.identity == t.name)
                if gallery is not None and face.embedding is not None:
                    closed.append(gallery.match(face.embedding[None], -1.0)[0][0] == t.name)
            if face.live_score is not None:
                live_ok.append((face.live_score >= 0.5) != t.spoof)
                if t.spoof:
                    spoof_scores.append(face.live_score)
    s.tracks_per_actor = {a: len(v) for a, v in sorted(ids.items())}
    s.landmark_px = float(np.median(errors_px)) if errors_px else float("nan")
    s.landmark_nme = float(np.median(errors_nme)) if errors_nme else float("nan")
    s.identity_top1 = float(np.mean(names)) if names else float("nan")
    s.identity_precision = float(np.mean(named)) if named else float("nan")
    s.identity_top1_closed = float(np.mean(closed)) if closed else float("nan")
    s.live_accuracy = float(np.mean(live_ok)) if live_ok else float("nan")
    s.spoof_live_score = float(np.mean(spoof_scores)) if spoof_scores else float("nan")
    s.end_delay = {a: lingering.get(a, 0) for a in left_at if a in last_id}
    return s
