"""MediaPipe's own FaceDetection / FaceMesh on a stack of frames, timed: the peer facetx compares itself against.

Runs in the peer venv (``make peer`` builds ``.venv-mediapipe`` with mediapipe 0.10.14, whose ``mp.solutions`` need
protobuf<5, which facetx's own venv cannot have); imports only the standard library, numpy, cv2 and mediapipe.
``facetx.bench.mediapipe_peer.run_peer`` is the facetx side. Usage::

    .venv-mediapipe/bin/python scripts/mediapipe_peer.py '{"frames": "f.npy", "task": "face_detection_short"}'
    .venv-mediapipe/bin/python scripts/mediapipe_peer.py request.json
    echo '{...}' | .venv-mediapipe/bin/python scripts/mediapipe_peer.py

Request (JSON object): ``frames`` (path of a ``.npy`` of RGB uint8 frames ``[N, H, W, 3]``, memory-mapped; or a list
of such paths, for frames of different sizes, processed in order as one sequence), ``task``
(``face_detection_short``, ``face_detection_full``, ``face_mesh_tracking`` (``static_image_mode=False``: detection
once, then landmark tracking), ``face_mesh_static`` (``static_image_mode=True``: detection on every frame)),
optional ``max_faces`` (face mesh, default 1), ``min_score`` (``min_detection_confidence``, default 0.5: the
solutions' default; FaceDetection in mediapipe 0.10.14 ignores it and keeps its graphs' 0.5 short / 0.6 full,
google-ai-edge/mediapipe#3896), ``min_tracking`` (face mesh, default 0.5), ``refine_landmarks`` (face mesh: 478
points with irises, default false), ``landmarks`` (face mesh: return the points, default true), ``warmup`` (untimed
``process()`` calls on frame 0 first, default 0), ``repeats`` (timed passes over all frames, default 1; results are
the first pass's), ``output`` (a path to write the result to, default stdout).

Result (JSON object): ``version`` (mediapipe's), ``task``, ``frames`` (N in all), ``sizes`` (``[H, W]`` per frame),
``ms`` (milliseconds
of every timed ``process()`` call, ``time.perf_counter``, ``repeats * N`` values in call order), and per frame of
the first pass ``detections`` (detection tasks: ``[{"score", "box": [x1, y1, x2, y2], "keypoints": [[x, y] x 6]}]``)
or ``landmarks`` (face mesh: ``[[[x, y, z] x 468]]`` per face; omitted with ``"landmarks": false``).
Coordinates are MediaPipe's relative values times the frame size: pixel *edges* (0 is the left edge of the image,
``W`` its right edge), not OpenCV's pixel centers; z is scaled by the width like x, as MediaPipe defines it.

A bad request prints one ``error:`` line on stderr and exits with code 2.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

TASKS = ("face_detection_short", "face_detection_full", "face_mesh_tracking", "face_mesh_static")


class RequestError(Exception):
    """A request that cannot run (missing key, bad value, unreadable frames)."""


def read_request(argv: list[str]) -> dict:
    """The request from ``argv[0]`` (a JSON object, or the path of a JSON file), else from stdin."""
    text = argv[0] if argv else sys.stdin.read()
    if argv and not text.lstrip().startswith("{"):
        try:
            text = Path(text).read_text()
        except OSError as e:
            raise RequestError(f"request file {argv[0]}: {e.strerror or e}") from e
    try:
        req = json.loads(text)
    except json.JSONDecodeError as e:
        raise RequestError(f"request is not valid JSON ({e})") from e
    if not isinstance(req, dict):
        raise RequestError(f"request must be a JSON object, got {type(req).__name__}")
    for key in ("frames", "task"):
        if key not in req:
            raise RequestError(f"request has no {key!r} key (expected 'frames' and 'task')")
    if req["task"] not in TASKS:
        raise RequestError(f"task must be one of {list(TASKS)}, got {req['task']!r}")
    return req


def load_frames(paths: str | list[str]) -> list:
    """The frames of every ``[N, H, W, 3]`` uint8 ``.npy`` in ``paths``, in order, memory-mapped (a frame is read
    when it is processed)."""
    import numpy as np

    frames = []
    for path in [paths] if isinstance(paths, str) else list(paths):
        try:
            stack = np.load(str(path), mmap_mode="r")
        except (OSError, ValueError) as e:
            raise RequestError(f"frames {path}: cannot load ({e})") from e
        if stack.dtype != np.uint8 or stack.ndim != 4 or stack.shape[3] != 3 or stack.shape[0] < 1:
            got = f"{stack.dtype} {stack.shape}"
            raise RequestError(f"frames {path}: expected uint8 RGB frames [N>=1, H, W, 3], got {got}")
        frames.extend(stack[i] for i in range(len(stack)))
    if not frames:
        raise RequestError("frames: an empty list (expected a .npy path or a list of them)")
    return frames


def make_solution(req: dict):
    """The ``mp.solutions`` object of the request's task."""
    import mediapipe as mp

    task = req["task"]
    min_score = float(req.get("min_score", 0.5))
    if task.startswith("face_detection"):
        return mp.solutions.face_detection.FaceDetection(
            min_detection_confidence=min_score, model_selection=0 if task == "face_detection_short" else 1
        )
    return mp.solutions.face_mesh.FaceMesh(
        static_image_mode=task == "face_mesh_static",
        max_num_faces=int(req.get("max_faces", 1)),
        refine_landmarks=bool(req.get("refine_landmarks", False)),
        min_detection_confidence=min_score,
        min_tracking_confidence=float(req.get("min_tracking", 0.5)),
    )


