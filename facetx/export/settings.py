"""Typed settings of the export stages, one per config group of ``export.py`` (``export``, ``quant``, ``bench``).

Each is built from its config node with :func:`settings_from`: a key the dataclass does not have (a typo in YAML or on
the command line) is a one-line :class:`~facetx.errors.ConfigError`, not a silently ignored value.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from facetx.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class ExportSettings:
    """``conf/export/``: the ONNX graph, its parity check, the optional TensorRT engines."""

    opset: int = 17
    dynamic_batch: bool = True
    batch_size: int = 1  # of a fixed-batch export (dynamic_batch=false)
    fixed_batch_variant: bool = True  # also model.b1.onnx
    simplify: bool = True
    exporter: str = "torchscript"
    parity_min_cosine: float = 0.9999
    parity_images: int = 32
    tensorrt: bool = False
    trt_opt_batch: int = 32
    trt_max_batch: int = 64
    trt_workspace_gib: float = 2.0

    @property
    def fixed_batch(self) -> int | None:
        """The batch of a fixed-batch graph, None for a dynamic one."""
        return None if self.dynamic_batch else int(self.batch_size)


@dataclass(frozen=True)
class QuantTargets:
    min_size_ratio: float = 3.5
    min_speedup: float = 0.95


@dataclass(frozen=True)
class QuantSettings:
    """``conf/quant/``: ONNX Runtime static INT8 (``enabled: false`` for FP32 only)."""

    enabled: bool = True
    recipe: str = "auto"
    per_channel: bool | None = True
    reduce_range: bool | None = None
    activation_type: str | None = None
    groups: list[str] | None = None
    nodes_to_exclude: list[str] = field(default_factory=list)
    calibrate_method: str = "minmax"
    calibration_batches: int = 8
    calibration_batch_size: int = 32
    max_drop_pt: float = 0.5
    metric: str | None = None
    latency_search: bool = True
    min_gain: float = 0.08
    weight_only_fallback: bool = True
    latency_runs: int = 30
    sensitivity_images: int = 64
    max_sensitivity_nodes: int | None = 200
    targets: QuantTargets = field(default_factory=QuantTargets)
    keep_work: bool = False
    dynamic: str = "auto"


@dataclass(frozen=True)
class BenchSettings:
    """``conf/bench/``: batch sizes and the run count, sized by a time budget per case."""

    batches: tuple[int, ...] = (1, 32)
    warmup: int = 10
    runs: int = 200
    min_runs: int = 5
    seconds_per_case: float = 5.0


@dataclass(frozen=True)
class EvalSettings:
    """``eval``: the held-out sets the table reports on."""

    split: str = "test"
    batch_size: int = 64
    max_images: int | None = None


def settings_from(cls: type[T], node: Mapping[str, Any] | None, key: str) -> T:
    """``cls(**node)`` with nested dataclasses built too; unknown keys are a :class:`ConfigError` naming ``key``."""
    values = dict(node or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{key}: unknown key(s) {unknown}; expected among {sorted(fields)}")
    for name, value in values.items():
        nested = fields[name].default_factory if fields[name].default_factory is not dataclasses.MISSING else None
        if nested is not None and dataclasses.is_dataclass(nested) and isinstance(value, Mapping):
            values[name] = settings_from(nested, value, f"{key}.{name}")
        elif isinstance(value, list) and name == "batches":
            values[name] = tuple(int(v) for v in value)
    return cls(**values)
