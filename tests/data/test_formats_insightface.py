"""insightface RecordIO packs: write/read back (scalar and array labels, multi-part records), worker safety, bad input,
the data=insightface config and a few training steps."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from torch.utils.data import DataLoader

from facetx.data.formats import DataFormatError, InsightFaceRec, RecordIOWriter
from facetx.data.formats.io import decode_image, encode_image
from facetx.data.formats.recordio import MAGIC, frame_record, pack_record, read_framed, unpack_record
from facetx.data.formats.writers import write_verification_bin

# a few steps with the tiny model; the data config supplies the data (debug=fast would resize the synthetic set)
TRAIN_FAST = ["trainer.accelerator=cpu", "logger=csv", "model=tiny", "trainer.max_steps=2", "trainer.max_epochs=1",
              "trainer.val_check_interval=1.0", "trainer.log_every_n_steps=1", "trainer.enable_model_summary=false",
              "test=false", "data.batch_size=4", "data.eval_batch_size=10", "data.num_workers=0"]  # fmt: skip


def face(seed: int) -> np.ndarray:
    """A random but JPEG-stable image: smooth blocks, so decoded pixels stay close to the originals."""
    rng = np.random.default_rng(seed)
    return np.kron(rng.integers(0, 256, (7, 7, 3)), np.ones((16, 16, 1))).astype(np.uint8)


def write_pack(root: Path, labels: list[int], label_mode: str = "scalar", **kw: object) -> list[np.ndarray]:
    images = [face(i) for i in range(len(labels))]
    with RecordIOWriter(root, label_mode=label_mode, **kw) as w:
        for im, lab in zip(images, labels, strict=True):
            w.add(im, lab, extra=(7.0, 3.0) if label_mode == "array" else ())
    return images


@pytest.mark.parametrize("label_mode", ["scalar", "array"])
def test_write_and_read_back(tmp_path: Path, label_mode: str) -> None:
    labels = [0, 0, 1, 1, 1, 2]
    images = write_pack(tmp_path, labels, label_mode)
    assert (tmp_path / "property").read_text().strip() == "3,112,112"
    ds = InsightFaceRec(tmp_path)
    assert (len(ds), ds.num_classes, ds.layout.name) == (6, 3, "ibug68")
    for i, lab in enumerate(labels):
        s = ds[i]
        assert int(s["identity"]) == lab and bool(s["has_identity"])
        assert not (s["has_landmarks"] or s["has_expression"] or s["has_spoof"])
        assert s["image"].shape == (3, 112, 112)
        # RGB order kept through the BGR codec: the mean color matches the source image
        got = (s["image"].permute(1, 2, 0).numpy() * 255).reshape(-1, 3).mean(0)
        assert np.abs(got - images[i].reshape(-1, 3).mean(0)).max() < 3
    # the array-label mode really stores the label after the header (flag > 0) and the class first
    rec = ds.reader.read(1)
    header, _ = unpack_record(rec, "x")
    if label_mode == "array":
        assert header.flag == 3 and header.label.tolist() == [0.0, 7.0, 3.0]
    else:
        assert header.flag == 0 and header.label == 0.0


def test_meta_records_like_insightface(tmp_path: Path) -> None:
    write_pack(tmp_path, [0, 0, 1, 2, 2])
    ds = InsightFaceRec(tmp_path)
    head, _ = unpack_record(ds.reader.read(0), "x")
    assert head.flag == 2 and head.label.tolist() == [6.0, 9.0]  # images 1..5, identity records 6..8
    ident, _ = unpack_record(ds.reader.read(8), "x")
    assert ident.label.tolist() == [4.0, 6.0]  # identity 2 = records 4, 5
    assert ds.image_keys.tolist() == [1, 2, 3, 4, 5]


def test_pack_without_meta_header_uses_every_record(tmp_path: Path) -> None:
    rec, offsets = bytearray(), []
    for i in range(3):
        offsets.append(len(rec))
        rec += frame_record(pack_record(float(i), encode_image(face(i)), id=i))
    (tmp_path / "train.rec").write_bytes(bytes(rec))
    (tmp_path / "train.idx").write_text("".join(f"{i}\t{o}\n" for i, o in enumerate(offsets)))
    (tmp_path / "property").write_text("3,112,112")
    ds = InsightFaceRec(tmp_path)
    assert [int(ds[i]["identity"]) for i in range(3)] == [0, 1, 2]


def test_records_containing_the_magic_are_split_and_joined() -> None:
    import io

    magic = struct.pack("<I", MAGIC)
    for rec in [magic, b"ab" + magic + b"cd", b"abcd" + magic + magic + b"xyz", b"abcd" + magic * 3 + b"e" * 9]:
        framed = frame_record(rec)
        assert len(framed) % 4 == 0
        assert read_framed(io.BytesIO(framed + frame_record(b"next")), 0, "x") == rec
    # 4-aligned occurrences are split (cflag 1 then 3), unaligned ones are not
    framed = frame_record(b"abcd" + magic + b"xy")
    assert struct.unpack_from("<I", framed, 4)[0] >> 29 == 1
    assert struct.unpack_from("<I", frame_record(b"ab" + magic + b"cd"), 4)[0] >> 29 == 0


def test_parallel_workers_read_the_right_records(tmp_path: Path) -> None:
    labels = [i % 4 for i in range(16)]
    write_pack(tmp_path, labels)
    ds = InsightFaceRec(tmp_path)
    ds[0]  # opens a handle in this process: workers must not share it
    loader = DataLoader(ds, batch_size=4, num_workers=2, shuffle=False)
    got = torch.cat([b["identity"] for b in loader]).tolist()
    assert got == labels


def test_corrupt_jpeg_skip_counts_across_workers_or_fails(tmp_path: Path) -> None:
    with RecordIOWriter(tmp_path) as w:
        for i in range(8):
            w.add(b"\xff\xd8 not a jpeg" if i in (2, 5) else encode_image(face(i)), i % 2)
    with pytest.raises(DataFormatError, match=r"train\.rec: record 3: cannot decode the image payload"):
        InsightFaceRec(tmp_path, on_corrupt="fail")[2]
    ds = InsightFaceRec(tmp_path, on_corrupt="skip")
    loader = DataLoader(ds, batch_size=4, num_workers=2)
    indices = torch.cat([b["index"] for b in loader]).tolist()
    assert 2 not in indices and 5 not in indices and len(indices) == 8  # replaced by the next good item
    assert ds.skipped == 2 and ds.corrupt_indices == [2, 5]


def test_missing_root_and_files(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match=r"nope: does not exist \(expected an insightface pack folder"):
        InsightFaceRec(tmp_path / "nope")
    write_pack(tmp_path, [0, 1])
    (tmp_path / "train.idx").unlink()
    with pytest.raises(DataFormatError, match=r"train\.idx: does not exist \(expected the \.idx index of train\.rec\)"):
        InsightFaceRec(tmp_path)
    (tmp_path / "property").unlink()
    with pytest.raises(DataFormatError, match=r"property: does not exist"):
        InsightFaceRec(tmp_path)


def test_truncated_rec(tmp_path: Path) -> None:
    write_pack(tmp_path, [0, 1, 1])
    rec = tmp_path / "train.rec"
    data = rec.read_bytes()
    last = int((tmp_path / "train.idx").read_text().split()[-1])  # the last identity record
    rec.write_bytes(data[: last - 100])
    with pytest.raises(
        DataFormatError, match=r"train\.idx: record \d+ is at byte \d+, beyond the end of train\.rec .*truncated \.rec"
    ):
        InsightFaceRec(tmp_path)
    rec.write_bytes(data[:-3])  # cut inside the last record
    with pytest.raises(DataFormatError, match=r"train\.rec: record \d+: record at byte \d+ needs \d+ bytes.*truncated"):
        InsightFaceRec(tmp_path)


def test_truncated_or_malformed_idx(tmp_path: Path) -> None:
    write_pack(tmp_path, [0, 1, 1, 2])
    idx = tmp_path / "train.idx"
    lines = idx.read_text().splitlines(keepends=True)
    idx.write_text("".join(lines[:3]))  # keeps records 0..2 of 4 images
    with pytest.raises(DataFormatError, match=r"train\.idx: lists 2 of the 4 image records .*truncated \.idx"):
        InsightFaceRec(tmp_path)
    idx.write_text("".join(lines[:-1]) + lines[-1][:-4])  # cut inside the last offset
    with pytest.raises(DataFormatError, match=r"(not a multiple of 4|no RecordIO magic at byte \d+).*truncated"):
        InsightFaceRec(tmp_path)
    idx.write_text("".join(lines[:2]) + "2\n" + "".join(lines[3:]))
    with pytest.raises(DataFormatError, match=r"train\.idx: line 3: expected '<index>\\t<byte offset>', got '2'"):
        InsightFaceRec(tmp_path)
    idx.write_text("".join(lines).replace("\t", "  "))  # odd but well-formed spacing is still read
    assert len(InsightFaceRec(tmp_path)) == 4


def test_label_out_of_range_and_bad_property(tmp_path: Path) -> None:
    write_pack(tmp_path, [0, 1, 5], num_classes=6)
    (tmp_path / "property").write_text("3,112,112\n")
    ds = InsightFaceRec(tmp_path)
    assert int(ds[1]["identity"]) == 1
    with pytest.raises(DataFormatError, match=r"train\.rec: record 3: label 5 is outside \[0, 3\) \(num_classes from"):
        ds[2]
    (tmp_path / "property").write_text("lots,112,112\n")
    with pytest.raises(DataFormatError, match=r"property: expected one line 'num_classes,height,width'"):
        InsightFaceRec(tmp_path)


def write_bins(root: Path, names: list[str]) -> None:
    for k, name in enumerate(names):
        images = [encode_image(face(100 * k + i)) for i in range(20)]
        write_verification_bin(root / f"{name}.bin", images, [i % 2 == 0 for i in range(10)])


def test_config_builds_the_pack_and_its_verification_sets(make_cfg, tmp_path: Path) -> None:
    root = tmp_path / "pack"
    write_pack(root, [0, 0, 1, 1, 2, 2, 3, 3])
    write_bins(root, ["lfw", "cfp_fp", "agedb_30"])
    cfg = make_cfg("train", ["data=insightface", f"data.root={root}"], fast=False)
    train = instantiate(cfg.data.train, _convert_="all")
    assert isinstance(train, InsightFaceRec) and len(train) == 8 and train.num_classes == 4
    assert train.transform is not None and train.on_corrupt == "skip"
    assert [Path(p).name for p in cfg.data.val_bins] == ["lfw.bin", "cfp_fp.bin", "agedb_30.bin"]


def test_a_few_training_steps(make_cfg, tmp_path: Path) -> None:
    from facetx.training.run import train

    root = tmp_path / "pack"
    write_pack(root, [i // 2 for i in range(12)])
    write_bins(root, ["lfw", "cfp_fp", "agedb_30"])
    cfg = make_cfg(
        "train", ["data=insightface", f"data.root={root}", *TRAIN_FAST, "optimized_metric=val/lfw/acc"], fast=False
    )
    metrics = train(cfg)
    assert metrics["train/global_step"] == 2
    for name in ("lfw", "cfp_fp", "agedb_30"):
        assert 0.0 <= metrics[f"val/{name}/acc"] <= 1.0


def test_decode_image_is_rgb() -> None:
    img = np.zeros((16, 16, 3), np.uint8)
    img[..., 0] = 250  # red
    back = decode_image(encode_image(img, ".png"), "x")
    assert back[0, 0].tolist() == [250, 0, 0]
