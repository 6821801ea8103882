"""Procedural multi-task face generator: identities, 68 iBUG landmarks, 7 expressions, live/spoof, held-out pairs.

Each identity is a parameter vector (face shape and proportions, skin tone, eye color/size/spacing, brows, nose, mouth,
hair color and style, facial hair, glasses, marks). A parametric 3D face is built from it, deformed by the expression,
posed (yaw/pitch/roll), orthographically projected into a 112x112 crop (eyes near y = 0.45 * 112, like an ArcFace
crop) and drawn from the projected points, so landmarks and pixels agree. Nuisance (background, lighting, pose, scale,
shift, noise, spoof artifacts) is drawn per image and dominates pixel space; identity lives in salient attributes.

Every random draw comes from ``np.random.default_rng(SeedSequence((seed, split, tag, ...)))``: same seed/split/index,
same pixels and labels in any process or worker.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import cv2
import numpy as np
import torch

from facetx.data.contract import EXPRESSIONS, IMAGE_SIZE, make_sample
from facetx.data.landmarks import IBUG68, LandmarkLayout

SPLITS: dict[str, int] = {"train": 0, "val": 1, "test": 2}
_TAG_IDENTITY, _TAG_IMAGE, _TAG_PAIRS, _TAG_BANK = 1, 2, 3, 4
_S = IMAGE_SIZE
_PX_PER_UNIT = 32.0  # pixels per unit (1 unit ~ distance between eye centers) at scale 1
_EYE_Y = 0.45 * _S  # eye line at frontal pose, scale 1
_SHIFT = 16.0  # cv2 sub-pixel drawing: coordinates carry 4 fractional bits
_AA = cv2.LINE_AA

_SKIN = np.array(
    [(255, 226, 204), (245, 208, 178), (232, 186, 150), (214, 160, 120), (188, 132, 94), (156, 102, 68),
     (120, 76, 50), (88, 56, 38), (62, 40, 28)], dtype=np.float64)  # fmt: skip
_HAIR = np.array(
    [(22, 18, 16), (52, 34, 24), (92, 62, 40), (140, 100, 64), (128, 52, 28), (196, 96, 44), (170, 136, 86),
     (222, 192, 128), (236, 228, 204), (140, 138, 134), (222, 220, 214), (44, 70, 170), (222, 96, 160),
     (106, 50, 140), (44, 140, 96)], dtype=np.float64)  # fmt: skip
_HAIR_P = np.array([16, 14, 12, 8, 7, 7, 7, 7, 4, 6, 4, 1, 1, 1, 1])
_NATURAL = 11  # the first 11 hair colors are natural, the rest dyed
_IRIS = np.array(
    [(50, 30, 18), (100, 62, 34), (128, 100, 52), (170, 112, 36), (78, 128, 72), (62, 110, 180), (130, 168, 214),
     (122, 132, 140)], dtype=np.float64)  # fmt: skip
_LIPSTICK = np.array([(180, 30, 50), (220, 90, 130), (120, 30, 60), (190, 120, 100), (120, 60, 50)], dtype=np.float64)
_FRAME = np.array([(15, 15, 15), (90, 60, 30), (180, 150, 60), (170, 170, 175), (150, 20, 30), (30, 40, 120)])


class _Style(NamedTuple):
    vol: float  # hair shell thickness (units)
    y_cut: float  # lowest hair height (units below the eye line)
    fringe: bool = False
    bumpy: bool = False
    tail: bool = False  # a ponytail behind the neck
    over_ears: bool = False


_STYLES: dict[str, _Style | None] = {
    "shaved": None,
    "horseshoe": _Style(0.06, 0.35),
    "buzz": _Style(0.03, -0.1),
    "short": _Style(0.10, 0.0),
    "side_part": _Style(0.15, 0.1),
    "fringe": _Style(0.13, 0.2, fringe=True),
    "long": _Style(0.13, 3.6, over_ears=True),
    "curly": _Style(0.38, 0.5, bumpy=True, over_ears=True),
    "bob": _Style(0.18, 1.3, fringe=True, over_ears=True),
    "ponytail": _Style(0.06, 0.0, tail=True),
}
_STYLE_NAMES = tuple(_STYLES)
_STYLE_P = np.array([4, 6, 10, 16, 14, 12, 14, 8, 8, 8], dtype=np.float64)


@dataclass
class _Identity:
    """Identity parameters (units: 1 ~ eye-center distance; colors RGB 0-255)."""

    shape: np.ndarray  # [68, 3] neutral landmarks; jaw rows are recomputed per pose
    face_w: float
    jaw_n: float
    jaw_y: float
    chin_y: float
    skull_depth: float
    hairline: tuple[float, float, float]  # center height, temple height, recession
    skin: np.ndarray
    lip: np.ndarray
    hair: np.ndarray
    beard: np.ndarray
    brow: np.ndarray
    iris: np.ndarray
    iris_size: float
    brow_thick: float
    lash: float
    style: str
    part: float
    beard_style: str
    glasses: int
    frame: np.ndarray
    frame_size: tuple[float, float]
    earrings: bool
    mole: tuple[int, int, int, float, float] | None
    freckles: bool
    ear_size: float


def _mix(palette: np.ndarray, rng: np.random.Generator, p: np.ndarray | None = None) -> np.ndarray:
    """A palette color blended up to 35% toward another palette color, with brightness jitter."""
    a = rng.choice(len(palette), p=None if p is None else p / p.sum())
    b = rng.integers(len(palette))
    return (palette[a] * (1 - (m := rng.uniform(0, 0.35))) + palette[b] * m) * rng.uniform(0.88, 1.12)


def _sample_identity(rng: np.random.Generator) -> _Identity:
    u = rng.uniform
    eye_d, eye_w, eye_h, tilt = u(0.88, 1.12), u(0.38, 0.54), u(0.11, 0.21), u(-0.05, 0.05)
    face_w, jaw_n, jaw_y, chin_y = u(0.98, 1.3), u(1.7, 3.6), u(0.0, 0.25), u(1.55, 1.9)
    brow_h, brow_arch, brow_len, brow_slant = u(0.2, 0.4), u(0.0, 0.1), u(0.42, 0.66), u(-0.07, 0.07)
    nose_len, nose_w, nose_proj = u(0.48, 0.74), u(0.14, 0.28), u(0.35, 0.6)
    mouth_y = min(nose_len + u(0.36, 0.56), chin_y - 0.42)
    mouth_w, lip_up, lip_lo = u(0.28, 0.5), u(0.035, 0.1), u(0.05, 0.13)

    p = np.zeros((68, 3))
    for side, (outer, u1, u2, inner, l1, l2) in ((-1, (36, 37, 38, 39, 40, 41)), (1, (45, 44, 43, 42, 47, 46))):
        cx = side * eye_d / 2
        p[outer] = (cx + side * eye_w / 2, tilt, -0.22)
        p[inner] = (cx - side * eye_w / 2, 0.0, -0.12)
        p[u1] = (cx + side * eye_w / 6, -eye_h * 0.55, -0.04)
        p[u2] = (cx - side * eye_w / 6, -eye_h * 0.55, -0.03)
        p[l2] = (cx + side * eye_w / 6, eye_h * 0.42, -0.06)
        p[l1] = (cx - side * eye_w / 6, eye_h * 0.42, -0.05)
        # brows: 17-21 run outer -> inner on the left, 22-26 inner -> outer on the right
        t = np.linspace(1, 0, 5) if side < 0 else np.linspace(0, 1, 5)
        x_in = side * (eye_d / 2 - eye_w / 2 + 0.04)
        ys = -brow_h - brow_arch * (1 - ((t - 0.45) / 0.55) ** 2) - brow_slant * t
        p[(17 if side < 0 else 22) : (22 if side < 0 else 27)] = np.stack(
            [x_in + side * brow_len * t, ys, 0.05 - 0.25 * t * t], 1
        )
    p[27:31] = [(0, -0.02, 0.05), (0, nose_len * 0.36, 0.05 + 0.4 * nose_proj),
                (0, nose_len * 0.7, 0.05 + 0.75 * nose_proj), (0, nose_len, 0.1 + nose_proj)]  # fmt: skip
    nb = nose_len + 0.09
    p[31:36] = [(-nose_w, nb - 0.03, 0.2), (-nose_w * 0.5, nb, 0.3), (0, nb + 0.02, 0.36), (nose_w * 0.5, nb, 0.3),
                (nose_w, nb - 0.03, 0.2)]  # fmt: skip
    mw, my = mouth_w, mouth_y
    p[48:60] = [(-mw, my, 0.12), (-0.55 * mw, my - lip_up * 0.85, 0.26), (-0.2 * mw, my - lip_up, 0.31),
                (0, my - lip_up * 0.8, 0.32), (0.2 * mw, my - lip_up, 0.31), (0.55 * mw, my - lip_up * 0.85, 0.26),
                (mw, my, 0.12), (0.55 * mw, my + lip_lo * 0.8, 0.24), (0.2 * mw, my + lip_lo, 0.28),
                (0, my + lip_lo, 0.29), (-0.2 * mw, my + lip_lo, 0.28),
                (-0.55 * mw, my + lip_lo * 0.8, 0.24)]  # fmt: skip
    p[60:68] = [(-0.86 * mw, my, 0.14), (-0.3 * mw, my, 0.27), (0, my, 0.28), (0.3 * mw, my, 0.27),
                (0.86 * mw, my, 0.14), (0.3 * mw, my, 0.27), (0, my, 0.28), (-0.3 * mw, my, 0.27)]  # fmt: skip

    tone = u(0, len(_SKIN) - 1)  # light -> dark, continuous along the palette
    i0 = min(int(tone), len(_SKIN) - 2)
    skin = _SKIN[i0] + (_SKIN[i0 + 1] - _SKIN[i0]) * (tone - i0)
    skin = skin * (1 + u(-1, 1) * np.array([0.05, 0.0, -0.07]))
    lip = skin * np.array([0.85, 0.6, 0.62]) * u(0.85, 1.05)
    if rng.random() < 0.2:
        lip = lip * 0.3 + _LIPSTICK[rng.integers(len(_LIPSTICK))] * 0.7
    style = _STYLE_NAMES[rng.choice(len(_STYLE_NAMES), p=_STYLE_P / _STYLE_P.sum())]
    natural = _mix(_HAIR[:_NATURAL], rng, _HAIR_P[:_NATURAL])
    hair = _mix(_HAIR[_NATURAL:], rng) if rng.random() < 0.1 else natural  # dyed hair keeps natural brows/beard
    if style == "buzz":
        hair = hair * 0.6 + skin * 0.4
    brow = natural * (u(0.45, 0.8) if natural.mean() > 110 else u(0.75, 1.0))
    beard = "none"
    if rng.random() < 0.4:
        beard = ("stubble", "mustache", "goatee", "full", "chin_strap")[rng.integers(5)]
    glasses = int(rng.integers(1, 4)) if rng.random() < 0.25 else 0
    mole = None
    if rng.random() < 0.3:  # a mark at a fixed barycentric position of a landmark triangle
        tri = ((31, 48, 3), (35, 54, 13), (48, 57, 6), (19, 24, 27), (36, 31, 2), (45, 35, 14))[rng.integers(6)]
        mole = (*tri, u(0.15, 0.5), u(0.15, 0.5))
    return _Identity(
        shape=p, face_w=face_w, jaw_n=jaw_n, jaw_y=jaw_y, chin_y=chin_y, skull_depth=u(1.1, 1.35),
        hairline=(u(-1.2, -0.8), u(-0.45, -0.25), u(0.0, 0.3) if rng.random() < 0.3 else 0.0),
        skin=skin, lip=lip, hair=hair, beard=np.clip(natural * 0.85, 0, 255), brow=np.clip(brow, 0, 255),
        iris=_mix(_IRIS, rng), iris_size=u(0.17, 0.25), brow_thick=u(0.05, 0.15), lash=u(0.0, 1.0), style=style,
        part=float(rng.choice((-1.0, 1.0))), beard_style=beard, glasses=glasses,
        frame=_FRAME[rng.integers(len(_FRAME))].astype(np.float64), frame_size=(u(0.26, 0.36), u(0.17, 0.27)),
        earrings=bool(rng.random() < 0.15), mole=mole, freckles=bool(rng.random() < 0.12), ear_size=u(0.8, 1.2),
    )  # fmt: skip


_UP_LID, _LOW_LID = (37, 38, 43, 44), (40, 41, 46, 47)
_IN_BROW, _OUT_BROW, _BROWS = (20, 21, 22, 23), (17, 18, 25, 26), tuple(range(17, 27))
_CORNERS, _UP_LIP = (48, 54, 60, 64), (49, 50, 51, 52, 53, 61, 62, 63)
_LOW_LIP, _LOW_IN = (55, 56, 57, 58, 59, 65, 66, 67), (65, 66, 67)
# per expression: (points, outward dx, dy) moves at full intensity, in units; then (chin drop, teeth show)
_EXPRESSION_MOVES: dict[str, tuple[tuple[tuple[int, ...], float, float], ...]] = {
    "neutral": (),
    "happy": ((_CORNERS, 0.07, -0.13), ((49, 53, 59, 55), 0.03, -0.05), (_LOW_IN, 0, 0.09), ((57, 56, 58), 0, 0.05),
              (_LOW_LID, 0, -0.05), (_BROWS, 0, -0.02)),
    "sad": ((_CORNERS, -0.02, 0.09), ((57, 66), 0, -0.02), (_IN_BROW, 0.0, -0.13), (_OUT_BROW, 0, 0.05),
            (_UP_LID, 0, 0.035)),
    "surprise": ((_BROWS, 0, -0.14), (_UP_LID, 0, -0.05), (_LOW_LID, 0, 0.015), (_CORNERS, -0.08, 0.02),
                 (_LOW_LIP, 0, 0.26), ((61, 62, 63), 0, -0.02)),
    "fear": ((_IN_BROW, -0.04, -0.12), (_OUT_BROW, -0.02, -0.04), (_UP_LID, 0, -0.05), (_CORNERS, 0.09, 0.03),
             (_LOW_LIP, 0, 0.08), (_LOW_IN, 0, 0.03)),
    "disgust": ((_UP_LIP, 0, -0.08), ((31, 32, 33, 34, 35), 0.02, -0.04), (_BROWS, -0.02, 0.05),
                (_IN_BROW, -0.01, 0.04), (_LOW_LID, 0, -0.045), ((48, 54), 0, 0.04), (_LOW_LIP, 0, 0.03)),
    "anger": ((_IN_BROW, -0.06, 0.14), (_OUT_BROW, 0, -0.02), (_UP_LID, 0, 0.03), (_LOW_LID, 0, -0.035),
              ((49, 50, 51, 52, 53), 0, 0.03), ((55, 56, 57, 58, 59), 0, -0.035), (_CORNERS, -0.04, 0.0),
              ((31, 35), 0.03, 0)),
}  # fmt: skip
_EXPRESSION_JAW = {"happy": (0.04, True), "surprise": (0.22, False), "fear": (0.08, True), "disgust": (0.0, True)}
# Caricature factor on every expression move: at 1.0 the moves are 2-4 px at 112x112, which a network trained on the
# CPU budget (~12k images) cannot resolve; exaggerated expressions stay plausible and are learnable.
_EXPRESSION_GAIN = 1.8
# image-left points of the iBUG layout (their mirror images are the right side; the rest lie on the midline)
_LEFT = (*range(0, 8), *range(17, 22), 31, 32, *range(36, 42), 48, 49, 50, 58, 59, 60, 61, 67)


@lru_cache(maxsize=1)
def _expression_table() -> np.ndarray:
    """[7, 68, 2] landmark displacement of each expression at full intensity (units)."""
    side = np.zeros(68)
    side[list(_LEFT)] = -1.0
    side[IBUG68.flip_map[list(_LEFT)]] = 1.0
    table = np.zeros((len(EXPRESSIONS), 68, 2))
    for e, name in enumerate(EXPRESSIONS):
        for idx, dx, dy in _EXPRESSION_MOVES[name]:
            table[e, list(idx), 0] += side[list(idx)] * dx
            table[e, list(idx), 1] += dy
    return table * _EXPRESSION_GAIN


def _expression_offsets(p: np.ndarray, expression: int, k: float) -> tuple[np.ndarray, float, bool]:
    """Deform neutral landmarks ``p [68, 3]`` by ``EXPRESSIONS[expression]`` at intensity ``k``.

    Returns (deformed copy, chin drop in units, whether teeth show).
    """
    q = p.copy()
    q[:, :2] += k * _expression_table()[expression]
    drop, teeth = _EXPRESSION_JAW.get(EXPRESSIONS[expression], (0.0, False))
    return q, drop * k * _EXPRESSION_GAIN, teeth


def _ring(a: np.ndarray, b: np.ndarray, zc: np.ndarray, y: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Points on horizontal head cross-sections (half-width ``a``, half-depth ``b``, center depth ``zc``)."""
    return np.stack([a * np.sin(phi), y, zc + b * np.cos(phi)], -1)


