"""Core ML behind the :class:`~facetx.runtime.sessions.Runner` interface: :class:`CoreMLRunner` (the Core ML
framework, macOS only) and :class:`MilRunner`, a reference interpreter of a package's MIL program that runs anywhere.

coremltools converts and saves ``.mlpackage`` files on Linux, but predicting needs the Core ML framework of macOS.
:func:`interpret` evaluates the ML Program op by op in numpy with coremltools' own op semantics (each op's
``value_inference``, the code its constant folding runs; ``conv``, ``batch_norm`` and ``scatter`` have none, ``gelu``
a slow one: they get small kernels here). Values typed fp16 in the program are rounded to fp16 after every op (fp16
storage, fp32 math): this checks that the converted program computes the network's function, not how fast or how
exactly a given Apple chip does it.
"""

from __future__ import annotations

import copy
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

#: what ``coremltools`` logs on import where its Core ML bindings cannot exist (every OS but macOS)
_PROXY_NOISE = "Failed to load _ML"
#: a warning on every conversion of a module returning a tuple (ours does: the outputs are named one by one)
_TUPLE_NOISE = "Tuple detected at graph output"
#: torchao (imported by coremltools) registering an Enum with torch's pytree: a deprecation for torchao, not for us
_PYTREE_NOISE = "is an Enum subclass and is now natively supported"


class _DropMessages(logging.Filter):
    """Drop records whose message contains one of ``needles``."""

    def __init__(self, *needles: str) -> None:
        super().__init__()
        self.needles = needles

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not any(n in msg for n in self.needles)


def import_coremltools() -> ModuleType:
    """``import coremltools`` without the import-time lines that are no error here: off macOS it logs one "Failed to
    load _MLModelProxy ..." warning per Core ML binding (they exist on macOS only; conversion does not need them),
    and the torchao it pulls in logs a pytree deprecation. On macOS the binding warnings are kept: there they mean a
    broken install. The filters stay (the loggers are coremltools' and torch's own, the records are only these, and
    the tuple-output warning of every conversion), and coremltools logs from WARNING up unless its level was set."""
    if "coremltools" not in sys.modules:
        own = logging.getLogger("coremltools")
        own.addFilter(_DropMessages(_TUPLE_NOISE, *([_PROXY_NOISE] if sys.platform != "darwin" else [])))
        if own.level == logging.NOTSET:  # its INFO is a line per converted op: the export log's INFO is ours
            own.setLevel(logging.WARNING)
        logging.getLogger("torch.utils._pytree").addFilter(_DropMessages(_PYTREE_NOISE))
    import coremltools

    return coremltools


# --- the package's batch sizes, chunked prediction -------------------------------------------------------------


def package_batch_sizes(spec: Any) -> tuple[int, ...] | None:
    """The batch sizes the ``image`` input of a Core ML ``spec`` takes: its fixed or enumerated first dims, None
    for a range (any batch within it)."""
    array = spec.description.input[0].type.multiArrayType
    if array.WhichOneof("ShapeFlexibility") == "shapeRange":
        return None
    if array.WhichOneof("ShapeFlexibility") == "enumeratedShapes":
        return tuple(sorted({int(s.shape[0]) for s in array.enumeratedShapes.shapes}))
    return (int(array.shape[0]),)


def batch_plan(n: int, sizes: Sequence[int] | None) -> list[tuple[int, int]]:
    """``(size, real)`` per call to feed ``n`` images to a model taking only ``sizes`` (None: any): the largest size
    that fits, and the smallest size padded for a remainder below every size (``real`` images of it are kept)."""
    if not sizes:
        return [(n, n)] if n else []
    sizes = sorted(set(sizes))
    plan, left = [], n
    while left > 0:
        fit = [s for s in sizes if s <= left]
        size = fit[-1] if fit else sizes[0]
        plan.append((size, min(size, left)))
        left -= size
    return plan


