"""``FacePipeline``: frame -> (detector when needed) -> ROIs -> aligned crops -> student (one batch) -> tracks.

The Python API, in the spirit of insightface's ``FaceAnalysis.get()``::

    pipe = FacePipeline.from_config(["model=out/model.int8.onnx"])
    faces = pipe.get(rgb_frame)                 # list[FaceResult]; tracks persist across calls (video)
    for result in pipe.iterate("clip.mp4"):     # FrameResult per frame, decoded in a background thread
        ...
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import cv2
import numpy as np

from facetx.errors import ConfigError
from facetx.pipeline.contracts import FaceResult, Frame, FrameResult, Roi
from facetx.pipeline.model import FaceModel
from facetx.pipeline.source import FrameSource
from facetx.pipeline.tracker import Track, Tracker

if TYPE_CHECKING:
    from facetx.detect.detector import Face


class Detector(Protocol):
    def detect(self, image: np.ndarray) -> list[Face]: ...


class Matcher(Protocol):
    fingerprint: str

    def match(self, queries: np.ndarray, threshold: float) -> list[tuple[str | None, float]]: ...


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1e3


class FacePipeline:
    """Detect, align, run the student and track faces over a frame sequence.

    Args:
        detector: BlazeFace (:class:`facetx.detect.FaceDetector`).
        model: the exported student (:class:`facetx.pipeline.model.FaceModel`).
        tracker: when the detector runs and where crops come from (:class:`facetx.pipeline.tracker.Tracker`).
        gallery: identities to match (:class:`facetx.pipeline.gallery.Gallery`); None: identity stays unknown.
        threshold: cosine similarity for a gallery match (None: the model's calibrated threshold from its metadata).
    """

    def __init__(
        self,
        detector: Detector,
        model: FaceModel,
        tracker: Tracker,
        gallery: Matcher | None = None,
        threshold: float | None = None,
    ) -> None:
        self.detector, self.model, self.tracker, self.gallery = detector, model, tracker, gallery
        info = model.info
        if threshold is None and info.threshold is None:
            # exports before the calibration stage: matching and the tracker's consistency check need a threshold
            raise ConfigError(
                f"threshold: {info.path} has no calibrated recognition.threshold in its metadata (an older export): "
                "re-export it, or pass threshold=0.5 (cosine similarity)"
            )
        self.threshold = float(threshold if threshold is not None else info.threshold)
        if gallery is not None:
            from facetx.pipeline.gallery import check_gallery_model

            check_gallery_model(gallery, info.fingerprint, str(info.path))
        tracker.set_template(tracker.template if tracker.template is not None else info.template, info.input_size)
        s = info.input_size
        self._crops = np.zeros((tracker.max_faces, s, s, 3), dtype=np.uint8)
        self._frame_index = 0

    @classmethod
    def from_config(cls, overrides: Sequence[str] = (), config_dir: str | Path | None = None) -> FacePipeline:
        """Build from ``conf/pipeline/pipeline.yaml`` composed with Hydra ``overrides`` (``["model=...", ...]``)."""
        from facetx.pipeline.config import build_pipeline, compose_pipeline_config

        return build_pipeline(compose_pipeline_config(list(overrides), config_dir))

    # -- one frame -------------------------------------------------------------------------------------------------

    def _align(self, image: np.ndarray, rois: list[Roi]) -> np.ndarray:
        s = self.model.input_size
        if len(rois) > len(self._crops):
            self._crops = np.zeros((len(rois), s, s, 3), dtype=np.uint8)
        for k, roi in enumerate(rois):
            cv2.warpAffine(image, roi.matrix, (s, s), dst=self._crops[k], flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT)  # fmt: skip
        return self._crops[: len(rois)]

    def _result(self, track: Track, roi_used: Roi) -> FaceResult:
        info = self.model.info
        expression, probs = None, {}
        if track.expression.value is not None and info.expression_classes:
            p = track.expression.value
            probs = dict(zip(info.expression_classes, (float(v) for v in p), strict=False))
            expression = info.expression_classes[int(np.argmax(p))]
        return FaceResult(
            track_id=track.id,
            box=track.box(track.roi),
            score=track.score,
            keypoints=track.keypoints(track.roi),
            landmarks=track.landmarks,
            embedding=track.reference,
            expression=expression,
            expression_probs=probs,
            live_score=None if track.live.value is None else float(track.live.value[0]),
            roi_origin=roi_used.origin,
        )

    def _identify(self, faces: list[FaceResult]) -> None:
        if self.gallery is None:
            return
        queries = [f.embedding for f in faces if f.embedding is not None]
        if not queries:
            return
        matches = iter(self.gallery.match(np.stack(queries), self.threshold))
        for f in faces:
            if f.embedding is not None:
                f.identity, f.similarity = next(matches)

    def process(self, frame: Frame) -> FrameResult:
        """Run one frame; tracks carry over to the next call."""
        times = {"decode": frame.decode_ms}
        image = frame.image
        if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3):
            got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
            raise ValueError(f"frame {frame.index}: expected a uint8 RGB array [H, W, 3], got {got}")
        detected = self.tracker.needs_detection(frame.index)
        times.update(detect=0.0, align=0.0, infer=0.0, track=0.0)
        if detected:
            rois = self._detect(image, frame.index, times)
        else:
            rois = self.tracker.rois()
        alive = self._run(image, rois, frame, times)
        if not detected and self.tracker.lost:
            # a tracked crop lost its face in this frame: look again now rather than report no face until the next
            # frame (the face often only moved more than its landmarks followed); the re-found face keeps its id
            done = frozenset(t.id for t, _ in alive)
            detected = True
            alive += self._run(image, self._detect(image, frame.index, times, done), frame, times)
        t0 = time.perf_counter()
        faces = [self._result(track, roi) for track, roi in alive]
        self._identify(faces)
        times["track"] += _ms(t0)
        return FrameResult(frame.index, frame.timestamp, faces, times, detected)

    def _detect(
        self, image: np.ndarray, index: int, times: dict[str, float], done: frozenset[int] = frozenset()
    ) -> list[Roi]:
        t0 = time.perf_counter()
        rois = self.tracker.assign(self.detector.detect(image), index, done)
        times["detect"] += _ms(t0)
        return rois

    def _run(self, image: np.ndarray, rois: list[Roi], frame: Frame, times: dict[str, float]) -> list:
        """Align ``rois``, run the student on them as one batch, hand the outputs to the tracker."""
        t0 = time.perf_counter()
        crops = self._align(image, rois)
        times["align"] += _ms(t0)
        t0 = time.perf_counter()
        out = self.model(crops)
        times["infer"] += _ms(t0)
        t0 = time.perf_counter()
        alive = self.tracker.update(rois, out, frame.index, frame.timestamp, frame.image.shape, self.threshold)
        times["track"] += _ms(t0)
        return alive

    def get(self, image: np.ndarray, timestamp: float | None = None) -> list[FaceResult]:
        """Faces in one uint8 RGB frame ``[H, W, 3]``; consecutive calls are treated as consecutive video frames
        (call :meth:`reset` between unrelated photos: tracks, and the embeddings averaged over them, carry over)."""
        index = self._frame_index
        self._frame_index += 1
        stamp = float(index) / 30.0 if timestamp is None else float(timestamp)
        return self.process(Frame(image, index, stamp)).faces

    def reset(self) -> None:
        """Forget all tracks."""
        self.tracker.reset()
        self._frame_index = 0

    def iterate(self, source: str | int | FrameSource, max_frames: int | None = None) -> Iterator[FrameResult]:
        """:class:`FrameResult` per frame of ``source`` (a path, camera index, URL or an open :class:`FrameSource`)."""
        frames = source if isinstance(source, FrameSource) else FrameSource(source, max_frames=max_frames)
        self.reset()
        for frame in frames:
            yield self.process(frame)
