"""prune.py end to end on tiny models: prune a trained net, recover it by distillation, rebuild and export it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from facetx.models.pruning import block_sizes, face_vit_of
from facetx.training.checkpoint import load_checkpoint, load_face_net
from facetx.training.pruning import prune_and_distill
from tests.conftest import FAST, assert_one_line, compose_config


@pytest.fixture(scope="module")
def pruned_run(tiny_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prune.py run on ``tiny_ckpt`` (a trained net) at ratio 0.5, taught by ``tiny_ckpt``: its run dir."""
    out = tmp_path_factory.mktemp("pruned")
    overrides = [*FAST, f"prune.ckpt_path={tiny_ckpt}", f"teacher.ckpt_path={tiny_ckpt}", "trainer.max_steps=2"]
    prune_and_distill(compose_config("prune", overrides, out))
    return out


def test_pruned_student_rebuilds_from_its_checkpoint(pruned_run: Path, tiny_ckpt: Path) -> None:
    ckpt = pruned_run / "checkpoints" / "last.ckpt"
    student, config = load_face_net(ckpt, prefix=None)  # rebuilt from the stored config alone, weights-only
    assert config["task_name"] == "distill" and config["model_name"] == "tiny-pruned50"
    sizes = {"heads": [1, 1], "mlp_hidden": [64, 64]}  # tiny: 2 blocks of 2 heads, 128 MLP channels
    assert config["student"]["backbone"]["model_kwargs"]["pruned"] == sizes
    assert block_sizes(face_vit_of(student)) == sizes
    source, _ = load_face_net(tiny_ckpt)
    assert sum(p.numel() for p in student.parameters()) < sum(p.numel() for p in source.parameters())
    # the recovery started from the source's margin classifier (same identities), not from a fresh one (std 0.01)
    before = load_checkpoint(tiny_ckpt)["state_dict"]["loss.recognition.weight"]
    after = load_checkpoint(ckpt)["state_dict"]["loss.task_loss.recognition.weight"]
    assert (after - before).norm() < 0.1 * before.norm()
    assert student(torch.rand(2, 3, 112, 112))["embedding"].shape == (2, 512)
    # export.py rebuilds it the same way: its ONNX graph matches PyTorch (the stage export.py runs first)
    from facetx.export.pipeline import load_source, onnx_stage
    from facetx.export.settings import ExportSettings

    out = pruned_run / "onnx"
    out.mkdir()
    settings = ExportSettings(fixed_batch_variant=False, simplify=False)
    artifacts = onnx_stage(load_source(ckpt), torch.rand(4, 3, 112, 112), out, settings=settings, threads=1)
    assert min(s["min_cosine"] for s in artifacts.parity["model.onnx"].values()) >= 0.9999


def test_a_distilled_student_prunes_again_with_its_teacher(
    pruned_run: Path, tiny_ckpt: Path, tmp_path: Path, run_script
) -> None:
    """python prune.py on a distill.py checkpoint (the pruned run's): its teacher teaches again."""
    run = tmp_path / "again"
    source = pruned_run / "checkpoints" / "last.ckpt"
    args = [*FAST, f"prune.ckpt_path={source}", "prune.head_ratio=0", "trainer.max_steps=1", f"hydra.run.dir={run}"]
    proc = run_script("prune.py", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = run / "checkpoints" / "last.ckpt"
    config = load_checkpoint(ckpt)["facetx"]["config"]
    assert config["teacher"]["ckpt_path"] == str(tiny_ckpt) and config["model_name"] == "tiny-pruned50-pruned50-heads0"
    assert config["student"]["backbone"]["model_kwargs"]["pruned"] == {"heads": [1, 1], "mlp_hidden": [32, 32]}
    before = load_checkpoint(source)["state_dict"]["loss.task_loss.recognition.weight"]
    after = load_checkpoint(ckpt)["state_dict"]["loss.task_loss.recognition.weight"]
    assert (after - before).norm() < 0.1 * before.norm()


def test_bad_ratio_is_one_line(run_script, tmp_path: Path) -> None:
    proc = run_script("prune.py", "prune.ckpt_path=/no/such.ckpt", "prune.ratio=1.5", f"hydra.run.dir={tmp_path}")
    assert_one_line(proc, "prune.ratio=1.5", "[0, 1)")


def test_missing_source_and_student_choice_are_one_line(run_script, tmp_path: Path) -> None:
    assert_one_line(run_script("prune.py", f"hydra.run.dir={tmp_path}"), "prune.ckpt_path", "not set")
    proc = run_script("prune.py", "prune.ckpt_path=/no/such.ckpt", f"hydra.run.dir={tmp_path}")
    assert_one_line(proc, "prune.ckpt_path=/no/such.ckpt", "no such file")
    proc = run_script("prune.py", "prune.ckpt_path=/x.ckpt", "student=tiny", f"hydra.run.dir={tmp_path}")
    assert_one_line(proc, "student=tiny", "prune.ckpt_path")