def _visible_range(a: np.ndarray, b: np.ndarray, yaw: float) -> tuple[np.ndarray, np.ndarray]:
    """Ring angles of the left and right silhouette under ``yaw`` (rad); the visible arc lies between them."""
    hi = np.arctan2(a * math.cos(yaw), b * math.sin(yaw) + 1e-9)
    return hi - math.pi, hi


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Head rotation: yaw about the vertical axis, then pitch, then roll in the image plane (rad)."""
    (cy, sy), (cp, sp), (cr, sr) = ((math.cos(a), math.sin(a)) for a in (yaw, pitch, roll))
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return rz @ rx @ ry


@lru_cache(maxsize=32)
def _chaikin_matrix(n: int, iters: int) -> np.ndarray:
    """Chaikin corner cutting of an open ``n``-point polyline as one linear map (end points kept)."""
    m = np.eye(n)
    for _ in range(iters):
        k = len(m)
        q = np.empty((2 * k - 2, n))
        q[0::2] = 0.75 * m[:-1] + 0.25 * m[1:]
        q[1::2] = 0.25 * m[:-1] + 0.75 * m[1:]
        m = np.concatenate([m[:1], q, m[-1:]])
    return m


def _chaikin(p: np.ndarray, iters: int = 2) -> np.ndarray:
    """Smooth an open polyline ``[N, 2]`` keeping its end points."""
    return _chaikin_matrix(len(p), iters) @ p


@lru_cache(maxsize=64)
def _unit_steps(n: int) -> np.ndarray:
    return np.linspace(0.0, 1.0, n)


def _lin(a: float, b: float, n: int) -> np.ndarray:
    """``np.linspace(a, b, n)`` without its per-call overhead."""
    return a + (b - a) * _unit_steps(n)


def _fx(p: np.ndarray) -> np.ndarray:
    """Float pixel coordinates -> int32 cv2 coordinates with 4 fractional bits."""
    return np.rint(p * _SHIFT).astype(np.int32)


def _col(c: np.ndarray) -> tuple[float, float, float]:
    return (float(min(max(c[0], 0), 255)), float(min(max(c[1], 0), 255)), float(min(max(c[2], 0), 255)))


def _poly(img: np.ndarray, pts: np.ndarray, color: np.ndarray) -> None:
    cv2.fillPoly(img, [_fx(pts)], _col(color), _AA, 4)


def _line(img: np.ndarray, pts: np.ndarray, color: np.ndarray, thickness: int = 1, closed: bool = False) -> None:
    cv2.polylines(img, [_fx(pts)], closed, _col(color), thickness, _AA, 4)


def _disc(img: np.ndarray, c: np.ndarray, r: float, color: np.ndarray) -> None:
    center = (int(round(c[0] * _SHIFT)), int(round(c[1] * _SHIFT)))
    cv2.circle(img, center, max(int(r * _SHIFT), 8), _col(color), -1, _AA, 4)


@lru_cache(maxsize=1)
def _five_centroid_weights() -> np.ndarray:
    """[68] weights: ``w @ landmarks`` is the centroid of the 5 alignment points."""
    w = np.zeros(68)
    for g in IBUG68.five_point_groups:
        w[list(g)] += 1.0 / (5 * len(g))
    return w


@lru_cache(maxsize=4)
def _grid(step: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-center coordinates (x, y) of the crop, float32 [S/step, S/step], sampled every ``step`` px."""
    c = np.arange(_S // step, dtype=np.float32) * step + (step - 1) / 2
    yy, xx = np.meshgrid(c, c, indexing="ij")
    return xx, yy


@lru_cache(maxsize=4)
def _noise_bank(seed: int) -> np.ndarray:
    """A fixed Gaussian noise texture ``[2S, 2S, 3]``; images take random crops of it (cheaper than fresh noise)."""
    rng = np.random.default_rng(np.random.SeedSequence((seed, _TAG_BANK)))
    return rng.standard_normal((2 * _S, 2 * _S, 3), dtype=np.float32)


def _background(rng: np.random.Generator) -> np.ndarray:
    """Random background: flat, gradient, radial, blotchy texture, stripes, plus optional clutter. uint8 [S, S, 3]."""
    c0, c1 = rng.uniform(0, 255, 3).astype(np.float32), rng.uniform(0, 255, 3).astype(np.float32)
    kind = rng.integers(5)
    if kind == 0:
        bg = np.empty((_S, _S, 3), np.uint8)
        bg[:] = c0.astype(np.uint8)
    elif kind in (1, 2):  # smooth: compute at 1/4 resolution, upsample
        xx, yy = _grid(4)
        if kind == 1:
            a = rng.uniform(0, 2 * math.pi)
            t = ((xx - _S / 2) * math.cos(a) + (yy - _S / 2) * math.sin(a)) / _S + 0.5
        else:
            cx, cy = rng.uniform(0, _S, 2)
            t = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) / (_S * rng.uniform(0.5, 1.2))
        small = c0 + np.clip(t, 0, 1)[..., None] * (c1 - c0)
        bg = cv2.resize(small, (_S, _S), interpolation=cv2.INTER_LINEAR).astype(np.uint8)
    elif kind == 3:
        n = int(rng.integers(2, 9))
        small = rng.uniform(0, 255, (n, n, 3)).astype(np.float32)
        bg = np.clip(cv2.resize(small, (_S, _S), interpolation=cv2.INTER_CUBIC), 0, 255).astype(np.uint8)
    else:
        xx, yy = _grid()
        a, f = rng.uniform(0, math.pi), rng.uniform(0.03, 0.25)
        t = np.sin((xx * math.cos(a) + yy * math.sin(a)) * (2 * math.pi * f)) * 0.5 + 0.5
        bg = (c0 + t[..., None] * (c1 - c0)).astype(np.uint8)
    for _ in range(int(rng.integers(0, 7)) if rng.random() < 0.5 else 0):
        color, (x0, y0, x1, y1) = _col(rng.uniform(0, 255, 3)), rng.uniform(-10, _S + 10, 4).astype(int)
        shape = rng.integers(3)
        if shape == 0:
            cv2.rectangle(bg, (x0, y0), (x1, y1), color, -1)
        elif shape == 1:
            cv2.circle(bg, (x0, y0), int(rng.integers(4, 30)), color, -1, _AA)
        else:
            cv2.line(bg, (x0, y0), (x1, y1), color, int(rng.integers(1, 6)), _AA)
    return bg


