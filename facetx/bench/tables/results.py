"""The results CSV of a plan: one row per run and split (training runs), per runtime x precision x batch (exports),
per compared network (latency comparisons) and per clip x mode (pipeline benchmark).

Every row carries what it was measured with: the run's role and config hash, commit and dirty flag, the date, the
seed, CPU and ISA flags, and library versions, so a table made from it says where its numbers come from.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from omegaconf import OmegaConf

from facetx.bench.tables.plan import Run, stamp_of
from facetx.errors import ConfigError

TRAINING_ROLES = ("teacher", "student", "distilled", "ablation", "pruned")
#: the first columns of the CSV, in this order; the metric columns follow, sorted
FIRST = ["run", "role", "label", "model", "data", "split", "runtime", "precision", "graph", "batch", "params_m",
         "gflops", "size_mb", "p50_ms", "p95_ms", "speed_vs_ort_fp32", "best", "seed", "config_hash", "commit",
         "dirty", "date", "cpu", "isa_flags", "versions"]  # fmt: skip


def _context(run: Run, run_dir: Path) -> dict[str, object]:
    stamp = stamp_of(run_dir) or {}
    return {"run": run.name, "role": run.role, "label": run.label or run.name, "config_hash": run.hash,
            "commit": stamp.get("commit", ""), "dirty": stamp.get("dirty", ""), "date": stamp.get("finished", ""),
            "cpu": stamp.get("cpu", ""), "isa_flags": stamp.get("isa_flags", ""),
            "versions": json.dumps(stamp.get("versions", {}), sort_keys=True)}  # fmt: skip


def _training_rows(run_dir: Path, ctx: dict) -> list[dict]:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # the run's own config, unresolved (it interpolates ${hydra:...}, which exists only inside the run)
    cfg = OmegaConf.to_container(OmegaConf.load(run_dir / ".hydra" / "config.yaml"), resolve=False)
    choices = OmegaConf.load(run_dir / ".hydra" / "hydra.yaml").hydra.runtime.choices
    model = cfg.get("model_name") or ""
    if not model or str(model).startswith("${"):
        model = choices.get("student") or choices.get("model") or ""
        if "prune" in cfg:  # prune.py names its run after the source (<model>-pruned<percent>) at run time
            model = f"{model}-pruned{round(100 * float(cfg['prune'].get('ratio', 0)))}"
    data = str(cfg.get("data", {}).get("train", {}).get("_target_", "")).rsplit(".", 1)[-1]
    rows = []
    for split in ("val", "test"):
        m = {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith(f"{split}/")}
        if m:
            rows.append({**ctx, "model": model, "data": data, "split": split, "seed": cfg.get("seed"), **m})
    return rows


def _export_rows(run_dir: Path, ctx: dict) -> list[dict]:
    with open(run_dir / "benchmark.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    keep = ("runtime", "precision", "graph", "batch", "params_m", "gflops", "size_mb", "p50_ms", "p95_ms",
            "speed_vs_ort_fp32", "best", "images_per_s", "cpu_ms")  # fmt: skip
    out = []
    for r in rows:
        metrics = {k: v for k, v in r.items() if "/" in k and v not in ("", None)}
        out.append({**ctx, "model": r.get("model", ""), "split": "test", **{k: r.get(k, "") for k in keep}, **metrics})
    return out


def _compare_rows(run_dir: Path, ctx: dict) -> list[dict]:
    data = json.loads((run_dir / "compare.json").read_text())
    rows = []
    for r in data["rows"]:
        row = {**ctx, "label": r["label"], "model": r.get("model", ""), "split": data["split"], "batch": 1,
               "params_m": r["params_m"], "gflops": r["gflops"]}  # fmt: skip
        for key in ("eager_ms", "ort_ms", "speedup", "ov_ms", "ov_speedup", "tflite_ms", "tflite_speedup"):
            if key in r:
                row[key] = r[key]
        row.update({k.split("/", 1)[1]: v for k, v in r["metrics"].items() if k.startswith(f"{data['split']}/")})
        row["source_run"] = r["run"]
        rows.append(row)
    return rows


def _pipeline_rows(run_dir: Path, ctx: dict) -> list[dict]:
    data = json.loads((run_dir / "pipeline_benchmark.json").read_text())
    return [{**ctx, "model": data["context"].get("student runtime", ""), **r} for r in data["rows"]]


def _throughput_rows(run_dir: Path, ctx: dict) -> list[dict]:
    r = json.loads((run_dir / "train_speed.json").read_text())
    data = {f"data_images_per_s/{k}": v for k, v in r["data_images_per_s_per_worker"].items()}
    keep = ("batch", "threads", "train_images_per_s_plain_torch", "train_images_per_s_lightning", "lightning_overhead")
    return [{**ctx, "model": r["model"], **{k: r[k] for k in keep}, **data}]


def _tracking_rows(run_dir: Path, ctx: dict) -> list[dict]:
    data = json.loads((run_dir / "clip_score.json").read_text())
    return [{**ctx, "model": data["model"], **r} for r in data["rows"]]


READERS = {"deploy": ("benchmark.csv", _export_rows), "latency": ("compare.json", _compare_rows),
           "pipeline": ("pipeline_benchmark.json", _pipeline_rows),
           "throughput": ("train_speed.json", _throughput_rows),
           "tracking": ("clip_score.json", _tracking_rows)}  # fmt: skip


def collect(runs: list[Run], out: Path) -> list[dict]:
    """All rows of the runs that finished (a run without its stamp is left out)."""
    rows: list[dict] = []
    for run in runs:
        run_dir = out / run.name
        stamp = stamp_of(run_dir)
        if stamp is None or stamp.get("hash") != run.hash:  # not run, or run with other settings than the plan's
            continue
        ctx = _context(run, run_dir)
        name, reader = READERS.get(run.role, ("metrics.json", _training_rows))
        if (run_dir / name).is_file():
            rows += reader(run_dir, ctx)
    # a training run's params and GFLOPs are what a comparison counted on its network
    cost = {Path(r["source_run"]).name: r for r in rows if r.get("source_run")}
    for r in rows:
        if r["role"] in TRAINING_ROLES and r["run"] in cost:
            r.setdefault("params_m", cost[r["run"]]["params_m"])
            r.setdefault("gflops", cost[r["run"]]["gflops"])
    return rows


def write_csv(rows: list[dict], path: Path) -> None:
    keys = {k for r in rows for k in r}
    columns = [k for k in FIRST if k in keys] + sorted(keys - set(FIRST))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        for r in rows:
            w.writerow({k: _cell(r.get(k, "")) for k in columns})


def _cell(v: object) -> object:
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def read_csv(path: str | Path) -> list[dict[str, str]]:
    if not Path(path).is_file():
        raise ConfigError(f"{path}: no results CSV here (make tables SCALE=... writes it)")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
