"""The exported student in ONNX Runtime, OpenVINO or LiteRT: reads what export wrote into the metadata, runs crops
as one batch.

A file without facetx's metadata is refused with one line: the pipeline needs the input size, the output names, the
class names, the landmark template and the calibrated threshold, and guessing any of them gives wrong results quietly.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facetx.errors import UserError
from facetx.pipeline.contracts import HeadOutputs

#: metadata keys every facetx export carries (facetx.export.metadata.build_metadata)
REQUIRED_KEYS = ("facetx.version", "facetx.model", "input.size", "outputs")


class ModelFileError(UserError, ValueError):
    """The model file is missing, unreadable or not a facetx export."""


@dataclass(frozen=True)
class ModelInfo:
    """What the pipeline reads from an export's metadata.

    ``threshold``: cosine similarity at ``far`` on the export's held-out pairs (None in exports that predate it);
    ``template [K, 2]``: mean landmarks of the held-out crops in crop pixels (None if absent); ``fingerprint``: the
    trained weights' hash that galleries are keyed on."""

    path: Path
    model: str
    precision: str
    input_size: int
    outputs: tuple[str, ...]
    expression_classes: tuple[str, ...]
    spoof_classes: tuple[str, ...]
    fingerprint: str
    threshold: float | None
    far: float | None
    template: np.ndarray | None


#: runtimes the student can run in; ``best`` reads the export's ``best.json`` (facetx.export.best)
RUNTIMES = ("onnxruntime", "openvino", "tflite", "best")


@dataclass(frozen=True)
class Artifact:
    """The file a runtime runs and the ONNX file whose metadata describes it (the same file but for ``.tflite``)."""

    runtime: str
    precision: str | None  # None: the file's own (facetx.precision in its metadata)
    file: Path
    metadata_file: Path


def open_session(path: str | Path, threads: int | None, key: str = "model") -> object:
    """An ONNX Runtime session on ``path`` (pinned threads, no spin-wait); a one-line :class:`ModelFileError` for a
    missing or unreadable file."""
    from facetx.runtime.sessions import make_session

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{key}={path}: no such file; expected a facetx ONNX export (export.py writes model.onnx)")
    try:
        return make_session(path, threads, spinning=False)
    except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf types
        raise ModelFileError(f"{key}={path}: not a readable ONNX model ({type(e).__name__}: {e})") from None


def resolve_artifact(path: str | Path, runtime: str = "onnxruntime", key: str = "model") -> Artifact:
    """Which file to run where: ``path`` is the artifact itself, or (``runtime=best``) a file or run dir of an export
    whose ``best.json`` names the fastest artifact measured within the accuracy budget on the exporting machine."""
    from facetx.export.best import read_best

    path = Path(path)
    if runtime not in RUNTIMES:
        raise ModelFileError(f"runtime={runtime!r}: expected one of {list(RUNTIMES)}")
    if runtime == "best":
        best = (path if path.is_dir() else path.parent) / "best.json"
        if not best.is_file():
            raise ModelFileError(
                f"{key}={path}: runtime=best needs {best} (export.py writes it beside the artifacts it measured)"
            )
        c = read_best(best)
        return Artifact(c["runtime"], c["precision"], best.parent / c["file"], best.parent / c["metadata_file"])
    if path.is_dir():
        raise ModelFileError(f"{key}={path}: is a directory; name the file (e.g. {path / 'model.int8.onnx'})")
    if runtime == "tflite":
        # model.int8.tflite is described by model.int8.onnx, model.tflite by model.onnx
        stem = ".int8" if ".int8." in path.name else ""
        return Artifact(runtime, None, path, path.with_name(f"model{stem}.onnx"))
    return Artifact(runtime, None, path, path)


def read_metadata(path: Path, key: str = "model") -> dict[str, str]:
    """The ``metadata_props`` of the ONNX file ``path``; a one-line :class:`ModelFileError` if it cannot be read."""
    import onnx

    if not path.is_file():
        raise ModelFileError(f"{key}={path}: no such file; expected a facetx ONNX export (export.py writes model.onnx)")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # DecodeError and friends
        raise ModelFileError(f"{key}={path}: not a readable ONNX model ({type(e).__name__}: {e})") from None
    return {p.key: p.value for p in model.metadata_props}


def open_runner(artifact: Artifact, threads: int | None, precision: str, key: str = "model") -> object:
    """The :class:`~facetx.runtime.sessions.Runner` of ``artifact`` (no spin-wait where the runtime has a choice)."""
    if not artifact.file.is_file():
        raise ModelFileError(f"{key}={artifact.file}: no such file")
    if artifact.runtime == "onnxruntime":
        from facetx.runtime.sessions import OrtRunner

        return OrtRunner(open_session(artifact.file, threads, key))
    if artifact.runtime == "openvino":
        from facetx.runtime.openvino import OpenVinoRunner, openvino_missing

        if (reason := openvino_missing()) is not None:
            raise ModelFileError(f"runtime=openvino: {reason}")
        return OpenVinoRunner(artifact.file, threads, precision)
    if importlib.util.find_spec("ai_edge_litert") is None:
        raise ModelFileError("runtime=tflite: the ai-edge-litert package is not installed; pip install -e '.[tflite]'")
    from facetx.runtime.litert import LiteRtRunner

    return LiteRtRunner(artifact.file, threads)


