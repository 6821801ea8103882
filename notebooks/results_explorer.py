# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # facetx results explorer
#
# Reads results only, and computes nothing a run did not already measure:
# - the results CSV of `make tables` (`results/cpu.csv`, or `outputs/tables/<scale>/results.csv`),
# - each run folder's `metrics.json` and Lightning CSV log (`csv/version_*/metrics.csv`),
# - export benchmarks (`benchmark.csv`), through the results CSV.
#
# Set `FACETX_RESULTS` (the CSV), `FACETX_RUNS` (the folder of run folders) and `FACETX_FIGURES` (where to save the
# figures; empty: show them only) to point it elsewhere.

# %%
import csv
import json
import os
from pathlib import Path

import matplotlib.pyplot as plt

RESULTS = Path(os.environ.get("FACETX_RESULTS", "../results/cpu.csv"))
RUNS = Path(os.environ.get("FACETX_RUNS", "../outputs/tables/cpu"))
FIGURES = os.environ.get("FACETX_FIGURES", "")
figures = Path(FIGURES) if FIGURES else None
if figures:
    figures.mkdir(parents=True, exist_ok=True)


def number(row: dict, key: str) -> float | None:
    try:
        return float(row[key])
    except (KeyError, TypeError, ValueError):
        return None


def save(fig, name: str) -> None:
    if figures:
        fig.savefig(figures / f"{name}.png", dpi=100, bbox_inches="tight")


with open(RESULTS, newline="") as f:
    rows = list(csv.DictReader(f))
print(f"{len(rows)} rows from {RESULTS}; roles: {sorted({r['role'] for r in rows})}")
machines = sorted({f"{r.get('cpu', '?')} [{r.get('isa_flags', '?')}]" for r in rows})
print("measured on:", *machines, sep="\n  ")

# %% [markdown]
# ## Accuracy against latency, per runtime and precision
# Export benchmark rows (role `deploy`) at batch 1: held-out verification accuracy against p50 latency. The Pareto
# front joins the artifacts no other artifact beats on both.

# %%
deploy = [r for r in rows if r["role"] == "deploy" and r.get("batch") == "1"]
deploy = [r for r in deploy if number(r, "recognition/acc") is not None]
points = [(number(r, "p50_ms"), 100 * number(r, "recognition/acc"), f"{r['runtime']}/{r['precision']}", r["label"])
          for r in deploy if number(r, "p50_ms") is not None]  # fmt: skip
front = []
for p in sorted(points):
    if not front or p[1] > front[-1][1]:  # faster points come first: keep each that is more accurate
        front.append(p)
fig, ax = plt.subplots(figsize=(7, 4.5))
for kind in sorted({p[2] for p in points}):
    mine = [p for p in points if p[2] == kind]
    ax.scatter([p[0] for p in mine], [p[1] for p in mine], label=kind)
if front:
    ax.plot([p[0] for p in front], [p[1] for p in front], "k--", lw=1, label="Pareto front")
ax.set_xlabel("p50 latency at batch 1 (ms)")
ax.set_ylabel("verification accuracy (%)")
ax.legend(fontsize=8)
ax.set_title("accuracy vs latency")
save(fig, "pareto")
print("Pareto front:", *(f"{p[3]} {p[2]}: {p[0]:.2f} ms, {p[1]:.2f} %" for p in front), sep="\n  ")
if figures:
    (figures / "pareto.json").write_text(json.dumps([{"ms": p[0], "acc": p[1], "artifact": p[2], "model": p[3]}
                                                     for p in front], indent=1))  # fmt: skip

# %% [markdown]
# ## Per-task metrics per model
# Training runs (test split where there is one, else val): verification, TAR@FAR (IJB-C where logged), landmark
# NME, expression accuracy, spoof ACER.

# %%
TASKS = [("recognition/acc", "verification %"), ("recognition/tar@far=1e-3", "TAR@FAR=1e-3 %"),
         ("ijbc/tar@far=1e-4", "IJB-C TAR@1e-4 %"), ("landmarks/nme", "NME %"), ("expression/acc", "expression %"),
         ("spoof/acer", "ACER %")]  # fmt: skip
training = {}
for r in rows:
    if r["role"] in ("teacher", "student", "distilled", "ablation", "pruned") and r.get("split") in ("val", "test"):
        if r["split"] == "test" or r["run"] not in training:
            training[r["run"]] = r
tasks = [(k, name) for k, name in TASKS if any(number(r, k) is not None for r in training.values())]
if training and tasks:
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks), 3.8), squeeze=False)
    labels = [r["label"] for r in training.values()]
    for ax, (key, name) in zip(axes[0], tasks, strict=True):
        ax.barh(labels, [100 * (number(r, key) or 0.0) for r in training.values()])
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    save(fig, "tasks")
print(f"{len(training)} training runs, tasks: {[name for _, name in tasks]}")

# %% [markdown]
# ## Training curves
# The Lightning CSV log of each run folder under `FACETX_RUNS`: training loss per step and the validation
# verification accuracy (or, for landmark-only runs, the NME). A resumed run's logs (`version_*`) are drawn apart.

# %%
logs = sorted(RUNS.glob("*/csv/version_*/metrics.csv"))
fig, (loss_ax, val_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
curves = {}
for log in logs:
    run = f"{log.parents[2].name}/{log.parent.name}"
    with open(log, newline="") as f:
        steps = list(csv.DictReader(f))
    loss = [(number(s, "step"), number(s, "train/loss")) for s in steps if number(s, "train/loss") is not None]
    val_key = next((k for k in ("val/recognition/acc", "val/landmarks/nme") if any(s.get(k) for s in steps)), None)
    val = [(number(s, "step"), number(s, val_key)) for s in steps if val_key and number(s, val_key) is not None]
    if loss:
        loss_ax.plot(*zip(*loss, strict=True), label=run)
    if val:
        val_ax.plot(*zip(*val, strict=True), marker="o", label=f"{run}: {val_key}")
    curves[run] = {"loss_points": len(loss), "val_points": len(val)}
loss_ax.set_xlabel("step")
loss_ax.set_ylabel("train/loss")
val_ax.set_xlabel("step")
val_ax.set_ylabel("val/recognition/acc (or val/landmarks/nme)")
for ax in (loss_ax, val_ax):
    if ax.lines:
        ax.legend(fontsize=7)
save(fig, "curves")
print(json.dumps(curves))

# %% [markdown]
# ## Final metrics of each run folder (`metrics.json`)

# %%
for path in sorted(RUNS.glob("*/metrics.json")):
    m = json.loads(path.read_text())
    shown = {k: round(v, 4) for k, v in m.items() if k.endswith(("/acc", "/nme", "/acer", "tar@far=1e-4"))}
    print(path.parent.name, shown)
