"""Face tracks, MediaPipe-style: a detection starts a track, then each frame's crop comes from the previous frame's
landmarks (a similarity transform of the predicted landmarks onto the landmark template), so the detector runs only
when it has to: fewer than ``max_faces`` tracked, every ``detect_every`` frames, or after a track was lost.

A track ends (within the frame it happens) when its crop leaves the frame (``min_inside``) or when a crop that came
from landmarks no longer shows the track's face: the cosine similarity of its embedding to the mean embedding of the
track's detector-framed crops falls below ``min_consistency``. The embedding is computed for every crop anyway, so
this face/no-face signal is free, and it also catches a crop that slid onto another face when two faces cross. A
track that ended inside the frame (or was dropped for another person's face hiding it) is kept ``reid_frames``
frames: a new detection nearby whose embedding matches it takes its id back (a face that was occluded keeps its id).
Association of detections to tracks is greedy by IoU.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from facetx.detect.align import ARCFACE_TEMPLATE, similarity_transform, transform_points
from facetx.detect.anchors import iou
from facetx.detect.detector import Face
from facetx.pipeline.contracts import HeadOutputs, Roi
from facetx.pipeline.smoothing import Ema, OneEuroFilter

MODES = ("landmarks", "detection")
#: 68-point (iBUG) indices giving the five ArcFace points: eye contours (mean), nose tip, mouth corners
_IBUG_FIVE = ((36, 37, 38, 39, 40, 41), (42, 43, 44, 45, 46, 47), (30,), (48,), (54,))


def five_from_ibug68(landmarks: np.ndarray) -> np.ndarray:
    """The five ArcFace points ``[5, 2]`` of 68 iBUG landmarks ``[68, 2]`` (image-left eye first)."""
    return np.stack([landmarks[list(g)].mean(0) for g in _IBUG_FIVE]).astype(np.float32)


def five_point_template(template: np.ndarray | None, crop_size: int) -> np.ndarray:
    """Where a model's crops put the five alignment points ``[5, 2]`` (crop pixels): from its 68-point landmark
    template when it has one, else the ArcFace template. A student trained on our synthetic crops sees faces about
    1.2x smaller than the ArcFace template frames them (eye distance 28.9 px against 35.2), so aligning detections to
    the ArcFace template would feed it faces larger than any it was trained on."""
    if template is not None and len(template) == 68:
        return five_from_ibug68(template)
    return (ARCFACE_TEMPLATE * (crop_size / 112.0)).astype(np.float32)


def detection_alignment(keypoints: np.ndarray, five: np.ndarray) -> np.ndarray:
    """Similarity ``[2, 3]`` fitting BlazeFace's eyes, nose tip and mouth center (``keypoints [6, 2]``) onto the
    template's eyes, nose and mouth-corner midpoint (``five [5, 2]``), as :func:`facetx.detect.alignment_matrix`
    does for the ArcFace template."""
    dst = np.concatenate([five[:3], five[3:].mean(0, keepdims=True)])
    return similarity_transform(np.asarray(keypoints, np.float32)[:4], dst)


@dataclass(frozen=True)
class OneEuroSettings:
    """Landmark smoothing: ``enabled`` and the filter's parameters (see :class:`OneEuroFilter`)."""

    enabled: bool = True
    min_cutoff: float = 1.0
    beta: float = 10.0
    d_cutoff: float = 1.0


