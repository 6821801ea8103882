"""notebooks/: each jupytext py:percent source is paired with its .ipynb (same cells), and runs headless (nbclient)
on small results written here: a results CSV, run folders with metrics.json and CSV logs; its Pareto front is the
non-dominated artifacts of those rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from facetx.bench.tables.results import write_csv

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.py"))


def _results(tmp_path: Path) -> tuple[Path, Path]:
    ctx = {"cpu": "Test CPU", "isa_flags": "avx2 fma", "commit": "abc", "dirty": "False"}
    rows = [
        {**ctx, "run": "teacher", "role": "teacher", "label": "teacher", "split": "test", "recognition/acc": 0.90,
         "recognition/tar@far=1e-3": 0.2, "landmarks/nme": 0.1, "expression/acc": 0.45, "spoof/acer": 0.27},
        {**ctx, "run": "student", "role": "distilled", "label": "student", "split": "test", "recognition/acc": 0.88,
         "landmarks/nme": 0.11, "expression/acc": 0.43, "spoof/acer": 0.30, "ijbc/tar@far=1e-4": 0.5},
    ]  # fmt: skip
    for runtime, precision, ms, acc in [("onnxruntime", "fp32", 3.0, 0.880), ("onnxruntime", "int8", 2.5, 0.878),
                                        ("tflite", "int8", 1.2, 0.879), ("openvino", "fp32", 2.8, 0.870),
                                        ("tflite", "fp32", 1.9, 0.880)]:  # fmt: skip
        bench = {"runtime": runtime, "precision": precision, "batch": 1, "p50_ms": ms, "recognition/acc": acc}
        rows.append({**ctx, "run": "export", "role": "deploy", "label": "student", "split": "test", **bench})
    results = tmp_path / "results.csv"
    write_csv(rows, results)
    runs = tmp_path / "runs"
    log = runs / "student" / "csv" / "version_0" / "metrics.csv"
    log.parent.mkdir(parents=True)
    log.write_text("step,train/loss,val/recognition/acc\n0,5.0,\n1,4.0,\n1,,0.8\n2,3.5,\n2,,0.85\n")
    (runs / "student" / "metrics.json").write_text(json.dumps({"val/recognition/acc": 0.85, "train/global_step": 2}))
    return results, runs


@pytest.mark.parametrize("source", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_the_py_source_and_the_ipynb_hold_the_same_cells(source: Path) -> None:
    import jupytext

    py, ipynb = jupytext.read(source), jupytext.read(source.with_suffix(".ipynb"))
    assert [(c.cell_type, c.source) for c in py.cells] == [(c.cell_type, c.source) for c in ipynb.cells]
    assert not any(c.get("outputs") for c in ipynb.cells), "commit the .ipynb without outputs"


def test_results_explorer_runs_headless_on_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import jupytext
    from nbclient import NotebookClient

    results, runs = _results(tmp_path)
    figures = tmp_path / "figures"
    monkeypatch.setenv("FACETX_RESULTS", str(results))
    monkeypatch.setenv("FACETX_RUNS", str(runs))
    monkeypatch.setenv("FACETX_FIGURES", str(figures))
    nb = jupytext.read(ROOT / "notebooks" / "results_explorer.py")
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert {p.name for p in figures.iterdir()} >= {"pareto.png", "tasks.png", "curves.png", "pareto.json"}
    front = json.loads((figures / "pareto.json").read_text())
    # fastest first, each more accurate: LiteRT INT8 (1.2 ms, 87.9 %), then LiteRT FP32 (1.9 ms, 88.0 %)
    assert [(p["artifact"], p["ms"]) for p in front] == [("tflite/int8", 1.2), ("tflite/fp32", 1.9)]
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert '"student/version_0": {"loss_points": 3, "val_points": 2}' in text
