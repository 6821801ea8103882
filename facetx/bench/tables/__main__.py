"""python -m facetx.bench.tables {run,readme,check} --scale smoke|cpu|gpu

run     the plan conf/tables/<scale>.yaml (runs already done for the same config hash and commit are skipped), then
        OUT/results.csv and OUT/tables.md; a plan with `readme:` also gets results/<scale>.csv and the README blocks
readme  rewrite the README blocks from results/<scale>.csv (or --results)
check   exit 1 when the README blocks and the results CSV disagree
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from facetx.bench.tables import readme as md
from facetx.bench.tables.plan import REPO, commit_state, execute, is_current, load_plan
from facetx.bench.tables.results import collect, read_csv, write_csv
from facetx.errors import ConfigError, exit_on_user_error


def _plan_file(args: argparse.Namespace) -> Path:
    return Path(args.plan) if args.plan else REPO / "conf" / "tables" / f"{args.scale}.yaml"


def _tables(plan: Path) -> tuple[dict, str | None]:
    cfg = OmegaConf.to_container(OmegaConf.load(plan))
    return cfg.get("tables", {}), cfg.get("readme")


def run(args: argparse.Namespace) -> int:
    scale, runs = load_plan(_plan_file(args))
    out = Path(args.out or REPO / "outputs" / "tables" / scale).resolve()  # the scripts run from REPO
    commit, dirty = commit_state()
    unknown = sorted(set(args.only or []) - {r.name for r in runs})
    if unknown:
        raise ConfigError(f"--only: {unknown} are not runs of {_plan_file(args)} (runs: {[r.name for r in runs]})")
    only = set(args.only or [r.name for r in runs])
    total = 0.0
    for r in runs:
        if r.name not in only:
            continue
        if not args.force and is_current(r, out, commit, args.any_commit):
            done = "config hash" if args.any_commit else "config hash and commit"
            print(f"tables: {r.name}: done for this {done}, skipped", flush=True)
            continue
        t0 = time.monotonic()
        print(f"tables: {r.name}: {r.command} {' '.join(r.args)}", flush=True)
        try:
            seconds = execute(r, out)
        except RuntimeError as e:  # the run's own error is in its log; name the run and the log
            print(f"error: {e}", file=sys.stderr)
            return 1
        total += time.monotonic() - t0
        print(f"tables: {r.name}: {seconds:.0f} s", flush=True)
    rows = collect(runs, out)
    write_csv(rows, out / "results.csv")
    tables, readme = _tables(_plan_file(args))
    blocks = [
        f"## {name}\n\n{md.render_block(name, spec, read_csv(out / 'results.csv'))}" for name, spec in tables.items()
    ]
    (out / "tables.md").write_text("\n".join(blocks))
    print(f"tables: {len(rows)} rows in {out / 'results.csv'}; ran for {total / 60:.1f} min (commit {commit}"
          f"{' dirty' if dirty else ''}); tables in {out / 'tables.md'}")  # fmt: skip
    if readme and not args.no_readme:
        published = REPO / "results" / f"{scale}.csv"
        published.parent.mkdir(exist_ok=True)
        shutil.copyfile(out / "results.csv", published)
        _rewrite(REPO / readme, tables, published)
    return 0


def _rewrite(readme: Path, tables: dict, results: Path) -> None:
    readme.write_text(md.render(readme.read_text(), tables, read_csv(results)))
    print(f"tables: {readme} regenerated from {results}")


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=("run", "readme", "check"))
    ap.add_argument("--scale", default="smoke", help="a plan of conf/tables/ (smoke, cpu, gpu)")
    ap.add_argument("--plan", default=None, help="a plan file instead of conf/tables/<scale>.yaml")
    ap.add_argument("--out", default=None, help="run folders and results.csv (default outputs/tables/<scale>)")
    ap.add_argument("--only", nargs="+", default=None, help="run only these runs of the plan (their inputs must exist)")
    ap.add_argument("--any-commit", action="store_true", help="reuse results made at another commit too")
    ap.add_argument("--force", action="store_true", help="run the selected runs even where a stamp matches")
    ap.add_argument("--no-readme", action="store_true", help="run: do not touch results/ and the README")
    ap.add_argument("--results", default=None, help="readme/check: the CSV (default results/<scale>.csv)")
    ap.add_argument("--readme", default=None, help="readme/check: the Markdown file (default: the plan's readme)")
    args = ap.parse_args(argv)
    if args.command == "run":
        return run(args)
    tables, readme = _tables(_plan_file(args))
    target = REPO / (args.readme or readme or "README.md")
    results = Path(args.results or REPO / "results" / f"{args.scale}.csv")
    if args.command == "readme":
        _rewrite(target, tables, results)
        return 0
    problem = md.check(target, tables, read_csv(results))
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    print(f"tables: {target} agrees with {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
