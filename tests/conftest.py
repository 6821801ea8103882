"""Shared fixtures: compose the real configs from conf/ with CPU/tiny overrides (lightning-hydra-template style)."""

from __future__ import annotations

import logging
import os
import runpy
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from facetx.errors import EXIT_USER_ERROR

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = str(ROOT / "conf")

# Tests run on 2 cores: keep torch from oversubscribing when pytest and DataLoader workers share them.
os.environ.setdefault("OMP_NUM_THREADS", "2")

#: overrides that make any train/distill config a few-second CPU run
FAST = ["debug=fast", "trainer.accelerator=cpu", "logger=csv"]


def compose_config(config_name: str, overrides: list[str], output_dir: Path) -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` with ``overrides``; outputs go to ``output_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(output_dir / "logs")
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
        cfg.hydra.job.id = "test"
    HydraConfig().set_config(cfg)
    return cfg


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """``make_cfg("train", ["model=tiny"])`` -> a composed config writing into ``tmp_path``."""

    def make(config_name: str = "train", overrides: list[str] | None = None, fast: bool = True) -> DictConfig:
        return compose_config(config_name, (FAST if fast else []) + list(overrides or []), tmp_path)

    yield make
    GlobalHydra.instance().clear()


# --- entry points run in this process (for their exit code and one-line errors) ---


def _logging_state() -> list[tuple]:
    known = logging.Logger.manager.loggerDict.values()
    loggers = [logging.getLogger(), *(lg for lg in known if isinstance(lg, logging.Logger))]
    return [(lg, lg.handlers[:], lg.level, lg.propagate, lg.disabled) for lg in loggers]


def _restore_logging(state: list[tuple]) -> None:
    """Put back what Hydra's job logging replaced (root handlers writing into capsys' streams and the run dir)."""
    for lg, handlers, level, propagate, disabled in state:
        for handler in lg.handlers:
            if handler not in handlers:
                handler.close()
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.propagate, lg.disabled = propagate, disabled


@pytest.fixture
def run_script(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    """``run_script("train.py", *overrides)``: what ``python train.py *overrides`` runs, in this process (a module name
    such as ``"facetx.pipeline"`` runs like ``python -m``).

    The real script runs as ``__main__`` with that ``sys.argv`` from the repo root (runpy), so ``@hydra.main`` and
    ``exit_on_user_error`` do what they do for ``python train.py``; the exit code (``SystemExit``'s, or 0) and the
    captured stdout/stderr come back as a CompletedProcess for :func:`assert_one_line`. What a run changes in the
    process is put back: Hydra's global state, logging, SIGINT/SIGTERM handlers, torch threads, os.environ, sys.path.
    """
    monkeypatch.delenv("FACETX_TRACEBACK", raising=False)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.chdir(ROOT)

    def run(script: str, *args: str) -> subprocess.CompletedProcess:
        argv = [script, *args]  # a file (train.py) or a module (facetx.pipeline, run like python -m)
        monkeypatch.setattr(sys, "argv", argv)
        capsys.readouterr()  # drop what came before
        logs, env, path, threads = _logging_state(), dict(os.environ), sys.path[:], torch.get_num_threads()
        signals = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        GlobalHydra.instance().clear()
        code: int | str | None = 0  # returning normally is exit status 0, as for the real process
        try:
            if script.endswith(".py"):
                runpy.run_path(str(ROOT / script), run_name="__main__")
            else:
                runpy.run_module(script, run_name="__main__", alter_sys=True)
        except SystemExit as e:
            code = e.code
        finally:
            GlobalHydra.instance().clear()
            _restore_logging(logs)
            os.environ.clear()
            os.environ.update(env)
            sys.path[:] = path
            torch.set_num_threads(threads)
            for signum, handler in signals.items():
                if handler is not None:
                    signal.signal(signum, handler)
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(argv, code, out, err)

    return run


def assert_one_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit code 2, no traceback, and stderr's last line is ``error: ...`` holding every needle (the only one)."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == EXIT_USER_ERROR, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert lines and lines[-1].startswith("error: "), proc.stderr[-3000:]
    assert sum(line.startswith("error:") for line in lines) == 1, proc.stderr[-3000:]
    for needle in needles:
        assert needle in lines[-1], lines[-1]
    return lines[-1]


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``last.ckpt`` of ``train.py model=tiny debug=fast``, trained once per session (export, prune and other tests
    read it; none may change it)."""
    from facetx.training.run import train

    out = tmp_path_factory.mktemp("tiny_train")
    train(compose_config("train", [*FAST, "model=tiny"], out))
    return out / "checkpoints" / "last.ckpt"


@pytest.fixture(autouse=True)
def _default_sigchld():
    """Reset SIGCHLD after each test. A DataLoader with workers installs torch's C handler for it, and once
    OpenVINO and LiteRT were loaded in the same process, the next child process to exit crashed the test process
    with SIGSEGV. That happened after tests/data and the runtime exports, and not in any run on its own. The
    handler only matters while a DataLoader's workers are alive, which no later test relies on."""
    yield
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)


@pytest.fixture(autouse=True)
def _absl_keeps_off_pytest_streams():
    """absl.logging (imported with litert-torch and ai-edge-quantizer) makes a handler at import that holds the
    sys.stderr of that moment, here pytest's capture file, and its close() closes that stream unless it is the
    current sys.stderr. Hydra's logging set-up closes every handler of the process (logging.config clears them), and
    under capsys the current sys.stderr is another object: a script run in this process (run_script) closed pytest's
    capture file and the test process died at its next write ("lost sys.stderr"). sys.__stderr__ is never closed by
    absl, and writes to it still reach pytest's fd capture."""
    absl_logging = sys.modules.get("absl.logging")
    if absl_logging is not None:
        absl_logging.get_absl_handler().python_handler.stream = sys.__stderr__
    yield
