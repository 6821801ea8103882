"""``make bench`` plumbing: locating the teacher/student checkpoints and combining benchmark tables."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from facetx.bench.combine import combine
from facetx.export.locate import default_student, main
from facetx.runtime.tables import read_csv, write_csv
from facetx.training.checkpoint import CONFIG_KEY, newest_checkpoint


def _fake_ckpt(path: Path, task: str, model: str, mtime: float) -> Path:
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": {}, CONFIG_KEY: {"config": {"task_name": task, "model_name": model}}}, path)
    os.utime(path, (mtime, mtime))
    return path


def test_newest_checkpoint_filters_task_and_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    old = _fake_ckpt(tmp_path / "train/a/checkpoints/last.ckpt", "train", "teacher", 1e9)
    new = _fake_ckpt(tmp_path / "train/b/checkpoints/last.ckpt", "train", "teacher", 2e9)
    _fake_ckpt(tmp_path / "train/c/checkpoints/last.ckpt", "train", "tiny", 3e9)
    student = _fake_ckpt(tmp_path / "distill/d/checkpoints/last.ckpt", "distill", default_student(), 1e9)
    assert newest_checkpoint(tmp_path / "train", "train", "teacher") == new != old
    assert main(["student", "--root", str(tmp_path)]) == 0 and capsys.readouterr().out.strip() == str(student)
    with pytest.raises(FileNotFoundError, match="no distill checkpoint"):
        newest_checkpoint(tmp_path / "train", "distill")
    assert main(["teacher", "--root", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: locate teacher:") and "python train.py model=teacher" in err


def test_combine_tables(tmp_path: Path) -> None:
    a = write_csv([{"model": "teacher", "runtime": "torch", "batch": 1, "p50_ms": 9.0, "cpu": "x"}], tmp_path / "a.csv")
    b = write_csv([{"model": "student", "runtime": "onnxruntime", "batch": 1, "p50_ms": 1.0, "landmarks/nme": 0.1}],
                  tmp_path / "b.csv")  # fmt: skip
    csv_path, md_path = combine([a, b], tmp_path / "all" / "benchmark")
    rows = read_csv(csv_path)
    assert [r["model"] for r in rows] == ["teacher", "student"] and rows[1]["landmarks/nme"] == "0.1"
    assert "| student | onnxruntime |" in md_path.read_text()
    with pytest.raises(FileNotFoundError, match="run export.py"):
        combine([tmp_path / "missing.csv"], tmp_path / "x")
