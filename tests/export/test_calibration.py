"""The calibration stage: every exported ONNX file carries the model fingerprint, its own threshold at FAR 1e-3 on the
held-out pairs and the landmark template, and report.json lists them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch.utils.data import DataLoader

from facetx import metrics
from facetx.export import pipeline
from facetx.export.calibration import FAR, landmark_template, verification_threshold
from facetx.export.data import build_export_data
from facetx.export.metadata import model_fingerprint
from facetx.runtime.sessions import OrtPredictor, make_session

FILES = ("model.onnx", "model.b1.onnx", "model.int8.onnx")
#: and, where the openvino extra is installed, OpenVINO's own tuned Q/DQ file (tests/export/test_openvino.py)
OPENVINO_FILE = "model.int8.openvino.onnx"


@pytest.fixture(scope="module")
def calibrated(int8_export: tuple[Path, dict]) -> tuple[Path, dict]:
    """The shared INT8 export (tests/export/conftest.py), so all three ONNX files are written."""
    return int8_export


def _meta(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def _impostor_scores(path: Path, dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """Genuine and impostor scores of ``path``'s own embeddings over all live pairs of ``dataset`` (as evaluation
    scores them when identities are known), recomputed here without the evaluator."""
    predict = OrtPredictor(make_session(path, threads=2))
    emb, ids, live = [], [], []
    for batch in DataLoader(dataset, batch_size=20):  # eval.batch_size of the export: the same ORT batches
        emb.append(predict(batch["image"])["embedding"])
        ids.append(batch["identity"])
        live.append(batch["spoof"] != 1)
        assert bool(batch["has_identity"].all())  # else evaluation would score the pair list instead
    e, i, keep = torch.cat(emb), torch.cat(ids), torch.cat(live)
    return metrics.all_pair_scores(e[keep], i[keep])


def test_every_file_carries_fingerprint_threshold_and_template(calibrated: tuple[Path, dict], tiny_ckpt: Path) -> None:  # noqa: F811
    out, report = calibrated
    source = pipeline.load_source(tiny_ckpt)
    data = build_export_data(source.run_config, "test")
    verification = next(ds for ds in data.report if getattr(ds, "pairs", None) is not None)
    metas = {f: _meta(out / f) for f in FILES}

    # one fingerprint: the trained weights', whatever the precision of the file
    fingerprints = {m["facetx.fingerprint"] for m in metas.values()}
    assert fingerprints == {model_fingerprint(source.net)} and len(fingerprints.pop()) == 16
    assert metas["model.int8.onnx"]["facetx.precision"] == "int8"

    for file, meta in metas.items():
        genuine, impostor = _impostor_scores(out / file, verification)
        t, own = float(meta["recognition.threshold"]), metrics.threshold_at_far(impostor, FAR)
        if file == "model.b1.onnx":  # model.onnx's threshold (the same graph at batch 1): equal up to float rounding
            assert t == pytest.approx(own, abs=1e-5)
        else:  # exactly the threshold of this file's own embeddings (INT8 and FP32 differ by ~1e-6 here)
            assert t == own, file
        assert float((impostor > t).float().mean()) <= FAR  # measured FAR at the written threshold
        assert float(meta["recognition.far"]) == FAR and meta["recognition.threshold_split"] == data.report_split
        assert json.loads(meta["recognition.threshold_pairs"]) == {
            "genuine": genuine.numel(),
            "impostor": impostor.numel(),
        }
        template = np.asarray(json.loads(meta["landmarks.template"]))
        assert template.shape == (int(meta["landmarks.count"]), 2)
        assert (template > 0).all() and (template < 1).all()
        np.testing.assert_allclose(template, landmark_template(data.report), atol=1e-5)

    # each precision its own threshold: the INT8 file's comes from its own metrics
    int8_t = verification_threshold(report["metrics"]["onnxruntime/int8"])
    assert float(metas["model.int8.onnx"]["recognition.threshold"]) == pytest.approx(int8_t.value, abs=1e-6)

    cal = report["calibration"]
    assert set(cal["files"]) - {OPENVINO_FILE} == set(FILES)
    assert cal["far"] == FAR and cal["fingerprint"] == model_fingerprint(source.net)
    assert set(cal["keys"]) == {
        "facetx.fingerprint",
        "recognition.threshold",
        "recognition.far",
        "recognition.threshold_split",
        "recognition.threshold_pairs",
        "landmarks.template",
    }
    saved = json.loads((out / "report.json").read_text())["calibration"]
    for file in FILES:  # report.json lists exactly what each file carries
        assert saved["files"][file].items() <= metas[file].items(), file
    assert "recognition/threshold@far=1e-3" in report["metrics"]["onnxruntime/fp32"]


def test_fingerprint_follows_the_weights(tiny_ckpt: Path) -> None:  # noqa: F811
    net = pipeline.load_network(tiny_ckpt)[0]
    before = model_fingerprint(net)
    assert model_fingerprint(pipeline.load_network(tiny_ckpt)[0]) == before  # same checkpoint, same fingerprint
    with torch.no_grad():
        next(net.parameters()).view(-1)[0] += 1e-3
    assert model_fingerprint(net) != before
