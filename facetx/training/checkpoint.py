"""Checkpoints: atomic writes, the resolved run config inside, and loading a network without Lightning."""

from __future__ import annotations

import logging
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.plugins.io import TorchCheckpointIO

import facetx
from facetx.errors import CheckpointError, one_line

CONFIG_KEY = "facetx"

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file in the same folder, then renames it into place.

    A run killed mid-write leaves the previous ``last.ckpt`` intact instead of a truncated file.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError(f"AtomicCheckpointIO takes no storage_options, got {storage_options!r}")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.chmod(tmp, 0o644)  # mkstemp creates 0600
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class StoreConfig(Callback):
    """Stores the resolved run config (plain containers only) in every checkpoint under ``checkpoint["facetx"]``.

    Plain dicts/lists/scalars keep checkpoints loadable with ``torch.load(weights_only=True)``.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[CONFIG_KEY] = {"config": self.config, "version": facetx.__version__}


#: what a checkpoint path should point at, for the error messages
RUN_CHECKPOINT = "a checkpoints/last.ckpt (or best-*.ckpt) written by train.py or distill.py"


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint path does not exist (still a ``FileNotFoundError`` for callers that catch that)."""


def _where(path: Path, key: str | None) -> str:
    return f"{key}={path}" if key else str(path)


def _load_failure(e: Exception) -> str:
    """What went wrong in ``torch.load``, in a few words (torch's own messages run to paragraphs)."""
    text = str(e).strip()
    if isinstance(e, EOFError):
        return "the file is empty or ends early (truncated copy?)"
    if isinstance(e, pickle.UnpicklingError) and "Weights only load failed" in text:
        return "it holds Python objects, not just tensors and plain data (not a file train.py or distill.py wrote)"
    if isinstance(e, RuntimeError) and "zip archive" in text:
        return "its zip archive is damaged (truncated or partly copied file?)"
    first = text.splitlines()[0][:120] if text else ""
    return f"not a file torch.save wrote ({type(e).__name__}" + (f": {first})" if first else ")")


def load_checkpoint(path: str | os.PathLike, key: str | None = None, expected: str = RUN_CHECKPOINT) -> dict[str, Any]:
    """Load a facetx checkpoint on the CPU (weights-only: no code runs) and check that it carries its config.

    ``key``: the config key the path came from (``teacher.ckpt_path``), named in the errors with ``expected``. Every
    way a user-given file can be wrong (missing, a directory, unreadable, truncated, not a checkpoint, not facetx's)
    raises a one-line :class:`CheckpointError`.
    """
    path = Path(path).expanduser()
    where = _where(path, key)
    if not path.exists():
        raise CheckpointNotFoundError(f"{where}: no such file (expected {expected})")
    if path.is_dir():
        inside = path / "checkpoints" / "last.ckpt"
        hint = f"; did you mean {inside}?" if inside.is_file() else ""
        raise CheckpointError(f"{where}: is a directory (expected {expected}){hint}")
    try:
        with open(path, "rb") as f:
            ckpt = torch.load(f, map_location="cpu", weights_only=True)
    except OSError as e:
        raise CheckpointError(f"{where}: cannot read it ({e.strerror or e}); expected {expected}") from None
    except Exception as e:  # a damaged or foreign file: every unpickling failure is the file's fault, not ours
        raise CheckpointError(f"{where}: not a readable checkpoint: {_load_failure(e)}; expected {expected}") from e
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get(CONFIG_KEY), dict) or "config" not in ckpt[CONFIG_KEY]:
        raise CheckpointError(
            f"{where}: not a facetx checkpoint (no '{CONFIG_KEY}.config' entry with the run config);"
            f" expected {expected}"
        )
    if not isinstance(ckpt.get("state_dict"), dict):
        raise CheckpointError(f"{where}: a facetx checkpoint without a state_dict (damaged?); expected {expected}")
    return ckpt


def newest_checkpoint(search_dir: str | os.PathLike, task_name: str, model_name: str | None = None) -> Path:
    """The newest ``checkpoints/last.ckpt`` under ``search_dir`` whose stored config has ``task_name`` (``train`` or
    ``distill``) and ``model_name`` when given; unreadable files are skipped with a warning.

    Raises :class:`CheckpointNotFoundError` (``no <task_name> checkpoint [of <model_name>] under DIR``) when none
    matches; callers that know what the user should do next re-raise it with that hint.
    """
    root = Path(search_dir)
    found = []
    for p in root.rglob("checkpoints/last.ckpt") if root.is_dir() else []:
        try:
            cfg = load_checkpoint(p)[CONFIG_KEY]["config"]
        except (ValueError, RuntimeError, OSError) as e:
            log.warning("skipping %s: %s", p, e)
            continue
        if cfg.get("task_name") == task_name and (model_name is None or cfg.get("model_name") == model_name):
            found.append(p)
    if not found:
        what = f"{task_name} checkpoint" + (f" of {model_name}" if model_name else "")
        raise CheckpointNotFoundError(f"no {what} under {root.resolve()}")
    return max(found, key=lambda p: p.stat().st_mtime)


