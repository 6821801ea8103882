"""IJB-B/C 1:1: a tiny release written in insightface's layout (meta/*.txt, loose_crop/) reads back and aligns; the
template features and TAR@FAR equal a transcription of arcface_torch's eval_ijbc.py; data.val_ijb logs
val/ijbc/tar@far=...; wrong files get one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from facetx import metrics
from facetx.data.formats import DataFormatError, IJBTemplates
from facetx.data.formats.ijb import IJB_FARS
from facetx.data.formats.writers import write_ijb
from facetx.data.synthetic import SyntheticFaces
from facetx.detect.align import ARCFACE_TEMPLATE
from facetx.training.evaluation import evaluate
from tests.conftest import assert_one_line

OFFSET = np.array([20.0, 14.0], dtype=np.float32)  # where the aligned crop sits in its loose crop


def _faces(identities: int) -> SyntheticFaces:
    return SyntheticFaces(split="train", num_identities=identities, images_per_identity=4, seed=3, spoof_fraction=0.0)


def _release(root: Path, kind: str = "ijbc", identities: int = 4) -> Path:
    """4 faces per identity: templates 100k+1 (one video: 2 frames, one media) and 100k+2 (2 photos, 2 media)."""
    ds = _faces(identities)
    faces, images = [], {}
    for i in range(len(ds)):
        ident, k = divmod(i, 4)
        crop = (ds[i]["image"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        canvas = np.zeros((150, 150, 3), np.uint8)
        canvas[14:126, 20:132] = crop
        template = 100 * ident + 1 + k // 2
        media = 5000 + ident if k < 2 else 6000 + i
        faces.append((f"{i}.png", template, media, ARCFACE_TEMPLATE + OFFSET, 0.5 + 0.1 * k))
        images[f"{i}.png"] = canvas
    templates = sorted({f[1] for f in faces})
    pairs = [(a, b, int(a // 100 == b // 100)) for n, a in enumerate(templates) for b in templates[n + 1 :]]
    return write_ijb(root, faces, pairs, images, kind=kind)


def _eval_ijbc_reference(feats: np.ndarray, templates: np.ndarray, medias: np.ndarray, pairs: np.ndarray):
    """arcface_torch eval_ijbc.py: image2template_feature + verification (use_norm_score, detector score, flip)."""
    unique = np.unique(templates)
    tfeats = np.zeros((len(unique), feats.shape[1]))
    for c, t in enumerate(unique):
        (ind_t,) = np.where(templates == t)
        f, m = feats[ind_t], medias[ind_t]
        um, counts = np.unique(m, return_counts=True)
        pairs_mc = zip(um, counts, strict=True)
        media_feats = [f[m == u] if ct == 1 else np.mean(f[m == u], axis=0, keepdims=True) for u, ct in pairs_mc]
        tfeats[c] = np.sum(np.array(media_feats), axis=0)
    tfeats /= np.linalg.norm(tfeats, axis=1, keepdims=True)
    index = {t: c for c, t in enumerate(unique)}
    return np.array([tfeats[index[a]] @ tfeats[index[b]] for a, b in pairs[:, :2]])


def test_reads_back_and_aligns_from_the_five_points(tmp_path: Path) -> None:
    root = _release(tmp_path / "IJBC")
    ds = IJBTemplates(root)
    assert (ds.name, ds.verification_name, len(ds), ds.flip_tta, ds.fars) == ("ijbc", "ijbc", 16, True, IJB_FARS)
    assert ds.templates[:4].tolist() == [1, 1, 2, 2] and ds.medias[:4].tolist() == [5000, 5000, 6002, 6003]
    assert ds.template_pairs.shape == (28, 3) and int(ds.template_pairs[:, 2].sum()) == 4
    assert torch.allclose(ds.detector_scores[:4], torch.tensor([0.5, 0.6, 0.7, 0.8]))
    original = _faces(4)[5]["image"]
    got = ds[5]
    assert got["image"].shape == (3, 112, 112) and int(got["index"]) == 5
    # the 5 points sit on the template shifted by OFFSET: alignment undoes the shift (bilinear resampling aside)
    assert (got["image"] - original).abs().mean() < 0.01


def test_template_features_and_tar_match_arcface_torch(tmp_path: Path) -> None:
    ds = IJBTemplates(_release(tmp_path / "IJBC", identities=6))
    proj = torch.randn(3 * 112 * 112, 16, generator=torch.Generator().manual_seed(0))

    def predict(x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"embedding": x.flatten(1) @ proj}

    got = evaluate(predict, [ds], batch_size=7)
    images = torch.stack([ds[i]["image"] for i in range(len(ds))])
    feats = (predict(images)["embedding"] + predict(images.flip(-1))["embedding"]).double()
    feats = (feats * ds.detector_scores.double()[:, None]).numpy()
    pairs = ds.template_pairs.numpy()
    want = _eval_ijbc_reference(feats, ds.templates.numpy(), ds.medias.numpy(), pairs)
    ids, tf = metrics.template_features(torch.from_numpy(feats), ds.templates, ds.medias)
    assert np.allclose(metrics.template_pair_scores(ids, tf, ds.template_pairs).numpy(), want, atol=1e-6)
    same = torch.from_numpy(pairs[:, 2]).bool()
    scores = torch.from_numpy(want)
    for far in IJB_FARS:
        key = f"ijbc/tar@far={far:.0e}".replace("e-0", "e-")
        assert got[key] == pytest.approx(metrics.tar_at_far(scores[same], scores[~same], far)), key
    assert (got["ijbc/genuine_pairs"], got["ijbc/impostor_pairs"]) == (6.0, 60.0)


def test_val_ijb_logs_tar_at_far_in_a_run(run_script, tmp_path: Path) -> None:
    root = _release(tmp_path / "IJBB", kind="ijbb")
    out = tmp_path / "run"
    proc = run_script("train.py", "model=tiny", "debug=fast", "logger=csv", f"data.val_ijb=[{root}]",
                      f"hydra.run.dir={out}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    flat = json.dumps(m)
    for far in ("1e-6", "1e-4", "1e-1"):
        assert f"val/ijbb/tar@far={far}" in flat, flat[:2000]


def _corrupt(root: Path, file: str, text: str) -> None:
    (root / "meta" / file).write_text(text)


@pytest.mark.parametrize(
    ("file", "text", "needles"),
    [
        ("ijbc_face_tid_mid.txt", "0.jpg 1\n", ["ijbc_face_tid_mid.txt:1", "2 fields, expected 3"]),
        ("ijbc_name_5pts_score.txt", "0.jpg 1 2\n", ["ijbc_name_5pts_score.txt:1", "expected 12"]),
        ("ijbc_template_pair_label.txt", "1 2 1\n1 999 0\n", ["template 999 has no face"]),
        ("ijbc_template_pair_label.txt", "1 2 x\n", ["ijbc_template_pair_label.txt:1", "integers"]),
        ("ijbc_template_pair_label.txt", "1 2 3\n", ["labels must be 0 or 1"]),
    ],
)
def test_wrong_meta_files_name_the_file_and_line(tmp_path: Path, file: str, text: str, needles: list[str]) -> None:
    root = _release(tmp_path / "IJBC", identities=2)
    _corrupt(root, file, text)
    with pytest.raises(DataFormatError) as e:
        IJBTemplates(root)
    assert all(n in str(e.value) for n in needles), str(e.value)


def test_missing_pieces_get_one_line(run_script, tmp_path: Path) -> None:
    root = _release(tmp_path / "IJBC", identities=2)
    (root / "meta" / "ijbc_name_5pts_score.txt").unlink()
    with pytest.raises(DataFormatError, match="ijbc_name_5pts_score.txt: does not exist"):
        IJBTemplates(root)
    for sub in ("meta", "loose_crop"):
        (tmp_path / "empty" / sub).mkdir(parents=True)
    with pytest.raises(DataFormatError, match="neither of ijbc_face_tid_mid.txt or ijbb_face_tid_mid.txt"):
        IJBTemplates(tmp_path / "empty")
    proc = run_script("train.py", "model=tiny", "debug=fast", f"data.val_ijb=[{tmp_path / 'nowhere'}]",
                      f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    assert_one_line(proc, "nowhere", "does not exist", "IJB")