_Y_TOP = -1.8  # skull vertex height
_SIDE = 1.66  # ring angle (~95 deg) of the face outline's sides; behind it: ears, hair
_UNIT_CIRCLE = np.stack([np.cos(np.arange(16) * math.pi / 8), np.sin(np.arange(16) * math.pi / 8)], 1)
_FRECKLES = np.array(  # fixed barycentric weights on (nose side, cheek jaw point, lower eyelid) triangles
    [(0.6, 0.2, 0.2), (0.4, 0.3, 0.3), (0.3, 0.2, 0.5), (0.5, 0.1, 0.4), (0.25, 0.45, 0.3), (0.45, 0.4, 0.15)]
)


def _skull_f(y: np.ndarray, jaw_y: float) -> np.ndarray:
    """Relative width of the skull at height ``y`` (1 at the jaw top, 0 at the vertex)."""
    t = np.clip((jaw_y - y) / (jaw_y - _Y_TOP), 0.0, 1.0)
    return (1.0 - t**2.5) ** 0.4


def _geometry(
    idn: _Identity, expression: int, k: float, yaw: float, pitch: float, roll: float, scale: float, shift: np.ndarray
) -> tuple[np.ndarray, dict[str, np.ndarray], bool, np.ndarray]:
    """Pose the identity's 3D face and project it.

    Returns (landmarks [68, 2] px, named point sets in px, teeth visible, which ears are visible [2]).
    ``scale`` is pixels per unit; ``shift`` the offset [2] in px of the 5-point centroid from its frontal place.
    """
    q, drop, teeth = _expression_offsets(idn.shape, expression, k)
    fw, depth, jy = idn.face_w, idn.skull_depth, idn.jaw_y
    zc = 0.15 - depth

    # jaw: silhouettes of horizontal head sections (the contour slides around the head as it turns)
    phi = _lin(-math.pi / 2, math.pi / 2, 17)
    chin = idn.chin_y + drop
    s, c = np.abs(np.sin(phi)), np.abs(np.cos(phi))
    a = fw * s ** (2 / idn.jaw_n)
    y = jy + (chin - jy) * c ** (2 / idn.jaw_n)
    b = depth * a / fw
    lo, hi = _visible_range(a, b, yaw)
    ang = np.where(phi < 0, np.maximum(lo, -1.75), np.minimum(hi, 1.75))  # clamped: the near side shows the ear
    ang[8] = 0.0
    q[:17] = _ring(a, b, 0.15 + 0.12 * (y - jy) / (chin - jy) - b, y, ang)

    hl_c, hl_t, rec = idn.hairline
    bald, style = idn.style in ("shaved", "horseshoe"), _STYLES[idn.style]
    kk = _lin(1.0, -1.0, 11)
    hl_y = hl_c + (hl_t - hl_c) * np.abs(kk) ** 2.2 - rec * np.sin(math.pi * np.abs(kk)) ** 2
    side_ys = _lin(jy, _Y_TOP if bald else hl_t, 6 if bald else 3)
    # points on the skull surface, all in one call: (name, heights, ring angles clipped to the visible arc)
    req = [("hairline", hl_y, kk * 1.3), ("right", side_ys, np.full(len(side_ys), _SIDE)),
           ("left", side_ys[::-1], np.full(len(side_ys), -_SIDE))]  # fmt: skip
    if style is not None and style.fringe:  # ragged fringe from the hairline down to just above the brows
        y_f = q[17:27, 1].min() - 0.1 + 0.05 * (np.arange(11) % 2)
        req += [("front_top", hl_y - 0.05, kk * 1.3), ("front_bottom", y_f[::-1], -kk * 1.2)]
    elif idn.style == "side_part":  # a swoop from the parting across the forehead
        ks = _lin(0.35, -1.0, 8) * idn.part
        yu = hl_c + (hl_t - hl_c) * np.abs(ks) ** 2.2
        dip = 0.35 * (np.abs(ks - 0.35 * idn.part) / 1.35) ** 1.5
        req += [("front_top", yu - 0.05, ks * 1.3), ("front_bottom", (yu + dip)[::-1], ks[::-1] * 1.3)]
    ys_all, phi_all = np.concatenate([r[1] for r in req]), np.concatenate([r[2] for r in req])
    f = _skull_f(ys_all, jy)
    lo, hi = _visible_range(fw * f, depth * f, yaw)
    surf = _ring(fw * f, depth * f, zc, ys_all, np.clip(phi_all, lo, hi))
    got = dict(zip([r[0] for r in req], np.split(surf, np.cumsum([len(r[1]) for r in req])[:-1]), strict=True))
    hairline = got["hairline"]
    face = [q[:17], got["right"], got["left"]] if bald else [q[:17], got["right"], hairline, got["left"]]
    parts: dict[str, np.ndarray] = {"face": np.concatenate(face)}
    if "front_top" in got:
        parts["front"] = np.concatenate([got["front_top"], got["front_bottom"]])

    if style is not None:  # the hair shell: the skull grown by ``vol``, its silhouette hull is drawn behind the face
        vol, y_cut = style.vol, style.y_cut
        ys = _lin(_Y_TOP - 1.2 * vol + 0.02, min(y_cut, jy), 9)
        f = _skull_f(jy - (jy - ys) / (1 + vol), jy)
        aa, bb = fw * f * (1 + vol) + 0.04, depth * f * (1 + vol)
        if idn.style == "horseshoe":
            keep = ys > -0.7
            ys, aa, bb = ys[keep], aa[keep], bb[keep]
        if y_cut > jy:  # long hair: falls straight with a little flare below the jaw top
            yl = _lin(jy + 0.3, y_cut, 5)
            ys = np.concatenate([ys, yl])
            aa = np.concatenate([aa, fw * (1 + vol) + 0.06 + 0.1 * (yl - jy)])
            bb = np.concatenate([bb, np.full(5, depth * (1 + vol) * 0.7)])
        lo, hi = _visible_range(aa, bb, yaw)
        parts["hair"] = _ring(np.tile(aa, 2), np.tile(bb, 2), zc, np.tile(ys, 2), np.concatenate([lo, hi]))
        if style.tail:
            x0, x1 = 0.5 * idn.part * fw, 0.5 * idn.part * fw + 0.45 * idn.part
            parts["tail"] = np.array([(x0 - 0.15, -0.6, zc - 0.7), (x0 + 0.2, -0.6, zc - 0.7),
                                      (x1 + 0.15, 2.0, zc - 0.5), (x1 - 0.2, 2.0, zc - 0.5)])  # fmt: skip
        if not bald:
            parts["streaks"] = np.concatenate([hairline[1:-1:2], hairline[1:-1:2] + (0, -0.6, -0.25)])

    # ears: ellipses (center, top, side point) sticking out of the head sides, hidden when their side turns away
    ye = jy - 0.05
    ea = fw * float(_skull_f(np.array(ye), jy)) + 0.12
    elo, ehi = _visible_range(np.array(ea), np.array(depth), yaw)
    ears_visible = np.array([-1.85 > elo - 0.25, 1.85 < ehi + 0.25])
    sg, es = np.array([-1.0, 1.0]), idn.ear_size
    cen = _ring(ea, depth, zc, np.full(2, ye), sg * 1.85)
    lat = cen + np.stack([sg * 0.16 * es, 0 * sg, 0 * sg + 0.05], 1)
    parts["ears"] = np.stack([cen, cen + (0, -0.28 * es, 0), lat], 1).reshape(6, 3)

    nw, zn = 0.6 * fw, -0.7
    parts["neck"] = np.array([(-nw, chin - 0.7, zn), (-nw * 1.1, chin + 2.5, zn), (nw * 1.1, chin + 2.5, zn),
                              (nw, chin - 0.7, zn)])  # fmt: skip
    parts["shoulders"] = np.array([(-nw, chin + 0.8, zn - 0.1), (-2.6, chin + 1.3, -0.8), (-3.0, chin + 3.2, -0.8),
                                   (3.0, chin + 3.2, -0.8), (2.6, chin + 1.3, -0.8),
                                   (nw, chin + 0.8, zn - 0.1)])  # fmt: skip

    if idn.beard_style != "none":
        parts["beard"] = _beard_points(q, idn.beard_style)
    if idn.glasses:
        parts.update(_glasses_points(q, idn, ea, ye, zc, depth))
    if idn.mole is not None:
        i, j, m, w0, w1 = idn.mole
        parts["mole"] = (q[i] * w0 + q[j] * w1 + q[m] * (1 - w0 - w1))[None]
    if idn.freckles:
        tri_l, tri_r = q[[31, 3, 41]], q[[35, 13, 46]]
        parts["freckles"] = np.concatenate([_FRECKLES @ tri_l, _FRECKLES @ tri_r])
    parts["center"] = np.array([(0.0, 0.2, -0.6)])  # center of the shading ellipsoid

    names = list(parts)
    sizes = np.cumsum([68] + [len(parts[n]) for n in names])
    rot = _rotation(yaw, pitch, roll)
    xy = (np.concatenate([q, *parts.values()]) @ rot[:2].T) * scale
    w5 = _five_centroid_weights()
    five, five0 = w5 @ xy[:68], w5 @ idn.shape[:, :2]
    off = np.array([_S / 2, _EYE_Y + five0[1] * scale]) + shift - five
    lo2, hi2 = xy[:68].min(0) + off, xy[:68].max(0) + off
    off += np.maximum(1.0 - lo2, 0) - np.maximum(hi2 - (_S - 2.0), 0)  # keep every landmark inside the crop
    xy += off
    out = {n: xy[sizes[i] : sizes[i + 1]] for i, n in enumerate(names)}
    out["down"] = rot[:2, 1]  # image direction of the head's "down" axis
    return xy[:68], out, teeth, ears_visible


