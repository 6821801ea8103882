"""Every config group option composes with train.yaml / distill.yaml, and everything buildable on a CPU builds;
every ``_target_`` imports, takes the arguments its config gives it and lives in the package its group configures."""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hydra.utils import get_object, instantiate
from omegaconf import OmegaConf

from tests.conftest import compose_config

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

#: the modules each config group's ``_target_``s may come from: the package the group configures. Groups marked
#: ``@package _global_`` (debug, experiment, hparams_search) place nothing of their own: what they set is checked
#: against the group it lands in (``data.val`` against ``data``, ``hydra.sweeper`` against ``hydra``).
GROUP_PACKAGES: dict[str, tuple[str, ...]] = {
    "data": ("facetx.data",),
    "augment": ("facetx.augment", "albumentations"),
    "model": ("facetx.models",),
    "student": ("facetx.models",),  # each file reuses the model/ file
    "distill": ("facetx.loss",),  # the DistillationLoss recipe; the LightningModule is distill.yaml's `module`
    "loss": ("facetx.loss",),
    "optim": ("timm.optim", "torch.optim"),
    "scheduler": ("torch.optim.lr_scheduler",),
    "trainer": ("pytorch_lightning",),
    "callbacks": ("pytorch_lightning.callbacks", "facetx.training"),
    "logger": ("pytorch_lightning.loggers",),
    "paths": (),
    # Hydra's own launcher/sweeper nodes, the Optuna sweeper, our sweep-summary callback
    "hydra": ("hydra", "hydra_plugins", "optuna", "facetx.training"),
    "debug": (),
    "experiment": (),
    "hparams_search": (),
    # export.yaml's groups (no _target_ nodes: the export stages read them)
    "export": ("facetx.export",),
    "quant": ("facetx.quant",),
    "bench": ("facetx.export",),  # the export's benchmark stage (facetx.export.benchmark)
    "runtime": ("facetx.export",),  # the runtime stages (facetx.export.runtimes)
    # the video pipeline's own config root (conf/pipeline/pipeline.yaml; groups detector, tracker, gallery, output)
    "pipeline": ("facetx.pipeline", "facetx.detect"),
    # plans of `make tables` (not composed by Hydra: facetx.bench.tables reads them)
    "tables": ("facetx.bench",),
}
#: top-level keys of train.yaml / distill.yaml / export.yaml that are not groups
TOP_LEVEL_PACKAGES: dict[str, tuple[str, ...]] = {"module": ("facetx.training",)}
#: conf/ groups the README's table leaves out, and why
NOT_IN_README: dict[str, str] = {}
#: the library the README's row says a group configures (the row must keep naming it, and the group must use it)
README_LIBRARY = {"augment": "albumentations", "model": "timm", "optim": "timm", "trainer": "Lightning"}
#: keys of a `_target_` node that Hydra consumes itself
HYDRA_KEYS = {"_target_", "_partial_", "_convert_", "_recursive_", "_args_"}


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _target_nodes(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], dict]]:
    """``(path, node)`` for every mapping with a ``_target_`` in a plain (unresolved) container tree."""
    if isinstance(node, dict):
        if "_target_" in node:
            yield path, node
        for key, value in node.items():
            yield from _target_nodes(value, (*path, str(key)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _target_nodes(value, (*path, str(i)))


def _landing_group(conf: Path, file: Path, path: tuple[str, ...]) -> str:
    """The group whose packages a target in ``file`` at ``path`` must come from."""
    rel = file.relative_to(conf)
    if len(rel.parts) == 1 or "@package _global_" in file.read_text():
        return path[0]  # a primary config or a global override: the top-level key it sets
    return rel.parts[0]  # conf/<group>/[sub/]option.yaml lands in <group> (loss/recognition -> loss)


def _target_problems(where: str, group: str, node: dict) -> list[str]:
    """What is wrong with one ``_target_`` node: unimportable, not callable, outside its package, unknown arguments."""
    target = node["_target_"]
    packages = {**GROUP_PACKAGES, **TOP_LEVEL_PACKAGES}.get(group)
    if packages is None:
        return [f"{where}: {target} lands in {group!r}, which is neither a config group nor a known top-level key"]
    problems = []
    if not any(target == p or target.startswith(p + ".") for p in packages):
        problems.append(f"{where}: {target} is outside the {group!r} group's packages {packages}")
    try:
        obj = get_object(target)
    except Exception as e:  # noqa: BLE001 -- any import failure is the finding
        return [*problems, f"{where}: {target} does not import ({type(e).__name__}: {e})"]
    if not callable(obj):
        return [*problems, f"{where}: {target} is not callable"]
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return problems  # a builtin without a signature: nothing to check the arguments against
    kwargs = {k: None for k in node if k not in HYDRA_KEYS}
    try:
        sig.bind_partial(*node.get("_args_", []), **kwargs)
    except TypeError as e:
        problems.append(f"{where}: {target} does not take the config's arguments ({e})")
    return problems


def _file_problems(conf: Path) -> list[str]:
    problems = []
    for file in sorted(conf.rglob("*.yaml")):
        tree = OmegaConf.to_container(OmegaConf.load(file), resolve=False)
        if isinstance(tree, dict):
            tree.pop("defaults", None)  # the defaults list is Hydra's, not an argument of the file's target
        for path, node in _target_nodes(tree):
            where = f"{file.relative_to(conf)}:{'.'.join(path) or '<root>'}"
            problems += _target_problems(where, _landing_group(conf, file, path), node)
    return problems


def _readme_groups() -> dict[str, str]:
    """Group name -> its "what it sets" cell, from the README's "Configuration groups" table."""
    section = (ROOT / "README.md").read_text().split("## Configuration groups", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            for name in re.findall(r"`([^`]+)`", cells[0]):
                rows[name] = cells[-1]
    return rows


def test_every_target_imports_takes_its_arguments_and_lives_in_its_groups_package() -> None:
    problems = _file_problems(CONF)
    assert not problems, "\n".join(problems)


def test_groups_mirror_the_packages_the_readme_documents() -> None:
    groups = {p.name for p in CONF.iterdir() if p.is_dir()}
    assert groups == set(GROUP_PACKAGES), "a conf/ group without a package mapping here, or a mapping without a group"
    readme = _readme_groups()
    assert set(readme) == groups - set(NOT_IN_README), "the README's table and conf/ list different groups"
    for group, library in README_LIBRARY.items():
        assert library in readme[group], f"the README no longer says that {group} configures {library}"
    # every facetx package a group configures exists and is in the README's layout
    layout = (ROOT / "README.md").read_text().split("## Layout", 1)[1]
    for package in {p for ps in GROUP_PACKAGES.values() for p in ps if p.startswith("facetx.")}:
        assert (ROOT / package.replace(".", "/") / "__init__.py").is_file(), package
        assert package.replace(".", "/") in layout, f"{package} is missing from the README's layout"


def _compositions() -> list[tuple[str, str, str]]:
    """(primary config, group, option) for every option of every group the primary configs compose."""
    out = [("distill", g, o) for g in ("student", "distill") for o in _options(g)]
    out += [("export", g, o) for g in ("export", "quant", "bench") for o in _options(g)]
    for group in ("data", "augment", "model", "loss/recognition", "optim", "scheduler", "trainer", "callbacks",
                  "logger", "debug", "experiment", "hparams_search"):  # fmt: skip
        out += [("train", group, o) for o in _options(group)]
    return out


def test_composed_targets_take_their_arguments_and_stay_in_their_groups(tmp_path: Path) -> None:
    """Composed as the entry points compose them (defaults, ``@_here_`` reuse, global overrides merged in)."""
    problems = []
    for config, group, option in _compositions():
        cfg = compose_config(config, [f"{group}={option}"], tmp_path)
        tree = OmegaConf.to_container(cfg, resolve=False)
        for path, node in _target_nodes(tree):
            problems += _target_problems(f"{config} {group}={option}:{'.'.join(path)}", path[0], node)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    "group", ["augment", "loss/recognition", "optim", "scheduler", "callbacks", "logger", "trainer", "debug"]
)
def test_every_option_composes_and_builds(group: str, make_cfg, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    for option in _options(group):
        cfg = make_cfg("train", [f"{group}={option}", "model=tiny"])
        OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
        node = OmegaConf.select(cfg, group.replace("/", "."))
        if group == "trainer" and cfg.trainer.accelerator == "gpu":
            continue  # composes; building needs a GPU
        if group in ("augment", "optim", "scheduler", "loss/recognition") and node is not None and "_target_" in node:
            if group == "loss/recognition":
                built = instantiate(node, num_classes=10)
            else:
                built = instantiate(node, _convert_="all")
            assert built is not None
        if group in ("callbacks", "logger") and node:
            for sub in node.values():
                assert instantiate(sub) is not None
        if group == "trainer":
            assert instantiate(cfg.trainer, logger=False) is not None


@pytest.mark.parametrize("data", _options("data"))
def test_data_configs_compose(data: str, make_cfg) -> None:
    root = [] if data == "synthetic" else ["data.root=/nonexistent"]
    cfg = make_cfg("train", [f"data={data}", *root], fast=False)
    assert cfg.optimized_metric == cfg.data.monitor
    assert cfg.data._target_ == "facetx.data.datamodule.FaceDataModule"


def test_experiments_and_sweeps_compose(make_cfg) -> None:
    for exp in _options("experiment"):
        cfg = make_cfg("train", [f"experiment={exp}"], fast=False)
        OmegaConf.to_container(cfg.trainer, resolve=True)
    cfg = make_cfg("train", ["hparams_search=optuna"], fast=False)
    assert cfg.hydra.sweeper.direction == "maximize" and "optim.lr" in cfg.hydra.sweeper.params


def test_train_overrides_from_the_readme(make_cfg) -> None:
    cfg = make_cfg("train", ["trainer.max_steps=50", "data.batch_size=32", "optim.lr=3e-4"], fast=False)
    assert cfg.trainer.max_steps == 50 and cfg.data.batch_size == 32 and cfg.scheduler.max_lr == 3e-4
    assert cfg.model_name == "teacher" and cfg.model.backbone.name == "facevit_small_p14_112"


def test_distill_defaults(make_cfg) -> None:
    cfg = make_cfg("distill", [], fast=False)
    assert cfg.model_name == "window_vit_nano" and cfg.task_name == "distill"
    for student in _options("student"):
        cfg = make_cfg("distill", [f"student={student}"], fast=False)
        assert cfg.student.backbone.name and cfg.student.heads.embedding.embedding_size == 512
