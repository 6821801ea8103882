"""The student in another runtime: OpenVINO on the same ONNX file, and ``runtime=best`` through the export's
best.json; bad choices are one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from facetx.pipeline.model import FaceModel, ModelFileError, resolve_artifact


def _crops(n: int = 3) -> np.ndarray:
    from facetx.data.synthetic import SyntheticFaces

    faces = SyntheticFaces("test", 20, 2, seed=3, spoof_fraction=0.0, num_pairs=20)
    return np.stack([faces.render(i)[0] for i in range(n)])  # uint8 [N, 112, 112, 3]


def test_openvino_runs_the_same_file_as_onnxruntime(student: Path) -> None:
    pytest.importorskip("openvino", reason="the openvino extra is not installed (pip install -e '.[openvino]')")
    crops = _crops()
    ort, ov = FaceModel(student), FaceModel(student, runtime="openvino")
    assert ov.precision == "int8"
    # the same metadata: threshold, fingerprint, template
    assert (ov.info.threshold, ov.info.fingerprint) == (ort.info.threshold, ort.info.fingerprint)
    assert np.array_equal(ov.info.template, ort.info.template)
    a, b = ort(crops), ov(crops)
    assert (a.embedding * b.embedding).sum(axis=1).min() > 0.98  # two int8 kernel sets, one quantized graph
    assert np.abs(a.landmarks - b.landmarks).max() < 2.0  # crop pixels
    assert np.abs(a.live - b.live).max() < 0.05


def test_best_follows_best_json(student: Path, tmp_path: Path) -> None:
    pytest.importorskip("openvino", reason="the openvino extra is not installed (pip install -e '.[openvino]')")
    shutil.copy(student, tmp_path / "model.int8.onnx")
    choice = {"runtime": "openvino", "precision": "int8", "graph": "static-per-batch", "file": "model.int8.onnx",
              "metadata_file": "model.int8.onnx", "speed_vs_ort_fp32": 1.5}  # fmt: skip
    (tmp_path / "best.json").write_text(json.dumps({"by_batch": {"1": choice, "32": {**choice, "runtime": "x"}}}))
    for where in (tmp_path, tmp_path / "model.int8.onnx"):
        model = FaceModel(where, runtime="best")
        assert model.artifact.runtime == "openvino" and model.artifact.file == tmp_path / "model.int8.onnx"
        assert model(_crops(2)).embedding.shape == (2, 512)


def test_bad_runtime_choices_are_one_line(student: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match=r"runtime=best needs .*best.json \(export.py writes it"):
        resolve_artifact(tmp_path, "best")
    with pytest.raises(ModelFileError, match=r"runtime='onnx': expected one of"):
        resolve_artifact(student, "onnx")
    with pytest.raises(ModelFileError, match=r"is a directory; name the file"):
        resolve_artifact(tmp_path, "onnxruntime")
    assert resolve_artifact(tmp_path / "model.int8.tflite", "tflite").metadata_file == tmp_path / "model.int8.onnx"