def _beard_points(q: np.ndarray, kind: str) -> np.ndarray:
    """Beard outline (3D, units) from the posed landmarks ``q [68, 3]``."""
    d = np.array([0.0, 0.05, 0.0])
    under_nose = [q[31] + (-0.05, 0.04, 0), q[33] + (0, 0.05, 0), q[35] + (0.05, 0.04, 0)]
    if kind == "mustache":
        return np.array([*under_nose, q[54] + (0.05, 0.03, 0), q[53] - d * 0.3, q[51] - d * 0.3, q[49] - d * 0.3,
                         q[48] + (-0.05, 0.03, 0)])  # fmt: skip
    if kind == "goatee":
        return np.array([*under_nose, q[54] + (0.07, 0.02, 0), q[54] * 0.4 + q[10] * 0.6, q[9] + d, q[8] + d,
                         q[7] + d, q[48] * 0.4 + q[6] * 0.6, q[48] + (-0.07, 0.02, 0)])  # fmt: skip
    jaw = q[2:15] + d
    if kind == "chin_strap":
        mc = q[[48, 54]].mean(0)
        return np.concatenate([jaw, (q[12:3:-1] * 0.78 + mc * 0.22)])
    cheek_r, cheek_l = q[14] * 0.62 + q[54] * 0.38 - (0, 0.18, 0), q[2] * 0.62 + q[48] * 0.38 - (0, 0.18, 0)
    return np.concatenate([jaw, [cheek_r, *under_nose[::-1], cheek_l]])  # full beard and stubble


