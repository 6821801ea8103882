"""Distillation: loss terms, frozen teacher, projections for every student, distill.py end to end."""

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from facetx.loss import DistillationLoss, MarginSoftmax, MultiTaskLoss, WingLoss
from facetx.loss.distill import feature_distance, kd_kl
from facetx.training.checkpoint import load_checkpoint, load_face_net
from facetx.training.distill import feature_info, find_teacher
from facetx.training.run import distill, train
from tests.conftest import FAST, compose_config

ROOT = Path(__file__).resolve().parents[2]
STUDENTS = sorted(p.stem for p in (ROOT / "conf" / "student").glob("*.yaml"))
ALL_TERMS = {"kd_expression": 1.0, "kd_spoof": 1.0, "kd_recognition": 1.0, "embedding": 1.0, "relational": 1.0,
             "features": 1.0, "landmarks_kd": 1.0}  # fmt: skip


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory) -> Path:
    """A tiny 'teacher' trained for a few steps (model_name is set to teacher so discovery finds it)."""
    out = tmp_path_factory.mktemp("teacher") / "train" / "run"
    cfg = compose_config("train", [*FAST, "model=tiny", "model_name=teacher"], out)
    train(cfg)
    return out / "checkpoints" / "last.ckpt"


def _outputs(b: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "embedding": torch.randn(b, 512, generator=g),
        "landmarks": torch.rand(b, 68, 2, generator=g),
        "expression_logits": torch.randn(b, 7, generator=g),
        "spoof_logits": torch.randn(b, 2, generator=g),
    }


def _batch(b: int = 6) -> dict[str, torch.Tensor]:
    return {
        "identity": torch.arange(b) % 4,
        "landmarks": torch.rand(b, 68, 2),
        "expression": torch.arange(b) % 7,
        "spoof": torch.arange(b) % 2,
        **{f"has_{t}": torch.ones(b, dtype=torch.bool) for t in ("identity", "landmarks", "expression", "spoof")},
    }


def test_kd_terms_vanish_when_student_equals_teacher() -> None:
    task = MultiTaskLoss(recognition=MarginSoftmax(4, 512, scale=16.0), landmarks=WingLoss())
    teacher_cls = MarginSoftmax(4, 512, scale=16.0)
    task.recognition.load_state_dict(teacher_cls.state_dict())
    loss = DistillationLoss(task, {}, {}, weights={**ALL_TERMS, "features": 0.0}, feature_pairs=[],
                            teacher_classifier=teacher_cls)  # fmt: skip
    out = _outputs()
    parts = loss(out, {k: v.clone() for k, v in out.items()}, _batch())
    for term in ("kd_expression", "kd_spoof", "kd_recognition", "embedding", "relational", "landmarks_kd"):
        assert parts[term].abs().item() < 1e-5, term
    other = _outputs(seed=1)
    parts = loss(out, other, _batch())
    for term in ("kd_expression", "kd_spoof", "kd_recognition", "embedding", "relational", "landmarks_kd"):
        assert parts[term].item() > 1e-3, term
    # the T^2 factor: the soft-target gradient scale stays comparable across temperatures
    s = out["expression_logits"].clone().requires_grad_(True)
    grads = []
    for t in (2.0, 8.0):
        (g,) = torch.autograd.grad(kd_kl(s, other["expression_logits"], t), s)
        grads.append(g.norm())
    assert 0.2 < grads[0] / grads[1] < 5


def test_teacher_classes_prefix_uses_the_teachers_first_rows() -> None:
    """A teacher trained on a superset of identities teaches the data's N classes through its first N rows."""
    teacher_cls = MarginSoftmax(6, 512, scale=16.0)
    task = MultiTaskLoss(recognition=MarginSoftmax(4, 512, scale=16.0))
    with torch.no_grad():
        task.recognition.weight.copy_(teacher_cls.weight[:4])
    only_kd = {"task": 0.0, "kd_recognition": 1.0}
    with pytest.raises(ValueError, match="teacher_classes=prefix"):
        DistillationLoss(task, {}, {}, weights=only_kd, feature_pairs=[], teacher_classifier=teacher_cls)
    loss = DistillationLoss(task, {}, {}, weights=only_kd, feature_pairs=[], teacher_classifier=teacher_cls,
                            teacher_classes="prefix")  # fmt: skip
    out = _outputs()
    assert loss(out, out, _batch())["kd_recognition"].item() < 1e-5  # same rows, same embedding: nothing to learn
    assert loss(out, _outputs(seed=1), _batch())["kd_recognition"].item() > 1e-3
    with pytest.raises(ValueError, match="teacher_classes"):
        DistillationLoss(task, {}, {}, weights=only_kd, feature_pairs=[], teacher_classes="suffix")


