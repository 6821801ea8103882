"""Post-training static INT8 quantization with ONNX Runtime (Q/DQ format), driven by a :class:`QuantRecipe`.

Nodes are sorted into *groups* by what their INT8 kernel is (``Conv``, ``Conv/depthwise``, ``MatMul/weight``,
``MatMul/activation``, ``Gemm``, ...): the INT8 speed of a group depends on the CPU's ISA, its accuracy cost on the
model, so the sensitivity pass decides per group and per node.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from facetx.errors import ConfigError
from facetx.quant.calibration import BatchReader

log = logging.getLogger(__name__)

#: op types with real INT8 kernels in ONNX Runtime's CPU provider (the rest only add Q/DQ islands)
COMPUTE_OPS = ("Conv", "MatMul", "Gemm")
QUANT_TYPES = ("uint8", "int8")


@dataclass(frozen=True)
class QuantRecipe:
    """How to quantize: data types, granularity, which groups/op types and which nodes stay FP32.

    ``groups``: node groups to quantize (see :func:`node_groups`); ``op_types`` beyond :data:`COMPUTE_OPS` (e.g.
    ``Add``, ``Softmax``) quantize whole op types too. ``symmetric_activations``: zero-point 0 (TensorRT needs it).
    ``weight_only_groups``: groups that compute in FP32 (INT8 is slower for them here) but store int8 weights
    (:func:`weight_only`); the latency pass fills it when ``weight_only_fallback`` is on.
    """

    name: str
    activation_type: str = "uint8"
    weight_type: str = "int8"
    per_channel: bool = True
    reduce_range: bool = False
    groups: tuple[str, ...] = ("Conv", "Conv/depthwise", "MatMul/weight", "MatMul/activation", "Gemm")
    op_types: tuple[str, ...] = ()
    symmetric_activations: bool = False
    nodes_to_exclude: tuple[str, ...] = ()
    weight_only_groups: tuple[str, ...] = ()
    weight_only_fallback: bool = True
    calibrate_method: str = "minmax"
    extra_options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in ("activation_type", "weight_type"):
            if getattr(self, key) not in QUANT_TYPES:
                raise ConfigError(f"quant.{key} must be one of {QUANT_TYPES}, got {getattr(self, key)!r}")
        if self.calibrate_method not in ("minmax", "entropy", "percentile"):
            raise ConfigError(
                f"quant.calibrate_method must be minmax, entropy or percentile, got {self.calibrate_method!r}"
            )

    def with_(self, **changes: object) -> QuantRecipe:
        return replace(self, **changes)

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        for k in ("groups", "op_types", "nodes_to_exclude", "weight_only_groups"):
            d[k] = list(d[k])
        return d


def _initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in model.graph.initializer}


def _constant_outputs(model: onnx.ModelProto) -> set[str]:
    """Tensors that are constants: initializers, Constant outputs, and DequantizeLinear/Transpose of those."""
    const = set(_initializers(model))
    changed = True
    while changed:
        changed = False
        for n in model.graph.node:
            if n.op_type == "Constant" or (
                n.op_type in ("DequantizeLinear", "Transpose", "Cast", "Identity") and n.input and n.input[0] in const
            ):
                new = set(n.output) - const
                if new:
                    const |= new
                    changed = True
    return const


def node_group(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto], const: set[str]) -> str | None:
    """The group of a quantizable compute node; ``None`` for nodes outside :data:`COMPUTE_OPS`."""
    if node.op_type == "Conv":
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        w = inits.get(node.input[1])
        if group > 1 and w is not None and w.dims[1] == 1:
            return "Conv/depthwise"
        return "Conv/grouped" if group > 1 else "Conv"
    if node.op_type in ("MatMul", "FusedMatMul"):
        return "MatMul/weight" if node.input[1] in const or node.input[0] in const else "MatMul/activation"
    if node.op_type == "Gemm":
        return "Gemm"
    return None


def node_groups(model: onnx.ModelProto) -> dict[str, list[str]]:
    """``{group: [node names]}`` for the compute nodes of ``model`` (every node must have a name)."""
    inits, const = _initializers(model), _constant_outputs(model)
    groups: dict[str, list[str]] = defaultdict(list)
    for n in model.graph.node:
        g = node_group(n, inits, const)
        if g is not None:
            if not n.name:
                raise ValueError(f"quantization needs named nodes; a {n.op_type} node has none (run quant_pre_process)")
            groups[g].append(n.name)
    return dict(groups)


def weight_count(model: onnx.ModelProto, nodes: Sequence[str]) -> int:
    """Number of weight elements (initializer inputs) of ``nodes``: what INT8 shrinks on disk."""
    inits = _initializers(model)
    wanted = set(nodes)
    total = 0
    for n in model.graph.node:
        if n.name in wanted:
            total += sum(int(numpy_helper.to_array(inits[i]).size) for i in n.input[1:2] if i in inits)
    return total


def preprocess(fp32_path: str | Path, out_path: str | Path) -> Path:
    """ONNX Runtime's ``quant_pre_process``: symbolic shape inference + basic graph optimizations, named nodes.

    Falls back to plain shape inference when symbolic inference fails on an op it does not know.
    """
    from onnxruntime.quantization import quant_pre_process

    out_path = Path(out_path)
    try:
        quant_pre_process(str(fp32_path), str(out_path), skip_symbolic_shape=False)
    except Exception as e:  # noqa: BLE001  (symbolic shape inference raises bare Exceptions on unknown ops)
        log.warning("quant_pre_process with symbolic shapes failed (%s); retrying with ONNX shape inference only", e)
        quant_pre_process(str(fp32_path), str(out_path), skip_symbolic_shape=True)
    model = onnx.load(str(out_path))
    counts: dict[str, int] = defaultdict(int)
    for n in model.graph.node:
        if not n.name:
            counts[n.op_type] += 1
            n.name = f"{n.op_type}_unnamed_{counts[n.op_type]}"
    onnx.save(model, str(out_path))
    return out_path


def selected_nodes(model: onnx.ModelProto, recipe: QuantRecipe) -> tuple[list[str], list[str]]:
    """``(op types to quantize, nodes to exclude)`` that realize ``recipe``'s groups for ONNX Runtime."""
    groups = node_groups(model)
    unknown = set(recipe.groups) - {"Conv", "Conv/depthwise", "Conv/grouped", "MatMul/weight", "MatMul/activation",
                                    "Gemm"}  # fmt: skip
    if unknown:
        raise ValueError(f"int8 recipe {recipe.name!r}: unknown groups {sorted(unknown)}")
    op_types = {n.op_type for n in model.graph.node if node_group(n, _initializers(model), set()) is not None}
    op_types = sorted({t for t in op_types if t != "FusedMatMul"} | set(recipe.op_types))
    excluded = [name for g, names in groups.items() if g not in recipe.groups for name in names]
    return op_types, sorted(set(excluded) | set(recipe.nodes_to_exclude))


