"""The video pipeline against MediaPipe on the same decoded frames, in one run (a benchmark, not a test).

``python -m facetx.bench.pipeline_speed --model OUT/model.int8.onnx [--threads 2] [--out outputs/bench/pipeline]``

Clips: a 640x360 one-face clip (scikit-image's astronaut photo moving, scaling and rolling) and a 1280x720 clip with
several faces (the scripted synthetic clip, scaled up). Each clip is written to mp4 and decoded once; every system
then runs on the same decoded frames in memory (decode excluded), and decode is added back from its own measurement
(decode included; our pipeline overlaps decoding in a thread, MediaPipe's Python API does not, so both add it
serially here, which favours neither). Rows: ours with tracking, ours with detection on every frame, our detector
alone; MediaPipe's legacy FaceMesh with tracking and with ``static_image_mode=True``, and its FaceDetection (short
range). Rounds alternate ours / MediaPipe so both see the same machine load; FPS is 1000 / median ms per frame.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facetx.runtime.system import system_summary


@dataclass(frozen=True)
class BenchClip:
    name: str
    frames: np.ndarray
    fps: float
    faces: int


def one_face_clip(frames: int) -> BenchClip:
    from skimage import data

    from facetx.data.synthetic.video import photo_clip

    # head and shoulders: in the whole photo fitted to 360 rows the face is too small for the short-range detectors
    clip = photo_clip(np.ascontiguousarray(data.astronaut()[0:300, 75:375]), frames=frames, size=(640, 360), seed=0)
    return BenchClip("640x360, 1 face (astronaut photo, moving)", clip.frames, clip.fps, 1)


def multi_face_clip(frames: int) -> BenchClip:
    from facetx.data.synthetic.video import scripted_clip

    clip = scripted_clip(num_frames=frames, size=(1280, 720))
    faces = max(len(t.faces) for t in clip.truth)
    return BenchClip(f"1280x720, up to {faces} faces (scripted synthetic)", clip.frames, clip.fps, faces)


def decode_ms(clip: BenchClip, work: Path) -> float:
    """Median ms to decode one frame of the clip written as mp4 (OpenCV, BGR -> RGB included)."""
    from facetx.data.synthetic.video import write_video

    path = write_video(clip, work / "clip.mp4")  # type: ignore[arg-type]
    cap = cv2.VideoCapture(str(path))
    times = []
    while True:
        t0 = time.perf_counter()
        ok, bgr = cap.read()
        if not ok:
            break
        cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        times.append((time.perf_counter() - t0) * 1e3)
    cap.release()
    return float(np.median(times))


def run_ours(pipe, frames: np.ndarray, fps: float) -> tuple[np.ndarray, dict[str, np.ndarray], int]:
    """(ms per frame excluding decode, per-stage ms arrays, detector runs) over ``frames``."""
    from facetx.pipeline.contracts import STAGES, Frame

    pipe.reset()
    total, stages, runs = [], {s: [] for s in STAGES}, 0
    for i, image in enumerate(frames):
        t0 = time.perf_counter()
        r = pipe.process(Frame(image, i, i / fps))
        total.append((time.perf_counter() - t0) * 1e3)
        runs += r.detected
        for s in STAGES:
            stages[s].append(r.times_ms.get(s, 0.0))
    return np.asarray(total), {s: np.asarray(v) for s, v in stages.items()}, runs


def run_detector(detector, frames: np.ndarray) -> np.ndarray:
    out = []
    for image in frames:
        t0 = time.perf_counter()
        detector.detect(image)
        out.append((time.perf_counter() - t0) * 1e3)
    return np.asarray(out)


def markdown(rows: list[dict], title: str, context: dict, notes: list[str]) -> str:
    """A plain markdown table of ``rows`` (the keys of the first row are the columns) under the run context."""
    cols = list(rows[0]) if rows else []
    lines = [f"# {title}", "", *(f"- **{k}**: {v}" for k, v in context.items()), ""]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join([*lines, "", *(f"- {n}" for n in notes), ""])


def _fps(ms: float) -> float:
    return 1e3 / ms if ms > 0 else float("nan")


def bench_clip(
    clip: BenchClip, model: str, threads: int, rounds: int, work: Path, runtime: str = "onnxruntime"
) -> tuple[list[dict], list[dict]]:
    from facetx.bench.mediapipe_peer import run_peer
    from facetx.detect import FaceDetector
    from facetx.pipeline.model import FaceModel
    from facetx.pipeline.pipeline import FacePipeline
    from facetx.pipeline.tracker import Tracker

    dec = decode_ms(clip, work)
    net = FaceModel(model, threads=threads, runtime=runtime)
    detector = FaceDetector("short", threads=threads)
    pipes = {
        "tracking": FacePipeline(detector, net, Tracker("landmarks", max_faces=clip.faces)),
        "detection every frame": FacePipeline(detector, net, Tracker("detection", max_faces=clip.faces)),
    }
    peers = {
        "tracking": ("face_mesh_tracking", "FaceMesh, tracking (landmarks only)"),
        "detection every frame": ("face_mesh_static", "FaceMesh, static_image_mode=True (landmarks only)"),
        "detector alone": ("face_detection_short", "FaceDetection short range"),
    }
    ours: dict[str, list[float]] = {k: [] for k in peers}
    theirs: dict[str, list[float]] = {k: [] for k in peers}
    stage_ms: dict[str, dict[str, list[np.ndarray]]] = {k: {} for k in pipes}
    runs: dict[str, int] = {}
    for _ in range(rounds):
        for mode, pipe in pipes.items():
            total, stages, runs[mode] = run_ours(pipe, clip.frames, clip.fps)
            ours[mode].append(float(np.median(total[1:])))  # frame 0 pays the sessions' first-run cost
            for s, v in stages.items():
                stage_ms[mode].setdefault(s, []).append(v[1:])
        ours["detector alone"].append(float(np.median(run_detector(detector, clip.frames)[1:])))
        for mode, (task, _) in peers.items():
            peer = run_peer(clip.frames, task, max_faces=clip.faces, warmup=2, repeats=1)
            theirs[mode].append(float(np.median(peer.ms)))
    rows, stage_rows = [], []
    for mode, (_, peer_name) in peers.items():
        mine, other = float(np.median(ours[mode])), float(np.median(theirs[mode]))
        rows.append({
            "clip": clip.name,
            "mode": mode,
            "facetx ms/frame": round(mine, 2),
            "facetx FPS": round(_fps(mine), 1),
            "facetx FPS incl. decode": round(_fps(mine + dec), 1),
            "MediaPipe": peer_name,
            "MediaPipe ms/frame": round(other, 2),
            "MediaPipe FPS": round(_fps(other), 1),
            "MediaPipe FPS incl. decode": round(_fps(other + dec), 1),
            "ratio (FPS facetx / MediaPipe)": round(other / mine, 3),
            "detector runs": runs.get(mode, len(clip.frames)),
            "decode ms": round(dec, 2),
        })  # fmt: skip
    for mode, stages in stage_ms.items():
        row = {"clip": clip.name, "mode": mode, "detector runs": runs[mode]}
        for s, parts in stages.items():
            if s in ("decode", "draw", "write"):  # decode measured on its own below; nothing is drawn or written here
                continue
            v = np.concatenate(parts)
            row[f"{s} p50"] = round(float(np.percentile(v, 50)), 2)
            row[f"{s} p95"] = round(float(np.percentile(v, 95)), 2)
        row["decode (mp4, median)"] = round(dec, 2)
        stage_rows.append(row)
    return rows, stage_rows


def net_label(model: str, runtime: str) -> str:
    """``runtime/precision (file)`` of the artifact the pipeline runs (``best`` resolved through best.json)."""
    from facetx.pipeline.model import resolve_artifact

    a = resolve_artifact(model, runtime)
    return f"{a.runtime}/{a.precision or 'file precision'} ({a.file.name})"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="the exported student (model.onnx or model.int8.onnx)")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads of each ONNX Runtime session")
    p.add_argument(
        "--runtime",
        default="onnxruntime",
        choices=["onnxruntime", "openvino", "tflite", "best"],
        help="the student's runtime; best: the one export.py measured fastest within its budget (best.json)",
    )
    p.add_argument("--frames", type=int, default=120)
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds of ours and MediaPipe")
    p.add_argument("--out", default="outputs/bench/pipeline")
    args = p.parse_args(argv)
    from facetx.bench.mediapipe_peer import check_peer
    from facetx.errors import print_user_error

    ok, why = check_peer()
    if not ok:
        raise SystemExit(print_user_error(RuntimeError(f"MediaPipe peer: {why}")))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    system = system_summary()
    rows, stage_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for clip in (one_face_clip(args.frames), multi_face_clip(args.frames)):
            r, s = bench_clip(clip, args.model, args.threads, args.rounds, Path(tmp), args.runtime)
            rows += r
            stage_rows += s
    context = {
        "model": args.model,
        "student runtime": f"{args.runtime}: {net_label(args.model, args.runtime)}",
        "cpu": system["cpu"],
        "ISA flags": " ".join(system["isa_flags"]),
        "threads (ours, per ONNX Runtime session)": args.threads,
        "MediaPipe threads": "its own default (the legacy solutions API takes no thread count)",
        "versions": system["versions"],
        "git commit": system["git_commit"],
        "load average at start": system["load_average"],
    }
    notes = [
        "ms/frame: median over the clip's frames after the first, median over rounds; decode excluded unless stated",
        "incl. decode: the measured OpenCV mp4 decode time per frame added to each system's time",
        "facetx runs all four heads (embedding, landmarks, expression, spoof) per face; MediaPipe FaceMesh gives "
        "landmarks only",
    ]
    isa = " ".join(system["isa_flags"])
    for r in rows + stage_rows:
        r["isa_flags"] = isa  # every row says which CPU features it was measured with
    (out / "pipeline_benchmark.md").write_text(markdown(rows, "facetx pipeline vs MediaPipe", context, notes))
    (out / "pipeline_stages.md").write_text(markdown(stage_rows, "facetx pipeline: per-stage ms", context, []))
    (out / "pipeline_benchmark.json").write_text(
        json.dumps({"rows": rows, "stages": stage_rows, "context": context}, indent=2, default=str) + "\n"
    )
    print((out / "pipeline_benchmark.md").read_text())
    print((out / "pipeline_stages.md").read_text())


if __name__ == "__main__":
    main()
