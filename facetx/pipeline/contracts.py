"""The pipeline's hand-offs, one dataclass each (MediaPipe-style: detection -> ROI -> crop -> heads -> track).

Coordinates are frame pixels in OpenCV's convention (integer values are pixel centers) unless a field says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: the per-frame stages whose wall-clock times the summary reports (p50/p95, milliseconds)
STAGES: tuple[str, ...] = ("decode", "detect", "align", "infer", "track", "draw", "write")


@dataclass(frozen=True)
class Frame:
    """One decoded frame: ``image`` uint8 RGB ``[H, W, 3]``, its ``index`` in the source, ``timestamp`` in seconds
    (index / fps for files, the wall clock since start for live sources), ``decode_ms`` spent decoding it."""

    image: np.ndarray
    index: int
    timestamp: float
    decode_ms: float = 0.0


@dataclass(frozen=True)
class Roi:
    """Where one face's crop comes from: the ``[2, 3]`` similarity ``matrix`` mapping frame pixels to crop pixels,
    and what produced it (``"detection"``: BlazeFace keypoints; ``"landmarks"``: the previous frame's landmarks)."""

    matrix: np.ndarray
    origin: str
    track_id: int | None = None


@dataclass(frozen=True)
class HeadOutputs:
    """The student's outputs for ``N`` crops, already decoded: ``embedding [N, E]`` L2-normalized float32,
    ``landmarks [N, K, 2]`` in crop pixels, ``expression_probs [N, C]`` (softmax), ``live [N]`` probability of
    "live" (softmax of the spoof logits). A head the model lacks is None."""

    embedding: np.ndarray | None
    landmarks: np.ndarray | None
    expression_probs: np.ndarray | None
    live: np.ndarray | None


@dataclass
class FaceResult:
    """One face in one frame, what :meth:`facetx.pipeline.FacePipeline.get` returns per face.

    ``box [4]`` (x1, y1, x2, y2) and ``keypoints [6, 2]`` (BlazeFace order) come from the last detection, moved with
    the track when the crop came from landmarks; ``score`` is that detection's score. ``landmarks [K, 2]`` are the
    student's (smoothed when the tracker's filter is on). ``identity`` is a gallery name or None ("unknown"),
    ``similarity`` the cosine similarity to the best gallery entry (nan without a gallery). ``expression`` /
    ``live_score`` are smoothed over the track's frames; ``expression_probs`` maps class -> probability.
    """

    track_id: int
    box: np.ndarray
    score: float
    keypoints: np.ndarray
    landmarks: np.ndarray | None = None
    embedding: np.ndarray | None = None
    identity: str | None = None
    similarity: float = float("nan")
    expression: str | None = None
    expression_probs: dict[str, float] = field(default_factory=dict)
    live_score: float | None = None
    roi_origin: str = "detection"

    def to_dict(self, decimals: int = 2) -> dict:
        """The JSONL record of this face (no embedding: it is large and identifies a person)."""

        def num(v: float, digits: int) -> float | None:  # JSON has no NaN/inf: a non-finite value is null
            return round(float(v), digits) if np.isfinite(v) else None

        def pts(a: np.ndarray | None) -> list | None:
            return None if a is None else [[num(x, decimals), num(y, decimals)] for x, y in a]

        return {
            "track_id": int(self.track_id),
            "box": [num(v, decimals) for v in self.box],
            "score": num(self.score, 4),
            "keypoints": pts(self.keypoints),
            "landmarks": pts(self.landmarks),
            "identity": self.identity if self.identity is not None else "unknown",
            "similarity": num(self.similarity, 4),
            "expression": self.expression,
            "expression_probs": {k: num(v, 4) for k, v in self.expression_probs.items()},
            "live_score": None if self.live_score is None else num(self.live_score, 4),
            "roi": self.roi_origin,
        }


@dataclass
class FrameResult:
    """All faces of one frame and the milliseconds each stage took on it (keys from :data:`STAGES`)."""

    index: int
    timestamp: float
    faces: list[FaceResult]
    times_ms: dict[str, float] = field(default_factory=dict)
    detected: bool = False

    def to_dict(self) -> dict:
        """One JSONL line: ``{"frame", "timestamp", "detector_ran", "faces": [...]}``."""
        return {
            "frame": int(self.index),
            "timestamp": round(float(self.timestamp), 4),
            "detector_ran": bool(self.detected),
            "faces": [f.to_dict() for f in self.faces],
        }
