"""make tables: plans are checked, runs whose stamp has the same config hash and commit are skipped (a changed run
reruns with what depends on it), a failed run is one line, a killed training run resumes, the results CSV feeds
README blocks, and the check fails when a block and the CSV disagree. The README's own blocks agree with
results/cpu.csv."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from facetx.bench.tables import readme as md
from facetx.bench.tables.__main__ import main
from facetx.bench.tables.plan import STAMP, command_for, load_plan
from facetx.bench.tables.results import read_csv
from facetx.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
PLAN = """
scale: test
runs:
  compare:
    role: latency
    module: tests.bench.fake_run
    args: [compare, "{dir}"{compare_extra}]
  export:
    role: deploy
    label: nano
    module: tests.bench.fake_run
    args: [export, "{dir}", "--after={compare}"]
tables:
  distill: {kind: latency, runs: [compare]}
  deploy: {kind: deploy, runs: [export]}
"""


def _plan(tmp_path: Path, compare_extra: str = "") -> Path:
    p = tmp_path / "plan.yaml"
    p.write_text(PLAN.replace("{compare_extra}", compare_extra))
    return p


def _calls(out: Path) -> list[str]:
    f = out / "calls.txt"
    return f.read_text().split() if f.exists() else []


@pytest.fixture(autouse=True)
def _clean_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stamps from a dirty tree are never reused: these tests pin a clean commit, whatever state the checkout is in."""
    import facetx.bench.tables.__main__ as cli
    import facetx.bench.tables.plan as plan

    for module in (cli, plan):
        monkeypatch.setattr(module, "commit_state", lambda: ("0123456789ab", False))


def test_runs_are_skipped_for_the_same_hash_and_rerun_with_their_dependents(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["run", "--plan", str(_plan(tmp_path)), "--out", str(out)]) == 0
    assert _calls(out) == ["compare", "export"] and (out / "compare" / STAMP).is_file()
    rows = read_csv(out / "results.csv")
    assert [(r["run"], r["role"], r.get("runtime", "")) for r in rows] == [
        ("compare", "latency", ""), ("compare", "latency", ""), ("export", "deploy", "onnxruntime"),
        ("export", "deploy", "tflite")]  # fmt: skip
    assert all(r["commit"] and r["isa_flags"] and r["config_hash"] and r["cpu"] for r in rows)
    assert "| student |" in (out / "tables.md").read_text()
    assert main(["run", "--plan", str(_plan(tmp_path)), "--out", str(out)]) == 0
    assert _calls(out) == ["compare", "export"]  # nothing ran again
    assert main(["run", "--plan", str(_plan(tmp_path, ', "--changed"')), "--out", str(out)]) == 0
    assert _calls(out) == ["compare", "export", "compare", "export"]  # export reads compare: it reruns too
    assert main(["run", "--plan", str(_plan(tmp_path, ', "--changed"')), "--out", str(out), "--only", "export",
                 "--force"]) == 0  # fmt: skip
    assert _calls(out)[-1] == "export" and len(_calls(out)) == 5
    with pytest.raises(SystemExit) as e:  # one line, exit 2
        main(["run", "--plan", str(_plan(tmp_path)), "--out", str(out), "--only", "nope"])
    assert e.value.code == 2


