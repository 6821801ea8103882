"""ONNX export of a FaceNet: a fixed, named output tuple, dynamic (or fixed) batch, optional onnxslim, full check.

The graph input is ``image``: float32 ``[N, 3, H, W]``, RGB in ``[0, 1]``, NCHW. Normalization (``(x - mean) / std``)
is inside the graph, so callers feed raw ``[0, 1]`` pixels. Outputs are the network's heads only (``embedding``,
``landmarks``, ``expression_logits``, ``spoof_logits``, those the model has); the ``feat.*`` maps are dropped.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import onnx
import torch
from torch import nn

from facetx.runtime.sessions import set_metadata

log = logging.getLogger(__name__)

INPUT_NAME = "image"
HEAD_NAMES: tuple[str, ...] = ("embedding", "landmarks", "expression_logits", "spoof_logits")
EXPORTERS = ("torchscript", "dynamo")


class ExportWrapper(nn.Module):
    """``forward(image [B, 3, H, W] in [0, 1])`` -> the tuple ``(net(image)[name] for name in output_names)``."""

    def __init__(self, net: nn.Module, output_names: Sequence[str]) -> None:
        super().__init__()
        if not output_names:
            raise ValueError("ExportWrapper: the network has no head outputs to export")
        self.net = net
        self.output_names = list(output_names)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.net(image)
        return tuple(out[name] for name in self.output_names)


def head_names(net: nn.Module) -> list[str]:
    """The exported outputs of ``net``: its ``output_names`` (FaceNet heads), never ``feat.*`` maps."""
    names = [n for n in getattr(net, "output_names", []) if not n.startswith("feat.")]
    if not names:
        raise ValueError(f"{type(net).__name__} has no output_names to export (expected FaceNet heads {HEAD_NAMES})")
    return names


def _dim_str(d: onnx.TensorShapeProto.Dimension) -> str:
    return d.dim_param if d.HasField("dim_param") else str(d.dim_value) if d.HasField("dim_value") else "?"


def io_shapes(model: onnx.ModelProto) -> dict[str, dict[str, list[str]]]:
    """``{"inputs": {name: [dims]}, "outputs": {...}}`` with symbolic dims as names (``batch``)."""

    def shapes(values: Sequence[onnx.ValueInfoProto]) -> dict[str, list[str]]:
        return {v.name: [_dim_str(d) for d in v.type.tensor_type.shape.dim] for v in values}

    init = {i.name for i in model.graph.initializer}
    return {
        "inputs": shapes([i for i in model.graph.input if i.name not in init]),
        "outputs": shapes(model.graph.output),
    }


def log_io(model: onnx.ModelProto, label: str) -> None:
    """Log every graph input/output name and shape (the exporter's contract with its callers)."""
    for kind, values in io_shapes(model).items():
        for name, dims in values.items():
            log.info("%s %s: %s [%s]", label, kind[:-1], name, ", ".join(dims))


def simplify_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """Constant folding, dead-node removal and pattern fusion with onnxslim (keeps the symbolic batch dim)."""
    try:
        import onnxslim
    except ImportError as e:
        raise ImportError("export.simplify=true needs onnxslim: pip install 'facetx[export]'") from e
    return onnxslim.slim(model)


def export_onnx(
    module: nn.Module,
    path: str | Path,
    output_names: Sequence[str],
    input_size: int = 112,
    opset: int = 17,
    dynamic_batch: bool = True,
    batch_size: int = 1,
    simplify: bool = True,
    exporter: str = "torchscript",
    metadata: Mapping[str, str] | None = None,
) -> onnx.ModelProto:
    """Export ``module`` (``image -> tuple of outputs``, e.g. :class:`ExportWrapper`) to ``path``; return the model.

    ``dynamic_batch``: a symbolic ``batch`` dim on the input and every output; else the batch is fixed to
    ``batch_size`` (a fixed-batch graph lets ONNX Runtime fold every shape computation, useful for batch-1 serving).
    ``exporter``: ``torchscript`` (the tracing exporter, no extra dependency) or ``dynamo`` (needs onnxscript).
    The saved model passes ``onnx.checker.check_model(full_check=True)``.
    """
    if exporter not in EXPORTERS:
        raise ValueError(f"export.exporter must be one of {EXPORTERS}, got {exporter!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    names = list(output_names)
    example = torch.rand(max(2, batch_size) if dynamic_batch else batch_size, 3, input_size, input_size)
    axes = {n: {0: "batch"} for n in [INPUT_NAME, *names]} if dynamic_batch else None
    with tempfile.TemporaryDirectory(prefix="facetx-onnx-") as tmp:
        raw = Path(tmp) / "raw.onnx"
        with torch.no_grad(), warnings.catch_warnings():
            # the tracing exporter warns about Python scalars in timm's shape arithmetic: the batch axis stays
            # symbolic (checked below by running batch 1 and 3), everything else is static at 112x112
            warnings.simplefilter("ignore")
            if exporter == "dynamo":
                try:
                    import onnxscript  # noqa: F401
                except ImportError as e:
                    raise ImportError("export.exporter=dynamo needs onnxscript (pip install onnxscript)") from e
                shapes = {"image": {0: torch.export.Dim("batch", min=1, max=4096)}} if dynamic_batch else None
                torch.onnx.export(
                    module,
                    (example,),
                    str(raw),
                    dynamo=True,
                    opset_version=opset,
                    input_names=[INPUT_NAME],
                    output_names=names,
                    dynamic_shapes=shapes,
                )
            else:
                torch.onnx.export(
                    module,
                    (example,),
                    str(raw),
                    dynamo=False,
                    opset_version=opset,
                    input_names=[INPUT_NAME],
                    output_names=names,
                    dynamic_axes=axes,
                    do_constant_folding=True,
                )
        model = onnx.load(str(raw), load_external_data=True)
    if simplify:
        model = simplify_model(model)
    got = [o.name for o in model.graph.output]
    if got != names:
        raise RuntimeError(f"{path}: exported outputs {got} differ from the requested {names}")
    set_metadata(model, dict(metadata or {}))
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    log.info(
        "exported %s (%s exporter, opset %d, %s)",
        path,
        exporter,
        opset,
        "dynamic batch" if dynamic_batch else f"fixed batch {batch_size}",
    )
    log_io(model, path.name)
    return model
