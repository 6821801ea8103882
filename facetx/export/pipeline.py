"""``export.py`` as named stages with typed hand-offs.

    load_source ─► onnx_stage (+ parity) ─► evaluate_stage ─► int8_stage ─► tensorrt_stage
                ─► runtime stages (conf/runtime/: openvino, tflite, coreml; facetx.export.runtimes)
                ─► calibration_stage (thresholds into the metadata) ─► benchmark_stage ─► write_outputs

Each stage is a function of its inputs (keyword arguments, settings dataclasses from :mod:`facetx.export.settings`)
and returns a dataclass; :func:`export` only composes them, so ``make bench`` and the video pipeline can call the same
stages one by one.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from facetx.export.benchmark import BenchCase, benchmark
from facetx.export.best import choose_best, write_best
from facetx.export.calibration import calibration_stage
from facetx.export.contracts import OnnxArtifacts, RuntimeStage, Source, StageOutput
from facetx.export.data import ExportData, build_export_data
from facetx.export.int8_stage import verification_key
from facetx.export.metadata import build_metadata, model_fingerprint
from facetx.export.onnx_export import ExportWrapper, export_onnx, head_names
from facetx.export.parity import check_parity
from facetx.export.runtimes import runtime_choices
from facetx.export.settings import BenchSettings, EvalSettings, ExportSettings, QuantSettings, settings_from
from facetx.runtime.sessions import OrtPredictor, OrtRunner, make_session
from facetx.runtime.system import system_summary
from facetx.runtime.tables import metric_columns, write_csv, write_markdown
from facetx.training.checkpoint import checkpoint_role, load_face_net
from facetx.training.evaluation import evaluate

log = logging.getLogger(__name__)

TABLE_NOTES = (
    "p50/p95: wall-clock latency per call (batch images), after warm-up; CPU runtimes of one batch size are timed in "
    "interleaved blocks so they share the same machine load, every session with thread spin-waiting off (spinning "
    "sessions steal each other's cores, and the order of the rows decided their ratios); speed_vs_ort_fp32 is the "
    "median of per-round ratios",
    "cpu_ms: process CPU time per call over all threads: the work a call costs, close to the latency a quiet machine "
    "gives at 1 thread; load_avg: the 1-minute load average while timing",
)


def load_network(ckpt_path: str | Path, key: str | None = None) -> tuple[torch.nn.Module, dict[str, Any], str]:
    """``(network in eval mode, run config, role)``: a distillation checkpoint exports its student, any other its
    ``net`` (:func:`~facetx.training.checkpoint.load_face_net` picks it). ``key``: the config key the path came from,
    named in the one-line :class:`~facetx.errors.CheckpointError` of a file that cannot be used."""
    net, config = load_face_net(ckpt_path, prefix=None, key=key)
    return net, config, checkpoint_role(config)


def load_source(ckpt_path: str | Path, key: str | None = "ckpt_path") -> Source:
    net, run_config, role = load_network(ckpt_path, key=key)
    backbone = getattr(net, "backbone", None)
    input_size = int(getattr(backbone, "input_size", 112))
    with torch.no_grad():
        shapes = {k: tuple(v.shape) for k, v in net(torch.zeros(1, 3, input_size, input_size)).items()}
    model_name = str(getattr(backbone, "name", type(net).__name__))
    return Source(Path(ckpt_path), net, run_config, role, head_names(net), input_size, model_name, shapes)


def parity_batches(images: torch.Tensor, fixed: int | None) -> list[torch.Tensor]:
    """Batches of 1 and 3 (the dynamic batch axis) and the rest; a fixed-batch graph gets batches of its size."""
    if fixed is not None:
        return [images[i : i + fixed] for i in range(0, len(images) - fixed + 1, fixed)][:8]
    return [b for b in (images[:1], images[1:4], images[4:]) if len(b)]


def _export_checked(
    source: Source,
    path: Path,
    *,
    dynamic: bool,
    batch: int,
    settings: ExportSettings,
    meta: dict[str, str],
    real: torch.Tensor,
    threads: int | None,
) -> dict[str, dict[str, float]]:
    """Export one ONNX file and check it against PyTorch on real images; returns its parity statistics."""
    export_onnx(
        ExportWrapper(source.net, source.names),
        path,
        source.names,
        source.input_size,
        opset=settings.opset,
        dynamic_batch=dynamic,
        batch_size=batch,
        simplify=settings.simplify,
        exporter=settings.exporter,
        metadata=meta,
    )
    predictor = OrtPredictor(make_session(path, threads))
    batches = parity_batches(real, None if dynamic else batch)
    return check_parity(source.net, predictor, batches, source.names, settings.parity_min_cosine, str(path))


def onnx_stage(
    source: Source, real: torch.Tensor, out: Path, *, settings: ExportSettings, threads: int | None
) -> OnnxArtifacts:
    """``model.onnx`` (and ``model.b1.onnx``) with metadata; every output checked against PyTorch on ``real``."""
    meta = build_metadata(
        source.names,
        source.net.mean.flatten().tolist(),
        source.net.std.flatten().tolist(),
        source.input_size,
        source.shapes["landmarks"][1] if "landmarks" in source.shapes else None,
        source.shapes["expression_logits"][1] if "expression_logits" in source.shapes else None,
        source.ckpt,
        source.model_name,
        fingerprint=model_fingerprint(source.net),
    )
    paths = {"fp32": out / "model.onnx"}
    fixed = settings.fixed_batch
    parity = {
        "model.onnx": _export_checked(
            source,
            paths["fp32"],
            dynamic=settings.dynamic_batch,
            batch=fixed or 1,
            settings=settings,
            meta=meta,
            real=real,
            threads=threads,
        )
    }
    if settings.dynamic_batch and settings.fixed_batch_variant:
        paths["fp32_b1"] = out / "model.b1.onnx"
        parity["model.b1.onnx"] = _export_checked(
            source, paths["fp32_b1"], dynamic=False, batch=1, settings=settings, meta=meta, real=real, threads=threads
        )
    for file, stats in parity.items():
        worst = {name: round(s["min_cosine"], 7) for name, s in stats.items()}
        log.info("parity %s vs PyTorch (min cosine): %s", file, worst)
    return OnnxArtifacts(paths=paths, meta=meta, parity=parity)


def evaluate_stage(
    source: Source, onnx: OnnxArtifacts, data: ExportData, *, batch_size: int, threads: int | None
) -> dict[str, dict[str, float]]:
    """Held-out metrics of the PyTorch network and of ``model.onnx`` in ONNX Runtime."""
    fp32 = OrtPredictor(make_session(onnx.paths["fp32"], threads))
    return {
        "torch/fp32": evaluate(source.net, data.report, batch_size=batch_size),
        "onnxruntime/fp32": evaluate(fp32, data.report, batch_size=batch_size),
    }


def bench_cases(
    source: Source,
    paths: dict[str, Path],
    *,
    settings: BenchSettings,
    export: ExportSettings,
    extra: Sequence[BenchCase] = (),
) -> list[BenchCase]:
    """What the table times: torch eager, ORT FP32 (+ fixed batch 1), ORT INT8, TensorRT where built, then ``extra``
    (the other runtimes' cases)."""
    graph = "dynamic" if export.dynamic_batch else "fixed"
    cases = [
        BenchCase("torch", "fp32", "eager", module=ExportWrapper(source.net, source.names)),
        BenchCase("onnxruntime", "fp32", graph, path=paths["fp32"]),
    ]
    if "fp32_b1" in paths:
        cases.append(BenchCase("onnxruntime", "fp32", "fixed-b1", path=paths["fp32_b1"], batches=(1,)))
    if "int8" in paths:
        cases.append(BenchCase("onnxruntime", "int8", graph, path=paths["int8"]))
    cases += gpu_provider_cases(paths["fp32"])
    for precision in ("fp16", "int8"):
        if f"trt_{precision}" in paths:
            largest = export.trt_max_batch if export.dynamic_batch else export.batch_size
            fits = tuple(b for b in settings.batches if b <= largest)
            cases.append(BenchCase("tensorrt", precision, "engine", path=paths[f"trt_{precision}"], batches=fits))
    return [*cases, *extra]


#: ONNX Runtime's GPU execution providers, timed where the installed onnxruntime has them (onnxruntime-gpu)
GPU_PROVIDERS = {"cuda-ep": "CUDAExecutionProvider", "tensorrt-ep": "TensorrtExecutionProvider"}


def gpu_provider_cases(path: Path) -> list[BenchCase]:
    """ORT FP32 rows on the CUDA / TensorRT execution providers the installed onnxruntime offers (none on a CPU
    build). ``run`` returns host arrays, so wall-clock timing of a call includes the copies, as a caller sees it."""
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    return [
        BenchCase(
            "onnxruntime",
            "fp32",
            graph,
            path=path,
            factory=lambda p=provider: OrtRunner(make_session(path, None, providers=(p, "CPUExecutionProvider"))),
        )
        for graph, provider in GPU_PROVIDERS.items()
        if provider in available
    ]


def benchmark_stage(
    source: Source,
    cases: Sequence[BenchCase],
    real: torch.Tensor,
    *,
    settings: BenchSettings,
    threads: int | None,
) -> list[dict[str, object]]:
    """The table rows of ``cases``, CPU ones timed in one interleaved loop per batch size."""
    return benchmark(
        cases,
        source.net,
        real.numpy(),
        list(settings.batches),
        threads,
        warmup=settings.warmup,
        runs=settings.runs,
        min_runs=settings.min_runs,
        seconds_per_case=settings.seconds_per_case,
        input_size=source.input_size,
    )


def best_stage(
    rows: list[dict[str, object]],
    cases: Sequence[BenchCase],
    metrics: dict[str, dict[str, float]],
    paths: dict[str, Path],
    *,
    quant: QuantSettings,
    out: Path,
    context: dict[str, object],
) -> tuple[dict[int, dict[str, Any]], list[str]]:
    """Choose the fastest deployable artifact per batch size within ``quant.max_drop_pt`` of ORT FP32's verification
    accuracy, mark its row (``best``), write ``best.json``; returns the choice and the table notes."""
    files = {(c.runtime, c.precision, c.graph): c.path for c in cases if c.path is not None}
    metric = verification_key(metrics.get("onnxruntime/fp32", {}), quant.metric)
    chosen = choose_best(rows, metrics, files, metric, quant.max_drop_pt)
    by_precision = {"fp32": paths["fp32"], "int8": paths.get("int8", paths["fp32"])}
    notes = []
    for batch, c in chosen.items():
        # the ONNX file whose metadata (threshold, template, fingerprint) describes the artifact
        c["metadata_file"] = c["file"] if c["file"].endswith(".onnx") else by_precision[c["precision"]].name
        for r in rows:
            hit = (r["runtime"], r["precision"], r["graph"], r["batch"]) == (
                c["runtime"],
                c["precision"],
                c["graph"],
                batch,
            )
            r["best"] = "yes" if hit else r.get("best", "")
        drop = "no accuracy metric" if c["drop_pt"] is None else f"verification drop {c['drop_pt']:+.2f} pt"
        notes.append(
            f"best at batch {batch} on this machine: {c['runtime']}/{c['precision']} ({c['file']}), "
            f"{c['speed_vs_ort_fp32']:.2f}x ORT FP32, {drop} (budget {c['budget_pt']} pt); written to best.json"
        )
    write_best(out / "best.json", chosen, context)
    return chosen, notes


def table_rows(rows: list[dict[str, object]], metrics: dict[str, dict[str, float]], common: dict[str, object]) -> None:
    """Add the run context and each row's held-out metrics (by runtime and precision) to the benchmark rows."""
    columns = {k for m in metrics.values() for k in metric_columns(m)}
    by_run = {tuple(k.split("/", 1)): m for k, m in metrics.items()}  # "<runtime>/<precision>" keys
    for r in rows:
        r.update(common)
        m = by_run.get((r["runtime"], r["precision"]), {})
        r.update({k: round(float(v), 5) for k, v in m.items() if k in columns})


def write_outputs(
    out: Path,
    *,
    source: Source,
    system: dict[str, Any],
    threads: int | None,
    seed: int,
    report_split: str,
    rows: list[dict[str, object]],
    report: dict[str, Any],
    notes: list[str],
) -> None:
    """``benchmark.csv``, ``benchmark.md`` and ``report.json``."""
    context = {
        "checkpoint": str(source.ckpt),
        "held-out split": report_split,
        "cpu": system["cpu"],
        "ISA flags": " ".join(system["isa_flags"]),
        "INT8 regime": system["isa_regime"],
        "threads (intra-op, pinned)": threads or "default",
        "versions": system["versions"],
        "git commit": system["git_commit"],
        "seed": seed,
        "environment": system["env"],
        "load average at start": system["load_average"],
    }
    write_csv(rows, out / "benchmark.csv")
    title = f"facetx export benchmark: {source.label}"
    write_markdown(rows, out / "benchmark.md", title, context, [*notes, *TABLE_NOTES])
    (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")
    log.info("wrote %s, %s and %s", out / "benchmark.md", out / "benchmark.csv", out / "report.json")


def _absorb(
    stage: StageOutput,
    name: str,
    *,
    paths: dict[str, Path],
    metrics: dict[str, dict[str, float]],
    report: dict[str, Any],
    notes: list[str],
) -> None:
    """Merge a stage's artifacts, held-out metrics, report section ``name`` and notes into the export's."""
    paths.update(stage.paths)
    metrics.update(stage.metrics)
    report[name] = stage.report
    notes += stage.notes


def export(cfg: DictConfig) -> dict[str, Any]:
    """Run every stage for ``cfg.ckpt_path`` into ``cfg.paths.output_dir``; returns the report dict."""
    settings = settings_from(ExportSettings, OmegaConf.to_container(cfg.export, resolve=True), "export")
    quant = settings_from(QuantSettings, OmegaConf.to_container(cfg.quant, resolve=True), "quant")
    bench = settings_from(BenchSettings, OmegaConf.to_container(cfg.bench, resolve=True), "bench")
    held_out = settings_from(EvalSettings, OmegaConf.to_container(cfg.eval, resolve=True), "eval")
    runtimes = runtime_choices(OmegaConf.to_container(cfg.get("runtime"), resolve=True))
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    threads = int(cfg.threads) if cfg.get("threads") else None
    if threads:
        torch.set_num_threads(threads)
    seed = int(cfg.seed)
    torch.manual_seed(seed)
    np.random.seed(seed)

    source = load_source(cfg.ckpt_path)
    system = system_summary()
    log.info(
        "exporting %s from %s; CPU %s, ISA %s (INT8 regime %s), threads %s",
        source.label,
        source.ckpt,
        system["cpu"],
        " ".join(system["isa_flags"]),
        system["isa_regime"],
        threads,
    )
    data = build_export_data(source.run_config, held_out.split, held_out.max_images)
    real = torch.from_numpy(data.real_images(settings.parity_images))
    onnx = onnx_stage(source, real, out, settings=settings, threads=threads)
    metrics = evaluate_stage(source, onnx, data, batch_size=held_out.batch_size, threads=threads)
    paths = dict(onnx.paths)
    report: dict[str, Any] = {
        "checkpoint": str(source.ckpt),
        "role": source.role,
        "model": source.model_name,
        "outputs": source.names,
        "system": system,
        "threads": threads,
        "seed": seed,
        "parity": onnx.parity,
        "held_out_split": data.report_split,
    }
    notes: list[str] = []
    int8 = None
    if quant.enabled:
        from facetx.export.int8_stage import int8_stage, write_int8_report

        int8 = int8_stage(
            source=source,
            data=data,
            onnx=onnx,
            out=out,
            settings=quant,
            seed=seed,
            eval_batch_size=held_out.batch_size,
            real=real,
            threads=threads,
        )
        _absorb(int8, "int8", paths=paths, metrics=metrics, report=report, notes=notes)
        write_int8_report(out / "int8_report.md", int8.report, metrics["onnxruntime/fp32"], metrics["onnxruntime/int8"])
    if settings.tensorrt:
        from facetx.export.tensorrt_stage import tensorrt_stage

        trt = tensorrt_stage(
            source=source,
            data=data,
            onnx=onnx,
            int8=int8,
            out=out,
            settings=settings,
            eval_batch_size=held_out.batch_size,
            real=real,
        )
        _absorb(trt, "tensorrt", paths=paths, metrics=metrics, report=report, notes=notes)
    cases: list[BenchCase] = []
    for choice in runtimes:
        stage: RuntimeStage = choice.module.run_stage(
            source=source,
            data=data,
            onnx=onnx,
            int8=int8,
            out=out,
            settings=choice.settings,
            eval_batch_size=held_out.batch_size,
            real=real,
            threads=threads,
            seed=seed,
        )
        _absorb(stage, choice.name, paths=paths, metrics=metrics, report=report, notes=notes)
        cases += stage.cases
    if int8 is not None and not quant.keep_work:
        shutil.rmtree(int8.work, ignore_errors=True)
    # thresholds are known only now that every runtime's held-out metrics are in
    calibration = calibration_stage(
        paths=paths, metrics=metrics, data=data, fingerprint=onnx.meta["facetx.fingerprint"]
    )
    _absorb(calibration, "calibration", paths=paths, metrics=metrics, report=report, notes=notes)

    timed = bench_cases(source, paths, settings=bench, export=settings, extra=cases)
    rows = benchmark_stage(source, timed, real, settings=bench, threads=threads)
    common = {
        "model": source.label,
        "threads": threads or "default",
        "cpu": system["cpu"],
        "isa_flags": " ".join(system["isa_flags"]),
        "isa_regime": system["isa_regime"],
        "versions": system["versions"],
        "git_commit": system["git_commit"],
        "seed": seed,
        "source": str(source.ckpt),
    }
    table_rows(rows, metrics, common)
    best, best_notes = best_stage(
        rows,
        timed,
        metrics,
        paths,
        quant=quant,
        out=out,
        context={k: common[k] for k in ("model", "threads", "cpu", "isa_flags", "isa_regime", "git_commit")},
    )
    notes += best_notes
    report.update(
        metrics={k: {n: round(float(v), 6) for n, v in m.items()} for k, m in metrics.items()},
        files={k: str(p) for k, p in paths.items()},
        benchmark=rows,
        best={str(b): c for b, c in best.items()},
        notes=notes,
    )
    write_outputs(
        out,
        source=source,
        system=system,
        threads=threads,
        seed=seed,
        report_split=data.report_split,
        rows=rows,
        report=report,
        notes=notes,
    )
    return report