def read_model_info(meta: dict[str, str], path: str | Path, key: str = "model") -> ModelInfo:
    """What the pipeline needs from an export's metadata ``meta`` (of ``path``); :class:`ModelFileError` if absent."""
    path = Path(path)
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise ModelFileError(
            f"{key}={path}: not a facetx export (metadata lacks {', '.join(missing)}); export a checkpoint with "
            "`python export.py ckpt_path=...`"
        )
    size = json.loads(meta["input.size"])
    template = meta.get("landmarks.template")
    info = ModelInfo(
        path=path,
        model=meta["facetx.model"],
        precision=meta.get("facetx.precision", "fp32"),
        input_size=int(size[0]),
        outputs=tuple(json.loads(meta["outputs"])),
        expression_classes=tuple(json.loads(meta.get("expression.classes", "[]"))),
        spoof_classes=tuple(json.loads(meta.get("spoof.classes", "[]"))),
        fingerprint=meta.get("facetx.fingerprint", ""),
        threshold=float(meta["recognition.threshold"]) if "recognition.threshold" in meta else None,
        far=float(meta["recognition.far"]) if "recognition.far" in meta else None,
        template=np.asarray(json.loads(template), dtype=np.float32) * int(size[0]) if template else None,
    )
    if "spoof_logits" in info.outputs and "live" not in info.spoof_classes:
        raise ModelFileError(f"{key}={path}: spoof.classes {list(info.spoof_classes)} has no 'live' class")
    return info


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class FaceModel:
    """``model(crops uint8 [N, S, S, 3] RGB) -> HeadOutputs``: one runtime call per frame for all its faces.

    ``runtime``: ``onnxruntime`` (default), ``openvino``, ``tflite``, or ``best`` (what the export measured fastest
    within its accuracy budget, from ``best.json`` beside ``path``). ``precision``: OpenVINO's (``bf16`` on a
    model.onnx; None: the file's own). ``threads``: intra-op threads (pinned, no spin-wait: the decode thread and the
    detector share the cores). A fixed-batch artifact is fed one crop at a time.
    """

    def __init__(
        self,
        path: str | Path,
        threads: int | None = 1,
        key: str = "model",
        runtime: str = "onnxruntime",
        precision: str | None = None,
    ) -> None:
        self.artifact = resolve_artifact(path, runtime, key)
        self.info = read_model_info(read_metadata(self.artifact.metadata_file, key), self.artifact.file, key)
        self.precision = precision or self.artifact.precision or self.info.precision
        self.runner = open_runner(self.artifact, threads, self.precision, key)
        from facetx.runtime.sessions import run_any_batch  # torch comes with it: imported when a model is built

        self._run = run_any_batch
        self._live = self.info.spoof_classes.index("live") if self.info.spoof_classes else 0
        self.output_names = list(self.runner.output_names)
        s = self.info.input_size
        self._buffer = np.zeros((8, 3, s, s), dtype=np.float32)

    @property
    def input_size(self) -> int:
        return self.info.input_size

    def _inputs(self, crops: np.ndarray) -> np.ndarray:
        """uint8 NHWC -> float32 NCHW in [0, 1], in a reused buffer (grown when a frame has more faces)."""
        n = len(crops)
        if n > len(self._buffer):
            self._buffer = np.zeros((n, *self._buffer.shape[1:]), dtype=np.float32)
        x = self._buffer[:n]
        np.multiply(crops.transpose(0, 3, 1, 2), np.float32(1 / 255), out=x, casting="unsafe")
        return x

    def __call__(self, crops: np.ndarray) -> HeadOutputs:
        if len(crops) == 0:
            return HeadOutputs(None, None, None, None)
        x = self._inputs(crops)
        raw = dict(zip(self.output_names, self._run(self.runner, x), strict=True))
        emb = raw.get("embedding")
        if emb is not None:
            emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        lm = raw.get("landmarks")
        spoof = raw.get("spoof_logits")
        expr = raw.get("expression_logits")
        return HeadOutputs(
            embedding=None if emb is None else emb.astype(np.float32, copy=False),
            landmarks=None if lm is None else lm * np.float32(self.input_size),  # normalized -> crop pixels
            expression_probs=None if expr is None else _softmax(expr),
            live=None if spoof is None else _softmax(spoof)[:, self._live],
        )