def test_feature_distance_zero_on_normalized_teacher() -> None:
    t = torch.randn(2, 16, 8, 8) * 5 + 3
    normed = torch.nn.functional.layer_norm(t.permute(0, 2, 3, 1), (16,)).permute(0, 3, 1, 2)
    assert feature_distance(normed, t, "mse").item() < 1e-8
    assert feature_distance(normed * 2, t, "cosine").item() < 1e-6


@pytest.mark.parametrize("student", STUDENTS)
def test_feature_projections_line_up_with_the_teacher(student: str, tmp_path: Path) -> None:
    cfg = compose_config("distill", [*FAST, f"student={student}"], tmp_path)
    teacher_cfg = compose_config("train", [*FAST, "model=teacher"], tmp_path)
    s_net = instantiate(cfg.student, _convert_="all").eval()
    t_net = instantiate(teacher_cfg.model, _convert_="all").eval()
    loss = instantiate(cfg.distill, _convert_="all")(
        task_loss=MultiTaskLoss(), student_features=feature_info(s_net), teacher_features=feature_info(t_net)
    )
    x = torch.rand(2, 3, 112, 112)
    with torch.no_grad():
        s_out, t_out = s_net(x), t_net(x)
    assert loss.pairs
    for t_name, s_name in loss.pairs:
        projected = loss.projectors[s_name.replace(".", "_")](s_out[s_name])
        assert projected.shape == t_out[t_name].shape == (2, 384, 8, 8)


