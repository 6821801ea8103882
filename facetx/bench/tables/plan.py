"""The runs behind the README's tables, from a plan file (``conf/tables/<scale>.yaml``), with results reused.

A plan is an ordered mapping ``name -> {script | module, args, role}``. In ``args``, ``{out}`` is the plan's output
folder, ``{dir}`` the run's own folder and ``{<name>}`` the folder of an earlier run, so dependencies are explicit.
A run's config hash covers its script, arguments and the hashes of the runs it reads; a run whose folder holds a
stamp (``facetx_run.json``) with the same hash and commit is skipped, so ``make tables`` only runs what changed.
Hydra scripts (``*.py``) get ``hydra.run.dir={dir}``, and a killed training run resumes from its ``last.ckpt``.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from omegaconf import OmegaConf

from facetx.errors import ConfigError
from facetx.runtime.system import cpu_model, git_commit, isa_flags, library_versions

STAMP = "facetx_run.json"
REPO = Path(__file__).resolve().parents[3]  # the scripts (train.py, ...) and conf/ live here
ROLES = (
    "teacher",
    "student",
    "distilled",
    "ablation",
    "pruned",
    "latency",
    "deploy",
    "pipeline",
    "throughput",
    "tracking",
)
_KEYS = {"script", "module", "args", "role", "label"}
_PLACEHOLDER = re.compile(r"(?<!\$)\{([A-Za-z0-9_.-]+)\}")  # {run}, not a Hydra ${interpolation}
#: scripts that train: a folder with checkpoints/last.ckpt and no stamp was killed, and resumes
_TRAINING = ("train.py", "distill.py", "prune.py")


@dataclass
class Run:
    """One step of a plan. ``deps``: the earlier runs its arguments read."""

    name: str
    role: str
    args: list[str]
    script: str | None = None
    module: str | None = None
    label: str | None = None
    deps: list[str] = field(default_factory=list)
    hash: str = ""

    @property
    def command(self) -> str:
        return self.script or f"-m {self.module}"


def load_plan(path: str | Path) -> tuple[str, list[Run]]:
    """``(scale, runs)`` from a plan file; unknown keys, unknown roles and forward references are refused."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such plan (expected conf/tables/<scale>.yaml)")
    cfg = OmegaConf.to_container(OmegaConf.load(p))
    if not isinstance(cfg, dict) or not isinstance(cfg.get("runs"), dict) or not cfg["runs"]:
        raise ConfigError(f"{p}: expected a mapping with `scale` and a non-empty `runs` mapping")
    runs: list[Run] = []
    for name, spec in cfg["runs"].items():
        runs.append(_run(p, name, spec, {r.name: r for r in runs}))
    return str(cfg.get("scale", p.stem)), runs


def _run(path: Path, name: str, spec: object, earlier: dict[str, Run]) -> Run:
    where = f"{path}: runs.{name}"
    if not isinstance(spec, dict) or set(spec) - _KEYS:
        extra = sorted(set(spec) - _KEYS) if isinstance(spec, dict) else type(spec).__name__
        raise ConfigError(f"{where}: unexpected {extra} (keys: {sorted(_KEYS)})")
    if ("script" in spec) == ("module" in spec):
        raise ConfigError(f"{where}: give exactly one of `script` (train.py, ...) or `module` (facetx.bench....)")
    if spec.get("role") not in ROLES:
        raise ConfigError(f"{where}.role={spec.get('role')!r}: expected one of {list(ROLES)}")
    args = [str(a) for a in spec.get("args", [])]
    deps = []
    for a in args:
        for ref in _PLACEHOLDER.findall(a):
            if ref in ("out", "dir"):
                continue
            if ref not in earlier:
                raise ConfigError(f"{where}: {{{ref}}} is not an earlier run (runs read only runs listed above them)")
            deps.append(ref)
    run = Run(name, spec["role"], args, spec.get("script"), spec.get("module"), spec.get("label"), sorted(set(deps)))
    key = {"command": run.command, "args": args, "deps": {d: earlier[d].hash for d in run.deps}}
    run.hash = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return run


def expand(run: Run, out: Path) -> list[str]:
    """The run's arguments with ``{out}``, ``{dir}`` and ``{<run>}`` replaced by folders."""
    folders = {"out": out, "dir": out / run.name}

    def sub(m: re.Match) -> str:
        return str(folders.get(m.group(1), out / m.group(1)))

    return [_PLACEHOLDER.sub(sub, a) for a in run.args]


def commit_state() -> tuple[str, bool]:
    """``(commit, dirty)`` of the checkout (``git_commit`` appends ``+dirty`` when tracked files changed)."""
    c = git_commit()
    return c.removesuffix("+dirty"), c.endswith("+dirty")


def stamp_of(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / STAMP).read_text())
    except (OSError, ValueError):
        return None


def is_current(run: Run, out: Path, commit: str, any_commit: bool = False) -> bool:
    """A stamp with this config hash, made at this commit from a clean tree (``any_commit``: from any tree)."""
    stamp = stamp_of(out / run.name)
    if not stamp or stamp.get("hash") != run.hash:
        return False
    return any_commit or (stamp.get("commit") == commit and not stamp.get("dirty"))


def command_for(run: Run, out: Path, python: str = sys.executable) -> list[str]:
    """The command line of ``run``: Hydra scripts write into the run's folder, and a training run that was killed
    (``last.ckpt`` there, no stamp) resumes from it: exact resume makes the result the same."""
    run_dir = out / run.name
    args = expand(run, out)
    cmd = [python, run.script, *args] if run.script else [python, "-m", run.module, *args]
    if run.script:
        cmd.append(f"hydra.run.dir={run_dir}")
        last = run_dir / "checkpoints" / "last.ckpt"
        if run.script in _TRAINING and last.is_file() and stamp_of(run_dir) is None:
            cmd.append(f"ckpt_path={last}")
    return cmd


def execute(run: Run, out: Path, python: str = sys.executable) -> float:
    """Run one step (its log: ``OUT/<name>.log``) and stamp its folder; returns the seconds it took."""
    run_dir = out / run.name
    (run_dir / STAMP).unlink(missing_ok=True)  # a stale stamp would outlive a killed re-run and block its resume
    cmd = command_for(run, out, python)
    run_dir.mkdir(parents=True, exist_ok=True)
    log = out / f"{run.name}.log"
    t0 = time.monotonic()
    with open(log, "w") as f:
        f.write(" ".join(cmd) + "\n")
        f.flush()
        code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO).returncode
    seconds = time.monotonic() - t0
    if code != 0:
        raise RuntimeError(f"tables: run {run.name!r} failed (exit {code}); its log: {log}")
    commit, dirty = commit_state()
    stamp = {"name": run.name, "role": run.role, "hash": run.hash, "command": cmd, "commit": commit, "dirty": dirty,
             "seconds": round(seconds, 1), "cpu": cpu_model(), "isa_flags": " ".join(isa_flags()),
             "versions": library_versions(),
             "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}  # fmt: skip
    (run_dir / STAMP).write_text(json.dumps(stamp, indent=2) + "\n")
    return seconds
