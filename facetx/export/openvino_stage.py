"""The OpenVINO runtime of ``export.py`` (``runtime=[onnxruntime,openvino]``): FP32, INT8 and BF16 on the CPU plugin.

OpenVINO compiles our ONNX files directly (``model.onnx``; a Q/DQ file, whose Q/DQ pairs it runs as int8 kernels), so
every OpenVINO row has the metadata, threshold and fingerprint of the file it read. INT8 gets its own Q/DQ file,
``model.int8.openvino.onnx``: the quant stage's latency and accuracy passes re-run with OpenVINO timing and judging
the candidates (same recipe and calibration), because what INT8 makes slower depends on the runtime's kernels (on an
AVX2 CPU without VNNI, OpenVINO's int8 MatMuls can be slower than its FP32 ones). FP32 must
match PyTorch like the ONNX file does (cosine >= ``parity_min_cosine``); INT8 and BF16 are judged by their held-out
metrics. BF16 runs only where OpenVINO reports the ``BF16`` capability (AMX or AVX512_BF16): elsewhere it would be
emulated, slower than FP32, so the stage notes why it skipped it.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facetx.errors import ConfigError
from facetx.export.benchmark import BenchCase
from facetx.export.contracts import Int8Stage, OnnxArtifacts, RuntimeStage, Source
from facetx.export.data import ExportData
from facetx.export.int8_stage import int8_stage, verification_key
from facetx.export.parity import check_parity
from facetx.runtime.openvino import OpenVinoRunner, cpu_capabilities, openvino_missing
from facetx.runtime.sessions import Predictor
from facetx.training.evaluation import evaluate

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "int8", "bf16")
HINTS = ("LATENCY", "THROUGHPUT")


@dataclass(frozen=True)
class OpenVinoSettings:
    """``conf/runtime/openvino.yaml``."""

    precisions: tuple[str, ...] = PRECISIONS
    performance_hint: str = "LATENCY"
    parity_min_cosine: float = 0.9999
    # own_int8: quant's latency and accuracy passes timed in OpenVINO -> model.int8.openvino.onnx (same calibration);
    # false: run ONNX Runtime's model.int8.onnx as it is
    own_int8: bool = True
    # NNCF's post-training quantization of the FP32 model (OpenVINO's own INT8 tool, ONNX backend) as a candidate
    # beside our Q/DQ file: auto (when nncf is installed) | off. The faster at its slower batch size within
    # quant.max_drop_pt of the Q/DQ file's verification accuracy is kept as OpenVINO's INT8; force: kept whenever
    # within the budget
    nncf: str = "auto"

    def __post_init__(self) -> None:
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad:
            raise ConfigError(f"runtime.openvino.precisions: {bad} unknown; expected among {list(PRECISIONS)}")
        if self.nncf not in ("off", "auto", "force"):
            raise ConfigError(f"runtime.openvino.nncf={self.nncf!r}: expected off, auto or force")
        if self.performance_hint not in HINTS:
            raise ConfigError(
                f"runtime.openvino.performance_hint={self.performance_hint!r}: expected one of {list(HINTS)}"
            )
        object.__setattr__(self, "precisions", tuple(self.precisions))


SETTINGS = OpenVinoSettings


def missing() -> str | None:
    return openvino_missing()


def _sources(onnx: OnnxArtifacts, int8: Int8Stage | None, wanted: tuple[str, ...]) -> tuple[dict[str, Path], list]:
    """precision -> the ONNX file OpenVINO reads for it, and the notes on what cannot run here."""
    notes = []
    files: dict[str, Path] = {}
    for precision in wanted:
        if precision == "int8":
            if int8 is None or "int8" not in int8.paths:
                notes.append("openvino/int8 skipped: it needs the quant stage's calibration, and quant=none skips it")
                continue
            files["int8"] = int8.paths.get("int8_qdq", int8.paths["int8"])  # explicit Q/DQ, not ORT's dynamic INT8
        elif precision == "bf16" and "BF16" not in cpu_capabilities():
            notes.append(
                "openvino/bf16 skipped: this CPU has no native BF16 (OpenVINO capabilities "
                f"{sorted(cpu_capabilities())}; it needs AMX or AVX512_BF16), emulation would be slower than FP32"
            )
        else:
            files[precision] = onnx.paths["fp32"]
    return files, notes


def run_stage(
    *,
    source: Source,
    data: ExportData,
    onnx: OnnxArtifacts,
    int8: Int8Stage | None,
    out: Path,
    settings: OpenVinoSettings,
    eval_batch_size: int,
    real: torch.Tensor,
    threads: int | None,
    seed: int,
) -> RuntimeStage:
    """Compile each precision, check FP32 parity with PyTorch, evaluate every precision on the held-out sets."""
    files, notes = _sources(onnx, int8, settings.precisions)
    for note in notes:
        log.info(note)
    stage = RuntimeStage(notes=notes)
    report: dict[str, Any] = {"files": {}, "compile_s": {}, "capabilities": sorted(cpu_capabilities())}
    if "int8" in files and settings.own_int8:
        tuned = int8_stage(
            source=source,
            data=data,
            onnx=onnx,
            out=out,
            settings=int8.settings,
            seed=seed,
            eval_batch_size=eval_batch_size,
            real=real,
            threads=threads,
            runtime="openvino",
            predictor_for=lambda p: Predictor(OpenVinoRunner(p, threads, "int8", settings.performance_hint)),
            runner_for=lambda p: OpenVinoRunner(p, threads, "int8", settings.performance_hint),
            filename="model.int8.openvino.onnx",
        )
        files["int8"] = tuned.paths["openvino_int8"]
        stage.paths.update(tuned.paths)
        stage.metrics.update(tuned.metrics)
        stage.notes += [f"openvino INT8: {n}" for n in tuned.notes]
        report["int8"] = {k: tuned.report[k] for k in ("recipe", "fp32_nodes", "size_ratio", "speedup_vs_fp32_b1")}
        if settings.nncf in ("auto", "force") and _has_nncf():
            hint = settings.performance_hint
            chosen, nncf_report = _nncf_candidate(
                onnx.paths["fp32"],
                files["int8"],
                out,
                data,
                int8,
                threads,
                hint,
                seed,
                eval_batch_size,
                force=settings.nncf == "force",
            )
            stage.notes.append(_nncf_note(nncf_report))
            if nncf_report["kept"] == "nncf":  # the same file name: the threshold and readers follow it
                files["int8"] = chosen
                stage.metrics["openvino/int8"] = nncf_report["metrics"]
                # the tuned file's recipe, FP32 nodes and size no longer describe model.int8.openvino.onnx
                report["int8"] = {"tool": "nncf", "nncf": nncf_report, "discarded_qdq": report["int8"]}
            else:
                report["int8"]["nncf"] = nncf_report
    for precision, path in files.items():
        t0 = time.perf_counter()
        runner = OpenVinoRunner(path, threads, precision, settings.performance_hint)
        predictor = Predictor(runner)
        if precision == "fp32":
            batches = [b for b in (real[:1], real[1:4], real[4:]) if len(b)]
            report["parity"] = check_parity(
                source.net, predictor, batches, source.names, settings.parity_min_cosine, f"openvino {path.name}"
            )
        if f"openvino/{precision}" not in stage.metrics:  # the INT8 pass evaluated its file already
            stage.metrics[f"openvino/{precision}"] = evaluate(predictor, data.report, batch_size=eval_batch_size)
        report["files"][precision] = path.name
        report["compile_s"][precision] = round(time.perf_counter() - t0, 2)
        stage.cases.append(
            BenchCase(
                "openvino",
                precision,
                "static-per-batch",
                path=path,
                factory=lambda p=path, q=precision: OpenVinoRunner(p, threads, q, settings.performance_hint),
            )
        )
        log.info("openvino/%s on %s: %s", precision, path.name, stage.metrics[f"openvino/{precision}"])
    stage.report = report
    return stage


def _has_nncf() -> bool:
    import importlib.util

    return importlib.util.find_spec("nncf") is not None


def _nncf_candidate(
    fp32: Path,
    qdq: Path,
    out: Path,
    data: ExportData,
    int8: Int8Stage,
    threads: int | None,
    hint: str,
    seed: int,
    eval_batch_size: int,
    force: bool = False,
) -> tuple[Path, dict[str, Any]]:
    """NNCF's INT8 of ``fp32`` (its ONNX backend: a Q/DQ ONNX file, calibrated on the quant stage's training images),
    evaluated and timed at batch 1 and 32 beside our Q/DQ file in OpenVINO. When kept it replaces ``qdq``
    (``model.int8.openvino.onnx``, with that file's metadata), so the threshold and every reader stay as they are.
    Returns (OpenVINO's INT8 file, what was measured)."""
    import nncf
    import onnx as onnx_lib

    from facetx.runtime.sessions import set_metadata
    from facetx.runtime.timing import speedups_by_batch

    q = int8.settings
    calib = data.calibration(q.calibration_batch_size, q.calibration_batches, seed)
    items = [{"image": b[i : i + 1]} for b in calib for i in range(len(b))]  # one image per item, as it is run
    model = nncf.quantize(onnx_lib.load(str(fp32)), nncf.Dataset(items), subset_size=len(items))
    meta = {p.key: p.value for p in onnx_lib.load(str(qdq), load_external_data=False).metadata_props}
    set_metadata(model, {**meta, "int8.tool": "nncf", "int8.recipe": json.dumps({"name": "nncf", "preset": "default"})})
    cand = out / "model.int8.nncf.onnx"
    onnx_lib.save(model, str(cand))

    # judged as the quant stage judges INT8: on the validation sets, against FP32 (not against the other INT8 file)
    def select(path: Path, precision: str) -> dict[str, float]:
        return evaluate(
            Predictor(OpenVinoRunner(path, threads, precision, hint)), data.select, batch_size=eval_batch_size
        )

    fp32_val, cand_val = select(fp32, "fp32"), select(cand, "int8")
    key = verification_key(fp32_val, q.metric)
    drop = fp32_val[key] - cand_val[key] if key else float("nan")
    within = key is not None and drop <= q.max_drop_pt / 100.0  # no verification metric: not kept on speed alone
    big = np.concatenate(calib)[:32]
    runners = {k: OpenVinoRunner(p, threads, prec, hint)
               for k, p, prec in (("fp32", fp32, "fp32"), ("qdq", qdq, "int8"), ("nncf", cand, "int8"))}  # fmt: skip
    speed = speedups_by_batch(runners, (big[:1], big), "fp32", q.latency_runs)
    faster = min(speed["nncf"].values()) > min(speed["qdq"].values()) * 1.05
    kept = "nncf" if within and (faster or force) else "qdq"
    report = {"kept": kept, "speed_vs_openvino_fp32": speed, "val_verification_drop_vs_fp32_pt": round(100 * drop, 3),
              "within_budget": within}  # fmt: skip
    if kept == "nncf":
        report["metrics"] = evaluate(Predictor(OpenVinoRunner(cand, threads, "int8", hint)), data.report,
                                     batch_size=eval_batch_size)  # fmt: skip
        cand.replace(qdq)
    else:
        cand.unlink()
    return qdq, report


def _nncf_note(r: dict[str, Any]) -> str:
    s, n = r["speed_vs_openvino_fp32"]["qdq"], r["speed_vs_openvino_fp32"]["nncf"]
    speeds = ", ".join(f"batch {b}: Q/DQ {s[b]:.2f}x, NNCF {n[b]:.2f}x" for b in sorted(s))
    kept = "NNCF's (now model.int8.openvino.onnx)" if r["kept"] == "nncf" else "our Q/DQ file"
    return (f"openvino INT8, our Q/DQ file vs NNCF (speed over OpenVINO FP32; {speeds}; NNCF val verification "
            f"{-r['val_verification_drop_vs_fp32_pt']:+.2f} pt vs FP32): kept {kept}")  # fmt: skip