def run_chunked(
    images: np.ndarray, sizes: Sequence[int] | None, predict: Callable[[np.ndarray], list[np.ndarray]]
) -> list[np.ndarray]:
    """``predict`` over ``images`` in batches of ``sizes`` (:func:`batch_plan`), outputs concatenated."""
    chunks, start = [], 0
    for size, real in batch_plan(len(images), sizes):
        part = images[start : start + real]
        if real < size:  # zero padding: each image is independent, the padded rows are dropped
            part = np.concatenate([part, np.zeros((size - real, *part.shape[1:]), part.dtype)])
        chunks.append([o[:real] for o in predict(np.ascontiguousarray(part, dtype=np.float32))])
        start += real
    return [np.concatenate([c[j] for c in chunks]) for j in range(len(chunks[0]))]


class CoreMLRunner:
    """:class:`~facetx.runtime.sessions.Runner` over a ``.mlpackage`` in the Core ML framework (macOS only).

    ``compute_units``: a ``coremltools.ComputeUnit`` name (``ALL``, ``CPU_ONLY``, ``CPU_AND_GPU``, ``CPU_AND_NE``).
    Batches the package does not take are fed in chunks of the ones it does (``fixed_batch`` is None: any works).
    """

    def __init__(self, path: str | Path, compute_units: str = "ALL") -> None:
        if sys.platform != "darwin":
            raise RuntimeError(f"CoreMLRunner({path}): Core ML predictions need macOS (this is {sys.platform})")
        ct = import_coremltools()
        self.model = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit[compute_units])
        spec = self.model.get_spec()
        self.input_name = spec.description.input[0].name
        self.output_names = [o.name for o in spec.description.output]
        self.batch_sizes = package_batch_sizes(spec)
        self.fixed_batch: int | None = None

    def _predict(self, x: np.ndarray) -> list[np.ndarray]:
        out = self.model.predict({self.input_name: x})
        return [np.asarray(out[n], dtype=np.float32) for n in self.output_names]

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        return run_chunked(images, self.batch_sizes, self._predict)


# --- the MIL reference interpreter ---------------------------------------------------------------------------


class MilUnsupportedError(NotImplementedError):
    """The program has an op :func:`interpret` has no reference for (``op_type`` names it)."""

    def __init__(self, op_type: str, detail: str = "") -> None:
        super().__init__(f"no MIL reference for op {op_type!r}" + (f": {detail}" if detail else ""))
        self.op_type = op_type


def load_program(path: str | Path) -> Any:
    """The MIL program of a saved ``.mlpackage`` (read back from its protobuf and weight file: what is on disk)."""
    ct = import_coremltools()
    from coremltools.converters.mil.frontend.milproto import load as milproto

    model = ct.models.MLModel(str(path), skip_model_load=True)
    spec = model.get_spec()
    if spec.WhichOneof("Type") != "mlProgram":
        raise ValueError(f"{path}: not an ML Program (Core ML model type {spec.WhichOneof('Type')})")
    return milproto.load(spec, spec.specificationVersion, model.weights_dir)


def _compute_dtype(builtin: Any) -> Any:
    """The coremltools builtin a value is computed in: fp32 for fp16 (rounded back after each op), else itself."""
    from coremltools.converters.mil.mil import types

    return types.fp32 if builtin == types.fp16 else builtin


def _bind(var: Any, env: Mapping[str, np.ndarray], consts: dict[str, Any]) -> Any:
    """``var`` (or a tuple of them) as a constant Var holding its computed value, with the value's concrete shape;
    fp16 constants become fp32 ones once (``consts`` caches them: numpy has no fast fp16 matmul)."""
    from coremltools.converters.mil.mil import types

    if isinstance(var, (list, tuple)):
        return type(var)(_bind(v, env, consts) for v in var)
    if var is None:
        return var
    if var.val is not None:
        if var.dtype != types.fp16 or not types.is_tensor(var.sym_type):
            return var
        if var.name not in consts:
            consts[var.name] = _constant(var, np.asarray(var.val))
        return consts[var.name]
    return _constant(var, env[var.name])


def _constant(var: Any, value: np.ndarray) -> Any:
    """A Var like ``var`` holding ``value`` (fp16 as fp32), typed with the value's concrete shape."""
    from coremltools.converters.mil.mil import Var, types

    dtype = _compute_dtype(var.dtype)
    if types.is_tensor(var.sym_type):
        sym_type = types.tensor(dtype, value.shape)
    elif types.is_scalar(var.sym_type):
        sym_type = dtype
    else:
        raise MilUnsupportedError(var.op.op_type if var.op else "?", f"input {var.name} of type {var.sym_type}")
    sym_val = sym_type()
    sym_val.val = value.astype(types.nptype_from_builtin(dtype), copy=False)
    return Var(var.name, sym_type, sym_val=sym_val)