def quantize(
    fp32_path: str | Path,
    out_path: str | Path,
    recipe: QuantRecipe,
    calibration_dir: str | Path,
    reader: BatchReader | None = None,
) -> Path:
    """Quantize the pre-processed FP32 model at ``fp32_path`` into a Q/DQ model at ``out_path``.

    ``calibration_dir``: holds JSON tensor-range caches (one per op-type set and method), computed from ``reader`` on
    the first call and reused afterwards, so the sensitivity pass quantizes many variants without re-calibrating.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    model = onnx.load(str(fp32_path), load_external_data=False)
    op_types, excluded = selected_nodes(model, recipe)
    qtype = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[recipe.calibrate_method]  # fmt: skip
    extra = {"ActivationSymmetric": recipe.symmetric_activations, "WeightSymmetric": True, **recipe.extra_options}
    key = hashlib.sha1(json.dumps([op_types, recipe.calibrate_method]).encode()).hexdigest()[:10]
    cache = Path(calibration_dir) / f"calibration-{recipe.calibrate_method}-{key}.json"
    cache.parent.mkdir(parents=True, exist_ok=True)
    if not cache.is_file() and reader is None:
        raise ValueError(f"{cache}: no calibration cache yet and no calibration reader given")
    if reader is not None:
        reader.rewind()
    quantize_static(
        str(fp32_path),
        str(out_path),
        calibration_data_reader=None if cache.is_file() else reader,
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=op_types,
        per_channel=recipe.per_channel,
        reduce_range=recipe.reduce_range,
        activation_type=qtype[recipe.activation_type],
        weight_type=qtype[recipe.weight_type],
        nodes_to_exclude=excluded,
        calibrate_method=method,
        extra_options=extra,
        calibration_cache_path=str(cache),
    )
    if recipe.weight_only_groups:
        groups = node_groups(model)
        names = [n for g in recipe.weight_only_groups for n in groups.get(g, []) if n not in recipe.nodes_to_exclude]
        quantized, _ = weight_only(onnx.load(str(out_path)), names)
        onnx.save(quantized, str(out_path))
    return Path(out_path)


def fp32_nodes(quantized: onnx.ModelProto, reference: onnx.ModelProto) -> dict[str, list[str]]:
    """``{group: [names]}`` of the reference's compute nodes that compute in FP32 in ``quantized``: their activation
    input is not dequantized (a weight-only node, :func:`weight_only`, counts as FP32 compute)."""
    producers = {o: n for n in quantized.graph.node for o in n.output}
    by_name = {n.name: n for n in quantized.graph.node}
    stayed: dict[str, list[str]] = defaultdict(list)
    for group, names in node_groups(reference).items():
        for name in names:
            node = by_name.get(name)
            if node is None:
                continue
            src = producers.get(node.input[0])
            if src is None or src.op_type != "DequantizeLinear":
                stayed[group].append(name)
    return dict(stayed)


def weight_only_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes whose weights were stored int8 by :func:`weight_only` (they compute in FP32)."""
    return [n.name[: -len("_weight_DQ")] for n in model.graph.node if n.name.endswith("_weight_DQ")]


