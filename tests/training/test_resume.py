"""A killed run resumes to the same result: real subprocesses, a real SIGKILL / SIGTERM, bit-for-bit comparisons.

Each case trains a tiny model over two epochs of a small synthetic set (validation twice an epoch, ``last.ckpt``
every 2 steps), once left alone and once killed mid-epoch and resumed from ``last.ckpt``; ``metrics.json`` and the
final weights must be identical.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra.core.global_hydra import GlobalHydra

from facetx.training.run import train
from tests.conftest import compose_config

ROOT = Path(__file__).resolve().parents[2]
# 48 training images at batch 8: 6 steps an epoch, 12 in all; validation at steps 3, 6, 9, 12
RUN = ["debug=fast", "logger=csv", "trainer.accelerator=cpu", "trainer.max_steps=-1",
       "trainer.max_epochs=2", "trainer.val_check_interval=0.5", "data.train.images_per_identity=6",
       "callbacks.last_checkpoint.every_n_train_steps=2", "threads=1"]  # fmt: skip


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FACETX_TRACEBACK", "HYDRA_FULL_ERROR")}
    env.update(OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
    return env


def _cmd(script: str, run_dir: Path, extra: list[str]) -> list[str]:
    network = ["model=tiny"] if script == "train.py" else ["student=tiny"]
    return [sys.executable, script, *RUN, *network, *extra, f"hydra.run.dir={run_dir}"]


def _run(script: str, run_dir: Path, extra: list[str]) -> None:
    """The same run in this process (cheaper than a fresh interpreter; the run pins torch to one thread itself)."""
    from facetx.training.run import distill, train

    network = ["model=tiny"] if script == "train.py" else ["student=tiny"]
    cfg = compose_config(script.removesuffix(".py"), [*RUN, *network, *extra], run_dir)
    threads = torch.get_num_threads()
    try:
        (train if script == "train.py" else distill)(cfg)
    finally:
        torch.set_num_threads(threads)
        GlobalHydra.instance().clear()


def _step(ckpt: Path) -> int:
    try:
        return int(torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"])
    except (OSError, RuntimeError, EOFError):
        return -1


def _start_and_stop(script: str, run_dir: Path, extra: list[str], sig: int, at_step: int) -> tuple[int, str]:
    """Start a run and send ``sig`` once its ``last.ckpt`` holds at least ``at_step`` steps (mid-epoch, mid-run);
    returns the exit status and the output (in a file: a full pipe would block the run)."""
    log = run_dir.with_suffix(".log")
    with open(log, "w") as out:
        # its own process group, signalled as a whole (as a terminal's Ctrl-C or SLURM does), DataLoader workers too
        proc = subprocess.Popen(_cmd(script, run_dir, extra), cwd=ROOT, env=_env(), stdout=out, stderr=out, text=True,
                                start_new_session=True)  # fmt: skip
        last = run_dir / "checkpoints" / "last.ckpt"
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            if last.is_file() and _step(last) >= at_step:
                os.killpg(proc.pid, sig)
                break
            time.sleep(0.02)
        proc.wait(timeout=300)
    return proc.returncode, log.read_text()


def _final(run_dir: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return metrics, state["state_dict"]


def _assert_same(a: Path, b: Path) -> None:
    (ma, wa), (mb, wb) = _final(a), _final(b)
    assert ma == mb  # bit for bit: the floats come back from JSON exactly as written
    assert ma["train/global_step"] == 12.0
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa), [k for k in wa if not torch.equal(wa[k], wb[k])][:5]


@pytest.mark.parametrize(
    ("extra", "resumed_with"),
    [
        pytest.param(["augment=none", "data.num_workers=0"], [], id="plain-0workers"),
        # (augmented images read by a worker, and another worker count after the resume: the SIGTERM test below)
    ],
)
def test_train_killed_mid_epoch_resumes_bit_for_bit(tmp_path: Path, extra: list[str], resumed_with: list[str]) -> None:
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    _run("train.py", ref, extra)
    code, out = _start_and_stop("train.py", cut, [*extra, *resumed_with], signal.SIGKILL, at_step=2)
    assert code == -signal.SIGKILL, (code, out[-2000:])
    step = _step(cut / "checkpoints" / "last.ckpt")
    assert 2 <= step < 12 and step % 6 != 0, step  # killed mid-run and mid-epoch
    assert not (cut / "metrics.json").exists()
    _run("train.py", cut, [*extra, *resumed_with, f"ckpt_path={cut / 'checkpoints' / 'last.ckpt'}"])
    _assert_same(ref, cut)


def test_sigterm_saves_the_current_step_and_prints_the_resume_command(tmp_path: Path) -> None:
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    common = ["augment=default", "callbacks.last_checkpoint.every_n_train_steps=5"]
    extra = [*common, "data.num_workers=1"]
    # the reference reads with no worker, the stopped and the resumed run with one: augmentation is keyed by
    # (seed, epoch, index), so the worker count changes nothing
    _run("train.py", ref, [*common, "data.num_workers=0"])
    code, out = _start_and_stop("train.py", cut, extra, signal.SIGTERM, at_step=3)  # first save: validation, step 3
    assert code == 128 + signal.SIGTERM, (code, out[-2000:])
    line = next(ln for ln in out.splitlines() if "resume with:" in ln)
    stopped = int(line.split("stopped at step ")[1].split()[0])
    last = cut / "checkpoints" / "last.ckpt"
    assert _step(last) == stopped  # saved at the step it stopped at, not at the last periodic save
    command = line.split("resume with: ")[1].split()
    assert command[:2] == ["python", "train.py"]
    assert f"ckpt_path={last}" in command and f"hydra.run.dir={cut}" in command
    # run the printed overrides (the run's own, in this process to save an interpreter start) and land on the
    # uninterrupted result
    overrides = [a for a in command[2:] if not a.startswith("hydra.run.dir=")]
    threads = torch.get_num_threads()
    try:
        train(compose_config("train", overrides, cut))
    finally:
        torch.set_num_threads(threads)
        GlobalHydra.instance().clear()
    _assert_same(ref, cut)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("teacher")
    _run("train.py", out, ["augment=none", "model_name=teacher", "trainer.max_epochs=1"])
    return out / "checkpoints" / "last.ckpt"


def test_distill_killed_mid_epoch_resumes_bit_for_bit(tmp_path: Path, teacher: Path) -> None:
    """distill.py with the teacher cache: the killed run filled part of it, the resumed run reads those rows."""
    extra = ["augment=none", "data.num_workers=0", f"teacher.ckpt_path={teacher}"]
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    _run("distill.py", ref, [*extra, f"teacher.cache_dir={tmp_path / 'cache_ref'}"])
    extra.append(f"teacher.cache_dir={tmp_path / 'cache'}")
    code, out = _start_and_stop("distill.py", cut, extra, signal.SIGKILL, at_step=2)
    assert code == -signal.SIGKILL, (code, out[-2000:])
    _run("distill.py", cut, [*extra, f"ckpt_path={cut / 'checkpoints' / 'last.ckpt'}"])
    _assert_same(ref, cut)


class _CrashAt(pl.Callback):
    """A crash once ``step`` optimizer steps are done: at the end of that step, or (``at_start``) at the start of
    the next one, i.e. after everything the step's end and an epoch's end saved."""

    def __init__(self, step: int, at_start: bool = False) -> None:
        self.step, self.at_start = step, at_start

    def _check(self, trainer: pl.Trainer) -> None:
        if trainer.global_step >= self.step:
            raise RuntimeError("simulated crash")

    def on_train_batch_end(self, trainer: pl.Trainer, *args) -> None:
        if not self.at_start:
            self._check(trainer)

    def on_train_batch_start(self, trainer: pl.Trainer, *args) -> None:
        if self.at_start:
            self._check(trainer)


def test_distill_without_cache_resumes_bit_for_bit(tmp_path: Path, teacher: Path, monkeypatch) -> None:
    """The same without the cache (the teacher runs every step); the crash is in-process, mid-epoch at step 5."""
    import facetx.training.run as run

    extra = ["augment=default", "data.num_workers=0", f"teacher.ckpt_path={teacher}"]
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    _run("distill.py", ref, extra)
    real = run.build_callbacks
    monkeypatch.setattr(run, "build_callbacks", lambda c, r: [*real(c, r), _CrashAt(5)])
    with pytest.raises(RuntimeError, match="simulated crash"):
        _run("distill.py", cut, extra)
    monkeypatch.undo()
    assert _step(cut / "checkpoints" / "last.ckpt") == 4
    _run("distill.py", cut, [*extra, f"ckpt_path={cut / 'checkpoints' / 'last.ckpt'}"])
    _assert_same(ref, cut)


def test_resume_at_an_epoch_boundary_and_twice(tmp_path: Path, monkeypatch) -> None:
    """Killed right after an epoch's end (last.ckpt written there), resumed, killed again mid-epoch, resumed: the
    result is the uninterrupted run's (validations included, so the best checkpoint is the same too)."""
    import facetx.training.run as run

    extra = ["augment=default", "data.num_workers=0"]
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    _run("train.py", ref, extra)
    real = run.build_callbacks
    last = cut / "checkpoints" / "last.ckpt"
    for crash, saved in ((_CrashAt(6, at_start=True), 6), (_CrashAt(9), 8)):
        monkeypatch.setattr(run, "build_callbacks", lambda c, r, crash=crash: [*real(c, r), crash])
        with pytest.raises(RuntimeError, match="simulated crash"):
            _run("train.py", cut, [*extra, *([f"ckpt_path={last}"] if last.exists() else [])])
        monkeypatch.undo()
        assert _step(last) == saved
    _run("train.py", cut, [*extra, f"ckpt_path={last}"])
    _assert_same(ref, cut)
    best = sorted(p.name for p in (ref / "checkpoints").glob("best-*.ckpt"))
    assert best == sorted(p.name for p in (cut / "checkpoints").glob("best-*.ckpt"))