def _value(op: Any, env: Mapping[str, np.ndarray], name: str) -> np.ndarray | None:
    var = op.inputs.get(name)
    if var is None:
        return None
    return np.asarray(var.val if var.val is not None else env[var.name])


def _conv(op: Any, env: Mapping[str, np.ndarray]) -> np.ndarray:
    """MIL ``conv`` (2-D): NCHW, weight ``[C_out, C_in / groups, kH, kW]``, pad types valid | custom | same."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(_value(op, env, "x").astype(np.float32))
    if x.ndim != 4:
        raise MilUnsupportedError("conv", f"rank {x.ndim} input (only 2-D convolutions have a reference)")
    w = torch.from_numpy(_value(op, env, "weight").astype(np.float32))
    b = _value(op, env, "bias")
    bias = None if b is None else torch.from_numpy(b.astype(np.float32))
    strides = [int(s) for s in op.strides.val] if op.strides is not None else [1, 1]
    dilations = [int(d) for d in op.dilations.val] if op.dilations is not None else [1, 1]
    pad_type = op.pad_type.val if op.pad_type is not None else "valid"
    if pad_type == "custom":
        top, bottom, left, right = (int(p) for p in op.pad.val)
        x = F.pad(x, (left, right, top, bottom))
    elif pad_type in ("same", "same_lower"):
        pads = []
        for size, k, s, d in zip(x.shape[2:], w.shape[2:], strides, dilations, strict=True):
            total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small, large = total // 2, total - total // 2
            pads.append((large, small) if pad_type == "same_lower" else (small, large))
        x = F.pad(x, (*pads[1], *pads[0]))
    elif pad_type != "valid":
        raise MilUnsupportedError("conv", f"pad_type {pad_type!r}")
    groups = int(op.groups.val) if op.groups is not None else 1
    return F.conv2d(x, w, bias, stride=strides, dilation=dilations, groups=groups).numpy()


def _batch_norm(op: Any, env: Mapping[str, np.ndarray]) -> np.ndarray:
    """MIL ``batch_norm``: per channel (axis 1) ``(x - mean) / sqrt(variance + epsilon) * gamma + beta``."""
    x = _value(op, env, "x").astype(np.float32)
    shape = (1, -1) + (1,) * (x.ndim - 2)

    def param(name: str) -> np.ndarray | None:
        v = _value(op, env, name)
        return None if v is None else v.astype(np.float32).reshape(shape)

    eps = np.float32(op.epsilon.val if op.epsilon is not None else 1e-5)
    y = (x - param("mean")) / np.sqrt(param("variance") + eps)
    gamma, beta = param("gamma"), param("beta")
    return y * (1 if gamma is None else gamma) + (0 if beta is None else beta)


def _scatter(op: Any, env: Mapping[str, np.ndarray]) -> np.ndarray:
    """MIL ``scatter``: ``updates`` written into ``data`` at ``indices`` along ``axis`` by ``mode``, in order."""
    data = _value(op, env, "data")
    indices = _value(op, env, "indices").astype(np.int64)
    axis = int(op.axis.val) if op.axis is not None else 0
    mode = op.mode.val if op.mode is not None else "update"
    combine = {"update": lambda a, b: b, "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
               "max": np.maximum, "min": np.minimum}  # fmt: skip
    if mode not in combine:
        raise MilUnsupportedError("scatter", f"mode {mode!r}")
    out = np.moveaxis(data, axis, 0).copy()
    updates = np.moveaxis(_value(op, env, "updates"), axis, 0)
    for i, j in enumerate(np.where(indices < 0, indices + out.shape[0], indices)):
        out[j] = combine[mode](out[j], updates[i])
    return np.moveaxis(out, 0, axis)


def _gelu(op: Any, env: Mapping[str, np.ndarray]) -> np.ndarray:
    """MIL ``gelu`` (its value_inference vectorizes math.erf in Python: slow)."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(_value(op, env, "x").astype(np.float32))
    mode = op.mode.val if op.mode is not None else "EXACT"
    if mode == "EXACT":
        return F.gelu(x).numpy()
    if mode == "TANH_APPROXIMATION":
        return F.gelu(x, approximate="tanh").numpy()
    if mode == "SIGMOID_APPROXIMATION":
        return (x * torch.sigmoid(1.702 * x)).numpy()
    raise MilUnsupportedError("gelu", f"mode {mode!r}")