def _glasses_points(q: np.ndarray, idn: _Identity, ea: float, ye: float, zc: float,
                    depth: float) -> dict[str, np.ndarray]:  # fmt: skip
    """Frames in a plane in front of the eyes, a bridge, and arms running to the ear points (all 3D, units)."""
    gw, gh = idn.frame_size
    t = np.linspace(0, 2 * math.pi, 16, endpoint=False)
    if idn.glasses == 1:  # round
        ring = np.stack([np.cos(t) * gw * 0.9, np.sin(t) * gh * 1.1, np.zeros_like(t)], 1)
    else:  # rectangular: a superellipse
        ct, st = np.cos(t), np.sin(t)
        ring = np.stack([np.sign(ct) * np.abs(ct) ** 0.4 * gw, np.sign(st) * np.abs(st) ** 0.4 * gh, 0 * t], 1)
    out = {}
    for name, idx, sgn in (("lens_l", slice(36, 42), -1.0), ("lens_r", slice(42, 48), 1.0)):
        c = q[idx].mean(0) + (0, 0.03, 0.0)
        c[2] = 0.3
        out[name] = ring + c
        ear = _ring(np.array(ea), np.array(depth), zc, ye, sgn * 1.7)
        out[name + "_arm"] = np.array([c + (sgn * gw, -gh * 0.5, 0), ear])
    out["bridge"] = np.array([out["lens_l"][0], (0, q[27, 1] + 0.02, 0.35), out["lens_r"][8]])
    return out


def _clip_disc(img: np.ndarray, convex: np.ndarray, c: np.ndarray, r: float, color: np.ndarray) -> None:
    """Fill the part of the disc (``c``, ``r``) that lies inside the ``convex`` float32 polygon."""
    area, inter = cv2.intersectConvexConvex(convex, (_UNIT_CIRCLE * r + c).astype(np.float32))
    if area > 0:
        _poly(img, inter[:, 0], color)


