"""Compare finished runs (teacher, student alone, distilled student) in one table: metrics, size, cost, latency.

``python -m facetx.bench.compare DIR [DIR ...] [--out results.md]`` reads each run's ``metrics.json`` and rebuilds its
network from ``checkpoints/last.ckpt`` (no Lightning), then times every network at batch 1 in the same interleaved
rounds (eager PyTorch and ONNX Runtime FP32, threads pinned), so latency ratios hold on a loaded machine too.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from facetx.runtime.system import system_summary
from facetx.runtime.timing import (
    count_gflops,
    count_params,
    ort_call,
    paired_ratio,
    runner_call,
    time_interleaved,
    torch_call,
)
from facetx.training.checkpoint import load_checkpoint, load_face_net

KEYS = [
    ("recognition/acc", "verif. acc", 100),
    ("recognition/tar@far=1e-3", "TAR@FAR=1e-3", 100),
    ("landmarks/nme", "NME", 100),
    ("expression/acc", "expr. acc", 100),
    ("spoof/acer", "spoof ACER", 100),
]


def load_run(run_dir: Path) -> tuple[str, torch.nn.Module, dict[str, float]]:
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    config = load_checkpoint(ckpt)["facetx"]["config"]
    prefix = "student." if config.get("task_name") == "distill" else "net."
    net, _ = load_face_net(ckpt, prefix=prefix)
    label = f"{config.get('model_name')} ({'distilled' if prefix == 'student.' else 'trained alone'})"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return label, net, metrics


def format_table(rows: list[dict], split: str, latency: bool) -> list[str]:
    """Markdown rows: held-out metrics (in %), size and cost, and batch-1 latency when ``latency``."""
    head = ["run", *[k[1] for k in KEYS], "params (M)", "GFLOPs"]
    if latency:
        head += ["eager ms", "ORT ms", "ORT speed-up vs first"]
        if "ov_ms" in rows[0]:
            head += ["OpenVINO ms", "OpenVINO speed-up vs first"]
        if "tflite_ms" in rows[0]:
            head += ["LiteRT ms", "LiteRT speed-up vs first"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["label"]]
        for key, _, scale in KEYS:
            v = r["metrics"].get(f"{split}/{key}")
            cells.append("–" if v is None else f"{scale * v:.2f}")
        cells += [f"{r['params_m']:.2f}", f"{r['gflops']:.2f}"]
        if latency:
            cells += [f"{r['eager_ms']:.1f}", f"{r['ort_ms']:.1f}", f"{r['speedup']:.1f}x"]
            if "ov_ms" in r:
                cells += [f"{r['ov_ms']:.1f}", f"{r['ov_speedup']:.1f}x"]
            if "tflite_ms" in r:
                cells += [f"{r['tflite_ms']:.1f}", f"{r['tflite_speedup']:.1f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run directories (hydra.run.dir of train.py / distill.py)")
    ap.add_argument("--split", default="test", choices=("val", "test"), help="which held-out metrics to show")
    ap.add_argument("--labels", nargs="+", default=None, help="row labels, one per run (default: model and how)")
    ap.add_argument("--no-latency", action="store_true", help="metrics, params and GFLOPs only (ablation tables)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs-per-model", type=int, default=60)
    ap.add_argument("--tflite", action="store_true", help="also convert each network to FP32 .tflite and time it")
    ap.add_argument("--out", type=Path, default=None, help="also write the Markdown table here")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows (metrics, cost, latency) as JSON")
    args = ap.parse_args(argv)
    if args.labels is not None and len(args.labels) != len(args.runs):
        ap.error(f"--labels: expected one label per run ({len(args.runs)}), got {len(args.labels)}")
    latency = not args.no_latency

    torch.set_num_threads(args.threads)
    rows, nets = [], []
    for i, run in enumerate(args.runs):
        label, net, metrics = load_run(run)
        rows.append({"label": args.labels[i] if args.labels else label, "run": str(run), "metrics": metrics,
                     "model": label.split(" (")[0],
                     "params_m": count_params(net) / 1e6, "gflops": count_gflops(net)})  # fmt: skip
        nets.append(net)
    if latency:
        _time_batch1(nets, rows, args.threads, args.runs_per_model, args.tflite)
    lines = format_table(rows, args.split, latency)
    note = (
        f"\n{args.split} split of the embedded synthetic faces (held-out identities); NME and ACER in %, lower is "
        "better."
    )
    if latency:
        sysinfo = system_summary()
        note += (
            f" Batch 1, {args.threads} threads, median of {args.runs_per_model} interleaved runs; "
            f"CPU: {sysinfo.get('cpu')}, load average {sysinfo.get('load_average')}."
        )
    table = "\n".join(lines) + "\n" + note + "\n"
    print(table)
    if args.out:
        args.out.write_text(table)
    if args.json:
        summary = system_summary()
        args.json.write_text(
            json.dumps(
                {
                    "split": args.split,
                    "threads": args.threads,
                    "rows": rows,
                    "cpu": summary["cpu"],
                    "isa_flags": summary["isa_flags"],
                },
                indent=2,
            )
            + "\n"
        )
    return table


def _time_batch1(nets: list[torch.nn.Module], rows: list[dict], threads: int, runs: int, tflite: bool = False) -> None:
    """Adds eager/ORT (OpenVINO where installed, LiteRT FP32 with ``tflite``) p50 latency at batch 1 and each
    runtime's speed-up against the first run (put the teacher first), all timed interleaved in one loop."""
    from facetx.export.onnx_export import ExportWrapper, export_onnx, head_names
    from facetx.runtime.openvino import OpenVinoRunner, openvino_missing
    from facetx.runtime.sessions import make_session

    openvino = openvino_missing() is None

    fns = {}
    x = torch.rand(1, 3, 112, 112)
    with tempfile.TemporaryDirectory(prefix="facetx-compare-") as tmp:
        for i, net in enumerate(nets):
            names = head_names(net)
            onnx_path = Path(tmp) / f"m{i}.onnx"
            export_onnx(ExportWrapper(net, names), onnx_path, names, dynamic_batch=False, batch_size=1)
            session = make_session(onnx_path, threads=threads)
            fns[f"{i}/torch"] = torch_call(net, x)
            fns[f"{i}/ort"] = ort_call(session, x.numpy())
            if openvino:
                fns[f"{i}/ov"] = runner_call(OpenVinoRunner(onnx_path, threads), x.numpy())
            if tflite:
                from facetx.export.tflite_stage import convert_fp32
                from facetx.runtime.litert import LiteRtRunner

                convert_fp32(net, names, Path(tmp) / f"m{i}.tflite", 1, 112)
                fns[f"{i}/tflite"] = runner_call(LiteRtRunner(Path(tmp) / f"m{i}.tflite", threads, names), x.numpy())
        timings, samples = time_interleaved(fns, batch=1, warmup=10, runs=runs)
    for i, r in enumerate(rows):
        r["eager_ms"] = timings[f"{i}/torch"].p50_ms
        r["ort_ms"] = timings[f"{i}/ort"].p50_ms
        r["speedup"] = paired_ratio(samples["0/ort"], samples[f"{i}/ort"])
        if openvino:
            r["ov_ms"] = timings[f"{i}/ov"].p50_ms
            r["ov_speedup"] = paired_ratio(samples["0/ov"], samples[f"{i}/ov"])
        if tflite:
            r["tflite_ms"] = timings[f"{i}/tflite"].p50_ms
            r["tflite_speedup"] = paired_ratio(samples["0/tflite"], samples[f"{i}/tflite"])


if __name__ == "__main__":
    main()