def _capture_module(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Keep the LightningModule that ``distill()`` fits, its trainer's optimizers and, for every teacher forward
    pass during the fit, whether the teacher was in training mode and autograd was recording."""
    import facetx.training.run as run_mod

    captured: dict[str, Any] = {"teacher_calls": []}
    real = run_mod.fit_and_report

    def fit_and_capture(cfg: Any, datamodule: Any, module: Any) -> dict[str, float]:
        captured["module"] = module
        teacher, forward = module.teacher, module.teacher.forward

        def recorded_forward(*args: Any, **kwargs: Any) -> Any:
            captured["teacher_calls"].append((teacher.training, torch.is_grad_enabled()))
            return forward(*args, **kwargs)

        teacher.forward = recorded_forward
        metrics = real(cfg, datamodule, module)
        captured["optimizers"] = list(module.trainer.optimizers)
        return metrics

    monkeypatch.setattr(run_mod, "fit_and_report", fit_and_capture)
    return captured


def test_gradients_reach_only_the_student(teacher_ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    captured = _capture_module(monkeypatch)
    cfg = compose_config("distill", [*FAST, "student=tiny", f"teacher.ckpt_path={teacher_ckpt}"], tmp_path)
    metrics = distill(cfg)
    assert "val/recognition/acc" in metrics and (tmp_path / "metrics.json").is_file()
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert not any(k.startswith("teacher.") for k in ckpt["state_dict"])  # the teacher is not copied into students
    assert ckpt["facetx"]["config"]["teacher"]["ckpt_path"] == str(teacher_ckpt)
    student, config = load_face_net(tmp_path / "checkpoints" / "last.ckpt", prefix="student.")
    assert config["task_name"] == "distill"
    # the teacher in memory after distillation -- the one the steps ran against -- still has its checkpoint's
    # weights and buffers, is frozen and in eval mode, and none of its parameters was ever given to the optimizer
    module = captured["module"]
    saved = load_checkpoint(teacher_ckpt)["state_dict"]
    teacher_state = module.teacher.state_dict()
    assert teacher_state.keys() == {k.removeprefix("net.") for k in saved if k.startswith("net.")}
    for k, v in teacher_state.items():
        assert torch.equal(v, saved[f"net.{k}"]), f"teacher {k} changed during distillation"
    teacher_cls = module.loss.teacher_classifier  # the teacher's class centers (kd_recognition) are frozen too
    assert teacher_cls is not None and torch.equal(teacher_cls.weight, saved["loss.recognition.weight"])
    frozen = [*module.teacher.parameters(), *teacher_cls.parameters()]
    assert all(not p.requires_grad for p in frozen)
    calls = captured["teacher_calls"]  # each training step ran the teacher in eval mode, without autograd
    assert len(calls) >= cfg.trainer.max_steps and set(calls) == {(False, False)}
    optimized = {id(p) for opt in captured["optimizers"] for group in opt.param_groups for p in group["params"]}
    assert optimized and not optimized & {id(p) for p in frozen}
    assert {id(p) for p in module.student.parameters()} <= optimized
    # ... while the student moved away from its init
    fresh = instantiate(compose_config("distill", [*FAST, "student=tiny"], tmp_path / "x").student, _convert_="all")
    assert any(not torch.equal(v, fresh.state_dict()[k]) for k, v in student.state_dict().items())


def test_teacher_stays_frozen_during_training_steps(teacher_ckpt: Path, tmp_path: Path) -> None:
    from facetx.training.distill import DistillModule, load_teacher

    teacher, cls, _ = load_teacher(teacher_ckpt)
    snapshot = {k: v.clone() for k, v in teacher.state_dict().items()}
    cfg = compose_config("distill", [*FAST, "student=tiny"], tmp_path)
    student = instantiate(cfg.student, _convert_="all")
    task = MultiTaskLoss(recognition=MarginSoftmax(cls.num_classes, 512), landmarks=WingLoss())
    loss = instantiate(cfg.distill, _convert_="all")(
        task_loss=task, student_features=feature_info(student), teacher_features=feature_info(teacher),
        teacher_classifier=cls,
    )  # fmt: skip
    module = DistillModule(student, teacher, loss, optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=0.1))
    module.train()
    assert not teacher.training and all(not p.requires_grad for p in teacher.parameters())
    opt = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=0.1)
    batch = {"image": torch.rand(6, 3, 112, 112), "index": torch.arange(6), **_batch()}
    batch["identity"] = batch["identity"] % cls.num_classes
    for _ in range(2):
        opt.zero_grad()
        module.training_step(batch, 0).backward()
        assert all(p.grad is None for p in teacher.parameters())
        opt.step()
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, snapshot[k]), k


@pytest.mark.parametrize("student", STUDENTS)
def test_distill_runs_for_every_student(student: str, teacher_ckpt: Path, tmp_path: Path) -> None:
    cfg = compose_config(
        "distill", [*FAST, f"student={student}", f"teacher.ckpt_path={teacher_ckpt}", "trainer.max_steps=1"], tmp_path
    )
    metrics = distill(cfg)
    assert "val/recognition/acc" in metrics
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


def test_teacher_discovery_and_missing_teacher(teacher_ckpt: Path, tmp_path: Path, run_script) -> None:
    assert find_teacher(teacher_ckpt.parents[2]) == teacher_ckpt
    proc = run_script("distill.py", "debug=fast", f"teacher.search_dir={tmp_path}", f"hydra.run.dir={tmp_path}/r")
    assert proc.returncode != 0
    assert "train one first" in proc.stderr and "Traceback" not in proc.stderr


def test_teacher_cache_round_trip(tmp_path: Path) -> None:
    from facetx.training.teacher_cache import TeacherCache, TeacherCacheError

    out = {"embedding": torch.randn(3, 512), "feat.5": torch.randn(3, 16, 8, 8), "unused": torch.randn(3, 2)}
    cache = TeacherCache(tmp_path, "fp", size=10, keys=["embedding", "feat.5"])
    idx = torch.tensor([7, 2, 4])
    assert cache.lookup(idx) is None
    stored = cache.store(idx, out)
    assert set(stored) == {"embedding", "feat.5"}
    assert torch.allclose(stored["embedding"], out["embedding"], atol=1e-2)  # float16 rounding only
    again = TeacherCache(tmp_path, "fp", size=10, keys=["embedding", "feat.5"]).lookup(torch.tensor([4, 7]))
    assert torch.equal(again["feat.5"], stored["feat.5"][[2, 0]])  # what the filling run trained on, bit for bit
    assert cache.lookup(torch.tensor([4, 5])) is None  # row 5 was never written
    # a recipe that reads fewer outputs shares the cache; one that reads another output fills just that one
    assert set(TeacherCache(tmp_path, "fp", size=10, keys=["embedding"]).lookup(idx)) == {"embedding"}
    more = TeacherCache(tmp_path, "fp", size=10, keys=["embedding", "landmarks"])
    assert more.lookup(idx) is None
    more.store(idx, {**out, "landmarks": torch.rand(3, 68, 2)})
    assert torch.equal(more.lookup(idx)["embedding"], stored["embedding"])
    with pytest.raises(TeacherCacheError, match="holds 10 rows"):
        TeacherCache(tmp_path, "fp", size=11, keys=["embedding", "feat.5"])


def test_distill_with_teacher_cache_skips_the_teacher(
    teacher_ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache_dir = tmp_path / "cache"
    args = [*FAST, "student=tiny", f"teacher.ckpt_path={teacher_ckpt}", f"teacher.cache_dir={cache_dir}"]
    distill(compose_config("distill", args, tmp_path / "first"))
    flags = list(cache_dir.glob("*/*.filled.npy"))
    assert flags and all(np.load(f).all() for f in flags)  # 4 steps x batch 8 cover the 32 training images

    import facetx.training.distill as distill_mod

    real_load = distill_mod.load_teacher

    def teacher_that_must_not_run(path, **kwargs):
        net, cls, cfg = real_load(path, **kwargs)
        net.forward = lambda *a, **k: pytest.fail("the teacher ran although every output was cached")
        return net, cls, cfg

    monkeypatch.setattr(distill_mod, "load_teacher", teacher_that_must_not_run)
    distill(compose_config("distill", args, tmp_path / "second"))
    first = load_checkpoint(tmp_path / "first" / "checkpoints" / "last.ckpt")["state_dict"]
    second = load_checkpoint(tmp_path / "second" / "checkpoints" / "last.ckpt")["state_dict"]
    for k, v in first.items():  # same seed, same (cached) targets: the same student
        assert torch.allclose(v.float(), second[k].float(), atol=1e-5), k


def test_teacher_cache_refuses_augmented_data(teacher_ckpt: Path, tmp_path: Path, run_script) -> None:
    proc = run_script("distill.py", "debug=fast", "augment=default", f"teacher.ckpt_path={teacher_ckpt}",
                      f"teacher.cache_dir={tmp_path}/cache", f"hydra.run.dir={tmp_path}/r")  # fmt: skip
    assert proc.returncode != 0
    assert "augment=none" in proc.stderr and "Traceback" not in proc.stderr


def test_compare_table_reads_teacher_and_distilled_runs(teacher_ckpt: Path, tmp_path: Path) -> None:
    from facetx.bench.compare import main as compare

    cfg = compose_config("distill", [*FAST, "student=tiny", f"teacher.ckpt_path={teacher_ckpt}"], tmp_path / "d")
    metrics = distill(cfg)
    teacher_dir = teacher_ckpt.parents[1]
    table = compare([str(teacher_dir), str(tmp_path / "d"), "--labels", "T", "S", "--no-latency", "--split", "val"])
    rows = [line for line in table.splitlines() if line.startswith("| T ") or line.startswith("| S ")]
    assert len(rows) == 2 and "ORT ms" not in table
    assert f"{100 * metrics['val/recognition/acc']:.2f}" in rows[1]
    out = tmp_path / "t.md"
    table = compare([str(teacher_dir), str(tmp_path / "d"), "--runs-per-model", "2", "--out", str(out)])
    assert "ORT ms" in table and "tiny (distilled)" in table and out.read_text() == table
    assert "| 1.0x |" in table.splitlines()[2]  # the first run is the speed reference
