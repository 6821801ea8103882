"""The runtimes of ``conf/runtime/`` beside ONNX Runtime: one stage module each, looked up by name.

A stage module has ``SETTINGS`` (the dataclass its config node builds, unknown keys refused), ``missing() -> str |
None`` (a one-line reason its optional dependency is absent, checked before any work) and ``run_stage(*, source,
data, onnx, int8, out, settings, eval_batch_size, real, threads, seed) -> RuntimeStage``. Modules are imported only
when their runtime is asked for: each pulls in a heavy optional dependency.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from facetx.errors import ConfigError
from facetx.export.settings import settings_from

#: runtime name (the conf/runtime/ option) -> its stage module
STAGES = {
    "openvino": "facetx.export.openvino_stage",
    "tflite": "facetx.export.tflite_stage",
    "coreml": "facetx.export.coreml_stage",
}
#: the reference runtime: always exported (every other runtime reads or is compared with its files)
REFERENCE = "onnxruntime"


@dataclass(frozen=True)
class RuntimeChoice:
    name: str
    module: ModuleType
    settings: Any


def runtime_choices(node: Mapping[str, Any] | None) -> list[RuntimeChoice]:
    """The runtimes ``cfg.runtime`` selects besides ONNX Runtime, settings built; a one-line error for an unknown
    runtime, a list without ``onnxruntime`` or an absent optional dependency (before anything is exported)."""
    node = dict(node or {})
    unknown = sorted(set(node) - set(STAGES) - {REFERENCE})
    if unknown:
        raise ConfigError(f"runtime: unknown runtime(s) {unknown}; expected among {sorted([REFERENCE, *STAGES])}")
    if REFERENCE not in node:
        raise ConfigError(
            f"runtime={sorted(node)}: {REFERENCE} is missing; it is the reference every row is compared with "
            f"(e.g. runtime=[{REFERENCE},{','.join(sorted(node)) or 'openvino'}])"
        )
    choices = []
    for name in (n for n in STAGES if n in node):  # a fixed order: the table reads the same whatever the list says
        module = importlib.import_module(STAGES[name])
        reason = module.missing()
        if reason is not None:
            raise ConfigError(f"runtime={name}: {reason}")
        choices.append(RuntimeChoice(name, module, settings_from(module.SETTINGS, node[name], f"runtime.{name}")))
    return choices