def _eye(img: np.ndarray, p: np.ndarray, idn: _Identity, gaze: np.ndarray, lash: np.ndarray) -> None:
    """Eye from its 6 landmarks (corner, 2 upper, corner, 2 lower): sclera, then iris and pupil clipped to the lids."""
    upper, lower = _chaikin(p[0:4]), _chaikin(p[[3, 4, 5, 0]])
    poly = np.concatenate([upper, lower[1:-1]])
    _poly(img, poly, np.array((236.0, 230.0, 224.0)))
    hull = cv2.convexHull(poly.astype(np.float32))[:, 0]
    width = float(np.linalg.norm(p[3] - p[0]))
    center = p.mean(0) + gaze * (0.18 * width, 0.08 * width)
    r = idn.iris_size * width
    _clip_disc(img, hull, center, r, idn.iris)
    _clip_disc(img, hull, center, r * 0.72, idn.iris * 0.75)
    _clip_disc(img, hull, center, r * 0.42, np.array((12.0, 10.0, 10.0)))
    _clip_disc(img, hull, center - r * 0.3, max(r * 0.2, 0.6), np.array((250.0, 250.0, 250.0)))
    _line(img, upper, lash, 1)


def _mouth(img: np.ndarray, lm: np.ndarray, idn: _Identity, teeth: bool) -> None:
    up_out, low_out = _chaikin(lm[48:55], 1), _chaikin(lm[[54, 55, 56, 57, 58, 59, 48]], 1)
    up_in, low_in = lm[60:65], lm[[64, 65, 66, 67, 60]]
    lip = idn.lip
    opening = float(np.max(low_in[1:4, 1] - up_in[3:0:-1, 1]))
    _poly(img, np.concatenate([up_out, low_out[1:-1]]), lip * 1.05)
    if opening > 0.8:
        _poly(img, np.concatenate([up_in, low_in[1:-1]]), np.array((55, 18, 24)))
        if teeth:
            h = min(opening * 0.5, 0.06 * float(np.linalg.norm(lm[54] - lm[48])) + 1.5)
            _poly(img, np.concatenate([up_in, up_in[::-1] + (0, h)]), np.array((232, 226, 212)))
        _poly(img, np.concatenate([low_out, low_in[::-1]]), lip * 1.1)
        _poly(img, np.concatenate([up_out, up_in[::-1]]), lip * 0.95)
    else:
        _poly(img, np.concatenate([low_out, up_in]), lip * 1.12)
        _line(img, _chaikin(up_in, 1), lip * 0.5, 1)


