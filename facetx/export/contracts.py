"""The hand-offs between the export stages (:mod:`facetx.export.pipeline`), one dataclass each."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from facetx.export.benchmark import BenchCase
from facetx.export.settings import QuantSettings
from facetx.quant.int8 import Int8Result


@dataclass
class Source:
    """``load_source``: the network rebuilt from its checkpoint (eval mode, no Lightning) and what later stages read
    of it."""

    ckpt: Path
    net: torch.nn.Module
    run_config: dict[str, Any]
    role: str  # "net" (train.py) or "student" (distill.py)
    names: list[str]  # the ONNX outputs, in order
    input_size: int
    model_name: str
    shapes: dict[str, tuple[int, ...]]  # output name -> shape at batch 1

    @property
    def label(self) -> str:
        return f"{self.model_name} ({self.role})"


@dataclass
class OnnxArtifacts:
    """``onnx_stage``: ``paths`` (``fp32``, and ``fp32_b1`` for the fixed batch-1 variant), the metadata written into
    them, and the parity statistics per file."""

    paths: dict[str, Path]
    meta: dict[str, str]
    parity: dict[str, dict[str, dict[str, float]]]


@dataclass
class StageOutput:
    """What the int8 and tensorrt stages add: artifact ``paths``, held-out ``metrics`` per ``runtime/precision``,
    their part of ``report.json`` and ``notes`` for the table."""

    paths: dict[str, Path] = field(default_factory=dict)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class Int8Stage(StageOutput):
    """``int8_stage``: ``model.int8.onnx`` (``paths["int8"]``), its metrics and report; ``result`` the quantizer's
    full answer and ``work`` the folder with the calibration cache (the TensorRT stage reuses both)."""

    result: Int8Result | None = None
    work: Path | None = None
    settings: QuantSettings | None = None  # what built it: another runtime's INT8 pass reuses it


@dataclass
class Calibration(StageOutput):
    """``calibration_stage``: no new files or metrics; ``metadata`` the keys it wrote into each ONNX file
    (file name -> key -> value), also ``report["files"]``."""

    metadata: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass
class RuntimeStage(StageOutput):
    """A runtime of ``conf/runtime/`` (:mod:`facetx.export.runtimes`): its artifacts, held-out ``metrics`` keyed
    ``<runtime>/<precision>``, and the benchmark ``cases`` that time them beside ONNX Runtime."""

    cases: list[BenchCase] = field(default_factory=list)
