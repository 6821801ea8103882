"""DDP on CPU (gloo, 2 ranks): Lightning's own launcher, torchrun, resume; held-out metrics equal one process's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from facetx.training.checkpoint import load_checkpoint, load_face_net
from facetx.training.evaluation import evaluate
from tests.conftest import FAST, assert_one_line

ROOT = Path(__file__).resolve().parents[2]
# 64 training images, batch 8 per rank: 4 steps. 35 held-out images over 2 ranks: the sampler pads one duplicate,
# which the gathered evaluation must drop. A checkpoint every step, for the killed run below. Partial FC: the class
# centres sharded over the 2 ranks, half of each shard's scored per step.
DDP = [*FAST, "trainer=ddp_cpu", "model=tiny", "threads=1", "data.train.images_per_identity=8",
       "loss/recognition=partial_fc", "loss.recognition.sample_rate=0.5",
       "callbacks.last_checkpoint.every_n_train_steps=1", "data.val.0.num_identities=7",
       "data.val.0.images_per_identity=5", "callbacks.progress_log.when=always",
       "callbacks.progress_log.every_n_steps=1"]  # fmt: skip


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FACETX_TRACEBACK", "HYDRA_FULL_ERROR", "LOCAL_RANK")}
    return {**env, "OMP_NUM_THREADS": "1"}


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """``python train.py trainer=ddp_cpu``: Lightning starts the second rank by re-running the command."""
    out = tmp_path_factory.mktemp("ddp")
    return out, _run([sys.executable, "train.py", *DDP, f"hydra.run.dir={out}"])


def test_two_ranks_write_one_run(ddp_run: tuple[Path, subprocess.CompletedProcess]) -> None:
    out, proc = ddp_run
    assert (out / "train_ddp_process_1.log").is_file()  # the second rank ran, in the same run dir
    assert [p.name for p in (out / "csv").iterdir()] == ["version_0"]  # one logger run (rank 0)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best-step000004.ckpt", "last.ckpt"]
    ckpt = load_checkpoint(out / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 4
    # all 8 identities' centres and their AdamW moments, gathered from the 2 shards (4 + 4 rows)
    assert ckpt["state_dict"]["loss.recognition.weight"].shape == (8, 512)
    slot = ckpt["facetx_sharded"]["loss.recognition.weight"]["optimizer_index"][0]
    moments = ckpt["optimizer_states"][0]["state"][slot]
    assert moments["exp_avg"].shape == moments["exp_avg_sq"].shape == (8, 512)
    log = (out / "train.log").read_text()  # not a terminal: progress lines in the run log
    assert "step 1/4  loss " in log and "validation at step 4: val/recognition/acc=" in log


def test_held_out_metrics_equal_one_process_on_the_same_weights(ddp_run) -> None:
    """Each rank evaluated its shard; the gathered metrics are those of one process over the whole set."""
    out, _ = ddp_run
    net, config = load_face_net(out / "checkpoints" / "last.ckpt")
    val = [instantiate(v) for v in config["data"]["val"]]
    single = evaluate(net, val, batch_size=20, fars=config["module"]["fars"], raw_pixels=True)
    ddp = {k.removeprefix("val/"): v for k, v in json.loads((out / "metrics.json").read_text()).items()
           if k.startswith("val/")}  # fmt: skip
    assert set(ddp) == set(single)  # pair counts among them: the padded duplicate was dropped
    for k, v in single.items():
        assert ddp[k] == pytest.approx(v, abs=1e-6), k


def _torchrun(run: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py", *DDP,
            *extra, f"hydra.run.dir={run}"]  # fmt: skip


def _killed_after_a_step(cmd: list[str], last: Path) -> None:
    """Run ``cmd`` in its own process group and SIGKILL all of it once ``last`` holds a step, before the run ends."""
    with open(last.parents[1].with_suffix(".log"), "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            if last.is_file() and load_checkpoint(last)["global_step"] >= 1:
                os.killpg(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
        proc.wait(timeout=60)
    assert proc.returncode != 0 and not (last.parents[1] / "metrics.json").exists()


def test_torchrun_resumes_a_killed_run_to_the_same_weights(ddp_run, tmp_path: Path) -> None:
    """torchrun starts both ranks (Lightning joins them); killed mid-epoch, the run resumes from its last.ckpt and
    ends on the weights and metrics of the uninterrupted run started by Lightning's launcher."""
    ref, _ = ddp_run
    run = tmp_path / "cut"
    last = run / "checkpoints" / "last.ckpt"
    _killed_after_a_step(_torchrun(run), last)
    step = load_checkpoint(last)["global_step"]
    assert 1 <= step < 4, step
    _run(_torchrun(run, f"ckpt_path={last}"))
    a, b = load_checkpoint(ref / "checkpoints" / "last.ckpt"), load_checkpoint(last)
    assert b["global_step"] == 4 and a["state_dict"].keys() == b["state_dict"].keys()
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert json.loads((ref / "metrics.json").read_text()) == json.loads((run / "metrics.json").read_text())


def test_the_script_launcher_is_refused_in_a_sweep(run_script, tmp_path: Path) -> None:
    proc = run_script("train.py", "-m", *FAST, "trainer=ddp_cpu", "model=tiny", f"hydra.sweep.dir={tmp_path}")
    assert_one_line(proc, "trainer.strategy=ddp", "ddp_spawn", "hydra/launcher=slurm")


def test_a_two_rank_checkpoint_resumes_in_one_process(ddp_run, tmp_path: Path, run_script) -> None:
    """The gathered centres and moments fit one process's single shard: the resume loads, and evaluating the
    restored weights gives the DDP run's metrics."""
    out, _ = ddp_run
    single = [a for a in DDP if not a.startswith("trainer=")]
    run = tmp_path / "single"
    proc = run_script("train.py", *single, f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp, one = (json.loads((d / "metrics.json").read_text()) for d in (out, run))
    assert one["train/global_step"] == 4.0
    for k, v in ddp.items():
        assert one[k] == pytest.approx(v, abs=1e-6), k


def test_distill_runs_on_two_ranks_with_the_teacher_frozen(ddp_run, tmp_path: Path) -> None:
    """distill.py under torchrun: the DDP run teaches a tiny student (its gathered Partial FC centres are the
    teacher's classifier for logit distillation); only rank 0 writes the teacher cache."""
    out, _ = ddp_run
    teacher = out / "checkpoints" / "last.ckpt"
    run = tmp_path / "distill"
    student_side = ("model=tiny", "loss/recognition=partial_fc", "loss.recognition.sample_rate=0.5")
    args = [a for a in DDP if a not in student_side]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "distill.py", *args,
           "student=tiny", "augment=none", f"teacher.ckpt_path={teacher}", f"teacher.cache_dir={tmp_path / 'cache'}",
           f"hydra.run.dir={run}"]  # fmt: skip
    _run(cmd)
    ckpt = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 4 and not any(k.startswith("teacher.") for k in ckpt["state_dict"])
    assert ckpt["facetx"]["config"]["teacher"]["ckpt_path"] == str(teacher)
    assert json.loads((run / "metrics.json").read_text())["val/recognition/acc"] > 0
    assert any((tmp_path / "cache").rglob("*"))  # rank 0 filled it
