"""README tables made from the results CSV, between markers, never typed:

    <!-- facetx:table NAME -->
    ... generated ...
    <!-- facetx:end -->

The plan's ``tables`` section says which runs feed each table and how it is drawn (``kind``). ``render`` rewrites
every block; ``check`` fails, naming the first block that differs, when the README and the CSV disagree.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

from facetx.errors import ConfigError

Row = dict[str, str]
BLOCK = re.compile(r"(<!-- facetx:table (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- facetx:end -->)", re.S)


def _f(row: Row, key: str, scale: float = 1.0, digits: int = 2, suffix: str = "") -> str:
    v = row.get(key, "")
    if v in ("", None):
        return "–"
    try:
        return f"{float(v) * scale:.{digits}f}{suffix}"
    except ValueError:
        return str(v)


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]


def _machine(rows: Sequence[Row]) -> str:
    r = rows[0]
    commits = sorted({x.get("commit", "") + ("+dirty" if x.get("dirty") == "True" else "") for x in rows})
    return f"Measured on {r.get('cpu', '?')} ({r.get('isa_flags', '?')}); commit {', '.join(commits)}."


METRICS = [("recognition/acc", "verif. %"), ("recognition/tar@far=1e-3", "TAR@1e-3 %"), ("landmarks/nme", "NME %"),
           ("expression/acc", "expr. %"), ("spoof/acer", "ACER %")]  # fmt: skip


def latency(rows: Sequence[Row]) -> list[str]:
    """Compared networks: held-out metrics, cost, batch-1 latency and speed-up against the first network."""
    head = ["run", *[h for _, h in METRICS], "params (M)", "GFLOPs", "eager ms", "ORT ms", "ORT speed-up"]
    has_ov, has_tfl = any(r.get("ov_ms") for r in rows), any(r.get("tflite_ms") for r in rows)
    head += ["OpenVINO speed-up"] * has_ov + ["LiteRT speed-up"] * has_tfl
    body = []
    for r in rows:
        cells = [r["label"], *[_f(r, k, 100) for k, _ in METRICS], _f(r, "params_m"), _f(r, "gflops")]
        cells += [_f(r, "eager_ms", digits=1), _f(r, "ort_ms", digits=1), _f(r, "speedup", digits=1, suffix="x")]
        cells += [_f(r, "ov_speedup", digits=1, suffix="x")] * has_ov
        cells += [_f(r, "tflite_speedup", digits=1, suffix="x")] * has_tfl
        body.append(cells)
    return _table(head, body)


def ablations(rows: Sequence[Row]) -> list[str]:
    """Training runs side by side: test and val verification, the other test metrics."""
    by_run: dict[str, dict[str, Row]] = {}
    for r in rows:
        by_run.setdefault(r["run"], {})[r["split"]] = r
    head = ["run", "test verif. %", "val verif. %", "test TAR@1e-3 %", "test NME %", "test expr. %", "test ACER %"]
    body = []
    for splits in by_run.values():
        t, v = splits.get("test", {}), splits.get("val", {})
        label = (t or v)["label"]
        body.append([label, _f(t, "recognition/acc", 100), _f(v, "recognition/acc", 100),
                     _f(t, "recognition/tar@far=1e-3", 100), _f(t, "landmarks/nme", 100), _f(t, "expression/acc", 100),
                     _f(t, "spoof/acer", 100)])  # fmt: skip
    return _table(head, body)


def deploy(rows: Sequence[Row]) -> list[str]:
    """Export benchmark rows: runtime x precision x batch, size, latency, speed against ORT FP32, accuracy."""
    head = ["model", "runtime", "precision", "graph", "batch", "MB", "p50 ms", "vs ORT FP32", "verif. %", "best"]
    body = [[r["label"], r["runtime"], r["precision"], r["graph"], r["batch"], _f(r, "size_mb", digits=1),
             _f(r, "p50_ms"), _f(r, "speed_vs_ort_fp32", suffix="x"), _f(r, "recognition/acc", 100),
             "best" if r.get("best") == "yes" else ""] for r in rows]  # fmt: skip
    return _table(head, body)


def pipeline(rows: Sequence[Row]) -> list[str]:
    """The video pipeline against MediaPipe on the same frames."""
    head = ["run", "clip", "mode", "facetx FPS", "incl. decode", "MediaPipe", "MediaPipe FPS", "ratio",
            "detector runs"]  # fmt: skip
    body = [[r["label"], r["clip"], r["mode"], _f(r, "facetx FPS", digits=1),
             _f(r, "facetx FPS incl. decode", digits=1), r["MediaPipe"], _f(r, "MediaPipe FPS", digits=1),
             _f(r, "ratio (FPS facetx / MediaPipe)", suffix="x"), r["detector runs"]] for r in rows]  # fmt: skip
    return _table(head, body)


def splits(rows: Sequence[Row]) -> list[str]:
    """One training run's held-out metrics, val and test side by side (with the raw-pixel baseline)."""
    by = {r["split"]: r for r in rows}
    keys = [("recognition/acc", "verification accuracy (10-fold) %", 100),
            ("recognition/acc_std", "± across folds, pt", 100), ("recognition/tar@far=1e-3", "TAR@FAR=1e-3 %", 100),
            ("recognition/raw_pixel_acc", "raw-pixel cosine baseline %", 100), ("landmarks/nme", "landmark NME %", 100),
            ("expression/acc", "expression accuracy (7 classes) %", 100), ("spoof/acer", "spoof ACER %", 100),
            ("spoof/apcer", "spoof APCER %", 100), ("spoof/bpcer", "spoof BPCER %", 100)]  # fmt: skip
    body = [[name, _f(by.get("val", {}), k, s), _f(by.get("test", {}), k, s)] for k, name, s in keys]
    return _table(["metric", "val", "test"], body)


