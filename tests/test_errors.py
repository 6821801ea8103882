"""Every user mistake gets one line, not a traceback: the entry points run for real on bad input, and the checks
behind them in-process (facetx.errors, checkpoints, config entries, distillation terms, data paths).

Three cases run the entry points as real subprocesses, for the whole process contract (exit status, stderr, the
traceback flag): train.py (Hydra), ``python -m facetx.detect`` (argparse) and ``FACETX_TRACEBACK=1``. The other entry
point cases run the same scripts in this process (``run_script``: train.py/distill.py/export.py as ``__main__`` with
that argv; prepare's ``main(argv)``), which checks the same exit code and stderr without paying a fresh interpreter's
8-15 s of torch/lightning/hydra imports each."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.errors import InstantiationException
from omegaconf import OmegaConf, open_dict
from torch.utils.data import DataLoader, Dataset, TensorDataset

import facetx.training.checkpoint as checkpoint_mod
from facetx.data.datamodule import FaceDataModule
from facetx.data.formats import RecordIOWriter
from facetx.data.formats.errors import CorruptImageError, DataFormatError
from facetx.data.formats.io import encode_image, require_dir
from facetx.data.formats.writers import write_verification_bin
from facetx.errors import (
    EXIT_USER_ERROR,
    CheckpointError,
    ConfigError,
    UserError,
    config_key,
    exit_on_user_error,
    find_user_error,
    user_message,
)
from facetx.loss import DistillationLoss, MarginSoftmax, MultiTaskLoss, WingLoss
from facetx.training.checkpoint import (
    CONFIG_KEY,
    CheckpointNotFoundError,
    check_resume_checkpoint,
    load_checkpoint,
    load_face_net,
)
from facetx.training.config_checks import check_data_root, check_required, target_entries
from facetx.training.distill import TeacherNotFoundError, find_teacher, load_teacher
from facetx.training.run import build_callbacks, build_loggers, train
from facetx.training.teacher_cache import TeacherCacheError
from tests.conftest import FAST, assert_one_line, compose_config

ROOT = Path(__file__).resolve().parents[1]
# a few CPU steps of the tiny model on a data config other than synthetic (debug=fast resizes the synthetic set)
REAL_DATA_FAST = ["model=tiny", "trainer.accelerator=cpu", "logger=csv", "trainer.max_steps=2", "test=false",
                  "data.batch_size=4", "data.eval_batch_size=4", "data.num_workers=0"]  # fmt: skip


# --- fixtures: a real teacher checkpoint and files made from it ---


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny 'teacher' trained for a few steps."""
    out = tmp_path_factory.mktemp("teacher") / "train" / "run"
    train(compose_config("train", [*FAST, "model=tiny", "model_name=teacher"], out))
    return out / "checkpoints" / "last.ckpt"


def _rewrite(src: Path, dst: Path, edit) -> Path:
    """A copy of checkpoint ``src`` at ``dst`` after ``edit(ckpt)`` changed it in place."""
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    edit(ckpt)
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, dst)
    return dst


