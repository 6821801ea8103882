"""MediaPipe's own FaceDetection / FaceMesh as a peer: run ``scripts/mediapipe_peer.py`` in the peer venv on frames.

mediapipe's legacy ``mp.solutions`` (0.10.14 here) need protobuf<5, which facetx's venv (onnx needs protobuf>=6)
cannot have, so MediaPipe runs in its own venv (``make peer`` builds ``<repo>/.venv-mediapipe``; another interpreter
with mediapipe can be named by ``$FACETX_MEDIAPIPE_PYTHON``) and talks to facetx through a ``.npy`` of frames and a
JSON result. :func:`run_peer` converts MediaPipe's pixel-edge coordinates to OpenCV's pixel centers (minus 0.5), the
convention of :class:`facetx.detect.detector.Face`.

``python -m facetx.bench.mediapipe_peer [--runs 200]`` times the detector per 640x360 frame (whole pipeline: warp,
network, decoding; short and full range, ONNX Runtime and torch eager at 1 and 2 threads, interleaved) and
MediaPipe's FaceDetection ``process()`` on the same frames, and prints a table (milliseconds, p50 / p95).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facetx.detect.detector import Face
from facetx.errors import UserError, one_line

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "mediapipe_peer.py"
ENV_PYTHON = "FACETX_MEDIAPIPE_PYTHON"
TASKS = ("face_detection_short", "face_detection_full", "face_mesh_tracking", "face_mesh_static")
MAKE_HINT = "build it with `make peer`"


class PeerError(UserError, RuntimeError):
    """The MediaPipe peer is missing or failed; the message is one line naming the interpreter and the cause."""


@dataclass(frozen=True)
class PeerResult:
    """What the peer returned for ``N`` frames: ``detections`` per frame (detection tasks; else None), ``landmarks``
    per frame as ``[faces, K, 3]`` float32 (x, y in OpenCV pixels, z scaled like x; face-mesh tasks with landmarks,
    else None), ``ms`` ``[repeats * N]`` milliseconds per ``process()`` call, MediaPipe's ``version``."""

    task: str
    version: str
    detections: list[list[Face]] | None
    landmarks: list[np.ndarray] | None
    ms: np.ndarray


def peer_python() -> Path:
    """The peer interpreter: ``$FACETX_MEDIAPIPE_PYTHON``, else ``<repo>/.venv-mediapipe/bin/python``."""
    env = os.environ.get(ENV_PYTHON)
    return Path(env).expanduser() if env else REPO / ".venv-mediapipe" / "bin" / "python"


@functools.lru_cache(maxsize=4)
def _check(python: str) -> tuple[bool, str]:
    if not Path(python).is_file():
        how = f"${ENV_PYTHON}" if os.environ.get(ENV_PYTHON) else MAKE_HINT
        return False, f"MediaPipe peer interpreter {python} does not exist ({how})"
    if not SCRIPT.is_file():
        return False, f"{SCRIPT} is missing"
    code = "import mediapipe as mp; mp.solutions.face_detection; mp.solutions.face_mesh; print(mp.__version__)"
    try:
        proc = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"MediaPipe peer interpreter {python} does not run: {one_line(e)}"
    if proc.returncode != 0:
        return False, f"{python} cannot import mediapipe's solutions ({_last_line(proc.stderr)}); {MAKE_HINT}"
    return True, f"mediapipe {proc.stdout.strip()} at {python}"


def check_peer() -> tuple[bool, str]:
    """``(available, reason)``: whether the peer interpreter exists and imports ``mp.solutions`` (checked once per
    interpreter path), and a one-line description of it or of what is missing."""
    return _check(str(peer_python()))


def available() -> bool:
    """Whether the MediaPipe peer can run (see :func:`check_peer` for the reason when it cannot)."""
    return check_peer()[0]


