"""Frame sources: files deliver every frame in order; a live source drops stale frames for a slow consumer."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

import facetx.pipeline.source as source_mod
from facetx.pipeline.source import FrameSource


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("src") / "count.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (64, 48))
    for i in range(40):
        frame = np.full((48, 64, 3), 6 * i, np.uint8)  # brightness rises with the frame number
        writer.write(frame)
    writer.release()
    return path


def test_file_source_delivers_every_frame_in_order(video: Path) -> None:
    src = FrameSource(video, queue_size=2)
    assert src.info.kind == "video" and not src.info.live and src.info.frames == 40
    frames = list(src)
    assert [f.index for f in frames] == list(range(40))
    brightness = [float(f.image.mean()) for f in frames]
    assert all(b1 < b2 for b1, b2 in zip(brightness, brightness[1:], strict=False)), (
        brightness
    )  # in order, none repeated
    assert frames[1].timestamp == pytest.approx(1 / 25)
    assert all(f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8 for f in frames)


def test_live_source_keeps_only_the_newest_frame(video: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(source_mod, "_kind", lambda s: "stream")  # the file, read as if it were a stream
    src = FrameSource(str(video))
    assert src.info.live
    seen = []
    for frame in src:
        seen.append(frame.index)
        time.sleep(0.02)  # a consumer slower than decoding
    assert seen == sorted(seen) and len(set(seen)) == len(seen)
    assert len(seen) < 40  # stale frames were dropped, not queued up


def test_folder_and_image_sources(tmp_path: Path) -> None:
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((20, 30, 3), 40 * i, np.uint8))
    frames = list(FrameSource(tmp_path))
    assert [f.index for f in frames] == [0, 1, 2]
    assert len(list(FrameSource(tmp_path / "1.png"))) == 1
