"""Checkpoints: atomic writes, the resolved run config inside, and loading a network without Lightning."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.plugins.io import TorchCheckpointIO

import facetx

CONFIG_KEY = "facetx"


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


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a facetx checkpoint on the CPU (weights-only: no code runs) and check that it carries its config."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if CONFIG_KEY not in ckpt or "config" not in ckpt[CONFIG_KEY]:
        raise ValueError(f"{path}: not a facetx checkpoint (no '{CONFIG_KEY}.config' entry with the run config)")
    return ckpt


def load_face_net(path: str | os.PathLike, prefix: str = "net.") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the network stored in a checkpoint from its own config, without Lightning or the original YAML.

    ``prefix``: where the network sits in the LightningModule (``net.`` for training, ``student.`` for distillation).
    Returns ``(network in eval mode, resolved run config)``.
    """
    ckpt = load_checkpoint(path)
    config = ckpt[CONFIG_KEY]["config"]
    model_cfg = config.get("model") if prefix == "net." else config.get(prefix.rstrip("."))
    if model_cfg is None:
        raise ValueError(f"{path}: its config has no network section for prefix {prefix!r}")
    net = instantiate(model_cfg, _convert_="all")
    state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    if not state:
        raise ValueError(f"{path}: no weights under {prefix!r} in its state_dict")
    net.load_state_dict(state)
    return net.eval(), config