def _last_line(stderr: str) -> str:
    """The ``error:`` line of the peer, else the last line of its stderr (a traceback's exception)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    if errors:
        return errors[-1][len("error:") :].strip()
    return lines[-1] if lines else "no output on stderr"


def _faces(dets: list[dict]) -> list[Face]:
    out = []
    for d in dets:
        box = np.asarray(d["box"], np.float32) - 0.5  # pixel edges -> OpenCV pixel centers
        kps = np.asarray(d["keypoints"], np.float32).reshape(-1, 2) - 0.5
        out.append(Face(box, float(d["score"]), kps))
    return out


def _points(faces: list) -> np.ndarray:
    pts = np.asarray(faces, np.float32).reshape(len(faces), -1, 3)
    pts[..., :2] -= 0.5
    return pts


def _stacks(frames: np.ndarray | list[np.ndarray]) -> list[np.ndarray]:
    """``frames`` as uint8 ``[N, H, W, 3]`` stacks: one array (``[N, H, W, 3]`` or ``[H, W, 3]``) or a list of
    frames, grouped into runs of one size (each run becomes one ``.npy``)."""
    items = [np.asarray(frames)] if isinstance(frames, np.ndarray) else [np.asarray(f) for f in frames]
    stacks: list[np.ndarray] = []
    for i, f in enumerate(items):
        f = f[None] if f.ndim == 3 else f
        if f.dtype != np.uint8 or f.ndim != 4 or f.shape[3] != 3 or not len(f):
            raise ValueError(f"frames[{i}]: expected uint8 RGB [H, W, 3] or [N>=1, H, W, 3], got {f.dtype} {f.shape}")
        stacks.append(f)
    if not stacks:
        raise ValueError("frames: expected at least one frame")
    merged = [stacks[0]]
    for f in stacks[1:]:
        if f.shape[1:] == merged[-1].shape[1:]:
            merged[-1] = np.concatenate([merged[-1], f])
        else:
            merged.append(f)
    return merged


def run_peer(
    frames: np.ndarray | list[np.ndarray],
    task: str,
    *,
    max_faces: int = 1,
    min_score: float | None = None,
    min_tracking: float = 0.5,
    refine_landmarks: bool = False,
    landmarks: bool = True,
    warmup: int = 0,
    repeats: int = 1,
    timeout: float = 900.0,
) -> PeerResult:
    """Run MediaPipe's ``task`` on ``frames`` in the peer venv: uint8 RGB ``[N, H, W, 3]``, one ``[H, W, 3]``, or a
    list of frames of any sizes (processed in order, one sequence: FaceMesh tracking carries over).

    ``task``: ``face_detection_short`` / ``face_detection_full`` (``FaceDetection``; ``min_score`` becomes its
    ``min_detection_confidence``, which mediapipe 0.10.14 ignores: its graphs keep 0.5 short / 0.6 full, see
    google-ai-edge/mediapipe#3896), ``face_mesh_tracking`` / ``face_mesh_static`` (``FaceMesh`` with
    ``static_image_mode`` False / True, ``max_faces``, ``min_tracking``, ``refine_landmarks``; ``landmarks=False``
    skips returning the points, for timing). ``warmup`` untimed calls on frame 0 first, ``repeats`` timed passes.
    Raises :class:`PeerError` (one line) when the peer is missing or fails.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    stacks = _stacks(frames)
    n = sum(len(s) for s in stacks)
    ok, reason = check_peer()
    if not ok:
        raise PeerError(reason)
    python = str(peer_python())
    with tempfile.TemporaryDirectory(prefix="facetx-peer-") as tmp:
        out = Path(tmp) / "result.json"
        paths = []
        for i, stack in enumerate(stacks):
            paths.append(str(Path(tmp) / f"frames{i}.npy"))
            np.save(paths[-1], np.ascontiguousarray(stack))
        request = {
            "frames": paths,
            "task": task,
            "max_faces": int(max_faces),
            "min_tracking": float(min_tracking),
            "refine_landmarks": bool(refine_landmarks),
            "landmarks": bool(landmarks),
            "warmup": int(warmup),
            "repeats": int(repeats),
            "output": str(out),
        }
        if min_score is not None:
            request["min_score"] = float(min_score)
        try:
            proc = subprocess.run(
                [python, str(SCRIPT), json.dumps(request)], capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired as e:
            raise PeerError(f"MediaPipe peer ({python}) ran past {timeout:.0f} s on {task} ({n} frames)") from e
        if proc.returncode != 0 or not out.is_file():
            raise PeerError(f"MediaPipe peer ({python}) failed on {task}: {one_line(_last_line(proc.stderr))}")
        result = json.loads(out.read_text())
    dets = [_faces(d) for d in result["detections"]] if "detections" in result else None
    points = [_points(f) for f in result["landmarks"]] if "landmarks" in result else None
    return PeerResult(task, str(result["version"]), dets, points, np.asarray(result["ms"], np.float64))


def bench_frames(n: int = 8, size: tuple[int, int] = (360, 640)) -> np.ndarray:
    """``n`` uint8 RGB video-size frames: skimage's astronaut (one face) scaled to the frame height, moving right."""
    import cv2
    from skimage import data

    h, w = size
    face = cv2.resize(data.astronaut(), (h, h), interpolation=cv2.INTER_AREA)
    frames = np.full((n, h, w, 3), 40, np.uint8)
    for i in range(n):
        x = (w - h) * i // max(n - 1, 1)
        frames[i, :, x : x + h] = face
    return frames


def bench_detector(frames: np.ndarray, runs: int = 200, threads: tuple[int, ...] = (1, 2)) -> dict[str, object]:
    """Milliseconds per ``detect()`` of each (model, backend, threads), interleaved (see
    :func:`facetx.runtime.timing.time_interleaved`), cycling through ``frames``."""
    import itertools

    import torch

    from facetx.detect.detector import FaceDetector
    from facetx.runtime.timing import time_interleaved

    fns = {}
    for model in ("short", "full"):
        for t in threads:
            det = FaceDetector(model, threads=t)
            cycle = itertools.cycle(frames)
            fns[f"{model} ort {t}t"] = lambda det=det, cycle=cycle: det.detect(next(cycle))
        eager = FaceDetector(model, backend="torch")
        for t in threads:
            cycle = itertools.cycle(frames)

            def run(eager=eager, cycle=cycle, t=t) -> object:
                torch.set_num_threads(t)  # torch's pool is global: each candidate sets its own
                return eager.detect(next(cycle))

            fns[f"{model} torch {t}t"] = run
    timings, _ = time_interleaved(fns, batch=1, warmup=10, runs=runs, block=10)
    return timings


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m facetx.bench.mediapipe_peer", description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=200, help="timed calls per candidate (default 200)")
    p.add_argument("--no-peer", action="store_true", help="time facetx's detector only")
    args = p.parse_args(argv)
    import torch

    from facetx.runtime.system import system_summary

    frames = bench_frames()
    threads_before = torch.get_num_threads()
    timings = bench_detector(frames, args.runs)
    torch.set_num_threads(threads_before)
    rows = [(name, t.p50_ms, t.p95_ms) for name, t in timings.items()]
    if not args.no_peer:
        ok, reason = check_peer()
        if ok:
            for model in ("short", "full"):
                reps = max(1, args.runs // len(frames))
                r = run_peer(frames, f"face_detection_{model}", warmup=10, repeats=reps)
                rows.append((f"{model} mediapipe {r.version}", float(np.median(r.ms)), float(np.percentile(r.ms, 95))))
        else:
            print(f"(MediaPipe peer skipped: {reason})")
    summary = system_summary()
    size = f"{frames.shape[2]}x{frames.shape[1]}"
    print(f"detector latency per {size} frame; {summary.get('cpu')}, load {summary.get('load_average'):.2f}")
    print("| candidate | p50 ms | p95 ms |\n|---|---|---|")
    for name, p50, p95 in rows:
        print(f"| {name} | {p50:.2f} | {p95:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
