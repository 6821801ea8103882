"""Combine the export benchmark tables of several models (``make bench``: teacher and student) into one.

``python -m facetx.bench.combine A/benchmark.csv B/benchmark.csv --out DIR/benchmark`` writes ``DIR/benchmark.csv``
and ``DIR/benchmark.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from facetx.runtime.tables import read_csv, write_csv, write_markdown


def combine(csv_paths: Sequence[str | Path], out_stem: str | Path) -> tuple[Path, Path]:
    """Concatenate several ``benchmark.csv`` files (e.g. teacher and student) into ``<out_stem>.csv`` / ``.md``."""
    rows: list[dict[str, object]] = []
    for p in csv_paths:
        if not Path(p).is_file():
            raise FileNotFoundError(f"{p}: benchmark table not found (run export.py first)")
        rows += [{k: v for k, v in r.items() if v != ""} for r in read_csv(p)]
    if not rows:
        raise ValueError(f"no benchmark rows in {list(map(str, csv_paths))}")
    out_stem = Path(out_stem)
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    first = rows[0]
    context = {
        k: first.get(k, "") for k in ("cpu", "isa_flags", "isa_regime", "threads", "versions", "git_commit", "seed")
    }
    context["sources"] = ", ".join(sorted({str(r.get("source", "")) for r in rows}))
    notes = ["rows of one batch size and model were timed interleaved in one run; compare ratios across runs with care"]
    csv_path = write_csv(rows, out_stem.with_suffix(".csv"))
    md_path = write_markdown(rows, out_stem.with_suffix(".md"), "facetx export benchmark", context, notes)
    return csv_path, md_path


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m facetx.bench.combine A/benchmark.csv B/benchmark.csv --out DIR/benchmark``."""
    import argparse

    parser = argparse.ArgumentParser(description="combine export benchmark tables")
    parser.add_argument("csv", nargs="+")
    parser.add_argument("--out", required=True, help="output path without suffix (writes .csv and .md)")
    args = parser.parse_args(argv)
    for p in combine(args.csv, args.out):
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