def _paint(
    idn: _Identity,
    lm: np.ndarray,
    parts: dict[str, np.ndarray],
    teeth: bool,
    ears_visible: np.ndarray,
    rng: np.random.Generator,
    bg: np.ndarray,
    scale: float,
    light_x: float,
    bank: np.ndarray,
) -> np.ndarray:
    """Draw the face over ``bg`` (uint8, modified in place) from projected points; returns it.

    ``light_x``: horizontal component of the light direction (the nose shadow falls on the other side).
    """
    img, skin, hair, style = bg, idn.skin, idn.hair, _STYLES[idn.style]
    _poly(img, parts["shoulders"], rng.uniform(0, 255, 3))  # clothing: nuisance

    def ears() -> None:
        e = parts["ears"]
        for i in range(2):
            if ears_visible[i]:
                cen, top, lat = e[3 * i : 3 * i + 3]
                ax = (max(int(np.linalg.norm(lat - cen) * _SHIFT), 8), max(int(np.linalg.norm(top - cen) * _SHIFT), 8))
                angle = math.degrees(math.atan2(top[0] - cen[0], cen[1] - top[1]))
                cv2.ellipse(img, tuple(_fx(cen)), ax, angle, 0, 360, _col(skin * 0.9), -1, _AA, 4)
                if idn.earrings:
                    _disc(img, cen + (cen - top) * 1.1, 0.06 * scale, np.array((225, 190, 80)))

    if "tail" in parts:
        _poly(img, parts["tail"], hair * 0.9)
    if style is None or style.over_ears:
        ears()
    if style is not None:  # the silhouette of the hair shell, behind the face
        hull = cv2.convexHull(parts["hair"].astype(np.float32))[:, 0]
        _poly(img, hull, hair)
        if style.bumpy:
            for pt in hull[:: max(1, len(hull) // 10)]:
                _disc(img, pt, 0.22 * scale, hair)
        if not style.over_ears:
            ears()
    _poly(img, parts["neck"], skin * 0.78)
    _poly(img, parts["face"], skin)
    for pt in parts.get("freckles", ()):
        _disc(img, pt, 0.022 * scale, skin * 0.72)
    if "mole" in parts:
        _disc(img, parts["mole"][0], 0.035 * scale, skin * 0.35)
    if "beard" in parts:
        if idn.beard_style == "stubble":  # speckled: a noise texture gates the beard color
            mask = np.zeros(img.shape[:2], np.uint8)
            cv2.fillPoly(mask, [_fx(parts["beard"])], 150, _AA, 4)
            ox, oy = rng.integers(0, _S, 2)
            mask[bank[oy : oy + _S, ox : ox + _S, 0] < -0.2] = 0
            a = mask[..., None].astype(np.uint16)
            img[:] = ((img * (255 - a) + idn.beard.astype(np.uint16) * a) // 255).astype(np.uint8)
        else:
            _poly(img, parts["beard"], idn.beard)

    if "streaks" in parts:  # combed strands from the hairline
        n = len(parts["streaks"]) // 2
        segs = np.stack([parts["streaks"][:n], parts["streaks"][n:]], 1)
        cv2.polylines(img, list(_fx(segs)), False, _col(hair * 0.78), 1, _AA, 4)
    # nose: the side away from the light in shadow, alar crease, nostrils, lit tip
    wing, eye = (31, 39) if light_x > 0 else (35, 42)
    _poly(img, np.stack([lm[27], lm[30], lm[33], lm[wing], lm[wing] * 0.7 + lm[eye] * 0.3]), skin * 0.9)
    _line(img, _chaikin(lm[[31, 32, 33, 34, 35]], 1), skin * 0.68, 1)
    for i in (32, 34):
        _disc(img, lm[i] * 0.75 + lm[33] * 0.25 - (0, 0.01 * scale), 0.045 * scale, skin * 0.35)
    _disc(img, lm[30], 0.06 * scale, np.minimum(skin * 1.1 + 8, 255))

    lash = np.array((25, 18, 15)) * (1 - idn.lash) + skin * 0.45 * idn.lash
    gaze = rng.uniform(-1, 1, 2)
    _eye(img, lm[36:42], idn, gaze, lash)
    _eye(img, lm[42:48], idn, gaze, lash)
    down = parts["down"] / max(np.linalg.norm(parts["down"]), 1e-6)
    for brow in (lm[21:16:-1], lm[22:27]):  # inner -> outer
        top = _chaikin(brow, 1)
        prof = _lin(1.0, 0.45, len(top))[:, None] * (idn.brow_thick * scale)
        _poly(img, np.concatenate([top, (top + prof * down)[::-1]]), idn.brow)
    _mouth(img, lm, idn, teeth)
    if "front" in parts:
        _poly(img, parts["front"], hair * 0.95)
    if idn.glasses:
        th = 2 if idn.glasses == 3 else 1
        for side, vis in (("lens_l", ears_visible[0]), ("lens_r", ears_visible[1])):
            _line(img, parts[side], idn.frame, th, closed=True)
            if vis:
                _line(img, parts[side + "_arm"], idn.frame, th)
        _line(img, parts["bridge"], idn.frame, th)
    return img


class _Light(NamedTuple):
    lx: float  # unit direction toward the light (x right, y down, z toward the camera)
    ly: float
    lz: float
    ambient: float  # share of light that does not depend on the surface normal
    cast: np.ndarray  # float32 [3] per-channel gain: white balance and exposure
    falloff: tuple[float, float]  # uneven illumination across the frame: (direction in rad, relative change)


def _draw_light(rng: np.random.Generator) -> _Light:
    az, tilt = rng.uniform(0, 2 * math.pi), rng.uniform(0.0, 0.85)
    ambient = rng.uniform(0.4, 0.7)
    cast = np.exp(rng.normal(0, 0.06, 3)).clip(0.85, 1.15) * rng.uniform(0.75, 1.2)
    falloff = (rng.uniform(0, 2 * math.pi), rng.uniform(0.0, 0.5))
    lx, ly = tilt * math.cos(az), tilt * math.sin(az)
    return _Light(lx, ly, math.sqrt(1 - tilt * tilt), ambient, cast.astype(np.float32), falloff)


def _light(img: np.ndarray, bg: np.ndarray, parts: dict[str, np.ndarray], scale: float, light: _Light) -> np.ndarray:
    """Directional shading on the head (an ellipsoid normal field), a softer ramp on the background, uneven
    illumination across the frame, a color cast.

    ``img`` uint8 with the face, ``bg`` the background alone; returns float32 [S, S, 3] in 0-255.
    """
    xx, yy = _grid(4)  # shading is smooth: compute it at 1/4 resolution and upsample
    lx, ly, lz, ambient, cast, (fa, fs) = light
    cx, cy = (float(c) for c in parts["center"][0])  # Python floats keep the arithmetic in float32
    u, v = (xx - cx) / (1.45 * scale), (yy - cy) / (2.3 * scale)
    r2 = u * u + v * v
    inv = 1.0 / np.sqrt(np.maximum(r2, 1.0))
    diffuse = np.maximum((u * lx + v * ly) * inv + np.sqrt(np.maximum(1.0 - r2, 0.0)) * lz, 0.0)
    falloff = 1.0 + fs * ((xx - _S / 2) * math.cos(fa) + (yy - _S / 2) * math.sin(fa)) / _S
    head = cv2.resize((ambient + (1 - ambient) * diffuse) * falloff, (_S, _S), interpolation=cv2.INTER_LINEAR)
    ramp = cv2.resize((1.0 + 0.25 * ((xx - _S / 2) * lx + (yy - _S / 2) * ly) / _S) * falloff, (_S, _S))
    fg = cv2.cvtColor(cv2.absdiff(img, bg), cv2.COLOR_RGB2GRAY) > 0
    shade = np.where(fg, head, ramp)
    shade3 = cv2.merge([shade * float(c) for c in cast])  # numpy broadcasting over 3 channels is slow
    return cv2.multiply(img, shade3, dtype=cv2.CV_32F)


def _spoof(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Print/replay artifacts, 1-3 of them, none of which moves pixels. ``img`` float32 [S, S, 3] in 0-255."""
    xx, yy = _grid()
    chosen = set(rng.choice(6, size=int(rng.integers(1, 4)), replace=False).tolist())
    if 0 in chosen:  # reduced dynamic range (+ a tint of the medium)
        lo, hi = rng.uniform(35, 75), rng.uniform(150, 210)
        img = lo + img * ((hi - lo) / 255.0) * rng.uniform(0.93, 1.07, 3).astype(np.float32)
    if 1 in chosen:  # color banding
        step = 255.0 / rng.integers(4, 10)
        img = np.round(img / step) * step
    if 2 in chosen:  # paper / screen border near one or two edges, the real scene beyond it
        inner = rng.uniform(0, 255, 3) if rng.random() < 0.5 else (rng.choice([242.0, 12.0]),) * 3
        outer = rng.uniform(0, 255, 3)
        for edge in rng.choice(4, size=int(rng.integers(1, 3)), replace=False):
            d, w = int(rng.integers(0, 8)), int(rng.integers(4, 12))
            sl_in, sl_out = [slice(None), slice(None)], [slice(None), slice(None)]
            ax, far = edge % 2, edge >= 2
            sl_in[ax] = slice(_S - d - w, _S - d) if far else slice(d, d + w)
            sl_out[ax] = slice(_S - d, _S) if far else slice(0, d)
            img[tuple(sl_in)] = inner
            img[tuple(sl_out)] = outer
    if 3 in chosen:  # moire: two nearly aligned fine gratings beat against each other
        a, f = rng.uniform(0, math.pi), rng.uniform(0.28, 0.45)
        g1 = np.sin((xx * math.cos(a) + yy * math.sin(a)) * (2 * math.pi * f))
        a2, f2 = a + rng.uniform(0.03, 0.2), f * rng.uniform(0.92, 1.08)
        g2 = np.sin((xx * math.cos(a2) + yy * math.sin(a2)) * (2 * math.pi * f2) + rng.uniform(0, 6.3))
        img = img + (rng.uniform(18, 36) * g1 * g2)[..., None] * rng.uniform(0.5, 1.0, 3).astype(np.float32)
    if 4 in chosen:  # glare: a bright elliptical reflection
        cx, cy = rng.uniform(0, _S, 2)
        sx, sy = rng.uniform(6, 35, 2)
        blob = np.exp(-0.5 * (((xx - cx) / sx) ** 2 + ((yy - cy) / sy) ** 2))
        img = img + (rng.uniform(70, 180) * blob)[..., None]
    if 5 in chosen:  # recapture blur
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.9, 1.8))
    return img


def _render(
    idn: _Identity, rng: np.random.Generator, spoof: bool, bank: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int]:
    """One image of ``idn`` with nuisance drawn from ``rng``: (uint8 [S, S, 3] RGB, landmarks float32 [68, 2], expr)."""
    u = rng.uniform
    expression = int(rng.integers(len(EXPRESSIONS)))
    yaw, pitch, roll = math.radians(u(-30, 30)), math.radians(u(-15, 15)), math.radians(u(-10, 10))
    scale = _PX_PER_UNIT * u(0.8, 1.1)
    k = u(0.75, 1.0) if expression else 0.0
    lm, parts, teeth, ears_visible = _geometry(idn, expression, k, yaw, pitch, roll, scale, u(-4, 4, 2))
    bg = _background(rng)
    light = _draw_light(rng)
    face = _paint(idn, lm, parts, teeth, ears_visible, rng, bg.copy(), scale, light.lx, bank)
    img = _light(face, bg, parts, scale, light)
    ox, oy = rng.integers(0, _S, 2)
    img += bank[oy : oy + _S, ox : ox + _S] * np.float32(u(0.0, 6.0))
    if spoof:
        img = _spoof(img, rng)
    elif rng.random() < 0.25:  # live images get mild blur too, so blur alone does not mean "spoof"
        img = cv2.GaussianBlur(img, (0, 0), u(0.3, 0.8))
    out = np.clip(img, 0, 255).astype(np.uint8)
    gamma = math.exp(rng.uniform(-0.3, 0.3))  # camera response: contrast/brightness of the tone curve
    out = cv2.LUT(out, _gamma_lut(round(gamma, 2)))
    return out, lm.astype(np.float32), expression


@lru_cache(maxsize=128)
def _gamma_lut(gamma: float) -> np.ndarray:
    return np.clip(255.0 * (np.arange(256) / 255.0) ** gamma + 0.5, 0, 255).astype(np.uint8)


class SyntheticFaces(torch.utils.data.Dataset):
    """Procedural faces with every label: identity, 68 landmarks (iBUG), expression, spoof.

    Image ``i`` belongs to identity ``i // images_per_identity``. Splits draw identities from independent streams, so
    "val"/"test" identities are disjoint from "train". Held-out splits carry LFW-style verification ``pairs``
    (int64 ``[P, 3]``: index, index, same) over live images, each tenth half same / half different.
    """

    name: str = "synthetic"
    verification_name: str = "recognition"

    def __init__(
        self,
        split: str,
        num_identities: int,
        images_per_identity: int,
        seed: int = 0,
        spoof_fraction: float = 0.25,
        num_pairs: int = 3000,
        transform: Callable | None = None,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"SyntheticFaces: split must be one of {sorted(SPLITS)}, got {split!r}")
        if num_identities < 1 or images_per_identity < 1:
            raise ValueError(
                f"SyntheticFaces: num_identities and images_per_identity must be >= 1, got {num_identities}, "
                f"{images_per_identity}"
            )
        if seed < 0:
            raise ValueError(f"SyntheticFaces: seed must be >= 0, got {seed}")
        if not 0.0 <= spoof_fraction <= 1.0:
            raise ValueError(f"SyntheticFaces: spoof_fraction must be in [0, 1], got {spoof_fraction}")
        self.split, self.seed, self.transform = split, int(seed), transform
        self.num_identities, self.images_per_identity = int(num_identities), int(images_per_identity)
        self.spoof_fraction = float(spoof_fraction)
        self.layout: LandmarkLayout = IBUG68
        self.num_landmarks: int = IBUG68.num_points
        self.num_classes: int = self.num_identities
        self._identities: dict[int, _Identity] = {}
        self.pairs: torch.Tensor | None = None if split == "train" else self._make_pairs(int(num_pairs))

    def __len__(self) -> int:
        return self.num_identities * self.images_per_identity

    def _rng(self, *key: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence((self.seed, SPLITS[self.split], *key)))

    def _identity(self, k: int) -> _Identity:
        idn = self._identities.get(k)
        if idn is None:
            if len(self._identities) > 10000:  # bound memory in long-lived workers
                self._identities.clear()
            idn = self._identities[k] = _sample_identity(self._rng(_TAG_IDENTITY, k))
        return idn

    def _image_rng(self, index: int) -> tuple[np.random.Generator, bool]:
        if not 0 <= index < len(self):
            raise IndexError(f"SyntheticFaces: index {index} out of range [0, {len(self)})")
        rng = self._rng(_TAG_IMAGE, *divmod(index, self.images_per_identity))
        return rng, bool(rng.random() < self.spoof_fraction)  # first draw: cheap live/spoof lookup for pairs

    def is_spoof(self, index: int) -> bool:
        """Whether image ``index`` is a spoof, without rendering it."""
        return self._image_rng(index)[1]

    def render(self, index: int) -> tuple[np.ndarray, np.ndarray, int, int, int]:
        """(image uint8 [112, 112, 3] RGB, landmarks float32 [68, 2] OpenCV px, identity, expression, spoof)."""
        index = int(index)
        rng, spoof = self._image_rng(index)
        identity = index // self.images_per_identity
        image, landmarks, expression = _render(self._identity(identity), rng, spoof, _noise_bank(self.seed))
        return image, landmarks, identity, expression, int(spoof)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image, landmarks, identity, expression, spoof = self.render(index)
        if self.transform is not None:
            image, landmarks = self.transform(image, landmarks, self.layout.flip_map)
        return make_sample(image, index=int(index), num_landmarks=self.num_landmarks, identity=identity,
                           landmarks=landmarks, expression=expression, spoof=spoof)  # fmt: skip

    def _make_pairs(self, num_pairs: int) -> torch.Tensor:
        """``num_pairs`` distinct live pairs; in every tenth (the 10 verification folds) half same, half different."""
        if num_pairs < 20:
            raise ValueError(f"SyntheticFaces: num_pairs must be >= 20 (10 folds x same/different), got {num_pairs}")
        ipi = self.images_per_identity
        live = [[k * ipi + j for j in range(ipi) if not self.is_spoof(k * ipi + j)] for k in range(self.num_identities)]
        live = [ims for ims in live if ims]
        fold_sizes = np.bincount(np.arange(num_pairs) * 10 // num_pairs, minlength=10)
        n_same = int((fold_sizes // 2).sum())
        n_diff = num_pairs - n_same
        same_pool = [(a, b) for ims in live for x, a in enumerate(ims) for b in ims[x + 1 :]]
        n_live = sum(len(ims) for ims in live)
        diff_possible = n_live * (n_live - 1) // 2 - len(same_pool)
        if len(same_pool) < n_same or diff_possible < n_diff:
            raise ValueError(
                f"SyntheticFaces(split={self.split!r}): {num_pairs} pairs need {n_same} same / {n_diff} different "
                f"distinct live pairs, but only {len(same_pool)} / {diff_possible} exist; raise images_per_identity "
                f"(now {ipi}) or num_identities (now {self.num_identities}), or lower num_pairs or spoof_fraction "
                f"(now {self.spoof_fraction})"
            )
        rng = self._rng(_TAG_PAIRS)
        same = [same_pool[i] for i in rng.choice(len(same_pool), size=n_same, replace=False)]
        diff: dict[tuple[int, int], None] = {}  # insertion-ordered, so the result is reproducible
        while len(diff) < n_diff:
            ka, kb = rng.choice(len(live), size=2, replace=False)
            a, b = live[ka][rng.integers(len(live[ka]))], live[kb][rng.integers(len(live[kb]))]
            diff[(min(a, b), max(a, b))] = None
        diff_list = list(diff)
        out: list[tuple[int, int, int]] = []
        for m in fold_sizes:
            block = [(*same.pop(), 1) for _ in range(m // 2)] + [(*diff_list.pop(), 0) for _ in range(m - m // 2)]
            rng.shuffle(block)
            out += block
        return torch.tensor(out, dtype=torch.int64)


def raw_pixel_verification(dataset: SyntheticFaces) -> float:
    """10-fold verification accuracy of cosine similarity between raw pixel vectors on ``dataset.pairs``.

    The difficulty floor a learned embedding must beat; renders without ``dataset.transform``.
    """
    # the same metric code as the model's accuracy; imported here so that data does not import training at load time
    from facetx.training.metrics import cosine_scores, verification_accuracy

    if dataset.pairs is None:
        raise ValueError(f"raw_pixel_verification: split {dataset.split!r} has no verification pairs")
    pairs = dataset.pairs
    used = torch.unique(pairs[:, :2])
    images = np.stack([dataset.render(int(i))[0] for i in used])  # uint8 keeps memory at 37 kB per image
    pos = torch.full((len(dataset),), -1, dtype=torch.int64)
    pos[used] = torch.arange(len(used))
    scores = []
    for chunk in torch.split(pairs, 512):
        idx = torch.unique(chunk[:, :2])
        emb = torch.from_numpy(images[pos[idx].numpy()].reshape(len(idx), -1)).float() / 255.0
        local = torch.searchsorted(idx, chunk[:, :2].contiguous())
        scores.append(cosine_scores(emb, local))
    return verification_accuracy(torch.cat(scores), pairs[:, 2])[0]