def detections_of(result, width: int, height: int) -> list[dict]:
    """FaceDetection's output in pixels (pixel-edge convention: relative value x size)."""
    out = []
    for det in result.detections or []:
        loc = det.location_data
        b = loc.relative_bounding_box
        out.append(
            {
                "score": float(det.score[0]),
                "box": [b.xmin * width, b.ymin * height, (b.xmin + b.width) * width, (b.ymin + b.height) * height],
                "keypoints": [[k.x * width, k.y * height] for k in loc.relative_keypoints],
            }
        )
    return out


def landmarks_of(result, width: int, height: int) -> list[list[list[float]]]:
    """FaceMesh's points per face in pixels (pixel-edge convention; z scaled by the width, as MediaPipe's x)."""
    return [
        [[p.x * width, p.y * height, p.z * width] for p in face.landmark] for face in result.multi_face_landmarks or []
    ]


def run(req: dict) -> dict:
    import numpy as np

    frames = load_frames(req["frames"])
    n = len(frames)
    warmup, repeats = int(req.get("warmup", 0)), int(req.get("repeats", 1))
    if warmup < 0 or repeats < 1:
        raise RequestError(f"need warmup >= 0 and repeats >= 1, got warmup={warmup}, repeats={repeats}")
    task = req["task"]
    detection = task.startswith("face_detection")
    want_landmarks = bool(req.get("landmarks", True))
    solution = make_solution(req)
    ms: list[float] = []
    per_frame: list = []
    try:
        first = np.ascontiguousarray(frames[0])
        for _ in range(warmup):
            solution.process(first)
        for rep in range(repeats):
            for i in range(n):
                image = np.ascontiguousarray(frames[i])  # read from the memory map outside the clock
                t0 = time.perf_counter()
                result = solution.process(image)
                ms.append((time.perf_counter() - t0) * 1e3)
                height, width = image.shape[:2]
                if rep == 0:
                    if detection:
                        per_frame.append(detections_of(result, width, height))
                    elif want_landmarks:
                        per_frame.append(landmarks_of(result, width, height))
                    else:
                        per_frame.append(len(result.multi_face_landmarks or []))
    finally:
        solution.close()
    import mediapipe as mp

    sizes = [[int(f.shape[0]), int(f.shape[1])] for f in frames]
    out = {"version": mp.__version__, "task": task, "frames": n, "sizes": sizes, "ms": ms}
    if detection:
        out["detections"] = per_frame
    elif want_landmarks:
        out["landmarks"] = per_frame
    else:
        out["faces"] = per_frame
    return out


def main(argv: list[str]) -> int:
    try:
        req = read_request(argv)
        result = run(req)
    except RequestError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    text = json.dumps(result)
    if req.get("output"):
        tmp = Path(f"{req['output']}.tmp")
        tmp.write_text(text)
        tmp.replace(req["output"])  # the reader never sees half a result
    else:
        sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
