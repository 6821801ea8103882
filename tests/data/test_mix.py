"""MixDataset: weights, seeded schedule, task masks, identity offsets, layout agreement; the data=mix config over the
four real formats and a few training steps."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from torch.utils.data import Dataset

from facetx.data.contract import make_sample
from facetx.data.formats import (
    FER2013,
    WFLW,
    CelebASpoof,
    DataFormatError,
    ImageFolderFaces,
    InsightFaceRec,
    RecordIOWriter,
)
from facetx.data.formats.celeba_spoof import TEST_LABELS, TRAIN_LABELS
from facetx.data.formats.io import encode_image
from facetx.data.formats.wflw import TEST_LIST, TRAIN_LIST
from facetx.data.formats.writers import (
    celeba_spoof_label,
    wflw_line,
    write_celeba_spoof_box,
    write_celeba_spoof_labels,
    write_fer2013_csv,
    write_verification_bin,
)
from facetx.data.landmarks import IBUG68, WFLW98
from facetx.data.mix import MixDataset, MixSource

TRAIN_FAST = ["trainer.accelerator=cpu", "logger=csv", "model=tiny", "trainer.max_steps=2", "trainer.max_epochs=1",
              "trainer.val_check_interval=1.0", "trainer.log_every_n_steps=1", "trainer.enable_model_summary=false",
              "test=false", "data.batch_size=4", "data.eval_batch_size=10", "data.num_workers=0"]  # fmt: skip


class AllLabels(Dataset):
    """Every task labeled; item ``i`` has identity ``i % num_classes``."""

    def __init__(self, n: int, num_classes: int = 3, layout=IBUG68, tasks: tuple[str, ...] | None = None) -> None:
        self.n, self.num_classes, self.layout = n, num_classes, layout
        if tasks is not None:
            self.tasks = tasks

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        k = self.layout.num_points
        return make_sample(np.zeros((112, 112, 3), np.uint8), index=i, num_landmarks=k, identity=i % self.num_classes,
                           landmarks=np.full((k, 2), 5.0), expression=2, spoof=1)  # fmt: skip


def test_weights_and_seeded_schedule() -> None:
    mix = MixDataset({"a": MixSource(AllLabels(10), 3.0), "b": MixSource(AllLabels(100), 1.0)}, length=41, seed=3)
    assert mix.counts.tolist() == [31, 10] and len(mix) == 41  # 30.75 -> 31, 10.25 -> 10
    located = [mix.locate(i) for i in range(41)]
    a_items = Counter(j for s, j in located if s == 0)
    assert sorted(a_items.values()) == [3] * 9 + [4]  # 31 slots over 10 items: as even as possible
    b_items = [j for s, j in located if s == 1]
    assert len(set(b_items)) == 10  # subsampled without repetition
    again = MixDataset({"a": MixSource(AllLabels(10), 3.0), "b": MixSource(AllLabels(100), 1.0)}, length=41, seed=3)
    other = MixDataset({"a": MixSource(AllLabels(10), 3.0), "b": MixSource(AllLabels(100), 1.0)}, length=41, seed=4)
    assert [again.locate(i) for i in range(41)] == located
    assert [other.locate(i) for i in range(41)] != located
    assert len(MixDataset([MixSource(AllLabels(10)), MixSource(AllLabels(5))])) == 15  # default: total size
    with pytest.raises(IndexError):
        mix[41]


def test_tasks_are_masked_and_identities_offset() -> None:
    mix = MixDataset(
        {
            "ids1": MixSource(AllLabels(4, num_classes=4), tasks=["identity"]),
            "marks": MixSource(AllLabels(4, num_classes=7), tasks=["landmarks", "spoof"]),
            "ids2": MixSource(AllLabels(4, num_classes=2), tasks=["identity", "expression"]),
        },
        seed=0,
    )
    assert mix.num_classes == 6 and mix.identity_offsets == [0, 4, 4] and mix.num_landmarks == 68
    seen = set()
    for i in range(len(mix)):
        s, j = mix.locate(i)
        x = mix[i]
        assert int(x["index"]) == i
        has = {t for t in ("identity", "landmarks", "expression", "spoof") if bool(x[f"has_{t}"])}
        assert has == {0: {"identity"}, 1: {"landmarks", "spoof"}, 2: {"identity", "expression"}}[s]
        if s == 1:
            assert int(x["identity"]) == -1 and int(x["expression"]) == -1 and float(x["landmarks"].sum()) > 0
        else:
            assert float(x["landmarks"].abs().sum()) == 0 and int(x["spoof"]) == -1
            assert int(x["identity"]) == j % (4 if s == 0 else 2) + (0 if s == 0 else 4)
            seen.add(int(x["identity"]))
    assert seen == set(range(6))
    assert mix.skipped == 0


def test_bad_mixes() -> None:
    with pytest.raises(DataFormatError, match=r"mix: source 'w' uses landmark layout 'wflw98' but source 'i' uses"):
        MixDataset({"i": MixSource(AllLabels(2)), "w": MixSource(AllLabels(2, layout=WFLW98))})
    with pytest.raises(ValueError, match=r"mix: source 'f' asks for task\(s\) \['landmarks'\] that AllLabels has no"):
        MixDataset({"f": MixSource(AllLabels(2, tasks=("expression",)), tasks=["landmarks"])})
    with pytest.raises(ValueError, match=r"mix: source 'f': unknown task\(s\) \['age'\]"):
        MixDataset({"f": MixSource(AllLabels(2), tasks=["age"])})
    with pytest.raises(ValueError, match=r"mix: source 'f' needs a positive weight, got 0.0"):
        MixDataset({"f": MixSource(AllLabels(2), weight=0)})
    with pytest.raises(DataFormatError, match=r"mix: source 'e' is empty"):
        MixDataset({"e": MixSource(AllLabels(0))})


def test_skipped_corrupt_images_are_counted_through_the_mix(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "0.png").write_bytes(encode_image(np.zeros((112, 112, 3), np.uint8), ".png"))
    (tmp_path / "b" / "1.png").write_bytes(b"\x89PNG broken")
    faces = ImageFolderFaces(tmp_path, on_corrupt="skip")
    mix = MixDataset({"faces": MixSource(faces), "other": MixSource(AllLabels(3))})
    for i in range(len(mix)):
        mix[i]
    assert mix.skipped == 1 and faces.corrupt_indices == [2]


def write_four_sources(root: Path) -> None:
    """faces_emore (pack + lfw.bin), WFLW, fer2013, CelebA_Spoof under ``root``, a few faces each."""
    rng = np.random.default_rng(0)

    def img(h: int = 112, w: int = 112) -> np.ndarray:
        return np.kron(rng.integers(0, 256, (h // 16, w // 16, 3)), np.ones((16, 16, 1))).astype(np.uint8)

    with RecordIOWriter(root / "faces_emore") as w:
        for i in range(8):
            w.add(img(), i // 2)
    write_verification_bin(root / "faces_emore" / "lfw.bin", [encode_image(img()) for _ in range(20)], [True] * 10)
    (root / "WFLW" / TRAIN_LIST).parent.mkdir(parents=True)
    (root / "WFLW" / "WFLW_images" / "0--x").mkdir(parents=True)
    for lst, n in ((TRAIN_LIST, 4), (TEST_LIST, 2)):
        lines = []
        for i in range(n):
            rel = f"0--x/{lst[-9:-4]}_{i}.jpg"
            (root / "WFLW" / "WFLW_images" / rel).write_bytes(encode_image(img(160, 160)))
            pts = rng.uniform(30, 130, (98, 2))
            lines.append(wflw_line(pts, (*pts.min(0), *pts.max(0)), [0] * 6, rel))
        (root / "WFLW" / lst).write_text("\n".join(lines) + "\n")
    (root / "fer2013").mkdir()
    fer = [(i % 7, rng.integers(0, 256, (48, 48)), u) for i, u in enumerate(["Training"] * 5 + ["PublicTest"] * 3)]
    write_fer2013_csv(root / "fer2013" / "fer2013.csv", fer)
    for labels, split, n in ((TRAIN_LABELS, "train", 4), (TEST_LABELS, "test", 2)):
        table = {}
        for i in range(n):
            rel = f"Data/{split}/1/live/{i}.png"
            (root / "CelebA_Spoof" / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / "CelebA_Spoof" / rel).write_bytes(encode_image(img(128, 96), ".png"))
            write_celeba_spoof_box(root / "CelebA_Spoof" / rel, (20, 30, 50, 60), (128, 96))
            table[rel] = celeba_spoof_label(i % 2)
        write_celeba_spoof_labels(root / "CelebA_Spoof" / labels, table)


def test_config_mixes_the_four_formats(make_cfg, tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_four_sources(root)
    cfg = make_cfg("train", ["data=mix", f"data.root={root}", "data.train.length=40"], fast=False)
    train = instantiate(cfg.data.train, _convert_="all")
    assert [type(d) for d in train.datasets] == [InsightFaceRec, WFLW, FER2013, CelebASpoof]
    assert train.layout is WFLW98 and train.num_classes == 4 and train.counts.tolist() == [20, 8, 6, 6]
    tasks = Counter()
    for i in range(len(train)):
        x = train[i]
        assert x["landmarks"].shape == (98, 2)
        tasks.update(t for t in ("identity", "landmarks", "expression", "spoof") if bool(x[f"has_{t}"]))
    assert tasks == {"identity": 20, "landmarks": 8, "expression": 6, "spoof": 6}
    val = instantiate(cfg.data.val, _convert_="all")
    assert [(v.name, len(v)) for v in val] == [("wflw_test", 2), ("fer2013_publictest", 3), ("celeba_spoof_test", 2)]
    assert list(cfg.data.val_bins) == [f"{root}/faces_emore/lfw.bin"]


def test_a_few_training_steps(make_cfg, tmp_path: Path) -> None:
    from facetx.training.run import train

    root = tmp_path / "data"
    write_four_sources(root)
    metrics = train(
        make_cfg("train", ["data=mix", f"data.root={root}", *TRAIN_FAST, "optimized_metric=val/lfw/acc"], fast=False)
    )
    assert metrics["train/global_step"] == 2
    for key in ("val/lfw/acc", "val/landmarks/nme", "val/expression/acc", "val/spoof/acer"):
        assert np.isfinite(metrics[key]), key