@dataclass
class Track:
    """One face over frames. ``roi``: frame -> crop similarity fitted to the latest landmarks (the next frame's crop).
    ``box_crop [4, 2]`` (corners) and ``keypoints_crop [6, 2]``: the last detection in those face-relative crop
    coordinates, so between detections they move with the face. ``detected_now``: a detection refreshed them in
    this frame (still in the coordinates of the crop it ran on)."""

    id: int
    roi: np.ndarray
    origin: str
    score: float
    box_crop: np.ndarray
    keypoints_crop: np.ndarray
    born: int
    filter: OneEuroFilter | None
    embedding: Ema
    expression: Ema
    live: Ema
    frames: int = 0
    landmarks: np.ndarray | None = None
    reference: np.ndarray | None = None
    anchor: np.ndarray | None = None
    template: np.ndarray | None = None
    last_box: np.ndarray | None = None
    ended_at: int | None = None
    detected_now: bool = True

    def box(self, roi: np.ndarray) -> np.ndarray:
        """The detection box carried into frame pixels through ``roi``: ``[4]`` (x1, y1, x2, y2)."""
        corners = transform_points(self.box_crop, cv2.invertAffineTransform(roi))
        return np.concatenate([corners.min(0), corners.max(0)]).astype(np.float32)

    def keypoints(self, roi: np.ndarray) -> np.ndarray:
        return transform_points(self.keypoints_crop, cv2.invertAffineTransform(roi))


def _corners(box: np.ndarray) -> np.ndarray:
    x1, y1, x2, y2 = (float(v) for v in box)
    return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], dtype=np.float32)


