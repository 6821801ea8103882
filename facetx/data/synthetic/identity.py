"""Identity parameters (shape, colours, hair, accessories) and expression deformations of the generator."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from facetx.data.contract import EXPRESSIONS
from facetx.data.landmarks import IBUG68

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


class HairStyle(NamedTuple):
    """How a hair style is built (see :data:`HAIR_STYLES`; ``None`` there: shaved)."""

    vol: float  # hair shell thickness (units)
    y_cut: float  # lowest hair height (units below the eye line)
    fringe: bool = False
    bumpy: bool = False
    tail: bool = False  # a ponytail behind the neck
    over_ears: bool = False


HAIR_STYLES: dict[str, HairStyle | None] = {
    "shaved": None,
    "horseshoe": HairStyle(0.06, 0.35),
    "buzz": HairStyle(0.03, -0.1),
    "short": HairStyle(0.10, 0.0),
    "side_part": HairStyle(0.15, 0.1),
    "fringe": HairStyle(0.13, 0.2, fringe=True),
    "long": HairStyle(0.13, 3.6, over_ears=True),
    "curly": HairStyle(0.38, 0.5, bumpy=True, over_ears=True),
    "bob": HairStyle(0.18, 1.3, fringe=True, over_ears=True),
    "ponytail": HairStyle(0.06, 0.0, tail=True),
}
_STYLE_NAMES = tuple(HAIR_STYLES)
_STYLE_P = np.array([4, 6, 10, 16, 14, 12, 14, 8, 8, 8], dtype=np.float64)


@dataclass
class Identity:
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


def sample_identity(rng: np.random.Generator) -> Identity:
    """Draw one identity's parameters from ``rng``."""
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
    return Identity(
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


def expression_offsets(p: np.ndarray, expression: int, k: float) -> tuple[np.ndarray, float, bool]:
    """Deform neutral landmarks ``p [68, 3]`` by ``EXPRESSIONS[expression]`` at intensity ``k``.

    Returns (deformed copy, chin drop in units, whether teeth show).
    """
    q = p.copy()
    q[:, :2] += k * _expression_table()[expression]
    drop, teeth = _EXPRESSION_JAW.get(EXPRESSIONS[expression], (0.0, False))
    return q, drop * k * _EXPRESSION_GAIN, teeth
