"""``python export.py``: checkpoint -> ONNX (parity-checked) -> INT8 (measured) -> TensorRT (where available) ->
benchmark table. Every artifact goes into the run directory; conf/export.yaml documents the knobs."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from facetx.bench import sysinfo
from facetx.bench.table import metric_columns, write_csv, write_markdown
from facetx.export.benchmark import BenchCase, benchmark
from facetx.export.data import build_export_data
from facetx.export.metadata import build_metadata
from facetx.export.onnx_export import ExportWrapper, export_onnx, head_names
from facetx.export.ort import OrtPredictor, make_session
from facetx.export.parity import check_parity
from facetx.training.checkpoint import CONFIG_KEY, build_face_net, checkpoint_role, load_checkpoint
from facetx.training.evaluation import evaluate

log = logging.getLogger(__name__)

#: metrics key -> (runtime, precision) of the benchmark rows
RUNS = {"torch/fp32": ("torch", "fp32"), "onnxruntime/fp32": ("onnxruntime", "fp32"),
        "onnxruntime/int8": ("onnxruntime", "int8"), "tensorrt/fp16": ("tensorrt", "fp16"),
        "tensorrt/int8": ("tensorrt", "int8")}  # fmt: skip


TABLE_NOTES = (
    "p50/p95: wall-clock latency per call (batch images), after warm-up; CPU runtimes of one batch size are timed in "
    "interleaved blocks so they share the same machine load; speed_vs_ort_fp32 is the median of per-round ratios",
    "cpu_ms: process CPU time per call over all threads with spin-waiting off: the work a call costs, close to the "
    "latency a quiet machine gives at 1 thread; load_avg: the 1-minute load average while timing",
)


def load_network(ckpt_path: str | Path, key: str | None = None) -> tuple[torch.nn.Module, dict[str, Any], str]:
    """``(network in eval mode, run config, role)``: a distillation checkpoint (config key ``student``) exports its
    student, any other its ``net``. No Lightning: the stored config rebuilds the network. ``key``: the config key the
    path came from, named in the one-line :class:`~facetx.errors.CheckpointError` of a file that cannot be used."""
    ckpt = load_checkpoint(ckpt_path, key=key)
    config = ckpt[CONFIG_KEY]["config"]
    role = checkpoint_role(config)
    return build_face_net(ckpt, ckpt_path, prefix=f"{role}.", key=key), config, role


def parity_batches(images: torch.Tensor, fixed: int | None) -> list[torch.Tensor]:
    """Batches of 1 and 3 (the dynamic batch axis) and the rest; a fixed-batch graph gets batches of its size."""
    if fixed is not None:
        return [images[i : i + fixed] for i in range(0, len(images) - fixed + 1, fixed)][:8]
    return [b for b in (images[:1], images[1:4], images[4:]) if len(b)]


def export(cfg: DictConfig) -> dict[str, Any]:
    """Run the whole export for ``cfg.ckpt_path`` into ``cfg.paths.output_dir``; returns the report dict."""
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    threads = int(cfg.threads) if cfg.get("threads") else None
    if threads:
        torch.set_num_threads(threads)
    seed = int(cfg.seed)
    torch.manual_seed(seed)
    np.random.seed(seed)
    ckpt = Path(cfg.ckpt_path)
    net, run_config, role = load_network(ckpt, key="ckpt_path")
    names = head_names(net)
    input_size = int(getattr(getattr(net, "backbone", None), "input_size", 112))
    with torch.no_grad():
        shapes = {k: tuple(v.shape) for k, v in net(torch.zeros(1, 3, input_size, input_size)).items()}
    model_name = str(getattr(getattr(net, "backbone", None), "name", type(net).__name__))
    system = sysinfo.system_summary()
    log.info("exporting %s (%s) from %s; CPU %s, ISA %s (INT8 regime %s), threads %s", model_name, role, ckpt,
             system["cpu"], " ".join(system["isa_flags"]), system["isa_regime"], threads)  # fmt: skip

    data = build_export_data(run_config, str(cfg.eval.split), cfg.eval.get("max_images"))
    meta = build_metadata(
        names, net.mean.flatten().tolist(), net.std.flatten().tolist(), input_size,
        shapes["landmarks"][1] if "landmarks" in shapes else None,
        shapes["expression_logits"][1] if "expression_logits" in shapes else None, ckpt, model_name,
    )  # fmt: skip
    e = cfg.export
    fixed = None if e.dynamic_batch else int(e.batch_size)
    paths = {"fp32": out / "model.onnx"}
    export_onnx(ExportWrapper(net, names), paths["fp32"], names, input_size, int(e.opset), bool(e.dynamic_batch),
                fixed or 1, bool(e.simplify), str(e.exporter), meta)  # fmt: skip
    real = torch.from_numpy(data.real_images(int(e.parity_images)))
    fp32 = OrtPredictor(make_session(paths["fp32"], threads))
    min_cos = float(e.parity_min_cosine)
    parity = {"model.onnx": check_parity(net, fp32, parity_batches(real, fixed), names, min_cos, str(paths["fp32"]))}
    if e.dynamic_batch and e.fixed_batch_variant:
        paths["fp32_b1"] = out / "model.b1.onnx"
        export_onnx(ExportWrapper(net, names), paths["fp32_b1"], names, input_size, int(e.opset), False, 1,
                    bool(e.simplify), str(e.exporter), meta)  # fmt: skip
        b1 = OrtPredictor(make_session(paths["fp32_b1"], threads))
        parity["model.b1.onnx"] = check_parity(net, b1, parity_batches(real, 1), names, min_cos, str(paths["fp32_b1"]))
    for file, stats in parity.items():
        log.info(
            "parity %s vs PyTorch (min cosine): %s", file, {n: round(s["min_cosine"], 7) for n, s in stats.items()}
        )

    bs = int(cfg.eval.batch_size)
    metrics = {"torch/fp32": evaluate(net, data.report, batch_size=bs),
               "onnxruntime/fp32": evaluate(fp32, data.report, batch_size=bs)}  # fmt: skip
    report: dict[str, Any] = {"checkpoint": str(ckpt), "role": role, "model": model_name, "outputs": names,
                              "system": system, "threads": threads, "seed": seed, "parity": parity,
                              "held_out_split": data.report_split}  # fmt: skip
    notes: list[str] = []
    int8 = None
    if cfg.int8.enabled:
        from facetx.export.int8_stage import int8_stage, write_int8_report

        int8 = int8_stage(cfg, data, paths["fp32"], out, threads, meta, names, real, net)
        paths.update(int8["paths"])
        metrics.update(int8["metrics"])
        report["int8"] = int8["report"]
        notes += int8["notes"]
        write_int8_report(out / "int8_report.md", int8["report"], metrics["onnxruntime/fp32"],
                          metrics["onnxruntime/int8"])  # fmt: skip
    if e.tensorrt:
        from facetx.export.tensorrt_stage import tensorrt_stage

        trt = tensorrt_stage(cfg, data, paths, out, names, input_size, real, net, int8)
        paths.update(trt["paths"])
        metrics.update(trt["metrics"])
        report["tensorrt"] = trt["report"]
        notes += trt["notes"]
    if int8 is not None and not cfg.int8.keep_work:
        import shutil

        shutil.rmtree(int8["work"], ignore_errors=True)

    rows = run_benchmark(cfg, net, names, paths, real, threads, input_size)
    table_keys = {k for m in metrics.values() for k in metric_columns(m)}
    by_run = {v: metrics.get(k, {}) for k, v in RUNS.items()}
    common = {"model": f"{model_name} ({role})", "threads": threads or "default", "cpu": system["cpu"],
              "isa_flags": " ".join(system["isa_flags"]), "isa_regime": system["isa_regime"],
              "versions": system["versions"], "git_commit": system["git_commit"], "seed": seed,
              "source": str(ckpt)}  # fmt: skip
    for r in rows:
        r.update(common)
        m = by_run.get((r["runtime"], r["precision"]), {})
        r.update({k: round(float(v), 5) for k, v in m.items() if k in table_keys})
    report.update(metrics={k: {n: round(float(v), 6) for n, v in m.items()} for k, m in metrics.items()},
                  files={k: str(p) for k, p in paths.items()}, benchmark=rows, notes=notes)  # fmt: skip
    context = {"checkpoint": str(ckpt), "held-out split": data.report_split, "cpu": system["cpu"],
               "ISA flags": " ".join(system["isa_flags"]), "INT8 regime": system["isa_regime"],
               "threads (intra-op, pinned)": threads or "default", "versions": system["versions"],
               "git commit": system["git_commit"], "seed": seed, "environment": system["env"],
               "load average at start": system["load_average"]}  # fmt: skip
    notes = [*notes, *TABLE_NOTES]
    write_csv(rows, out / "benchmark.csv")
    write_markdown(rows, out / "benchmark.md", f"facetx export benchmark: {model_name} ({role})", context, notes)
    (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")
    log.info("wrote %s, %s and %s", out / "benchmark.md", out / "benchmark.csv", out / "report.json")
    return report


def run_benchmark(
    cfg: DictConfig,
    net: torch.nn.Module,
    names: list[str],
    paths: dict[str, Path],
    real: torch.Tensor,
    threads: int | None,
    input_size: int,
) -> list[dict[str, object]]:
    """The table rows: torch eager, ORT FP32 (+ fixed batch 1), ORT INT8, TensorRT where built."""
    graph = "dynamic" if cfg.export.dynamic_batch else "fixed"
    cases = [BenchCase("torch", "fp32", "eager", module=ExportWrapper(net, names)),
             BenchCase("onnxruntime", "fp32", graph, path=paths["fp32"])]  # fmt: skip
    if "fp32_b1" in paths:
        cases.append(BenchCase("onnxruntime", "fp32", "fixed-b1", path=paths["fp32_b1"], batches=(1,)))
    if "int8" in paths:
        cases.append(BenchCase("onnxruntime", "int8", graph, path=paths["int8"]))
    for prec in ("fp16", "int8"):
        if f"trt_{prec}" in paths:
            hi = int(cfg.export.trt_max_batch) if cfg.export.dynamic_batch else int(cfg.export.batch_size)
            fits = tuple(int(x) for x in cfg.bench.batches if int(x) <= hi)
            cases.append(BenchCase("tensorrt", prec, "engine", path=paths[f"trt_{prec}"], batches=fits))
    b = cfg.bench
    return benchmark(cases, net, real.numpy(), [int(x) for x in b.batches], threads, int(b.warmup), int(b.runs),
                     int(b.min_runs), float(b.seconds_per_case), input_size)  # fmt: skip