def throughput(rows: Sequence[Row]) -> list[str]:
    """Training and data-pipeline throughput (``facetx.bench.train_speed``)."""
    r = rows[0]
    body = [[f"training {r['model']}, plain PyTorch loop (batch {r['batch']}, {r['threads']} threads)",
             _f(r, "train_images_per_s_plain_torch", digits=1, suffix=" img/s")],
            ["training, Lightning `FaceModule` on the same batches",
             _f(r, "train_images_per_s_lightning", digits=1, suffix=" img/s")],
            ["Lightning overhead", _f(r, "lightning_overhead", 100, 1, " %")]]  # fmt: skip
    for a in ("none", "default", "strong"):
        body.append([f"data pipeline per worker, `augment={a}`", _f(r, f"data_images_per_s/{a}", digits=0,
                                                                     suffix=" img/s")])  # fmt: skip
    return _table(["measurement", "value"], body)


def tracking(rows: Sequence[Row]) -> list[str]:
    """The pipeline on the scripted clip against its ground truth, per tracker (``facetx.bench.clip_score``)."""
    head = ["tracker", "recall", "id switches", "ids per face", "landmark NME (px)", "named right (calibrated)",
            "named wrongly", "nearest name right", "frames a track outlives its face", "detector runs"]  # fmt: skip
    body = []
    for r in rows:
        nme = f"{_f(r, 'landmark_nme', digits=3)} ({_f(r, 'landmark_px', digits=1)})"
        body.append([f"`{r['tracker']}`", _f(r, "recall", digits=3), r["id_switches"], r["ids_per_face"], nme,
                     _f(r, "identity_top1", 100, 0, " %"), _f(r, "wrong_names", 100, 0, " %"),
                     _f(r, "nearest_name_right", 100, 0, " %"), r["end_delay_frames"],
                     f"{r['detector_runs']} / {r['frames']}"])  # fmt: skip
    return _table(head, body)


KINDS: dict[str, Callable[[Sequence[Row]], list[str]]] = {
    "latency": latency, "ablations": ablations, "deploy": deploy, "pipeline": pipeline, "splits": splits,
    "throughput": throughput, "tracking": tracking}  # fmt: skip


def render_block(name: str, spec: dict, rows: Sequence[Row]) -> str:
    """The Markdown of table ``name``: its rows (in the order of ``spec['runs']``) and the machine they ran on."""
    if spec.get("kind") not in KINDS:
        raise ConfigError(f"tables.{name}.kind={spec.get('kind')!r}: expected one of {sorted(KINDS)}")
    order = {run: i for i, run in enumerate(spec.get("runs", []))}
    mine = sorted((r for r in rows if r.get("run") in order), key=lambda r: order[r["run"]])
    if not mine:
        return f"(no results yet for runs {list(order)}: `make tables`)\n"
    return "\n".join([*KINDS[spec["kind"]](mine), "", _machine(mine)]) + "\n"


def render(text: str, tables: dict[str, dict], rows: Sequence[Row]) -> str:
    """``text`` with every marked block regenerated; a block naming no table of the plan is an error."""

    def sub(m: re.Match) -> str:
        name = m.group("name")
        if name not in tables:
            raise ConfigError(f"README block {name!r} is not a table of the plan (tables: {sorted(tables)})")
        return m.group(1) + render_block(name, tables[name], rows) + m.group(4)

    return BLOCK.sub(sub, text)


def check(readme: Path, tables: dict[str, dict], rows: Sequence[Row]) -> str | None:
    """None when every block of ``readme`` equals its rendering, else a line naming the first one that differs."""
    text = readme.read_text()
    fresh = {m.group("name"): m.group("body") for m in BLOCK.finditer(render(text, tables, rows))}
    for m in BLOCK.finditer(text):
        if m.group("body") != fresh[m.group("name")]:
            return f"{readme}: table {m.group('name')!r} differs from the results CSV (regenerate: make tables-readme)"
    return None
