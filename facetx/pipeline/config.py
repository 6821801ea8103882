"""Compose ``conf/pipeline/pipeline.yaml``, build the pipeline from it, and run it over a source.

The pipeline composes from its own config root (``conf/pipeline/``): there ``model=`` is the exported file, while in
``conf/`` it is the training ``model`` group, and Hydra cannot have both under one root.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from facetx.errors import ConfigError
from facetx.pipeline.outputs import OutputSettings, OutputWriter, RunStats
from facetx.pipeline.pipeline import FacePipeline

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf" / "pipeline"


def compose_pipeline_config(
    overrides: list[str], config_dir: str | Path | None = None, config_name: str = "pipeline"
) -> DictConfig:
    """The composed config (outside a Hydra run: ``paths.output_dir`` is the current directory)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir or CONFIG_DIR)):
        cfg = compose(config_name=config_name, overrides=overrides)
    GlobalHydra.instance().clear()
    if OmegaConf.select(cfg, "paths.output_dir", throw_on_resolution_failure=False) is None:
        OmegaConf.update(cfg, "paths.output_dir", ".", force_add=True)
    return cfg


def _instantiate(node: DictConfig, key: str, overrides: Mapping[str, Any] | None = None) -> Any:
    """``hydra.utils.instantiate`` (with ``overrides`` of the node's arguments) and a one-line :class:`ConfigError`
    naming ``key`` for a bad entry (a typo, a wrong value)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from facetx.errors import find_user_error

    try:
        return instantiate(node, _convert_="all", **dict(overrides or {}))
    except InstantiationException as e:
        cause = e.__cause__ or e
        user = find_user_error(cause)
        if user is not None:
            raise user from None
        raise ConfigError(f"{key}: {str(cause).splitlines()[0]}") from None


def check_threads(cfg: DictConfig) -> None:
    threads = cfg.get("threads")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads={threads}: expected a positive number of intra-op threads per session, or null")


def build_detector(cfg: DictConfig) -> Any:
    return _instantiate(cfg.detector, "detector")


def build_model(cfg: DictConfig) -> Any:
    from facetx.pipeline.model import FaceModel

    return FaceModel(
        cfg.model,
        threads=cfg.get("threads"),
        key="model",
        runtime=cfg.get("runtime") or "onnxruntime",
        precision=cfg.get("precision"),
    )


def build_gallery(cfg: DictConfig) -> Any:
    """The gallery of ``cfg.gallery`` (``gallery=none``: None)."""
    node = cfg.get("gallery")
    if node is None or len(node) == 0:
        return None
    return _instantiate(node, "gallery")


def require_model(cfg: DictConfig) -> None:
    """``model`` first, with what to pass (the generic ``???`` check would only say that it is not set)."""
    if OmegaConf.is_missing(cfg, "model"):
        raise ConfigError("model: not set (pass model=OUT/model.onnx or model.int8.onnx, a facetx export)")


def build_pipeline(cfg: DictConfig) -> FacePipeline:
    """Detector, student, tracker and gallery from the composed config (``source`` is not needed here)."""
    from facetx.training.config_checks import check_required

    require_model(cfg)
    if OmegaConf.is_missing(cfg, "source"):
        cfg = cfg.copy()
        OmegaConf.update(cfg, "source", None)
    check_required(cfg)  # gallery.path and the like
    check_threads(cfg)
    model = build_model(cfg)
    tracker = _instantiate(cfg.tracker, "tracker")
    return FacePipeline(build_detector(cfg), model, tracker, build_gallery(cfg), cfg.get("threshold"))


def output_settings(cfg: DictConfig) -> OutputSettings:
    from facetx.export.settings import settings_from

    return settings_from(OutputSettings, OmegaConf.to_container(cfg.output, resolve=True), "output")


def run(cfg: DictConfig) -> dict:
    """Run the pipeline over ``cfg.source`` and write the outputs; returns the summary."""
    from tqdm import tqdm

    from facetx.pipeline.source import FrameSource
    from facetx.training.config_checks import check_required

    require_model(cfg)
    check_required(cfg)
    settings = output_settings(cfg)
    pipe = build_pipeline(cfg)
    source = FrameSource(cfg.source, queue_size=int(cfg.queue_size), max_frames=cfg.get("max_frames"), key="source")
    photos = source.info.kind in ("image", "folder")  # unrelated pictures, not a video: no tracks across them
    writer = OutputWriter(settings, source.info.fps)
    stats = RunStats()
    total = source.info.frames if cfg.get("max_frames") is None else min(source.info.frames or 0, cfg.max_frames)
    bar = tqdm(total=total or None, unit="frame", disable=not settings.progress or source.info.live, leave=False)
    notes: list[str] = []
    try:
        for frame in source:
            if photos:
                pipe.reset()
            result = pipe.process(frame)
            writer.write(frame.image, result)
            stats.add(result)
            bar.update(1)
    finally:
        bar.close()
        stats.finished = time.perf_counter()
        if stats.frames and stats.faces == 0:
            notes.append("no faces found in any frame")
        summary = stats.summary(str(cfg.source), str(cfg.model), notes)
        summary.update(
            detector=type(pipe.detector).__name__,
            tracker=pipe.tracker.mode,
            threshold=pipe.threshold,
            gallery=None if pipe.gallery is None else len(pipe.gallery),
        )
        writer.close(summary)
    log.info(
        "%d frames, %d faces in %d tracks, %.1f FPS end to end; outputs: %s",
        summary["frames"],
        summary["faces"],
        summary["tracks"],
        summary["fps_end_to_end"] or 0.0,
        ", ".join(p for p in (settings.video, settings.jsonl, settings.summary) if p) or "none",
    )
    for note in notes:
        log.warning("%s: %s", cfg.source, note)
    return summary