def checkpoint_role(config: dict[str, Any]) -> str:
    """``"student"`` for a distillation checkpoint (its config has a ``student`` section), else ``"net"``: the
    prefix of the network's weights in the state dict."""
    return "student" if "student" in config else "net"


def describe_checkpoint(config: dict[str, Any]) -> str:
    """A few words saying what wrote a checkpoint: ``a distill.py checkpoint (student=tiny)``."""
    if checkpoint_role(config) == "student":
        return f"a distill.py checkpoint (student={config.get('model_name')})"
    return f"a train.py checkpoint (model={config.get('model_name')})"


def build_face_net(
    ckpt: dict[str, Any], path: str | os.PathLike, prefix: str = "net.", key: str | None = None
) -> torch.nn.Module:
    """The network under ``prefix`` of a loaded checkpoint, rebuilt from its stored config (eval mode).

    A config section that no longer builds (a renamed class, an unknown backbone) or weights that do not fit the
    network it builds raise a one-line :class:`CheckpointError` naming the file.
    """
    where = _where(Path(path), key)
    config = ckpt[CONFIG_KEY]["config"]
    section = "model" if prefix == "net." else prefix.rstrip(".")
    model_cfg = config.get(section)
    if model_cfg is None:
        raise CheckpointError(
            f"{where}: {describe_checkpoint(config)} has no '{section}' config section for the weights under"
            f" {prefix!r} (expected a checkpoint whose network is stored as {prefix!r})"
        )
    version = ckpt[CONFIG_KEY].get("version", "?")
    # another facetx version is the likely reason a stored config no longer builds: say so when it differs
    written = "" if version == facetx.__version__ else f"; written by facetx {version}, this is {facetx.__version__}"
    try:
        net = instantiate(model_cfg, _convert_="all")
    except Exception as e:  # the stored section is the checkpoint's; this code cannot build it any more
        cause = e.__cause__ or e
        detail = one_line(f"{type(cause).__name__}: {cause}")[:200]
        raise CheckpointError(
            f"{where}: its network cannot be rebuilt from the stored '{section}' config ({detail}){written}"
        ) from e
    state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    if not state:
        raise CheckpointError(f"{where}: no weights under {prefix!r} in its state_dict ({describe_checkpoint(config)})")
    # compared before loading: torch's own mismatch error lists every key over dozens of lines
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    bad_shapes = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if missing or unexpected or bad_shapes:
        example = (bad_shapes or missing or unexpected)[0]
        raise CheckpointError(
            f"{where}: its weights do not fit the network its '{section}' config builds ({len(missing)} missing,"
            f" {len(unexpected)} unexpected, {len(bad_shapes)} of another shape, e.g. {prefix}{example}){written}"
        )
    net.load_state_dict(state)
    return net.eval()


def load_face_net(
    path: str | os.PathLike, prefix: str | None = "net.", key: str | None = None
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the network stored in a checkpoint from its own config, without Lightning or the original YAML.

    ``prefix``: where the network sits in the LightningModule (``net.`` for training, ``student.`` for distillation,
    ``None``: whichever the checkpoint holds). Returns ``(network in eval mode, resolved run config)``.
    """
    ckpt = load_checkpoint(path, key=key)
    config = ckpt[CONFIG_KEY]["config"]
    prefix = prefix if prefix is not None else checkpoint_role(config) + "."
    return build_face_net(ckpt, path, prefix, key=key), config


def check_resume_checkpoint(path: str | os.PathLike | None, task_name: str, model_name: str | None = None) -> None:
    """Refuse a ``ckpt_path`` (resume) that cannot continue this run before Lightning reads it: missing, damaged,
    not facetx's, written by the other entry point (``train.py`` vs ``distill.py``), or of another model.

    Lightning's own special values (``last``, ``best``, ``hpc``, ``registry...``) are left to Lightning.
    """
    if path is None or str(path) in ("", "last", "best", "hpc") or str(path).startswith("registry"):
        return
    script = "distill.py" if task_name == "distill" else "train.py"
    expected = f"the checkpoints/last.ckpt of an earlier {script} run"
    ckpt = load_checkpoint(path, key="ckpt_path", expected=expected)
    config = ckpt[CONFIG_KEY]["config"]
    role = checkpoint_role(config)
    if (role == "student") != (task_name == "distill"):
        raise CheckpointError(
            f"ckpt_path={path}: {describe_checkpoint(config)} cannot resume a {script} run (expected {expected}; a"
            " trained teacher goes to distill.py as teacher.ckpt_path)"
        )
    stored = config.get("model_name")
    if model_name and stored and stored != model_name:
        option = "student" if task_name == "distill" else "model"
        raise CheckpointError(
            f"ckpt_path={path}: {describe_checkpoint(config)} cannot resume a run of {option}={model_name} (expected"
            f" a checkpoint of {option}={model_name}, or pass {option}={stored})"
        )
