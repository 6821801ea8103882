"""What a pipeline run writes: an annotated video, one JSONL line per frame, a summary JSON with per-stage times."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from facetx.errors import ConfigError
from facetx.pipeline.contracts import STAGES, FrameResult

_COLORS = [(255, 99, 71), (60, 179, 113), (65, 105, 225), (255, 215, 0), (238, 130, 238), (0, 206, 209)]


def draw(image: np.ndarray, result: FrameResult, landmarks: bool = True) -> np.ndarray:
    """A copy of RGB ``image`` with each face's box, track id, landmarks, identity, expression and live score."""
    out = image.copy()
    for f in result.faces:
        color = _COLORS[f.track_id % len(_COLORS)]
        x1, y1, x2, y2 = (int(round(v)) for v in f.box)
        cv2.rectangle(out, (x1, y1), (x2, y2), color, 2)
        if landmarks and f.landmarks is not None:
            for x, y in f.landmarks:
                cv2.circle(out, (int(round(x)), int(round(y))), 1, (255, 255, 255), -1, cv2.LINE_AA)
        name = f.identity if f.identity is not None else "unknown"
        sim = "" if np.isnan(f.similarity) else f" {f.similarity:.2f}"
        lines = [f"#{f.track_id} {name}{sim}"]
        extra = []
        if f.expression:
            extra.append(f.expression)
        if f.live_score is not None:
            extra.append(f"{'live' if f.live_score >= 0.5 else 'SPOOF'} {f.live_score:.2f}")
        if extra:
            lines.append(" ".join(extra))
        for i, text in enumerate(lines):
            y = max(12, y1 - 6 - 14 * (len(lines) - 1 - i))
            cv2.putText(out, text, (x1, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(out, text, (x1, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, color, 1, cv2.LINE_AA)
    return out


def _display_available() -> bool:
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    try:  # opencv-python-headless has no GUI: namedWindow raises
        cv2.namedWindow("facetx")
        return True
    except cv2.error:
        return False


@dataclass(frozen=True)
class OutputSettings:
    """Each output is optional (None: not written). ``show``: ``"auto"`` (a window where a display exists), true or
    false; ``fps``: the annotated video's frame rate (None: the source's, else 30)."""

    video: str | None = None
    jsonl: str | None = None
    summary: str | None = None
    show: str | bool = "auto"
    progress: bool = True
    draw_landmarks: bool = True
    fps: float | None = None


@dataclass
class RunStats:
    """Per-stage milliseconds of every frame, counts, and notes for the summary."""

    times: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})
    frames: int = 0
    faces: int = 0
    detector_runs: int = 0
    tracks: set[int] = field(default_factory=set)
    started: float = field(default_factory=time.perf_counter)
    finished: float | None = None

    def add(self, result: FrameResult) -> None:
        self.frames += 1
        self.faces += len(result.faces)
        self.detector_runs += int(result.detected)
        self.tracks.update(f.track_id for f in result.faces)
        for stage in STAGES:
            self.times[stage].append(float(result.times_ms.get(stage, 0.0)))

    def summary(self, source: str, model: str, notes: list[str]) -> dict:
        wall = (self.finished or time.perf_counter()) - self.started
        per_stage = {}
        for stage, values in self.times.items():
            v = np.asarray(values, dtype=np.float64)
            per_stage[stage] = {
                "p50_ms": round(float(np.percentile(v, 50)), 3) if len(v) else None,
                "p95_ms": round(float(np.percentile(v, 95)), 3) if len(v) else None,
                "mean_ms": round(float(v.mean()), 3) if len(v) else None,
            }
        compute = sum(np.asarray(self.times[s]) for s in STAGES if s != "decode") if self.frames else np.zeros(0)
        return {
            "source": source,
            "model": model,
            "frames": self.frames,
            "faces": self.faces,
            "tracks": len(self.tracks),
            "detector_runs": self.detector_runs,
            "wall_s": round(wall, 3),
            "fps_end_to_end": round(self.frames / wall, 2) if wall > 0 else None,
            "fps_excluding_decode": round(1e3 / float(np.mean(compute)), 2) if len(compute) else None,
            "stages": per_stage,
            "notes": notes,
        }


class OutputWriter:
    """Writes the outputs of :class:`OutputSettings` frame by frame; :meth:`close` writes the summary."""

    def __init__(self, settings: OutputSettings, source_fps: float | None = None) -> None:
        self.settings = settings
        self.fps = settings.fps or source_fps or 30.0
        self._video: cv2.VideoWriter | None = None
        self._size: tuple[int, int] = (0, 0)
        self._jsonl = None
        if settings.jsonl:
            Path(settings.jsonl).parent.mkdir(parents=True, exist_ok=True)
            self._jsonl = open(settings.jsonl, "w", encoding="utf-8")  # noqa: SIM115 (closed in close())
        show = settings.show
        self.show = _display_available() if show == "auto" else bool(show)
        self.draws = bool(settings.video) or self.show

    def write(self, image: np.ndarray, result: FrameResult) -> None:
        t0 = time.perf_counter()
        annotated = draw(image, result, self.settings.draw_landmarks) if self.draws else None
        result.times_ms["draw"] = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        if annotated is not None and self.settings.video:
            if self._video is None:
                Path(self.settings.video).parent.mkdir(parents=True, exist_ok=True)
                h, w = annotated.shape[:2]
                self._size = (w, h)
                self._video = cv2.VideoWriter(self.settings.video, cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
                if not self._video.isOpened():
                    raise ConfigError(f"output.video={self.settings.video}: OpenCV cannot write an mp4v video there")
            if annotated.shape[1::-1] != self._size:  # a folder of photos of several sizes: one video needs one size
                annotated = cv2.resize(annotated, self._size, interpolation=cv2.INTER_AREA)
            self._video.write(cv2.cvtColor(annotated, cv2.COLOR_RGB2BGR))
        if self._jsonl is not None:
            self._jsonl.write(json.dumps(result.to_dict(), separators=(",", ":"), allow_nan=False) + "\n")
        if annotated is not None and self.show:
            cv2.imshow("facetx", cv2.cvtColor(annotated, cv2.COLOR_RGB2BGR))
            cv2.waitKey(1)
        result.times_ms["write"] = (time.perf_counter() - t0) * 1e3

    def close(self, summary: dict | None = None) -> None:
        if self._video is not None:
            self._video.release()
            self._video = None
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if summary is not None and self.settings.summary:
            path = Path(self.settings.summary)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(summary, indent=2) + "\n")
            os.replace(tmp, path)
        if self.show:
            cv2.destroyAllWindows()
