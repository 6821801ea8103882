"""The benchmark table: one row per runtime x precision x batch, written as CSV (every field) and Markdown.

Export writes one table per model; ``python -m facetx.bench.combine`` concatenates several.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

#: leading columns, in order; metric columns follow, then the run context
BASE_COLUMNS = ("model", "runtime", "precision", "graph", "batch", "params_m", "gflops", "size_mb", "p50_ms",
                "p95_ms", "images_per_s", "speed_vs_ort_fp32", "cpu_ms")  # fmt: skip
CONTEXT_COLUMNS = ("threads", "device", "cpu", "isa_flags", "isa_regime", "load_avg", "versions", "git_commit", "seed",
                   "runs", "source")  # fmt: skip
_MD_COLUMNS = ("model", "runtime", "precision", "graph", "batch", "params_m", "gflops", "size_mb", "p50_ms", "p95_ms",
               "images_per_s", "speed_vs_ort_fp32", "cpu_ms")  # fmt: skip


def metric_columns(metrics: Mapping[str, float]) -> list[str]:
    """The task metrics worth a column: verification accuracy and TAR@FAR, NME, expression accuracy, ACER."""
    keep = []
    for k in metrics:
        last = k.rsplit("/", 1)[-1]
        if last in ("acc", "nme", "acer") or last.startswith("tar@far="):
            keep.append(k)
    return keep


def _fmt(v: object) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if v != v:
            return "nan"
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"
    if isinstance(v, (list, tuple)):
        return " ".join(str(x) for x in v)
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True)
    return str(v)


def columns_of(rows: Sequence[Mapping[str, object]]) -> list[str]:
    metrics: list[str] = []
    for r in rows:
        for k in r:
            if k not in BASE_COLUMNS and k not in CONTEXT_COLUMNS and k not in metrics:
                metrics.append(k)
    return [*BASE_COLUMNS, *metrics, *CONTEXT_COLUMNS]


def write_csv(rows: Sequence[Mapping[str, object]], path: str | Path) -> Path:
    path = Path(path)
    cols = columns_of(rows)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in rows:
            w.writerow([_fmt(r.get(c)) for c in cols])
    return path


def write_markdown(
    rows: Sequence[Mapping[str, object]],
    path: str | Path,
    title: str,
    context: Mapping[str, object],
    notes: Sequence[str],
    columns: Sequence[str] | None = None,
) -> Path:
    """A readable table: timing and metric columns, one ISA column per row; the run context in a header list.
    ``columns``: exactly these, in this order (default: the export table's)."""
    path = Path(path)
    if columns is None:
        metric_cols = [c for c in columns_of(rows) if c not in BASE_COLUMNS and c not in CONTEXT_COLUMNS]
        cols = [*_MD_COLUMNS, *metric_cols, "threads", "device", "isa_flags"]
    else:
        cols = list(columns)
    lines = [f"# {title}", ""]
    lines += [f"- **{k}**: {_fmt(v)}" for k, v in context.items()]
    lines += ["", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    path.write_text("\n".join(lines) + "\n")
    return path


def read_csv(path: str | Path) -> list[dict[str, str]]:
    with Path(path).open(newline="") as f:
        return list(csv.DictReader(f))
