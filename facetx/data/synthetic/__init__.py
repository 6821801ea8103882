"""Procedural multi-task face generator: identities, 68 iBUG landmarks, 7 expressions, live/spoof, held-out pairs.

Each identity is a parameter vector (face shape and proportions, skin tone, eye color/size/spacing, brows, nose, mouth,
hair color and style, facial hair, glasses, marks). A parametric 3D face is built from it, deformed by the expression,
posed (yaw/pitch/roll), orthographically projected into a 112x112 crop (eyes near y = 0.45 * 112, like an ArcFace
crop) and drawn from the projected points, so landmarks and pixels agree. Nuisance (background, lighting, pose, scale,
shift, noise, spoof artifacts) is drawn per image and dominates pixel space; identity lives in salient attributes.

Every random draw comes from ``np.random.default_rng(SeedSequence((seed, split, tag, ...)))``: same seed/split/index,
same pixels and labels in any process or worker.

:mod:`facetx.data.synthetic.video` builds test videos with per-frame ground truth from held-out identities
(:func:`scripted_clip`), enrolment photos of them (:func:`gallery_photos`) and a clip from a real photo
(:func:`photo_clip`).
"""

from facetx.data.synthetic.dataset import SPLITS, SyntheticFaces, raw_pixel_verification
from facetx.data.synthetic.video import (
    Clip,
    FaceTruth,
    FrameTruth,
    PhotoClip,
    gallery_photos,
    match_detections,
    photo_clip,
    scripted_clip,
    write_video,
)

__all__ = [
    "SPLITS",
    "Clip",
    "FaceTruth",
    "FrameTruth",
    "PhotoClip",
    "SyntheticFaces",
    "gallery_photos",
    "match_detections",
    "photo_clip",
    "raw_pixel_verification",
    "scripted_clip",
    "write_video",
]
