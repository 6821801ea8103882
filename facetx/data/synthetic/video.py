"""Test videos with ground truth: a scripted clip of held-out synthetic identities, and a clip made from a photo.

:func:`scripted_clip` renders each face once as a 112x112 crop with the generator (with an exact alpha matte, from
painting the face over black and over white), then warps it into every frame with a per-frame similarity transform
over a procedural room background. The truth of each frame (:class:`FrameTruth`) is the transform of the crop's
landmarks, so it agrees with the pixels to the interpolation error.

Coordinates: OpenCV pixels (integer values are pixel centers) in frames, crops and photos alike; a ``[2, 3]`` matrix
maps ``(x, y)`` to ``matrix[:, :2] @ (x, y) + matrix[:, 2]``, as ``cv2.warpAffine`` uses it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from facetx.data.contract import EXPRESSIONS, IMAGE_SIZE
from facetx.data.landmarks import IBUG68
from facetx.data.synthetic.dataset import SyntheticFaces, noise_bank
from facetx.data.synthetic.geometry import PX_PER_UNIT, head_geometry
from facetx.data.synthetic.identity import Identity
from facetx.data.synthetic.render import (
    PRINT_EDGE,
    SPOOF_CUES,
    _draw_light,
    _gamma_lut,
    _light,
    _spoof,
    paint_face,
    paint_scene,
)

_TAG_CLIP, _TAG_GALLERY, _TAG_PHOTO = 101, 102, 103
_REF_W, _REF_H = 640.0, 360.0  # the script is written for this frame size and scaled to others
_FEATHER = 10.0  # px of the crop over which a face's matte fades out at the crop border (no square edge, no cut neck)
_NOISE_SIGMA = 3.0  # per-frame sensor noise (0-255 scale)
_POOL = 50  # scripted identities are drawn among the first _POOL held-out identities
_SPRITE_SPOOF_CUES = tuple(c for c in SPOOF_CUES if c != PRINT_EDGE)
# Yaw/pitch limits (deg) of clip and gallery faces: at the generator's 30/15, BlazeFace full-range misses ~1 in 5
# faces 110 px wide (turned heads, big open mouths); near-frontal it finds all (see the tests' measured recall).
_CLIP_YAW, _CLIP_PITCH = 15.0, 8.0
# Clip faces are drawn this much smaller and this many px lower in their crop so the whole head fits (a cut, flat
# top costs BlazeFace short-range 0.90 -> 0.78 recall at 80 px faces); the price: 1.4x more upscaling in the frame.
_HEAD_ZOOM, _HEAD_DROP = 0.72, 10.0


def identity_name(identity: int, split: str = "test") -> str:
    """The name of identity ``identity`` of a split, e.g. ``"test_0007"``."""
    return f"{split}_{identity:04d}"


@lru_cache(maxsize=8)
def _split_faces(num_identities: int, seed: int) -> SyntheticFaces:
    # spoof_fraction=0 and 2 images each: the cheapest held-out data set whose verification pairs can be built
    return SyntheticFaces("test", max(num_identities, 20), 2, seed=seed, spoof_fraction=0.0, num_pairs=20)


def heldout_identity(identity: int, seed: int = 0) -> Identity:
    """Identity ``identity`` of ``SyntheticFaces(split="test", seed=seed)`` (never seen in training)."""
    if identity < 0:
        raise ValueError(f"heldout_identity: identity must be >= 0, got {identity}")
    return _split_faces(64 * (identity // 64 + 1), seed)._identity(identity)


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(key))


# --- one face, rendered once ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FaceSprite:
    """A face rendered once by the generator, ready to be warped into frames.

    ``image`` uint8 [112, 112, 3] RGB (straight colour), ``alpha`` float32 [112, 112] in [0, 1] (feathered at the crop
    border), ``landmarks`` float32 [68, 2] crop px, ``expression`` index into :data:`EXPRESSIONS`. A spoof is the
    generator's whole spoof crop (a print or a screen, its background included) with a soft-edged rectangular matte.
    """

    image: np.ndarray
    alpha: np.ndarray
    landmarks: np.ndarray
    expression: int
    spoof: bool

    @property
    def face_width(self) -> float:
        """Jaw width ``|landmark 16 - landmark 0|`` in crop px."""
        return float(np.linalg.norm(self.landmarks[16] - self.landmarks[0]))

    def layers(self) -> tuple[np.ndarray, np.ndarray]:
        """(RGB times alpha, 255 - alpha on 3 channels), both uint8 [112, 112, 3]: what :func:`_paste` warps (uint8,
        3 channels: cv2's fastest warp)."""
        a = self.alpha[..., None]
        colour = np.rint(self.image.astype(np.float32) * a).astype(np.uint8)
        inverse = np.rint(255.0 * (1.0 - np.repeat(a, 3, axis=-1))).astype(np.uint8)
        return colour, inverse


def _border_fade(feather: float) -> np.ndarray:
    """float32 [112, 112]: 1 inside, ramping to 0 over ``feather`` px at the crop border (0 on the outermost pixels, so
    the crop's edge never shows)."""
    c = np.arange(IMAGE_SIZE, dtype=np.float32)
    d = np.minimum(c, IMAGE_SIZE - 1 - c) / feather
    ramp = np.clip(d, 0.0, 1.0)
    ramp = ramp * ramp * (3 - 2 * ramp)  # smoothstep: no visible kink where the fade starts
    return np.minimum(ramp[:, None], ramp[None, :])


def render_sprite(
    idn: Identity,
    rng: np.random.Generator,
    spoof: bool = False,
    max_yaw: float = 30.0,
    max_pitch: float = 15.0,
    whole_head: bool = False,
) -> FaceSprite:
    """One rendering of ``idn`` with the generator's nuisance draws (expression, pose, scale, shift, light, gamma), in
    its ranges except yaw/pitch, which stay within ``max_yaw``/``max_pitch`` degrees (30/15: the generator's).

    ``whole_head``: draw the face smaller (x0.72) and lower (+10 px) in the crop so the skull and hair fit: the
    generator's ArcFace-like framing cuts the top of the head, which composited into a scene is a flat-topped head.

    Live faces are painted twice, over black and over white, from the same random state: the difference is the exact
    anti-aliased coverage, so the face can be composited onto any background; image noise and blur are left to the
    clip (per frame). A spoof is drawn as :func:`render_face` draws one: on the generator's crop background, with its
    noise and 1-3 print/replay artifacts.
    """
    bank = noise_bank(0)
    u = rng.uniform  # the draws of render_face, in its order
    expression = int(rng.integers(len(EXPRESSIONS)))
    yaw, pitch = math.radians(u(-max_yaw, max_yaw)), math.radians(u(-max_pitch, max_pitch))
    roll = math.radians(u(-10, 10))
    scale = PX_PER_UNIT * u(0.8, 1.1)
    k = u(0.75, 1.0) if expression else 0.0
    shift = u(-4, 4, 2)
    if whole_head:
        scale, shift = scale * _HEAD_ZOOM, shift + (0.0, _HEAD_DROP)
    lm, parts, teeth, ears_visible = head_geometry(idn, expression, k, yaw, pitch, roll, scale, shift)
    shape = (IMAGE_SIZE, IMAGE_SIZE, 3)
    if spoof:
        img = paint_scene(idn, lm, parts, teeth, ears_visible, rng, scale, bank)
        # the print-edge artifact paints, inside a lone crop, the border of the print and the scene beyond it; here the
        # print is composited into a real scene, so its matte is that border (not a painted strip inside it)
        straight = np.clip(_spoof(img, rng, cues=_SPRITE_SPOOF_CUES), 0, 255).astype(np.uint8)
        alpha = _border_fade(3.0)  # a print or a screen: its edge is a genuine cue, softened as if out of focus
    else:
        light = _draw_light(rng)
        state = rng.bit_generator.state
        black = paint_face(idn, lm, parts, teeth, ears_visible, rng, np.zeros(shape, np.uint8), scale, light.lx, bank)
        rng.bit_generator.state = state  # the same clothing colour, gaze and stubble draws
        white = paint_face(idn, lm, parts, teeth, ears_visible, rng, np.full(shape, 255, np.uint8), scale, light.lx,
                           bank)  # fmt: skip
        coverage = np.clip(1.0 - (white.astype(np.float32) - black.astype(np.float32)).mean(-1) / 255.0, 0.0, 1.0)
        # shading is multiplicative, so it applies to the premultiplied (over black) colour as is
        shaded = _light(black, np.zeros(shape, np.uint8), parts, scale, light)
        straight = np.clip(shaded / np.maximum(coverage, 1.0 / 255.0)[..., None], 0, 255).astype(np.uint8)
        alpha = (coverage * _border_fade(_FEATHER)).astype(np.float32)
    gamma = math.exp(rng.uniform(-0.3, 0.3))
    straight = cv2.LUT(straight, _gamma_lut(round(gamma, 2)))
    return FaceSprite(straight, alpha, lm.astype(np.float32), expression, spoof)


# --- background -------------------------------------------------------------------------------------------------------


def scene_background(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A procedural room, uint8 [H, W, 3] for ``size = (W, H)``: a lit wall gradient, a floor band, blurred furniture
    blocks and a low-frequency texture (not flat, so a detector cannot key on a plain backdrop)."""
    w, h = size
    sw, sh = max(w // 4, 8), max(h // 4, 8)  # smooth content: draw at 1/4 resolution
    wall0, wall1 = rng.uniform(60, 220, 3), rng.uniform(40, 200, 3)
    t = np.linspace(0.0, 1.0, sh, dtype=np.float32)[:, None, None]
    small = np.broadcast_to(wall0 + t * (wall1 - wall0), (sh, sw, 3)).astype(np.float32).copy()
    floor = int(sh * rng.uniform(0.72, 0.88))
    small[floor:] = rng.uniform(30, 150, 3)
    for _ in range(int(rng.integers(3, 7))):
        x0, y0 = int(rng.integers(0, sw)), int(rng.integers(0, sh))
        x1, y1 = x0 + int(rng.integers(sw // 12, sw // 3)), y0 + int(rng.integers(sh // 10, sh // 2))
        cv2.rectangle(small, (x0, y0), (x1, y1), tuple(float(c) for c in rng.uniform(20, 235, 3)), -1)
    tex = cv2.resize(rng.uniform(-25, 25, (6, 10, 3)).astype(np.float32), (sw, sh), interpolation=cv2.INTER_CUBIC)
    small = cv2.GaussianBlur(small + tex, (0, 0), 1.2)
    return np.clip(cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR), 0, 255).astype(np.uint8)


# --- the script -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Motion:
    """Keyframed path of a face, linearly interpolated; times are fractions of the clip (0 first frame, 1 last).

    ``x``, ``y``: where the landmark centroid goes (px of the 640x360 reference frame); ``width``: jaw width (px of the
    reference frame); ``roll``: degrees, positive turns the face clockwise on screen.
    """

    t: tuple[float, ...]
    x: tuple[float, ...]
    y: tuple[float, ...]
    width: tuple[float, ...]
    roll: tuple[float, ...]

    def at(self, t: float) -> tuple[float, float, float, float]:
        """(x, y, width, roll) at clip fraction ``t``."""
        x, y, width, roll = (float(np.interp(t, self.t, v)) for v in (self.x, self.y, self.width, self.roll))
        return x, y, width, roll


@dataclass(frozen=True)
class Actor:
    """One scripted face: ``actor_id`` (stable over the clip), the held-out ``identity`` index and its ``name``,
    ``spoof``, ``depth`` (higher is nearer the camera and drawn over lower), its ``role`` in the script, its path and
    its rendered sprite."""

    actor_id: int
    identity: int
    name: str
    spoof: bool
    depth: int
    role: str
    motion: Motion
    sprite: FaceSprite


@dataclass(frozen=True)
class FaceTruth:
    """Ground truth of one face in one frame (frame px).

    ``box`` [4] x1, y1, x2, y2: extent of the 68 landmarks (not clipped to the frame); ``landmarks`` [68, 2] iBUG;
    ``points5`` [5, 2] ArcFace order (image-left eye, image-right eye, nose tip, mouth corners); ``matrix`` [2, 3] the
    sprite crop -> frame similarity; ``face_width`` jaw width in px; ``in_frame`` the fraction of landmarks inside the
    frame; ``landmark_visible`` [68] inside the frame and not covered by a nearer face; ``visible`` its mean.
    """

    actor_id: int
    identity: int
    name: str
    spoof: bool
    box: np.ndarray
    landmarks: np.ndarray
    points5: np.ndarray
    matrix: np.ndarray
    face_width: float
    in_frame: float
    landmark_visible: np.ndarray
    visible: float


@dataclass(frozen=True)
class FrameTruth:
    """The faces with at least one landmark inside frame ``index``, nearest first."""

    index: int
    faces: tuple[FaceTruth, ...]

    def face(self, actor_id: int) -> FaceTruth | None:
        """The truth of ``actor_id`` in this frame, ``None`` when it is not in the frame."""
        return next((f for f in self.faces if f.actor_id == actor_id), None)


@dataclass(frozen=True)
class Clip:
    """A scripted clip: ``frames`` uint8 [T, H, W, 3] RGB, ``fps``, per-frame ``truth``, the ``actors``, and the
    ``background`` uint8 [H, W, 3] before faces and noise."""

    frames: np.ndarray
    fps: float
    truth: tuple[FrameTruth, ...]
    actors: tuple[Actor, ...]
    background: np.ndarray

    @property
    def size(self) -> tuple[int, int]:
        """(W, H) px."""
        return int(self.frames.shape[2]), int(self.frames.shape[1])

    def actor(self, role: str) -> Actor:
        """The actor playing ``role`` ("mover", "leaver", "enterer", "crossing_front", "crossing_back")."""
        for a in self.actors:
            if a.role == role:
                return a
        raise KeyError(f"Clip: no actor plays {role!r}; roles: {[a.role for a in self.actors]}")


def _script() -> list[tuple[str, bool, int, Motion]]:
    """(role, spoof, depth, motion) of each actor in the 640x360 reference frame."""
    # fmt: off
    return [
        # moves, grows 100 -> 200 px and back to 140 px, rolls +-20 deg
        ("mover", False, 3, Motion((0, 0.25, 0.5, 0.75, 1), (140, 150, 165, 165, 160), (185, 180, 175, 180, 185),
                                   (100, 150, 200, 170, 140), (0, 20, 0, -20, 0))),
        # leaves through the right edge before mid-clip
        ("leaver", False, 0, Motion((0, 0.55, 1), (545, 800, 1000), (278, 282, 282), (104, 104, 104), (0, 5, 5))),
        # a spoof (a print carried into view) enters through the right edge after mid-clip
        ("enterer", True, 0, Motion((0, 0.5, 1), (1000, 820, 560), (285, 285, 280), (104, 104, 104), (-5, -5, 0))),
        # two faces cross; the front one hides the back one around mid-clip
        ("crossing_front", False, 2, Motion((0, 1), (350, 570), (122, 128), (100, 100), (0, 0))),
        ("crossing_back", False, 1, Motion((0, 1), (570, 350), (132, 126), (92, 92), (0, 0))),
    ]
    # fmt: on


def _similarity(anchor: np.ndarray, x: float, y: float, s: float, roll_deg: float) -> np.ndarray:
    """float64 [2, 3]: scale by ``s`` and turn clockwise by ``roll_deg`` about crop point ``anchor``; put that at
    (x, y)."""
    r = math.radians(roll_deg)
    a = s * np.array([[math.cos(r), -math.sin(r)], [math.sin(r), math.cos(r)]])
    return np.hstack([a, (np.array([x, y]) - a @ anchor)[:, None]])


def _transform(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    return (points @ m[:, :2].T + m[:, 2]).astype(np.float32)


def _alpha_at(sprite: FaceSprite, m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The matte of ``sprite`` (warped into the frame by ``m``) at frame ``points [N, 2]``, nearest pixel, [N]."""
    q = _transform(points, cv2.invertAffineTransform(m))
    ij = np.rint(q).astype(np.int64)
    inside = (ij >= 0).all(1) & (ij < IMAGE_SIZE).all(1)
    out = np.zeros(len(points), np.float32)
    out[inside] = sprite.alpha[ij[inside, 1], ij[inside, 0]]
    return out


def _paste(out: np.ndarray, layers: tuple[np.ndarray, np.ndarray], m: np.ndarray) -> None:
    """Composite a sprite's :meth:`FaceSprite.layers` over ``out`` (uint8 [H, W, 3], in place) through ``m``; only the
    region the crop covers is warped."""
    h, w = out.shape[:2]
    corners = _transform(np.array([[-0.5, -0.5], [IMAGE_SIZE - 0.5, -0.5], [-0.5, IMAGE_SIZE - 0.5],
                                   [IMAGE_SIZE - 0.5, IMAGE_SIZE - 0.5]]), m)  # fmt: skip
    x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int) - 1, 0)
    x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int) + 2, (w, h))
    if x1 <= x0 or y1 <= y0:
        return
    local = m.copy()
    local[:, 2] -= (x0, y0)
    wh = (int(x1 - x0), int(y1 - y0))
    colour = cv2.warpAffine(layers[0], local, wh, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    inverse = cv2.warpAffine(layers[1], local, wh, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                             borderValue=(255, 255, 255))  # fmt: skip
    roi = out[y0:y1, x0:x1]
    roi[:] = cv2.add(cv2.multiply(roi, inverse, scale=1.0 / 255.0), colour)  # premultiplied "over"


def _finish(out: np.ndarray, bank: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add a random window of the int16 noise ``bank`` to ``out`` (uint8 [H, W, 3]), saturating."""
    h, w = out.shape[:2]
    oy, ox = rng.integers(0, bank.shape[0] - h + 1), rng.integers(0, bank.shape[1] - w + 1)
    return cv2.add(out, bank[oy : oy + h, ox : ox + w], dtype=cv2.CV_8U)


def _noise(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """int16 [h + 32, w + 32, 3] sensor noise (frames take random windows: cheaper than fresh noise per frame)."""
    return np.rint(rng.standard_normal((h + 32, w + 32, 3), dtype=np.float32) * _NOISE_SIGMA).astype(np.int16)


def scripted_clip(
    seed: int = 0,
    num_frames: int = 75,
    size: tuple[int, int] = (640, 360),
    fps: float = 25.0,
    identities: Sequence[int] | None = None,
    identity_seed: int = 0,
) -> Clip:
    """The scripted test clip (deterministic in its arguments).

    Five actors, held-out identities of ``SyntheticFaces(split="test", seed=identity_seed)`` (``identities``: five
    indices, default drawn from the first 50 by ``seed``): a "mover" that moves, scales (100 -> 200 px jaw width at
    640x360) and rolls +-20 deg; a "leaver" that exits through the right edge before mid-clip; a spoof "enterer" that
    comes in through the right edge after it; "crossing_front" and "crossing_back", whose paths cross mid-clip (the
    front one covers the back one). The script scales with ``size = (W, H)``.
    """
    if num_frames < 2:
        raise ValueError(f"scripted_clip: num_frames must be >= 2, got {num_frames}")
    w, h = int(size[0]), int(size[1])
    script = _script()
    rng = _rng(seed, _TAG_CLIP)
    if identities is None:
        identities = [int(i) for i in rng.choice(_POOL, size=len(script), replace=False)]
    if len(identities) != len(script):
        raise ValueError(f"scripted_clip: needs {len(script)} identities, got {len(identities)}")
    actors = []
    for i, ((role, spoof, depth, motion), k) in enumerate(zip(script, identities, strict=True)):
        idn = heldout_identity(int(k), identity_seed)
        sprite = render_sprite(idn, _rng(seed, _TAG_CLIP, i, int(k)), spoof, _CLIP_YAW, _CLIP_PITCH, not spoof)
        actors.append(Actor(i, int(k), identity_name(int(k)), spoof, depth, role, motion, sprite))
    background = scene_background(rng, (w, h))
    bank = _noise(rng, w, h)
    sx, sy = w / _REF_W, h / _REF_H
    far_to_near = sorted(actors, key=lambda a: a.depth)
    layers = {a.actor_id: a.sprite.layers() for a in actors}
    anchors = {a.actor_id: a.sprite.landmarks.mean(0) for a in actors}
    frames = np.empty((num_frames, h, w, 3), np.uint8)
    truth = []
    for f in range(num_frames):
        t = f / (num_frames - 1)
        mats = {}
        for a in actors:
            x, y, width, roll = a.motion.at(t)
            mats[a.actor_id] = _similarity(anchors[a.actor_id], x * sx, y * sy, width * sy / a.sprite.face_width, roll)
        out = background.copy()
        for a in far_to_near:
            _paste(out, layers[a.actor_id], mats[a.actor_id])
        frames[f] = _finish(out, bank, rng)
        truth.append(FrameTruth(f, _frame_truth(actors, mats, w, h)))
    return Clip(frames, float(fps), tuple(truth), tuple(actors), background)


def _frame_truth(actors: list[Actor], mats: dict[int, np.ndarray], w: int, h: int) -> tuple[FaceTruth, ...]:
    faces = []
    for a in sorted(actors, key=lambda a: -a.depth):
        m = mats[a.actor_id]
        lm = _transform(a.sprite.landmarks, m)
        inside = (lm[:, 0] >= -0.5) & (lm[:, 0] < w - 0.5) & (lm[:, 1] >= -0.5) & (lm[:, 1] < h - 0.5)
        if not inside.any():
            continue
        seen = inside.copy()
        for b in actors:  # a point is hidden where a nearer face's matte is mostly opaque
            if b.depth > a.depth:
                seen &= _alpha_at(b.sprite, mats[b.actor_id], lm) < 0.5
        box = np.concatenate([lm.min(0), lm.max(0)]).astype(np.float32)
        faces.append(
            FaceTruth(
                a.actor_id,
                a.identity,
                a.name,
                a.spoof,
                box,
                lm,
                IBUG68.five_points(lm).astype(np.float32),
                m.astype(np.float32),
                float(np.linalg.norm(lm[16] - lm[0])),
                float(inside.mean()),
                seen,
                float(seen.mean()),
            )  # fmt: skip
        )
    return tuple(faces)


# --- matching detections to the truth ---------------------------------------------------------------------------------


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes ``a [N, 4]`` and ``b [M, 4]`` (x1, y1, x2, y2) -> [N, M]."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
    area = lambda x: np.prod(np.clip(x[:, 2:] - x[:, :2], 0, None), axis=-1)
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


def match_detections(
    faces: Sequence[FaceTruth], boxes: np.ndarray, eyes: np.ndarray | None = None, iou_min: float = 0.5
) -> list[int]:
    """Index of the detection matched to each truth face, -1 if none (greedy, one detection per face).

    A detection matches when its box ``boxes [N, 4]`` has IoU >= ``iou_min`` with the truth box, or when its two eye
    points ``eyes [N, 2, 2]`` (image-left eye first) lie within a third of the inter-ocular distance of the truth eye
    centers (a box drawn differently but on the face). The higher IoU wins.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if not faces or not len(boxes):
        return [-1] * len(faces)
    score = box_iou(np.stack([f.box for f in faces]), boxes)
    ok = score >= iou_min
    if eyes is not None:
        eyes = np.asarray(eyes, np.float64).reshape(-1, 2, 2)
        for i, f in enumerate(faces):
            iod = np.linalg.norm(f.points5[1] - f.points5[0])
            err = np.linalg.norm(eyes - f.points5[None, :2], axis=-1).max(-1)
            ok[i] |= err < iod / 3
    score = np.where(ok, score + 1.0, -1.0)  # eye matches with a small IoU still beat no match
    out = [-1] * len(faces)
    while (score > 0).any():
        i, j = np.unravel_index(np.argmax(score), score.shape)
        out[i] = int(j)
        score[i, :], score[:, j] = -1.0, -1.0
    return out


# --- writing and gallery ----------------------------------------------------------------------------------------------


def write_video(clip: Clip | PhotoClip, path: str | Path, codec: str = "mp4v") -> Path:
    """Write ``clip.frames`` to ``path`` with ``cv2.VideoWriter`` and check that OpenCV reads back every frame."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t, h, w = clip.frames.shape[:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), float(clip.fps), (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"write_video: cv2.VideoWriter cannot write {codec!r} to {path}")
    try:
        for frame in clip.frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    cap = cv2.VideoCapture(str(path))
    n = 0
    try:
        while cap.read()[0]:
            n += 1
    finally:
        cap.release()
    if n != t:
        raise RuntimeError(f"write_video: wrote {t} frames to {path} but OpenCV reads back {n}")
    return path


def gallery_photos(
    identities: Sequence[int], per_person: int = 3, seed: int = 0, size: int = 256, identity_seed: int = 0
) -> dict[str, list[np.ndarray]]:
    """``per_person`` enrolment photos (uint8 [size, size, 3] RGB) of each held-out identity, keyed by name.

    Each is a fresh live rendering (other pose, expression, light than any clip) on its own room background, the face
    ~38% of the photo wide with margin around it, so a detector finds it.
    """
    out: dict[str, list[np.ndarray]] = {}
    for k in identities:
        idn, photos = heldout_identity(int(k), identity_seed), []
        for j in range(per_person):
            rng = _rng(seed, _TAG_GALLERY, int(k), j)
            sprite = render_sprite(idn, rng, False, _CLIP_YAW, _CLIP_PITCH, True)
            canvas = scene_background(rng, (size, size))
            x, y = size * (0.5 + rng.uniform(-0.06, 0.06, 2))
            m = _similarity(sprite.landmarks.mean(0), x, y, 0.38 * size / sprite.face_width, rng.uniform(-8, 8))
            _paste(canvas, sprite.layers(), m)
            photos.append(_finish(canvas, _noise(rng, size, size), rng))
        out[identity_name(int(k))] = photos
    return out


# --- a clip from a photo ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PhotoClip:
    """A photo moving over a background: ``frames`` uint8 [T, H, W, 3] RGB, ``fps``, and ``matrices`` float32
    [T, 2, 3], photo px -> frame px per frame (map keypoints found on the photo into each frame with them)."""

    frames: np.ndarray
    fps: float
    matrices: np.ndarray

    def to_frame(self, points: np.ndarray, index: int) -> np.ndarray:
        """Photo points [N, 2] -> frame ``index`` px [N, 2]."""
        return _transform(np.asarray(points, np.float64), self.matrices[index].astype(np.float64))


def photo_clip(
    image: np.ndarray, frames: int = 60, size: tuple[int, int] = (640, 360), seed: int = 0, fps: float = 25.0
) -> PhotoClip:
    """Move, scale (0.7-1.25 times the frame height) and roll (+-15 deg) the photo ``image`` (uint8 [h, w, 3] RGB) on a
    procedural background along a smooth random path (keyframes every ~20 frames, eased), deterministic in ``seed``."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"photo_clip: expected a uint8 [h, w, 3] RGB image, got {image.dtype} {image.shape}")
    if frames < 1:
        raise ValueError(f"photo_clip: frames must be >= 1, got {frames}")
    w, h = int(size[0]), int(size[1])
    ih, iw = image.shape[:2]
    rng = _rng(seed, _TAG_PHOTO)
    n_keys = max(2, frames // 20 + 2)
    keys_t = np.linspace(0.0, 1.0, n_keys)
    height = rng.uniform(0.7, 1.25, n_keys) * h  # photo height on screen, px (may overflow the frame)
    roll = rng.uniform(-15, 15, n_keys)
    cx, cy = rng.uniform(0.35, 0.65, n_keys) * w, rng.uniform(0.42, 0.58, n_keys) * h
    background = scene_background(rng, (w, h))
    bank = _noise(rng, w, h)
    anchor = np.array([(iw - 1) / 2, (ih - 1) / 2])
    out = np.empty((frames, h, w, 3), np.uint8)
    mats = np.empty((frames, 2, 3), np.float32)
    for f in range(frames):
        t = f / max(frames - 1, 1)
        seg = min(int(np.searchsorted(keys_t, t, side="right")) - 1, n_keys - 2)
        u = (t - keys_t[seg]) / (keys_t[seg + 1] - keys_t[seg])
        u = u * u * (3 - 2 * u)  # ease in and out of each keyframe: no velocity jumps
        lerp = lambda v: float(v[seg] + (v[seg + 1] - v[seg]) * u)  # noqa: B023
        m = _similarity(anchor, lerp(cx), lerp(cy), lerp(height) / ih, lerp(roll))
        frame = background.copy()
        cv2.warpAffine(image, m, (w, h), dst=frame, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_TRANSPARENT)
        out[f] = _finish(frame, bank, rng)
        mats[f] = m
    return PhotoClip(out, float(fps), mats)
