"""Tracking and identity on the scripted synthetic clip, scored against its ground truth, for each tracker.

``python -m facetx.bench.clip_score --model OUT/model.int8.onnx --out DIR``: enrols the clip's live identities from
other renders of them (3 photos each), runs the pipeline over the clip with ``tracker=landmarks`` and
``tracker=detection``, and writes ``DIR/clip_score.json`` (one row per tracker: recall, id switches, ids per face,
landmark error, identity at the calibrated threshold, nearest-name accuracy, frames a track outlives its face).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import cv2

from facetx.runtime.system import system_summary


def _gallery(clip, model: str, root: Path) -> Path:
    from facetx.data.synthetic.video import gallery_photos
    from facetx.detect import FaceDetector
    from facetx.pipeline.enroll import enroll
    from facetx.pipeline.model import FaceModel

    live = sorted({f.identity for t in clip.truth for f in t.faces if not f.spoof})
    for name, images in gallery_photos(live, per_person=3).items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(images):
            cv2.imwrite(str(root / name / f"{i}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    out = root / "gallery.npz"
    enroll(root, FaceModel(model), [FaceDetector("short"), FaceDetector("full")], out)
    return out


def score(model: str, tracker: str, clip, gallery: Path) -> dict:
    from facetx.pipeline import FacePipeline
    from facetx.pipeline.contracts import Frame
    from facetx.pipeline.scoring import score_clip

    pipe = FacePipeline.from_config(
        [f"model={model}", f"tracker={tracker}", "gallery=numpy", f"gallery.path={gallery}"]
    )
    results = [pipe.process(Frame(image, i, i / clip.fps)) for i, image in enumerate(clip.frames)]
    live = {f.name for t in clip.truth for f in t.faces if not f.spoof}
    s = score_clip(results, clip.truth, enrolled=live, gallery=pipe.gallery)
    leaver = clip.actor("leaver").actor_id
    return {"tracker": tracker, "recall": s.recall, "id_switches": s.id_switches,
            "ids_per_face": max(s.tracks_per_actor.values(), default=0), "landmark_nme": s.landmark_nme,
            "landmark_px": s.landmark_px, "identity_top1": s.identity_top1, "wrong_names": 1 - s.identity_precision,
            "nearest_name_right": s.identity_top1_closed, "end_delay_frames": s.end_delay.get(leaver, ""),
            "false_faces": s.false_faces, "matched": s.matched,
            "detector_runs": sum(bool(r.detected) for r in results), "frames": len(results)}  # fmt: skip


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="the exported student (model.int8.onnx)")
    ap.add_argument("--out", default="outputs/bench/clip_score")
    args = ap.parse_args(argv)
    from facetx.data.synthetic.video import scripted_clip

    clip = scripted_clip()
    with tempfile.TemporaryDirectory() as tmp:
        gallery = _gallery(clip, args.model, Path(tmp))
        rows = [score(args.model, t, clip, gallery) for t in ("landmarks", "detection")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    system = system_summary()
    (out / "clip_score.json").write_text(json.dumps({"rows": rows, "model": args.model, "cpu": system["cpu"],
                                                     "isa_flags": system["isa_flags"]}, indent=2) + "\n")  # fmt: skip
    for r in rows:
        print(json.dumps(r))
    return rows


if __name__ == "__main__":
    main()