def test_a_failed_run_is_one_line_naming_its_log(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    assert main(["run", "--plan", str(_plan(tmp_path, ', "--fail"')), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: tables: run 'compare' failed (exit 3); its log: {out / 'compare.log'}"]
    assert not (out / "compare" / STAMP).exists() and _calls(out) == ["compare"]


def test_plan_mistakes_name_the_file_and_the_run(tmp_path: Path) -> None:
    bad = {
        "role: latency\n    module": "role: lat\n    module",
        "args: [export,": "argz: [export,",
        '"--after={compare}"': '"--after={later}"',
    }
    needles = ["runs.compare.role='lat'", "unexpected ['argz']", "{later} is not an earlier run"]
    for (old, new), needle in zip(bad.items(), needles, strict=True):
        p = tmp_path / "bad.yaml"
        p.write_text(PLAN.replace("{compare_extra}", "").replace(old, new))
        with pytest.raises(ConfigError, match=None) as e:
            load_plan(p)
        assert str(p) in str(e.value) and needle in str(e.value), str(e.value)


def test_a_killed_training_run_resumes_from_its_last_checkpoint(tmp_path: Path) -> None:
    plan = tmp_path / "train.yaml"
    plan.write_text("runs:\n  t: {role: student, script: train.py, args: [model=tiny]}\n")
    (run,) = load_plan(plan)[1]
    out = tmp_path / "out"
    assert command_for(run, out, "py") == ["py", "train.py", "model=tiny", f"hydra.run.dir={out / 't'}"]
    (out / "t" / "checkpoints").mkdir(parents=True)
    (out / "t" / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert command_for(run, out, "py")[-1] == f"ckpt_path={out / 't' / 'checkpoints' / 'last.ckpt'}"


def test_readme_blocks_are_rendered_and_checked(tmp_path: Path) -> None:
    out = tmp_path / "out"
    plan = _plan(tmp_path)
    assert main(["run", "--plan", str(plan), "--out", str(out)]) == 0
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- facetx:table deploy -->\nold\n<!-- facetx:end -->\ntext\n")
    args = ["--plan", str(plan), "--results", str(out / "results.csv"), "--readme", str(readme)]
    assert main(["check", *args]) == 1
    assert main(["readme", *args]) == 0
    text = readme.read_text()
    assert "| nano | tflite | int8 | xnnpack | 1 | 5.3 | 1.10 | 2.70x | 87.90 | best |" in text
    assert text.endswith("<!-- facetx:end -->\ntext\n") and main(["check", *args]) == 0
    readme.write_text(text.replace("87.90", "88.90"))  # a typed number
    assert main(["check", *args]) == 1
    readme.write_text(text.replace("facetx:table deploy", "facetx:table nope"))
    with pytest.raises(ConfigError, match="README block 'nope' is not a table of the plan"):
        md.render(readme.read_text(), {"deploy": {}}, [])


def test_the_readme_tables_agree_with_the_committed_results() -> None:
    assert main(["check", "--scale", "cpu"]) == 0


@pytest.mark.ci_extra
def test_smoke_plan_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "smoke"
    cmd = [str(ROOT / ".venv" / "bin" / "python"), "-m", "facetx.bench.tables", "run", "--scale", "smoke", "--out",
           str(out)]  # fmt: skip
    first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-3000:]
    roles = {r["role"] for r in read_csv(out / "results.csv")}
    assert roles == {"teacher", "student", "distilled", "ablation", "latency", "deploy"}
    again = subprocess.run([*cmd, "--any-commit"], cwd=ROOT, capture_output=True, text=True)  # a dirty tree reruns
    assert again.stdout.count("skipped") == 6, again.stdout


@pytest.mark.ci_extra
def test_clip_score_rows_render_as_the_tracking_table(tmp_path: Path) -> None:
    from facetx.bench.clip_score import main as clip_score

    rows = clip_score(["--model", str(ROOT / "tests/pipeline/data/student.int8.onnx"), "--out", str(tmp_path)])
    assert [r["tracker"] for r in rows] == ["landmarks", "detection"] and all(r["id_switches"] == 0 for r in rows)
    ctx = {"run": "clip-score", "label": "scripted clip", "cpu": "c", "isa_flags": "f", "commit": "a", "dirty": "False"}
    table = md.tracking([{**ctx, **{k: str(v) for k, v in r.items()}} for r in rows])
    assert table[2].startswith("| `landmarks` | ") and len(table) == 4


@pytest.mark.parametrize("plan", sorted((ROOT / "conf" / "tables").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_plan_loads_and_its_tables_name_its_runs(plan: Path) -> None:
    from omegaconf import OmegaConf

    _, runs = load_plan(plan)
    names = {r.name for r in runs}
    for name, spec in OmegaConf.to_container(OmegaConf.load(plan)).get("tables", {}).items():
        assert spec["kind"] in md.KINDS and set(spec["runs"]) <= names, (plan.name, name)
