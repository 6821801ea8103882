"""The table of a ``-m`` sweep: one row per trial (its overrides and metrics), in the sweep directory.

:class:`SweepSummary` is a Hydra callback (``hydra.callbacks`` in conf/hydra/default.yaml): when a multirun ends it
reads each trial's ``.hydra/overrides.yaml`` and ``metrics.json`` and writes ``sweep_summary.csv`` and
``sweep_summary.md`` beside them. A trial without ``metrics.json`` (it failed or was killed) is a row marked so.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def sweep_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    """One dict per trial folder of ``sweep_dir`` (those holding ``.hydra/overrides.yaml``), in job order."""
    rows = []
    trials = [p for p in sweep_dir.iterdir() if (p / ".hydra" / "overrides.yaml").is_file()]
    for trial in sorted(trials, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else p.name)):
        overrides = OmegaConf.to_container(OmegaConf.load(trial / ".hydra" / "overrides.yaml"))
        metrics_file = trial / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        status = "done" if metrics else "no metrics.json"
        rows.append({"trial": trial.name, "status": status, "overrides": " ".join(overrides), **metrics})
    return rows


def write_summary(sweep_dir: Path, rows: list[dict[str, Any]], metric: str | None = None) -> Path:
    """``sweep_summary.csv`` (every metric) and ``sweep_summary.md`` (``metric`` and the validation metrics)."""
    head = ["trial", "status", "overrides"]
    keys = sorted({k for r in rows for k in r} - set(head), key=lambda k: (k != metric, k))
    with open(sweep_dir / "sweep_summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=head + keys)
        writer.writeheader()
        writer.writerows(rows)
    shown = [k for k in keys if k == metric or (k.startswith("val/") and not k.endswith(("_pairs", "_std")))]
    lines = ["| " + " | ".join(head + shown) + " |", "|" + "---|" * (len(head) + len(shown))]
    for r in rows:
        cells = [str(r.get(k, "")) for k in head] + [f"{r[k]:.4f}" if k in r else "" for k in shown]
        lines.append("| " + " | ".join(cells) + " |")
    (sweep_dir / "sweep_summary.md").write_text("\n".join(lines) + "\n")
    return sweep_dir / "sweep_summary.csv"


class SweepSummary(Callback):
    """Writes the sweep table when a ``-m`` run ends (a single run writes nothing)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        rows = sweep_rows(sweep_dir)
        path = write_summary(sweep_dir, rows, OmegaConf.select(config, "optimized_metric", default=None))
        log.info("sweep summary (%d trials): %s", len(rows), path)
