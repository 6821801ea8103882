"""The exported student in ONNX Runtime: reads what export wrote into the metadata, runs crops as one batch.

A file without facetx's metadata is refused with one line: the pipeline needs the input size, the output names, the
class names, the landmark template and the calibrated threshold, and guessing any of them gives wrong results quietly.
"""

from __future__ import annotations

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


def read_model_info(session: object, path: str | Path, key: str = "model") -> ModelInfo:
    """What the pipeline needs from the metadata of the export ``session`` runs; :class:`ModelFileError` if absent."""
    path = Path(path)
    meta = session.get_modelmeta().custom_metadata_map
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
    """``model(crops uint8 [N, S, S, 3] RGB) -> HeadOutputs``: one ONNX Runtime call per frame for all its faces.

    ``threads``: intra-op threads of the session (pinned, no spin-wait: the decode thread and the detector share
    the cores). A fixed-batch export is fed one crop at a time.
    """

    def __init__(self, path: str | Path, threads: int | None = 1, key: str = "model") -> None:
        self.session = open_session(path, threads, key)
        self.info = read_model_info(self.session, path, key)
        self._live = self.info.spoof_classes.index("live") if self.info.spoof_classes else 0
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        b = inp.shape[0]
        self.fixed_batch = b if isinstance(b, int) and b > 0 else None
        self.output_names = [o.name for o in self.session.get_outputs()]
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
        if self.fixed_batch is None:
            raw = dict(zip(self.output_names, self.session.run(self.output_names, {self.input_name: x}), strict=True))
        else:
            parts = [self.session.run(self.output_names, {self.input_name: x[i : i + 1]}) for i in range(len(x))]
            raw = {name: np.concatenate([p[j] for p in parts]) for j, name in enumerate(self.output_names)}
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
