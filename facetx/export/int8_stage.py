"""The INT8 stage of ``export.py``: recipe from the CPU's ISA, calibration on training images, sensitivity passes,
held-out metrics of INT8 vs FP32, sizes and speed; writes ``model.int8.onnx`` and ``int8_report.md``."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx as onnx_lib
import torch

from facetx.errors import ConfigError
from facetx.export.contracts import Int8Stage, OnnxArtifacts, Source
from facetx.export.data import ExportData
from facetx.export.parity import output_agreement
from facetx.export.settings import QuantSettings
from facetx.quant.dynamic import build_dynamic, choose_kind, wants_dynamic
from facetx.quant.int8 import build_int8
from facetx.quant.recipe import choose_recipe
from facetx.runtime.sessions import OrtPredictor, OrtRunner, Predictor, Runner, make_session, set_metadata
from facetx.runtime.system import isa_flags, isa_regime
from facetx.runtime.timing import speedups_by_batch
from facetx.training.evaluation import evaluate

log = logging.getLogger(__name__)


def verification_key(metrics: dict[str, float], preferred: str | None) -> str | None:
    """The metric that steers INT8: ``preferred`` if given, else the first ``<set>/acc`` that has ``<set>/acc_std``."""
    if preferred:
        if preferred not in metrics:
            raise ConfigError(f"quant.metric={preferred!r} is not among the held-out metrics {sorted(metrics)}")
        return preferred
    return next((k for k in metrics if k.endswith("/acc") and k + "_std" in metrics), None)


def int8_stage(
    *,
    source: Source,
    data: ExportData,
    onnx: OnnxArtifacts,
    out: Path,
    settings: QuantSettings,
    seed: int,
    eval_batch_size: int,
    real: torch.Tensor,
    threads: int | None,
    runtime: str = "onnxruntime",
    predictor_for: Callable[[Path], Predictor] | None = None,
    runner_for: Callable[[Path], Runner] | None = None,
    filename: str = "model.int8.onnx",
) -> Int8Stage:
    """Recipe from the CPU's ISA, calibration on training images, latency and accuracy passes, held-out metrics.

    ``runtime``: whose kernels the passes tune for; ``predictor_for`` / ``runner_for`` (path -> predictor / runner)
    run a candidate there (default: ONNX Runtime). Each runtime gets its own Q/DQ file (``filename``): a node group
    that INT8 makes slower in one runtime can be faster in another."""
    q = settings
    if predictor_for is None:
        predictor_for = lambda path: OrtPredictor(make_session(path, threads))
    fp32_path = onnx.paths["fp32"]
    recipe = choose_recipe(
        recipe=q.recipe,
        per_channel=q.per_channel,
        reduce_range=q.reduce_range,
        activation_type=q.activation_type,
        groups=q.groups,
        nodes_to_exclude=list(q.nodes_to_exclude or []),
        calibrate_method=q.calibrate_method,
        weight_only_fallback=q.weight_only_fallback,
    )
    regime = isa_regime()
    log.info(
        "INT8 recipe %r (CPU regime %s, flags %s): %s", recipe.name, regime, " ".join(isa_flags()), recipe.as_dict()
    )
    calib = data.calibration(q.calibration_batch_size, q.calibration_batches, seed)
    probe = data.probe(q.sensitivity_images, seed)
    fp32_select = evaluate(predictor_for(fp32_path), data.select, batch_size=eval_batch_size)
    key = verification_key(fp32_select, q.metric)
    notes: list[str] = []
    select = None
    if key is None:
        notes.append("INT8: the held-out sets have no verification accuracy; the accuracy fallback pass was skipped")
    else:

        def select(path: Path) -> float:
            return evaluate(predictor_for(path), data.select, batch_size=eval_batch_size)[key]

    work = out / "int8_work"  # another runtime's pass reuses the calibration cache; its variants overwrite ours
    proxy = ["embedding"] if key and "embedding" in source.names else None
    res = build_int8(
        fp32_path,
        out / filename,
        work,
        calibration=calib,
        probe=probe,
        recipe=recipe,
        threads=threads,
        select=select,
        baseline=fp32_select.get(key) if key else None,
        max_drop=q.max_drop_pt / 100.0,
        latency_search=q.latency_search,
        min_gain=q.min_gain,
        latency_runs=q.latency_runs,
        max_nodes=q.max_sensitivity_nodes,
        proxy_outputs=proxy,
        runner_for=runner_for,
    )
    model = onnx_lib.load(str(res.path))
    set_metadata(
        model,
        {
            **onnx.meta,
            "facetx.precision": "int8",
            "int8.runtime": runtime,
            "int8.recipe": json.dumps(res.recipe.as_dict()),
            "int8.isa_regime": regime,
            "int8.fp32_nodes": json.dumps(res.fp32_nodes),
        },
    )
    onnx_lib.save(model, str(res.path))
    final, dynamic, qdq = res.path, None, None
    if runtime == "onnxruntime" and runner_for is None and wants_dynamic(q.dynamic, regime):
        baseline = fp32_select.get(key) if key else None
        final, dynamic, qdq = _dynamic_candidate(res.path, fp32_path, work, q, calib, probe, threads, select, baseline)
        notes.append(_dynamic_note(dynamic))

    int8_pred = predictor_for(final)
    metrics = {f"{runtime}/int8": evaluate(int8_pred, data.report, batch_size=eval_batch_size)}
    agreement = output_agreement(source.net, int8_pred, real, source.names)
    size_fp32, size_int8 = fp32_path.stat().st_size, final.stat().st_size
    quantized = {g: len(n) - len(res.fp32_nodes.get(g, [])) for g, n in res.groups.items()}
    report = {
        "runtime": runtime,
        "file": final.name,
        "kind": dynamic["kind"] if dynamic else "static",
        "dynamic": dynamic,
        "recipe": res.recipe.as_dict(),
        "isa_regime": regime,
        "isa_flags": isa_flags(),
        "calibration": {"batches": len(calib), "images": int(sum(len(b) for b in calib)), "source": "training set"},
        "selection_metric": key,
        "selection": {"split": "val", "fp32": fp32_select.get(key) if key else None, "max_drop": q.max_drop_pt / 100},
        "groups": {g: {"nodes": len(n), "int8": quantized[g]} for g, n in res.groups.items()},
        "fp32_nodes": res.fp32_nodes,
        "weight_only_nodes": res.weight_only,
        "error_proxy_outputs": proxy or source.names,
        "sensitivity": {
            "groups": res.report.groups,
            "group_errors": res.report.group_errors,
            "nodes": res.report.nodes[:50],
            "trace": res.report.trace,
            "notes": res.report.notes,
        },
        "size_bytes": {"fp32": size_fp32, "int8": size_int8},
        "size_ratio": size_fp32 / max(size_int8, 1),
        "targets": {
            "max_drop": q.max_drop_pt / 100.0,
            "min_size_ratio": q.targets.min_size_ratio,
            "min_speedup": q.targets.min_speedup,
        },
        "speedup_vs_fp32_b1": res.speedup_vs_fp32,
        "agreement_with_torch": agreement,
    }
    notes += res.report.notes
    artifact = "int8" if runtime == "onnxruntime" else f"{runtime}_int8"
    paths = {artifact: final, **({"int8_qdq": qdq} if qdq else {})}
    return Int8Stage(paths=paths, metrics=metrics, report=report, notes=notes, result=res, work=work, settings=q)


def _dynamic_candidate(
    static: Path,
    fp32: Path,
    work: Path,
    q: QuantSettings,
    calib: list[np.ndarray],
    probe: np.ndarray,
    threads: int | None,
    select: Callable[[Path], float] | None,
    baseline: float | None,
) -> tuple[Path, dict[str, Any], Path | None]:
    """Build ONNX Runtime's dynamic INT8 beside the static file, time FP32 / static / dynamic interleaved at batch 1
    and 32, and keep the faster within the accuracy budget as ``model.int8.onnx`` (then the static Q/DQ file, which
    OpenVINO and TensorRT read, stays as ``model.int8.qdq.onnx``). Returns (the INT8 file, what was measured, the
    Q/DQ file if it moved)."""
    dyn = build_dynamic(work / "model.pre.onnx", work / "model.int8.dynamic.onnx")
    meta = {p.key: p.value for p in onnx_lib.load(str(static), load_external_data=False).metadata_props}
    model = onnx_lib.load(str(dyn))
    recipe = {"name": "dynamic", "weights": "int8 per tensor", "ops": ["MatMul", "Gemm"], "activations": "per call"}
    set_metadata(model, {**meta, "int8.kind": "dynamic", "int8.recipe": json.dumps(recipe), "int8.fp32_nodes": "{}"})
    onnx_lib.save(model, str(dyn))
    metric = select(dyn) if select is not None else None
    # no verification metric to judge it by: dynamic INT8 is not kept on speed alone
    within = metric is not None and baseline is not None and baseline - metric <= q.max_drop_pt / 100.0
    big = np.concatenate(calib)[:32]
    runners = {
        k: OrtRunner(make_session(p, threads)) for k, p in (("fp32", fp32), ("static", static), ("dynamic", dyn))
    }
    speed = speedups_by_batch(runners, (probe[:1], big), "fp32", q.latency_runs)
    kind = choose_kind(q.dynamic, speed, within)
    report = {"mode": q.dynamic, "kind": kind, "speed_vs_fp32": speed, "metric": metric, "within_budget": within}
    if kind == "static":
        dyn.unlink()
        return static, report, None
    qdq = static.with_name("model.int8.qdq.onnx")
    static.replace(qdq)
    dyn.replace(static)
    return static, report, qdq


def _dynamic_note(d: dict[str, Any]) -> str:
    s, y = d["speed_vs_fp32"]["static"], d["speed_vs_fp32"]["dynamic"]
    batches = sorted(s)
    speeds = ", ".join(f"batch {b}: static {s[b]:.2f}x, dynamic {y[b]:.2f}x" for b in batches)
    kept = "dynamic INT8 is model.int8.onnx (the Q/DQ file: model.int8.qdq.onnx)" if d["kind"] == "dynamic" else (
        "static Q/DQ kept")  # fmt: skip
    budget = "" if d["within_budget"] else " (dynamic was outside the accuracy budget)"
    return f"onnxruntime INT8, static Q/DQ vs dynamic (speed over FP32; {speeds}): {kept}{budget}"


def write_int8_report(
    path: Path, report: dict[str, Any], fp32_metrics: dict[str, float], int8_metrics: dict[str, float]
) -> None:
    """Markdown summary: held-out metrics of both precisions, recipe, what stayed FP32 and why, size and speed."""
    r = report
    lines = [
        "# INT8 report",
        "",
        f"- CPU ISA regime: **{r['isa_regime']}** (flags: {' '.join(r['isa_flags']) or 'none'})",
        f"- recipe: `{json.dumps(r['recipe'], sort_keys=True)}`",
        f"- calibration: {r['calibration']['images']} training images in {r['calibration']['batches']} batches",
        f"- size on disk: FP32 {r['size_bytes']['fp32'] / 1e6:.2f} MB, "
        f"INT8 {r['size_bytes']['int8'] / 1e6:.2f} MB ({r['size_ratio']:.2f}x smaller)",
    ]
    if r["speedup_vs_fp32_b1"] is not None:
        lines.append(f"- speed at batch 1 (interleaved with FP32): {r['speedup_vs_fp32_b1']:.2f}x FP32")
    sel = r["selection"]
    if r["selection_metric"]:
        lines.append(
            f"- selection metric `{r['selection_metric']}` on val: FP32 {sel['fp32']:.4f}, allowed drop "
            f"{sel['max_drop'] * 100:.2f} pt"
        )
    lines += ["", "## Held-out metrics", "", "| metric | FP32 (ORT) | INT8 (ORT) | INT8 - FP32 |", "|---|---|---|---|"]
    for k, v in fp32_metrics.items():
        if k in int8_metrics:
            lines.append(f"| {k} | {v:.4f} | {int8_metrics[k]:.4f} | {int8_metrics[k] - v:+.4f} |")
    lines += ["", "## Targets", "", "| target | wanted | measured | met |", "|---|---|---|---|"]
    t, key = r["targets"], r["selection_metric"]
    checks = [("size on disk (FP32 / INT8)", f">= {t['min_size_ratio']:.2f}x", r["size_ratio"], t["min_size_ratio"])]
    if r["speedup_vs_fp32_b1"] is not None:
        checks.append(
            ("speed at batch 1 (INT8 / FP32)", f">= {t['min_speedup']:.2f}x", r["speedup_vs_fp32_b1"], t["min_speedup"])
        )
    for name, wanted, got, need in checks:
        lines.append(f"| {name} | {wanted} | {got:.2f}x | {'yes' if got >= need else 'no'} |")
    if key and key in fp32_metrics and key in int8_metrics:
        drop = fp32_metrics[key] - int8_metrics[key]
        lines.append(
            f"| {key} drop (report split) | <= {t['max_drop'] * 100:.2f} pt | {drop * 100:.2f} pt | "
            f"{'yes' if drop <= t['max_drop'] else 'no'} |"
        )
    lines += ["", "## Node groups", "", "| group | nodes | INT8 | FP32 |", "|---|---|---|---|"]
    for g, c in r["groups"].items():
        lines.append(f"| {g} | {c['nodes']} | {c['int8']} | {c['nodes'] - c['int8']} |")
    lines += ["", "## Stayed in FP32 (compute)", ""]
    if not any(r["fp32_nodes"].values()):
        lines.append("- nothing: every compute node is INT8")
    wo = set(r["weight_only_nodes"])
    for g, nodes in r["fp32_nodes"].items():
        lines.append(f"- {g}: {', '.join(f'`{n}`' + (' (int8 weights)' if n in wo else '') for n in nodes)}")
    if wo:
        lines.append(
            "- (int8 weights): computes in FP32, weights stored int8 behind a DequantizeLinear (INT8 compute "
            "was slower here; ONNX Runtime folds the dequantization at load)"
        )
    if r["sensitivity"]["groups"]:
        lines += [
            "",
            "## Latency pass (speed-up over FP32 at batch 1; per round, removing one group)",
            "",
            "| round | group | nodes | INT8 | INT8 without group | decision |",
            "|---|---|---|---|---|---|",
        ]
        for g in r["sensitivity"]["groups"]:
            lines.append(
                f"| {g['round']} | {g['group']} | {g['nodes']} | {g['speedup_int8']:.3f}x | "
                f"{g['speedup_without_group']:.3f}x | {g['decision']} |"
            )
    if r["sensitivity"]["group_errors"]:
        proxy = ", ".join(r["error_proxy_outputs"])
        lines += [
            "",
            f"Output error: relative L2 error of {proxy} against FP32 on training images (the cheap proxy "
            "that ranks nodes).",
            "",
        ]
        lines += [
            "## Accuracy cost per group (output error; lower is better)",
            "",
            "| variant | output error |",
            "|---|---|",
        ]
        lines += [f"| {g['group']} | {g['error']:.5f} |" for g in r["sensitivity"]["group_errors"]]
    if r["sensitivity"]["trace"]:
        lines += [
            "",
            "## Accuracy pass (val selection metric)",
            "",
            "| nodes kept FP32 | metric | drop | output error |",
            "|---|---|---|---|",
        ]
        for t in r["sensitivity"]["trace"]:
            lines.append(f"| {t['kept_fp32']} | {t['metric']:.4f} | {t['drop'] * 100:.2f} pt | {t['error']:.4f} |")
    if r["sensitivity"]["nodes"]:
        lines += [
            "",
            "## Most sensitive nodes (output error with the node left FP32; lower = more sensitive)",
            "",
            "| node | group | error without |",
            "|---|---|---|",
        ]
        for n in r["sensitivity"]["nodes"][:15]:
            lines.append(f"| `{n['node']}` | {n['group']} | {n['error_without']:.5f} |")
    d = r.get("dynamic")
    if d:
        lines += ["", f"## Static Q/DQ vs dynamic INT8 (quant.dynamic={d['mode']}; kept: {d['kind']})", "",
                  "| batch | static vs FP32 | dynamic vs FP32 |", "|---|---|---|"]  # fmt: skip
        for b, v in d["speed_vs_fp32"]["static"].items():
            lines.append(f"| {b} | {v:.2f}x | {d['speed_vs_fp32']['dynamic'][b]:.2f}x |")
        if d["metric"] is not None:
            lines.append(
                f"\ndynamic INT8 selection metric on val: {d['metric']:.4f} (within budget: {d['within_budget']})"
            )
        if r.get("kind") == "dynamic":
            lines.append(
                "\nThe node groups and sensitivity passes above describe the static Q/DQ file (model.int8.qdq.onnx, "
                "what OpenVINO and TensorRT read); model.int8.onnx is the dynamic one (int8 MatMul/Gemm weights)."
            )
    lines += ["", "## Notes", "", *[f"- {n}" for n in r["sensitivity"]["notes"]]]
    path.write_text("\n".join(lines) + "\n")