@pytest.fixture(scope="module")
def distill_ckpt(teacher_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What distill.py writes, in the parts that matter here: task_name distill, a student section, student. weights."""

    def as_student(ckpt: dict) -> None:
        config = ckpt[CONFIG_KEY]["config"]
        config.update(task_name="distill", model_name="tiny", student=config.pop("model"))
        ckpt["state_dict"] = {k.replace("net.", "student.", 1): v for k, v in ckpt["state_dict"].items()}

    return _rewrite(teacher_ckpt, tmp_path_factory.mktemp("distill") / "last.ckpt", as_student)


@pytest.fixture(scope="module")
def unbuildable_ckpt(teacher_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint whose stored model section names a backbone this code does not have (an older/newer facetx)."""

    def rename(ckpt: dict) -> None:
        ckpt[CONFIG_KEY]["config"]["model"]["backbone"]["name"] = "facevit_gone_p14_112"

    return _rewrite(teacher_ckpt, tmp_path_factory.mktemp("unbuildable") / "last.ckpt", rename)


# --- the entry points, for real ---


def start_entry(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    """``python *args`` from the repo root, started; :func:`finish` waits for it."""
    env = {k: v for k, v in os.environ.items() if k not in ("FACETX_TRACEBACK", "HYDRA_FULL_ERROR")} | (env or {})
    pipe = subprocess.PIPE
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=pipe, stderr=pipe, text=True, env=env)


def finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    try:
        out, err = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def train_args(tmp_path: Path, *overrides: str, fast: bool = True) -> list[str]:
    base = [*FAST, "model=tiny"] if fast else REAL_DATA_FAST
    return ["train.py", *base, *overrides, f"hydra.run.dir={tmp_path}/run"]


# subprocesses: the whole process contract, once per kind of entry point


@pytest.fixture(scope="module")
def entry_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, subprocess.CompletedProcess]]:
    """The three subprocess cases, started side by side: each is mostly a fresh interpreter importing torch/lightning
    (8-15 s on one core), so together they take about the time of the slowest rather than the sum."""
    tmp = tmp_path_factory.mktemp("entry")
    (tmp / "weights").mkdir()
    started = {
        "train": start_entry(train_args(tmp / "train", "ckpt_path=/wrong/path.ckpt")),
        "traceback": start_entry(train_args(tmp / "tb", "ckpt_path=/wrong/path.ckpt"), env={"FACETX_TRACEBACK": "1"}),
        "detect": start_entry(["-m", "facetx.detect", "--weights-dir", str(tmp / "weights"), str(tmp / "a.jpg")]),
    }
    try:
        yield {name: finish(proc) for name, proc in started.items()}
    finally:
        for proc in started.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


def test_train_missing_checkpoint(entry_runs: dict[str, subprocess.CompletedProcess]) -> None:
    assert_one_line(entry_runs["train"], "ckpt_path=/wrong/path.ckpt: no such file", "train.py")


def test_traceback_on_request(entry_runs: dict[str, subprocess.CompletedProcess]) -> None:
    proc = entry_runs["traceback"]
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "CheckpointNotFoundError" in proc.stderr


def test_detect_cli(entry_runs: dict[str, subprocess.CompletedProcess]) -> None:
    assert_one_line(entry_runs["detect"], "BlazeFace weights not found", "fetch_blazeface.sh")


# the same scripts in this process


def test_train_missing_checkpoint_in_process(run_script, tmp_path: Path) -> None:
    # the subprocess case above, here: the in-process runs see what a real run sees
    proc = run_script(*train_args(tmp_path, "ckpt_path=/wrong/path.ckpt"))
    assert_one_line(proc, "ckpt_path=/wrong/path.ckpt: no such file", "train.py")


