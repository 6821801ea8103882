"""The experiment= recipes for real data (arcface_torch's ViT recipes, WFLW, FER2013, CelebA-Spoof): each composes
with its published target, instantiates and trains two steps on a tiny pack written in its data format, with only
the paths and the CPU scale overridden."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from facetx.data.formats.writers import write_fer2013_csv
from tests.conftest import compose_config
from tests.data.test_formats_ijb import _release
from tests.data.test_mix import write_four_sources

RECOGNITION = ["arcface_wf42m_vit_t", "arcface_wf42m_vit_s", "arcface_wf42m_vit_b", "arcface_wf42m_vit_t_8gpu",
               "arcface_wf42m_vit_b_8gpu", "arcface_ms1mv3_vit_t", "arcface_wf12m_vit_t"]  # fmt: skip
TASKS = {"wflw_landmarks": "WFLW", "fer2013_expression": "fer2013", "celeba_spoof_liveness": "CelebA_Spoof"}
#: what CI changes: the scale (CPU, one process, two steps, tiny batches), never the recipe
CPU_SCALE = ["trainer=default", "trainer.max_steps=2", "trainer.max_epochs=1",
             "trainer.val_check_interval=1.0", "trainer.log_every_n_steps=1", "trainer.enable_model_summary=false",
             "data.batch_size=4", "data.eval_batch_size=8", "data.num_workers=0", "test=false",
             "logger=csv"]  # fmt: skip
#: in make test: the ViT-T recipe (the network of four of the seven recognition recipes); the rest in make test-extra
IN_SUITE = {"arcface_wf42m_vit_t"}


@pytest.fixture(scope="module")
def packs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("packs")
    write_four_sources(root)
    rng = np.random.default_rng(1)
    usage = ["Training"] * 5 + ["PublicTest"] * 3 + ["PrivateTest"] * 3  # FER2013's three splits, as the recipe reads
    write_fer2013_csv(root / "fer2013" / "fer2013.csv", [(i % 7, rng.integers(0, 256, (48, 48)), u)
                                                         for i, u in enumerate(usage)])  # fmt: skip
    _release(root / "IJBC", identities=2)
    return root


def _paths(name: str, root: Path) -> list[str]:
    if name in TASKS:
        return [f"data.root={root / TASKS[name]}"]
    return [f"data.root={root / 'faces_emore'}", f"data.val_ijb=[{root / 'IJBC'}]", "trainer.num_nodes=1",
            "data.pin_memory=false",
            f"data.val_bins=[{root / 'faces_emore' / 'lfw.bin'}]"]  # fmt: skip


def test_arcface_recipes_mirror_the_published_configs(tmp_path: Path) -> None:
    cfg = compose_config(
        "train", ["experiment=arcface_wf42m_vit_b_8gpu", "data.root=/x", "data.val_ijb=[/y]"], tmp_path
    )
    assert cfg.model.backbone.name == "facevit_arcface_b_p9_112"
    r = cfg.loss.recognition
    assert (r._target_, r.scale, r.m2, r.m3, r.sample_rate) == ("facetx.loss.PartialFC", 64.0, 0.0, 0.4, 0.3)
    assert (cfg.optim.opt, cfg.optim.lr, cfg.optim.weight_decay) == ("adamw", 1e-3, 0.1)
    assert (cfg.data.batch_size, cfg.trainer.accumulate_grad_batches, cfg.trainer.max_epochs) == (256, 12, 40)
    assert (cfg.trainer.strategy, cfg.trainer.gradient_clip_val, cfg.data.monitor) == (
        "ddp",
        5.0,
        "val/ijbc/tar@far=1e-4",
    )
    assert cfg.recipe.target["ijbc/tar@far=1e-4"] == pytest.approx(0.9791) and "arcface_torch" in cfg.recipe.source
    cfg = compose_config("train", ["experiment=arcface_wf42m_vit_t", "data.root=/x", "data.val_ijb=[/y]"], tmp_path)
    assert (cfg.data.batch_size, cfg.trainer.num_nodes, cfg.scheduler.pct_start) == (384, 8, 0.1)  # 64 GPUs, 4/40


@pytest.mark.parametrize(
    "name", [n if n in IN_SUITE else pytest.param(n, marks=pytest.mark.ci_extra) for n in RECOGNITION + list(TASKS)]
)
def test_recipe_trains_two_steps_on_a_tiny_pack(name: str, packs: Path, run_script, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = run_script("train.py", f"experiment={name}", *_paths(name, packs), *CPU_SCALE, f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    flat = json.dumps(metrics)
    monitor = compose_config("train", [f"experiment={name}", *_paths(name, packs)], tmp_path / "cfg").data.monitor
    assert monitor in flat, (monitor, flat[:1500])


def test_the_readme_recipe_table_states_each_config_target(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    rows = {line.split("|")[1].strip(" `"): line for line in readme.splitlines() if line.startswith("| `")}
    for name in RECOGNITION + list(TASKS):
        cfg = compose_config("train", [f"experiment={name}", "data.root=/x", "data.val_ijb=[/y]"], tmp_path)
        assert cfg.recipe.source, name
        for value in cfg.recipe.target.values():
            if value is not None:
                assert f"{100 * value:.2f}" in rows[name] or f"{100 * value:.1f}" in rows[name], (name, value)