class Tracker:
    """Tracks faces across frames and decides when the detector runs.

    Args:
        mode: ``"landmarks"`` (crops from the previous landmarks; detector only when needed) or ``"detection"``
            (detector on every frame, crops from each detection, tracks by IoU).
        max_faces: at most this many tracks; below it the detector runs every frame (as MediaPipe's FaceMesh).
        detect_every: also run the detector every N frames to pick up new faces and re-anchor (0: never forced).
        iou_threshold: a detection continues a track when their boxes overlap by more than this.
        min_inside: a track ends when less than this fraction of its crop lies inside the frame.
        min_consistency: a track ends when a crop from landmarks has a lower cosine similarity to the mean embedding
            of the track's detector-framed crops (None: the model's calibrated verification threshold).
        reid_frames: how long an ended track (inside the frame) can be taken back by a matching detection.
        reid_margin, reid_radius: a new face takes an ended track's id back when its embedding is within
            ``reid_margin`` below the consistency threshold of that track's and it appears within ``reid_radius``
            face widths of where that track ended (the place gates what the looser appearance bar lets through).
        crop_size: the student's input size; ``template``: its landmark template ``[K, 2]`` in crop pixels (None:
            the five ArcFace points derived from 68 iBUG landmarks).
        one_euro: landmark smoothing; ``attribute_momentum``: EMA of embedding, expression and live score.
    """

    def __init__(
        self,
        mode: str = "landmarks",
        max_faces: int = 4,
        detect_every: int = 0,
        iou_threshold: float = 0.3,
        min_inside: float = 0.5,
        min_consistency: float | None = None,
        reid_frames: int = 30,
        reid_margin: float = 0.1,
        reid_radius: float = 2.0,
        one_euro: OneEuroSettings | None = None,
        attribute_momentum: float = 0.7,
        crop_size: int = 112,
        template: np.ndarray | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"tracker.mode must be one of {MODES}, got {mode!r}")
        if max_faces < 1 or detect_every < 0:
            raise ValueError(f"tracker: need max_faces >= 1 and detect_every >= 0, got {max_faces}, {detect_every}")
        self.mode, self.max_faces, self.detect_every = mode, int(max_faces), int(detect_every)
        self.iou_threshold, self.min_inside = float(iou_threshold), float(min_inside)
        self.min_consistency = min_consistency
        self.reid_frames = int(reid_frames)
        self.reid_margin, self.reid_radius = float(reid_margin), float(reid_radius)
        self.one_euro = one_euro if one_euro is not None else OneEuroSettings()
        self.attribute_momentum = float(attribute_momentum)
        # build one of each now: a bad setting is a config error at start, not mid-video
        OneEuroFilter(self.one_euro.min_cutoff, self.one_euro.beta, self.one_euro.d_cutoff)
        Ema(self.attribute_momentum)
        self.set_template(template, crop_size)
        self.tracks: list[Track] = []
        self.ended: list[Track] = []
        self._next_id = 0
        self._last_detection = -(10**9)
        self._lost = False

    def set_template(self, template: np.ndarray | None, crop_size: int) -> None:
        """The student's landmark template ``[K, 2]`` (crop pixels) and input size: where crops put the face."""
        self.crop_size = int(crop_size)
        self.template = None if template is None else np.asarray(template, np.float32)
        self.five = five_point_template(self.template, self.crop_size)

    # -- planning --------------------------------------------------------------------------------------------------

    def needs_detection(self, frame_index: int) -> bool:
        """Whether the detector must run on this frame."""
        if self.mode == "detection" or self._lost or len(self.tracks) < self.max_faces:
            return True
        return self.detect_every > 0 and frame_index - self._last_detection >= self.detect_every

    @property
    def lost(self) -> bool:
        """A track ended since the detector last ran."""
        return self._lost

    def rois(self) -> list[Roi]:
        """This frame's crops when the detector did not run: each track's ROI from its last landmarks."""
        return [Roi(t.roi, t.origin, t.id) for t in self.tracks]

    # -- detections ------------------------------------------------------------------------------------------------

    def _new_track(self, face: Face, frame_index: int) -> Track:
        m = detection_alignment(face.keypoints, self.five)
        f = self.one_euro
        track = Track(
            id=self._next_id,
            roi=m,
            origin="detection",
            score=float(face.score),
            box_crop=transform_points(_corners(face.box), m),
            keypoints_crop=transform_points(face.keypoints, m),
            born=frame_index,
            filter=OneEuroFilter(f.min_cutoff, f.beta, f.d_cutoff) if f.enabled else None,
            embedding=Ema(self.attribute_momentum),
            expression=Ema(self.attribute_momentum),
            live=Ema(self.attribute_momentum),
        )
        self._next_id += 1
        return track

    def _refresh(self, track: Track, face: Face) -> None:
        """A detection matched ``track``: take its score, box, keypoints and its crop (re-anchoring a crop that came
        from landmarks: with our students the detector's keypoints frame the face better than the student's own
        landmarks do, measured on the scripted clip)."""
        track.roi = detection_alignment(face.keypoints, self.five)
        track.origin = "detection"
        track.score = float(face.score)
        track.box_crop = transform_points(_corners(face.box), track.roi)
        track.keypoints_crop = transform_points(face.keypoints, track.roi)
        track.detected_now = True

    def assign(self, faces: list[Face], frame_index: int, done: frozenset[int] = frozenset()) -> list[Roi]:
        """Merge this frame's detections into the tracks; returns the crops to run (one per track). Tracks in
        ``done`` (already run on this frame) still take their detection, so it starts no new track, but keep their
        crop for the next frame."""
        self._last_detection = frame_index
        self._lost = False
        boxes = np.array([t.box(t.roi) for t in self.tracks], dtype=np.float32).reshape(-1, 4)
        unmatched = set(range(len(self.tracks)))
        fresh: list[Face] = []
        for face in sorted(faces, key=lambda f: -f.score):
            overlaps = iou(face.box, boxes) if len(boxes) else np.zeros(0)
            candidates = [(overlaps[i], i) for i in unmatched if overlaps[i] > self.iou_threshold]
            if candidates:
                _, i = max(candidates)
                unmatched.discard(i)
                if self.tracks[i].id not in done:
                    self._refresh(self.tracks[i], face)
            else:
                fresh.append(face)
        if self.mode == "detection":  # no detection, no face: the crop would come from nowhere
            for i in sorted((i for i in unmatched if self.tracks[i].id not in done), reverse=True):
                self._end(self.tracks.pop(i), frame_index, inside=True)
        room = self.max_faces - len(self.tracks)
        for face in fresh[: max(room, 0)]:
            self.tracks.append(self._new_track(face, frame_index))
        return [r for r in self.rois() if r.track_id not in done]

    # -- after the student ran -------------------------------------------------------------------------------------

    def _inside_fraction(self, roi: np.ndarray, frame_shape: tuple[int, ...]) -> float:
        s = self.crop_size
        g = (np.arange(8, dtype=np.float32) + 0.5) * (s / 8)
        grid = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
        pts = transform_points(grid, cv2.invertAffineTransform(roi))
        h, w = frame_shape[:2]
        inside = (pts[:, 0] >= 0) & (pts[:, 0] <= w - 1) & (pts[:, 1] >= 0) & (pts[:, 1] <= h - 1)
        return float(inside.mean())

    def _next_roi(self, landmarks_frame: np.ndarray, track: Track) -> np.ndarray:
        if track.template is not None:
            # the landmarks the student gave on this face's last detector-framed crop: its error on this face
            # (large on real faces for a synthetic-trained student) is the same in the next crop and cancels out,
            # so the crop stays framed as the detector framed it
            return similarity_transform(landmarks_frame, track.template)
        if self.template is not None and len(self.template) == len(landmarks_frame):
            return similarity_transform(landmarks_frame, self.template)
        if len(landmarks_frame) == 68:
            return similarity_transform(five_from_ibug68(landmarks_frame), self.five)
        raise ValueError(f"tracker: no landmark template for {len(landmarks_frame)} landmarks (export writes one)")

    def _end(self, track: Track, frame_index: int, inside: bool) -> None:
        track.ended_at = frame_index
        if inside and track.reference is not None:
            self.ended.append(track)
        self._lost = True

    def _reidentify(self, track: Track, embedding: np.ndarray, threshold: float, frame_index: int) -> None:
        """A new track whose face matches a recently ended one nearby takes that track's id (and its history)."""
        self.ended = [t for t in self.ended if frame_index - (t.ended_at or 0) <= self.reid_frames]
        live_ids = {t.id for t in self.tracks}
        box = track.box(track.roi)
        center = (box[:2] + box[2:]) / 2
        best, best_sim = None, threshold - self.reid_margin
        for old in self.ended:
            if old.reference is None or old.last_box is None or old.id in live_ids:
                continue
            width = float(old.last_box[2] - old.last_box[0])
            if np.linalg.norm((old.last_box[:2] + old.last_box[2:]) / 2 - center) > self.reid_radius * width:
                continue
            sim = float(old.reference @ embedding)
            if sim >= best_sim:
                best, best_sim = old, sim
        if best is not None:
            self.ended.remove(best)
            track.id, track.born = best.id, best.born
            track.embedding, track.expression, track.live = best.embedding, best.expression, best.live
            track.frames = best.frames

    def update(
        self, rois: list[Roi], out: HeadOutputs, frame_index: int, timestamp: float, frame_shape: tuple[int, ...],
        threshold: float,
    ) -> list[tuple[Track, Roi]]:  # fmt: skip
        """Take the student's outputs for ``rois`` (same order); returns ``(track, roi used)`` of the live tracks.

        ``threshold``: the consistency threshold when ``min_consistency`` is None (the model's calibrated one)."""
        by_id = {t.id: t for t in self.tracks}
        min_consistency = self.min_consistency if self.min_consistency is not None else threshold
        alive: list[tuple[Track, Roi]] = []
        agreement: dict[int, float] = {}  # track id -> cosine of its anchor to this frame's embedding
        for k, roi in enumerate(rois):
            track = by_id[roi.track_id]
            inside = self._inside_fraction(roi.matrix, frame_shape)
            emb = out.embedding[k] if out.embedding is not None else None
            if emb is not None and track.anchor is not None:
                agreement[track.id] = float(track.anchor @ emb)
            if emb is not None and track.frames == 0 and track.reference is None:
                self._reidentify(track, emb, min_consistency, frame_index)
            consistent = True
            if emb is not None and track.anchor is not None and roi.origin == "landmarks":
                # against the embedding of the crops the detector framed: a running average over tracked crops would
                # follow a crop that slowly slides off the face
                consistent = float(track.anchor @ emb) >= min_consistency
            if inside < self.min_inside or not consistent:
                self.tracks.remove(track)
                self._end(track, frame_index, inside=inside >= self.min_inside)
                continue
            self._observe(track, k, roi, out, frame_index, timestamp)
            alive.append((track, roi))
        self._drop_duplicates(alive, frame_index, agreement, min_consistency)
        return [(t, m) for t, m in alive if t in self.tracks]

    def _observe(self, track: Track, k: int, roi: Roi, out: HeadOutputs, frame_index: int, timestamp: float) -> None:
        inv = cv2.invertAffineTransform(roi.matrix)
        if out.embedding is not None:
            v = track.embedding(out.embedding[k])
            track.reference = v / max(float(np.linalg.norm(v)), 1e-12)
            if roi.origin == "detection":
                a = out.embedding[k] if track.anchor is None else track.anchor + out.embedding[k]
                track.anchor = a / max(float(np.linalg.norm(a)), 1e-12)
        if out.expression_probs is not None:
            track.expression(out.expression_probs[k])
        if out.live is not None:
            track.live(np.array([out.live[k]], dtype=np.float32))
        if out.landmarks is not None:
            raw = transform_points(out.landmarks[k], inv)
            if roi.origin == "detection":
                track.template = out.landmarks[k].copy()
            if self.mode == "landmarks":
                new_roi = self._next_roi(raw, track)
                if track.detected_now:
                    # re-express this frame's detection in the landmark-fitted crop: crop used -> frame -> new crop
                    a = new_roi[:, :2] @ inv[:, :2]
                    step = np.hstack([a, (new_roi[:, :2] @ inv[:, 2] + new_roi[:, 2])[:, None]]).astype(np.float32)
                    track.box_crop = transform_points(track.box_crop, step)
                    track.keypoints_crop = transform_points(track.keypoints_crop, step)
                track.roi, track.origin = new_roi, "landmarks"
            size = float(np.linalg.norm(raw.max(0) - raw.min(0)))
            track.landmarks = track.filter(raw, timestamp, size) if track.filter is not None else raw
        track.detected_now = False
        track.last_box = track.box(track.roi)
        track.frames += 1

    def _drop_duplicates(
        self, alive: list[tuple[Track, Roi]], frame_index: int, agreement: dict[int, float], min_consistency: float
    ) -> None:
        """Two tracks on one face (crops slid together, or one face passing behind another): the track whose own
        face this is (anchor nearest this frame's embedding) stays, the older one when that cannot be told. The other
        ends; when the two are different people (their anchors, or the dropped one's anchor and this face, below
        ``min_consistency``) its face is hidden, not gone, so it can take its id back (``reid_frames``); a duplicate of
        the same face cannot."""
        boxes = [(t, t.box(t.roi)) for t, _ in alive]
        for i, (a, ba) in enumerate(boxes):
            for b, bb in boxes[i + 1 :]:
                if a in self.tracks and b in self.tracks and iou(ba, bb[None])[0] > 0.5:
                    sa, sb = agreement.get(a.id), agreement.get(b.id)
                    if sa is not None and sb is not None and sa != sb:
                        drop = a if sa < sb else b
                    else:
                        drop = a if a.born > b.born else b
                    self.tracks.remove(drop)
                    keep = b if drop is a else a
                    both = drop.anchor is not None and keep.anchor is not None
                    other_person = both and float(keep.anchor @ drop.anchor) < min_consistency
                    hidden = other_person or agreement.get(drop.id, min_consistency) < min_consistency
                    self._end(drop, frame_index, inside=bool(hidden))

    def reset(self) -> None:
        """End every track (a new source)."""
        self.tracks.clear()
        self.ended.clear()
        self._lost = False
        self._last_detection = -(10**9)