def test_train_truncated_checkpoint(run_script, teacher_ckpt: Path, tmp_path: Path) -> None:
    data = teacher_ckpt.read_bytes()
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(data[: len(data) // 2])
    proc = run_script(*train_args(tmp_path, f"ckpt_path={cut}"))
    assert_one_line(proc, f"ckpt_path={cut}: not a readable checkpoint")


def test_train_without_data_root(run_script, tmp_path: Path) -> None:
    proc = run_script(*train_args(tmp_path, "data=imagefolder", fast=False))
    assert_one_line(proc, "data.root: not set", "data=imagefolder")


def test_train_on_an_empty_data_folder(run_script, tmp_path: Path) -> None:
    (tmp_path / "faces").mkdir()
    proc = run_script(*train_args(tmp_path, "data=imagefolder", f"data.root={tmp_path}/faces", fast=False))
    assert_one_line(proc, f"{tmp_path}/faces: no identity sub-folder holds images")


def test_train_on_a_corrupt_record_fails_under_on_corrupt_fail(run_script, tmp_path: Path) -> None:
    pack = tmp_path / "pack"
    with RecordIOWriter(pack) as w:
        for i in range(8):
            w.add(b"not a jpeg", i % 2)  # encoded bytes are stored as they are
    write_verification_bin(pack / "lfw.bin", [encode_image(np.zeros((112, 112, 3), np.uint8))] * 40, [True, False] * 10)
    overrides = [
        "data=insightface",
        f"data.root={pack}",
        f"data.val_bins=[{pack}/lfw.bin]",
        "data.train.on_corrupt=fail",
    ]
    proc = run_script(*train_args(tmp_path, *overrides, fast=False))
    assert_one_line(proc, f"{pack}/train.rec: record", "cannot decode the image payload")


def test_a_run_with_no_held_out_set_is_refused(run_script, tmp_path: Path) -> None:
    pack = tmp_path / "pack"
    with RecordIOWriter(pack) as w:
        for i in range(8):
            w.add(encode_image(np.zeros((112, 112, 3), np.uint8)), i % 2)
    proc = run_script(*train_args(tmp_path, "data=insightface", f"data.root={pack}", "data.val_bins=[]", fast=False))
    assert_one_line(
        proc, "data.monitor=val/lfw/acc: there is no val set to measure it on", "data.val_bins=[/path/to/lfw.bin]"
    )


def test_train_with_missing_val_bins(run_script, tmp_path: Path) -> None:
    proc = run_script(*train_args(tmp_path, f"data.val_bins=[{tmp_path}/lfw.bin]"))
    assert_one_line(proc, f"data.val_bins: {tmp_path}/lfw.bin does not exist")


def test_distill_teacher_not_found(run_script, tmp_path: Path) -> None:
    proc = run_script("distill.py", *FAST, "teacher.ckpt_path=/wrong/path", f"hydra.run.dir={tmp_path}/run")
    line = assert_one_line(proc, "teacher.ckpt_path=/wrong/path: no such file")
    assert "train.py model=teacher" in line


def test_distill_refuses_a_distilled_student_as_teacher(run_script, distill_ckpt: Path, tmp_path: Path) -> None:
    proc = run_script("distill.py", *FAST, f"teacher.ckpt_path={distill_ckpt}", f"hydra.run.dir={tmp_path}/run")
    assert_one_line(proc, f"teacher.ckpt_path={distill_ckpt}: a distill.py checkpoint", "cannot teach")


def test_distill_unknown_feature_loss(run_script, teacher_ckpt: Path, tmp_path: Path) -> None:
    args = [*FAST, "student=tiny", f"teacher.ckpt_path={teacher_ckpt}", "distill.feature_loss=l1"]
    proc = run_script("distill.py", *args, f"hydra.run.dir={tmp_path}/run")
    assert_one_line(proc, "distill.feature_loss='l1'", "mse")


def test_export_of_a_network_that_cannot_be_rebuilt(run_script, unbuildable_ckpt: Path, tmp_path: Path) -> None:
    proc = run_script("export.py", f"ckpt_path={unbuildable_ckpt}", f"hydra.run.dir={tmp_path}/run")
    assert_one_line(proc, f"ckpt_path={unbuildable_ckpt}: its network cannot be rebuilt", "facevit_gone_p14_112")


def test_export_of_a_run_directory(run_script, teacher_ckpt: Path, tmp_path: Path) -> None:
    run_dir = teacher_ckpt.parents[1]
    proc = run_script("export.py", f"ckpt_path={run_dir}", f"hydra.run.dir={tmp_path}/run")
    assert_one_line(proc, f"ckpt_path={run_dir}: is a directory", f"did you mean {teacher_ckpt}")


def test_prepare_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from facetx.data.prepare import main

    code = main([str(tmp_path / "raw"), str(tmp_path / "out"), "--no-progress"])
    out, err = capsys.readouterr()
    proc = subprocess.CompletedProcess(["python", "-m", "facetx.data.prepare"], code, out, err)
    assert_one_line(proc, f"{tmp_path}/raw: does not exist (expected SRC)")


# --- facetx.errors ---


def test_user_errors_keep_their_old_bases() -> None:
    assert issubclass(DataFormatError, UserError) and issubclass(DataFormatError, ValueError)
    assert issubclass(CorruptImageError, DataFormatError)
    assert issubclass(TeacherNotFoundError, UserError) and issubclass(TeacherNotFoundError, FileNotFoundError)
    assert issubclass(TeacherCacheError, UserError) and issubclass(TeacherCacheError, ValueError)
    assert issubclass(CheckpointNotFoundError, CheckpointError) and issubclass(CheckpointNotFoundError, OSError)
    from facetx.detect.weights import WeightsChecksumError, WeightsNotFoundError

    assert issubclass(WeightsNotFoundError, UserError) and issubclass(WeightsNotFoundError, FileNotFoundError)
    assert issubclass(WeightsChecksumError, UserError) and issubclass(WeightsChecksumError, ValueError)


def test_user_error_found_inside_hydra_and_dataloader_wrappers() -> None:
    cause = DataFormatError("/data/x: does not exist (expected the WFLW folder)")
    try:
        raise InstantiationException("Error in call to target 'x':\nfull_key: data.train") from cause
    except InstantiationException as e:
        assert find_user_error(e) is cause
    assert find_user_error(RuntimeError("a bug")) is None
    # a reader's ConfigError knows its argument, not where it sits in the config: the wrapper's full_key says
    bad = ConfigError("on_corrupt must be one of ('skip', 'fail'), got 'error'")
    try:
        raise InstantiationException("Error in call to target 'x':\nfull_key: data.train") from bad
    except InstantiationException as e:
        assert config_key(e) == "data.train"
        assert user_message(find_user_error(e), config_key(e)) == f"data.train: {bad}"

    class Broken(Dataset):
        def __len__(self) -> int:
            return 2

        def __getitem__(self, i: int) -> None:
            raise CorruptImageError(f"train.rec: record {i}: cannot decode the image payload (10 bytes)")

    with pytest.raises(CorruptImageError) as info:
        next(iter(DataLoader(Broken(), num_workers=1)))
    assert "Original Traceback" in str(info.value)  # what the worker hands back ...
    assert user_message(info.value) == "train.rec: record 0: cannot decode the image payload (10 bytes)"  # ... shown


def test_exit_on_user_error(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FACETX_TRACEBACK", raising=False)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)

    @exit_on_user_error
    def entry(error: Exception) -> None:
        raise error

    with pytest.raises(SystemExit) as info:
        entry(ConfigError("data.batch_size=0: expected\n a positive number"))
    assert info.value.code == EXIT_USER_ERROR
    assert capsys.readouterr().err == "error: data.batch_size=0: expected a positive number\n"
    with pytest.raises(KeyError):  # a bug keeps its traceback
        entry(KeyError("bug"))
    monkeypatch.setenv("FACETX_TRACEBACK", "1")
    with pytest.raises(ConfigError):
        entry(ConfigError("shown with its traceback"))


# --- checkpoints ---


def test_checkpoint_files_that_are_not_checkpoints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FileNotFoundError, match=r"^teacher.ckpt_path=/no/such.ckpt: no such file \(expected"):
        load_checkpoint("/no/such.ckpt", key="teacher.ckpt_path")
    (tmp_path / "empty.ckpt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty or ends early"):
        load_checkpoint(tmp_path / "empty.ckpt")
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(CheckpointError, match="notes.txt: not a readable checkpoint"):
        load_checkpoint(tmp_path / "notes.txt")
    torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "pickled.pt")
    with pytest.raises(CheckpointError, match="holds Python objects"):
        load_checkpoint(tmp_path / "pickled.pt")
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "lightning.ckpt")
    with pytest.raises(CheckpointError, match="not a facetx checkpoint"):
        load_checkpoint(tmp_path / "lightning.ckpt", key="ckpt_path")

    def unreadable(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(checkpoint_mod, "open", unreadable, raising=False)
    with pytest.raises(CheckpointError, match=r"ckpt_path=.*lightning.ckpt: cannot read it \(Permission denied\)"):
        load_checkpoint(tmp_path / "lightning.ckpt", key="ckpt_path")


def test_checkpoint_of_the_wrong_kind_or_network(
    teacher_ckpt: Path, distill_ckpt: Path, unbuildable_ckpt: Path, tmp_path: Path
) -> None:
    with pytest.raises(CheckpointError, match="a distill.py checkpoint .*cannot teach"):
        load_teacher(distill_ckpt)
    net, config = load_face_net(distill_ckpt, prefix=None)  # export's choice: whichever network it holds
    assert config["task_name"] == "distill" and net.output_names
    with pytest.raises(CheckpointError, match="has no 'model' config section"):
        load_face_net(distill_ckpt)
    with pytest.raises(CheckpointError, match="its network cannot be rebuilt from the stored 'model' config"):
        load_face_net(unbuildable_ckpt, key="ckpt_path")

    def wider(ckpt: dict) -> None:
        ckpt[CONFIG_KEY]["config"]["model"]["backbone"]["model_kwargs"]["embed_dim"] = 48

    mismatch = _rewrite(teacher_ckpt, tmp_path / "wider.ckpt", wider)
    with pytest.raises(CheckpointError, match=r"its weights do not fit .* of another shape") as info:
        load_face_net(mismatch)
    assert "\n" not in str(info.value)


def test_resume_checkpoint_must_match_the_run(teacher_ckpt: Path, distill_ckpt: Path) -> None:
    check_resume_checkpoint(teacher_ckpt, "train", "teacher")
    check_resume_checkpoint(distill_ckpt, "distill", "tiny")
    check_resume_checkpoint("last", "train")  # Lightning's own names stay Lightning's
    with pytest.raises(CheckpointError, match="a distill.py checkpoint .* cannot resume a train.py run"):
        check_resume_checkpoint(distill_ckpt, "train")
    with pytest.raises(CheckpointError, match="a train.py checkpoint .* cannot resume a distill.py run"):
        check_resume_checkpoint(teacher_ckpt, "distill")
    with pytest.raises(CheckpointError, match="cannot resume a run of model=vit_tiny"):
        check_resume_checkpoint(teacher_ckpt, "train", "vit_tiny")


def test_teacher_search_finds_nothing(tmp_path: Path) -> None:
    with pytest.raises(TeacherNotFoundError, match=r"^teacher.search_dir=.*: no teacher checkpoint .*train one first"):
        find_teacher(tmp_path)


# --- config entries that would do nothing ---


def test_callback_and_logger_entries_need_a_target(tmp_path: Path) -> None:
    cfg = compose_config("train", [*FAST, "model=tiny"], tmp_path)
    with open_dict(cfg):
        cfg.callbacks.lr_monitor = None  # how a user removes one: fine
        cfg.logger.csv = None
    assert not build_loggers(cfg)
    kept = [name for name, c in cfg.callbacks.items() if c is not None]
    assert "lr_monitor" not in kept and len(build_callbacks(cfg, {})) == len(kept) + 1  # + StoreConfig
    with open_dict(cfg):
        cfg.callbacks.early_stop = {"monitor": "val/loss", "patience": 3}
    with pytest.raises(ConfigError, match=r"^callbacks.early_stop: no _target_ \(found keys \['monitor', 'patience'\]"):
        build_callbacks(cfg, {})
    with open_dict(cfg):
        cfg.logger.tb = {"save_dir": "x"}
    with pytest.raises(ConfigError, match="logger.tb: no _target_"):
        build_loggers(cfg)
    with pytest.raises(ConfigError, match="callbacks.x: no _target_ .*found 3"):
        target_entries(OmegaConf.create({"callbacks": {"x": 3}}), "callbacks")


def _distill_loss(**kw: object) -> DistillationLoss:
    args = {
        "task_loss": MultiTaskLoss(recognition=MarginSoftmax(4, 512, scale=16.0), landmarks=WingLoss()),
        "student_features": {},
        "teacher_features": {},
        "weights": {"kd_expression": 1.0},
        "feature_pairs": [],
        "teacher_outputs": ["embedding", "landmarks", "expression_logits", "spoof_logits"],
        "student_outputs": ["embedding", "landmarks", "expression_logits", "spoof_logits"],
    }
    return DistillationLoss(**(args | kw))


def test_distillation_terms_that_could_never_be_computed() -> None:
    _distill_loss()  # every output there: fine
    with pytest.raises(ConfigError, match=r"^distill.feature_loss='l1': expected one of mse, cosine$"):
        _distill_loss(feature_loss="l1")
    with pytest.raises(ConfigError, match="distill.weights.features=1 but distill.feature_pairs=\\[\\] pairs no"):
        _distill_loss(weights={"features": 1.0})
    with pytest.raises(ConfigError, match="distill.weights.kd_expression=1: the teacher has no expression_logits"):
        _distill_loss(teacher_outputs=["embedding", "landmarks"])
    with pytest.raises(ConfigError, match="distill.weights.kd_spoof=0.5: the student has no spoof_logits"):
        _distill_loss(weights={"kd_spoof": 0.5}, student_outputs=["embedding"])
    with pytest.raises(ConfigError, match="kd_recognition=1: the teacher has no identity classifier"):
        _distill_loss(weights={"kd_recognition": 1.0})
    with pytest.raises(ConfigError, match="kd_recognition=1: the student has no identity classifier"):
        _distill_loss(
            weights={"kd_recognition": 1.0}, task_loss=MultiTaskLoss(), teacher_classifier=MarginSoftmax(4, 512)
        )
    with pytest.raises(ConfigError, match="landmarks_kd=0.1: the term reuses loss.landmarks, which is off"):
        _distill_loss(weights={"landmarks_kd": 0.1}, task_loss=MultiTaskLoss())
    # without the networks' outputs (unit use) only what the loss itself knows is checked
    _distill_loss(weights={"kd_recognition": 1.0}, teacher_outputs=None, student_outputs=None)


# --- data paths ---


def test_data_root_and_required_values(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^data.root: not set \(data=\S+ reads its files from it\)"):
        check_required(OmegaConf.create({"data": {"root": "???", "train": {"root": "${data.root}"}}}))
    check_required(OmegaConf.create({"loss": {"recognition": {"num_classes": "???"}}}))  # the run fills it
    with pytest.raises(ConfigError, match=r"^ckpt_path: not set \(expected ckpt_path=DIR/checkpoints/last.ckpt"):
        check_required(OmegaConf.create({"ckpt_path": "???"}))
    with pytest.raises(ConfigError, match="^data.root: empty"):
        check_data_root(OmegaConf.create({"data": {"root": None, "train": {"p": "${data.root}/faces_emore"}}}))
    with pytest.raises(ConfigError, match=f"^data.root={tmp_path}/nope: no such folder"):
        check_data_root(OmegaConf.create({"data": {"root": f"{tmp_path}/nope"}}))
    check_data_root(OmegaConf.create({"data": {"root": str(tmp_path)}}))
    check_data_root(OmegaConf.create({"data": {"train": {}}}))  # synthetic: no root at all


def test_val_bins_must_be_a_list_of_existing_packs(tmp_path: Path) -> None:
    train = TensorDataset(torch.zeros(4, 1))
    with pytest.raises(ConfigError, match=f"^data.val_bins: {tmp_path}/lfw.bin does not exist"):
        FaceDataModule(train=train, val=[], val_bins=[str(tmp_path / "lfw.bin")])
    with pytest.raises(ConfigError, match=r"expected a list of packs, e.g. data.val_bins=\[/data/lfw.bin\]"):
        FaceDataModule(train=train, val=[], val_bins="/data/lfw.bin")
    with pytest.raises(ConfigError, match="data.monitor_mode"):
        FaceDataModule(train=train, val=[], monitor_mode="up")


def test_unreadable_data_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import facetx.data.formats.io as io_mod

    # root reads every folder whatever its mode: the permission check is what is tested, so it answers "no"
    monkeypatch.setattr(io_mod.os, "access", lambda path, mode: False)
    with pytest.raises(DataFormatError, match="cannot list this folder \\(permission denied; expected faces\\)"):
        require_dir(tmp_path, "faces")