def _weight_axis(node: onnx.NodeProto, ndim: int) -> int | None:
    """The output-channel axis of a compute node's weight (input 1): per-channel scales run along it."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        return 0 if next((a.i for a in node.attribute if a.name == "transB"), 0) else 1
    if node.op_type == "MatMul":
        return ndim - 1
    return None


def weight_only(model: onnx.ModelProto, nodes: Sequence[str]) -> tuple[onnx.ModelProto, list[str]]:
    """Store the float weights of ``nodes`` as int8 (symmetric, per output channel) behind a ``DequantizeLinear``.

    The nodes still compute in FP32 (ONNX Runtime folds the constant dequantization), so a node kept in FP32 for speed
    does not keep its 4-byte weights on disk. Returns the model and the names of the nodes that were converted.
    """
    inits = _initializers(model)
    users: dict[str, int] = defaultdict(int)
    for n in model.graph.node:
        for i in n.input:
            users[i] += 1
    wanted, done, new_nodes, drop = set(nodes), [], [], set()
    for n in model.graph.node:
        if n.name not in wanted or len(n.input) < 2 or n.input[1] not in inits:
            continue
        w_init = inits[n.input[1]]
        if w_init.data_type != onnx.TensorProto.FLOAT or users[w_init.name] != 1:
            continue
        w = numpy_helper.to_array(w_init)
        axis = _weight_axis(n, w.ndim)
        if axis is None or w.ndim < 2:
            continue
        reduce = tuple(i for i in range(w.ndim) if i != axis)
        scale = np.maximum(np.abs(w).max(axis=reduce), 1e-12).astype(np.float32) / 127.0
        shape = [1] * w.ndim
        shape[axis] = -1
        q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
        base = w_init.name
        names = [f"{base}_int8", f"{base}_scale", f"{base}_zero"]
        zero = np.zeros(scale.shape, dtype=np.int8)
        model.graph.initializer.extend(
            [numpy_helper.from_array(a, k) for a, k in zip((q, scale, zero), names, strict=True)]
        )
        dq = onnx.helper.make_node("DequantizeLinear", names, [f"{base}_dequantized"], axis=axis,
                                   name=f"{n.name}_weight_DQ")  # fmt: skip
        new_nodes.append(dq)
        n.input[1] = f"{base}_dequantized"
        drop.add(base)
        done.append(n.name)
    keep = [t for t in model.graph.initializer if t.name not in drop]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    # the new nodes only read initializers: in front of the graph they keep it topologically sorted
    nodes_now = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend([*new_nodes, *nodes_now])
    return model, done
