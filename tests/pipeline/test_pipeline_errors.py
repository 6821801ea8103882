"""Bad input to ``python -m facetx.pipeline`` / ``facetx.pipeline.enroll``: one line naming the file or key, exit 2;
a video without faces is not an error (empty results and a note in the summary)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import assert_one_line

# runpy warns when it runs a module the fixtures already imported (enroll); harmless here
pytestmark = pytest.mark.filterwarnings("ignore:.*found in sys.modules:RuntimeWarning")


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from facetx.data.synthetic.video import scripted_clip, write_video

    return write_video(scripted_clip(num_frames=8), tmp_path_factory.mktemp("v") / "clip.mp4")


def pipeline(run_script, tmp_path: Path, *overrides: str):
    return run_script("facetx.pipeline", *overrides, f"hydra.run.dir={tmp_path}/run", "output.progress=false")


def test_missing_video(run_script, student: Path, tmp_path: Path) -> None:
    proc = pipeline(run_script, tmp_path, f"source={tmp_path}/nope.mp4", f"model={student}")
    assert_one_line(proc, "source=", "nope.mp4", "no such file")


def test_unreadable_video(run_script, student: Path, tmp_path: Path) -> None:
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video" * 100)
    proc = pipeline(run_script, tmp_path, f"source={bad}", f"model={student}")
    assert_one_line(proc, "source=", "broken.mp4")


def test_empty_video(run_script, student: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    writer = cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (64, 64))
    writer.release()  # a container with no frames (or no file at all: OpenCV writes nothing without frames)
    if not empty.exists():
        empty.write_bytes(b"")
    proc = pipeline(run_script, tmp_path, f"source={empty}", f"model={student}")
    assert_one_line(proc, "source=", "empty.mp4")


def test_camera_that_does_not_open(run_script, student: Path, tmp_path: Path) -> None:
    proc = pipeline(run_script, tmp_path, "source=57", f"model={student}")
    assert_one_line(proc, "source=57", "camera")


def test_model_that_is_not_a_facetx_export(run_script, video: Path, tmp_path: Path) -> None:
    from facetx.detect.weights import cache_dir

    blazeface = next(iter(sorted(cache_dir().glob("blazeface_short*.onnx"))), None)
    if blazeface is None:
        pytest.fail("no BlazeFace ONNX in the cache: run `make weights`")
    proc = pipeline(run_script, tmp_path, f"source={video}", f"model={blazeface}")
    assert_one_line(proc, "model=", "not a facetx export", "facetx.version")
    garbage = tmp_path / "model.onnx"
    garbage.write_bytes(b"\x00" * 64)
    proc = pipeline(run_script, tmp_path, f"source={video}", f"model={garbage}")
    assert_one_line(proc, "model=", "not a readable ONNX model")


def test_gallery_from_another_model(run_script, student: Path, video: Path, tmp_path: Path) -> None:
    from facetx.pipeline.gallery import Gallery

    other = Gallery.empty(512, "0123456789abcdef", "another_model")
    other.add("someone", np.eye(1, 512, dtype=np.float32))
    path = tmp_path / "other.npz"
    other.save(path)
    proc = pipeline(
        run_script, tmp_path, f"source={video}", f"model={student}", "gallery=numpy", f"gallery.path={path}"
    )
    assert_one_line(proc, "other.npz", "0123456789abcdef", "enroll")


def test_typo_in_a_group_is_one_line(run_script, student: Path, video: Path, tmp_path: Path) -> None:
    proc = pipeline(run_script, tmp_path, f"source={video}", f"model={student}", "+tracker.max_face=2")
    assert_one_line(proc, "tracker", "max_face")
    proc = pipeline(run_script, tmp_path, f"source={video}", f"model={student}", "+output.vidoe=x.mp4")
    assert_one_line(proc, "output", "vidoe")


def test_video_without_faces_is_empty_results_and_a_note(run_script, student: Path, tmp_path: Path) -> None:
    from facetx.data.synthetic.video import scene_background

    path = tmp_path / "room.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (320, 240))
    room = scene_background(np.random.default_rng(0), (320, 240))
    for _ in range(6):
        writer.write(cv2.cvtColor(room, cv2.COLOR_RGB2BGR))
    writer.release()
    proc = pipeline(run_script, tmp_path, f"source={path}", f"model={student}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(x) for x in (tmp_path / "run" / "faces.jsonl").read_text().splitlines()]
    assert len(lines) == 6 and all(rec["faces"] == [] for rec in lines)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["faces"] == 0 and summary["notes"] == ["no faces found in any frame"]


def test_enroll_bad_folder(run_script, student: Path, tmp_path: Path) -> None:
    proc = run_script("facetx.pipeline.enroll", f"photos={tmp_path}/none", f"model={student}",
                      f"hydra.run.dir={tmp_path}/run")  # fmt: skip
    assert_one_line(proc, "photos=", "no such folder")


def test_bad_threads_and_max_frames(run_script, student: Path, video: Path, tmp_path: Path) -> None:
    proc = pipeline(run_script, tmp_path, f"source={video}", f"model={student}", "threads=-1")
    assert_one_line(proc, "threads=-1", "positive")
    proc = pipeline(run_script, tmp_path, f"source={video}", f"model={student}", "max_frames=0")
    assert_one_line(proc, "max_frames=0", "positive")


def test_photos_in_a_folder_are_not_one_video(run_script, student: Path, clip, clip_gallery: Path, tmp_path: Path):
    """A folder of photos: each is analysed on its own (no track, no averaged embedding carried from the photo
    before), so a photo gives the same result after another photo as alone."""
    from facetx.data.synthetic.video import gallery_photos
    from tests.pipeline.conftest import write_photos

    a, b = sorted({f.identity for t in clip.truth for f in t.faces if not f.spoof})[:2]
    photos = gallery_photos([a, b], per_person=1, seed=7)
    both, alone = tmp_path / "both", tmp_path / "alone"
    for folder, names in ((both, list(photos)), (alone, list(photos)[1:])):
        write_photos({n: photos[n] for n in names}, folder)
    records = {}
    for folder in (both, alone):
        flat = folder / "flat"
        flat.mkdir()
        for i, p in enumerate(sorted(folder.glob("*/*.png"))):
            p.rename(flat / f"{i}_{p.parent.name}.png")
        out = tmp_path / f"run_{folder.name}"
        proc = run_script("facetx.pipeline", f"source={flat}", f"model={student}", "gallery=numpy",
                          f"gallery.path={clip_gallery}", f"hydra.run.dir={out}", "output.progress=false")  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        records[folder.name] = [json.loads(x) for x in (out / "faces.jsonl").read_text().splitlines()]
    last_after_other, last_alone = records["both"][-1]["faces"], records["alone"][-1]["faces"]
    assert last_after_other and last_alone
    for key in ("identity", "similarity", "expression_probs", "live_score", "landmarks"):
        assert last_after_other[0][key] == last_alone[0][key], key