#: ops whose coremltools definition has no ``value_inference`` (or a slow one: gelu)
KERNELS: dict[str, Callable[[Any, Mapping[str, np.ndarray]], np.ndarray]] = {
    "conv": _conv,
    "batch_norm": _batch_norm,
    "scatter": _scatter,
    "gelu": _gelu,
}


def _run_op(op: Any, env: Mapping[str, np.ndarray], consts: dict[str, Any]) -> tuple[Any, ...]:
    if op.blocks:
        raise MilUnsupportedError(op.op_type, "ops with nested blocks (control flow)")
    if op.op_type.startswith("constexpr_"):  # compressed weights: coremltools decompresses them itself
        values = op.materialized_val_inference()
    elif op.op_type in KERNELS:
        values = KERNELS[op.op_type](op, env)
    else:
        # the op itself with its inputs replaced by constants: its value_inference reads them as self.<input>
        # (and checks them in self._input_vars); the program is left untouched
        proxy = copy.copy(op)
        bound = {k: _bind(v, env, consts) for k, v in op._input_vars.items()}
        proxy._input_vars = bound
        for k, v in bound.items():
            setattr(proxy, k, v)
        try:
            values = proxy.value_inference()
        except NotImplementedError as e:
            raise MilUnsupportedError(op.op_type, str(e)) from e
    return values if isinstance(values, tuple) else (values,)


def interpret(
    program: Any, feeds: Mapping[str, np.ndarray], function: str = "main", consts: dict[str, Any] | None = None
) -> dict[str, np.ndarray]:
    """Evaluate ``program``'s ``function`` on ``feeds`` (input name -> array); returns output name -> array
    (fp16 values as float32). Raises :class:`MilUnsupportedError` for an op without a reference. ``consts``: a
    cache of converted constants to reuse across calls on the same program."""
    from coremltools.converters.mil.mil import types

    consts = {} if consts is None else consts
    func = program.functions[function]
    env: dict[str, np.ndarray] = {}
    for name, var in func.inputs.items():
        env[var.name] = np.asarray(feeds[name]).astype(types.nptype_from_builtin(_compute_dtype(var.dtype)))
    for op in func.operations:
        outputs = op.outputs
        if all(o.val is not None for o in outputs):  # constants, and what coremltools folded into them
            values: tuple[Any, ...] = tuple(o.val for o in outputs)
        else:
            values = _run_op(op, env, consts)
        if len(values) != len(outputs):
            raise MilUnsupportedError(op.op_type, f"{len(values)} values for {len(outputs)} outputs")
        for out, value in zip(outputs, values, strict=True):
            value = np.asarray(value)
            if out.dtype == types.fp16:  # fp16 storage between ops, as the program declares
                value = value.astype(np.float16).astype(np.float32)
            else:
                value = value.astype(types.nptype_from_builtin(out.dtype), copy=False)
            env[out.name] = value
    return {o.name: env[o.name] for o in func.outputs}


class MilRunner:
    """:class:`~facetx.runtime.sessions.Runner` over :func:`interpret` of a package's MIL program: the Core ML
    model's function on any OS (slow: numpy, op by op; for parity checks on a few images, not for timing).
    ``program``: the package's program if already loaded (:func:`load_program`)."""

    def __init__(self, path: str | Path, program: Any | None = None) -> None:
        self.path = Path(path)
        self.program = load_program(path) if program is None else program
        ct = import_coremltools()
        spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
        self.input_name = spec.description.input[0].name
        self.output_names = [o.name for o in spec.description.output]
        self.batch_sizes = package_batch_sizes(spec)
        self.fixed_batch: int | None = None
        self._consts: dict[str, Any] = {}

    def _predict(self, x: np.ndarray) -> list[np.ndarray]:
        out = interpret(self.program, {self.input_name: x}, consts=self._consts)
        return [out[n] for n in self.output_names]

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        return run_chunked(images, self.batch_sizes, self._predict)
