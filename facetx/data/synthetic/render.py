"""Drawing: background, face parts, lighting, spoof artifacts; one image with its landmarks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import NamedTuple

import cv2
import numpy as np

from facetx.data.contract import EXPRESSIONS, IMAGE_SIZE
from facetx.data.synthetic.geometry import PX_PER_UNIT, fast_linspace, head_geometry
from facetx.data.synthetic.identity import HAIR_STYLES, Identity

# cv2 sub-pixel drawing: coordinates are fixed point with _SUBPIXEL_BITS fractional bits (cv2's ``shift`` argument),
# i.e. in units of 1 / _SUBPIXEL_SCALE px
_SUBPIXEL_BITS = 4
_SUBPIXEL_SCALE = float(1 << _SUBPIXEL_BITS)  # fixed-point units per pixel
_AA = cv2.LINE_AA
_CROP_WH = (IMAGE_SIZE, IMAGE_SIZE)  # cv2 (width, height) of the image
_CROP_CENTER = IMAGE_SIZE / 2  # px, both axes
_UNIT_CIRCLE = np.stack([np.cos(np.arange(16) * math.pi / 8), np.sin(np.arange(16) * math.pi / 8)], 1)


def _to_fixed_point(p: np.ndarray) -> np.ndarray:
    """Float pixel coordinates -> int32 cv2 coordinates with ``_SUBPIXEL_BITS`` fractional bits."""
    return np.rint(p * _SUBPIXEL_SCALE).astype(np.int32)


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


def _col(c: np.ndarray) -> tuple[float, float, float]:
    return (float(min(max(c[0], 0), 255)), float(min(max(c[1], 0), 255)), float(min(max(c[2], 0), 255)))


def _poly(img: np.ndarray, pts: np.ndarray, color: np.ndarray) -> None:
    cv2.fillPoly(img, [_to_fixed_point(pts)], _col(color), _AA, _SUBPIXEL_BITS)


def _line(img: np.ndarray, pts: np.ndarray, color: np.ndarray, thickness: int = 1, closed: bool = False) -> None:
    cv2.polylines(img, [_to_fixed_point(pts)], closed, _col(color), thickness, _AA, _SUBPIXEL_BITS)


def _disc(img: np.ndarray, c: np.ndarray, r: float, color: np.ndarray) -> None:
    center = (int(round(c[0] * _SUBPIXEL_SCALE)), int(round(c[1] * _SUBPIXEL_SCALE)))
    cv2.circle(img, center, max(int(r * _SUBPIXEL_SCALE), 8), _col(color), -1, _AA, _SUBPIXEL_BITS)


@lru_cache(maxsize=4)
def _grid(step: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-center coordinates (x, y) of the crop, float32 [112 / step, 112 / step], sampled every ``step`` px."""
    c = np.arange(IMAGE_SIZE // step, dtype=np.float32) * step + (step - 1) / 2
    yy, xx = np.meshgrid(c, c, indexing="ij")
    return xx, yy


def _background(rng: np.random.Generator) -> np.ndarray:
    """Random background, uint8 [112, 112, 3]: flat, gradient, radial, blotchy texture, stripes, optional clutter."""
    c0, c1 = rng.uniform(0, 255, 3).astype(np.float32), rng.uniform(0, 255, 3).astype(np.float32)
    kind = rng.integers(5)
    if kind == 0:
        bg = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
        bg[:] = c0.astype(np.uint8)
    elif kind in (1, 2):  # smooth: compute at 1/4 resolution, upsample
        xx, yy = _grid(4)
        if kind == 1:
            a = rng.uniform(0, 2 * math.pi)
            t = ((xx - _CROP_CENTER) * math.cos(a) + (yy - _CROP_CENTER) * math.sin(a)) / IMAGE_SIZE + 0.5
        else:
            cx, cy = rng.uniform(0, IMAGE_SIZE, 2)
            t = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) / (IMAGE_SIZE * rng.uniform(0.5, 1.2))
        small = c0 + np.clip(t, 0, 1)[..., None] * (c1 - c0)
        bg = cv2.resize(small, _CROP_WH, interpolation=cv2.INTER_LINEAR).astype(np.uint8)
    elif kind == 3:
        n = int(rng.integers(2, 9))
        small = rng.uniform(0, 255, (n, n, 3)).astype(np.float32)
        bg = np.clip(cv2.resize(small, _CROP_WH, interpolation=cv2.INTER_CUBIC), 0, 255).astype(np.uint8)
    else:
        xx, yy = _grid()
        a, f = rng.uniform(0, math.pi), rng.uniform(0.03, 0.25)
        t = np.sin((xx * math.cos(a) + yy * math.sin(a)) * (2 * math.pi * f)) * 0.5 + 0.5
        bg = (c0 + t[..., None] * (c1 - c0)).astype(np.uint8)
    for _ in range(int(rng.integers(0, 7)) if rng.random() < 0.5 else 0):
        color, (x0, y0, x1, y1) = _col(rng.uniform(0, 255, 3)), rng.uniform(-10, IMAGE_SIZE + 10, 4).astype(int)
        shape = rng.integers(3)
        if shape == 0:
            cv2.rectangle(bg, (x0, y0), (x1, y1), color, -1)
        elif shape == 1:
            cv2.circle(bg, (x0, y0), int(rng.integers(4, 30)), color, -1, _AA)
        else:
            cv2.line(bg, (x0, y0), (x1, y1), color, int(rng.integers(1, 6)), _AA)
    return bg


def _clip_disc(img: np.ndarray, convex: np.ndarray, c: np.ndarray, r: float, color: np.ndarray) -> None:
    """Fill the part of the disc (``c``, ``r``) that lies inside the ``convex`` float32 polygon."""
    area, inter = cv2.intersectConvexConvex(convex, (_UNIT_CIRCLE * r + c).astype(np.float32))
    if area > 0:
        _poly(img, inter[:, 0], color)


def _eye(img: np.ndarray, p: np.ndarray, idn: Identity, gaze: np.ndarray, lash: np.ndarray) -> None:
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


def _mouth(img: np.ndarray, lm: np.ndarray, idn: Identity, teeth: bool) -> None:
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


def paint_face(
    idn: Identity,
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
    img, skin, hair, style = bg, idn.skin, idn.hair, HAIR_STYLES[idn.style]
    _poly(img, parts["shoulders"], rng.uniform(0, 255, 3))  # clothing: nuisance

    def ears() -> None:
        e = parts["ears"]
        for i in range(2):
            if ears_visible[i]:
                cen, top, lat = e[3 * i : 3 * i + 3]
                ax = (
                    max(int(np.linalg.norm(lat - cen) * _SUBPIXEL_SCALE), 8),
                    max(int(np.linalg.norm(top - cen) * _SUBPIXEL_SCALE), 8),
                )
                angle = math.degrees(math.atan2(top[0] - cen[0], cen[1] - top[1]))
                cv2.ellipse(
                    img, tuple(_to_fixed_point(cen)), ax, angle, 0, 360, _col(skin * 0.9), -1, _AA, _SUBPIXEL_BITS
                )
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
            cv2.fillPoly(mask, [_to_fixed_point(parts["beard"])], 150, _AA, _SUBPIXEL_BITS)
            ox, oy = rng.integers(0, IMAGE_SIZE, 2)
            mask[bank[oy : oy + IMAGE_SIZE, ox : ox + IMAGE_SIZE, 0] < -0.2] = 0
            a = mask[..., None].astype(np.uint16)
            img[:] = ((img * (255 - a) + idn.beard.astype(np.uint16) * a) // 255).astype(np.uint8)
        else:
            _poly(img, parts["beard"], idn.beard)

    if "streaks" in parts:  # combed strands from the hairline
        n = len(parts["streaks"]) // 2
        segs = np.stack([parts["streaks"][:n], parts["streaks"][n:]], 1)
        cv2.polylines(img, list(_to_fixed_point(segs)), False, _col(hair * 0.78), 1, _AA, _SUBPIXEL_BITS)
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
        prof = fast_linspace(1.0, 0.45, len(top))[:, None] * (idn.brow_thick * scale)
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

    ``img`` uint8 with the face, ``bg`` the background alone; returns float32 [112, 112, 3] in 0-255.
    """
    xx, yy = _grid(4)  # shading is smooth: compute it at 1/4 resolution and upsample
    lx, ly, lz, ambient, cast, (fa, fs) = light
    cx, cy = (float(c) for c in parts["center"][0])  # Python floats keep the arithmetic in float32
    u, v = (xx - cx) / (1.45 * scale), (yy - cy) / (2.3 * scale)
    r2 = u * u + v * v
    inv = 1.0 / np.sqrt(np.maximum(r2, 1.0))
    diffuse = np.maximum((u * lx + v * ly) * inv + np.sqrt(np.maximum(1.0 - r2, 0.0)) * lz, 0.0)
    falloff = 1.0 + fs * ((xx - _CROP_CENTER) * math.cos(fa) + (yy - _CROP_CENTER) * math.sin(fa)) / IMAGE_SIZE
    head = cv2.resize((ambient + (1 - ambient) * diffuse) * falloff, _CROP_WH, interpolation=cv2.INTER_LINEAR)
    ramp = cv2.resize(
        (1.0 + 0.25 * ((xx - _CROP_CENTER) * lx + (yy - _CROP_CENTER) * ly) / IMAGE_SIZE) * falloff, _CROP_WH
    )
    fg = cv2.cvtColor(cv2.absdiff(img, bg), cv2.COLOR_RGB2GRAY) > 0
    shade = np.where(fg, head, ramp)
    shade3 = cv2.merge([shade * float(c) for c in cast])  # numpy broadcasting over 3 channels is slow
    return cv2.multiply(img, shade3, dtype=cv2.CV_32F)


SPOOF_CUES = (0, 1, 2, 3, 4, 5)  # tone, banding, print edge, moire, glare, blur: the artifacts of _spoof
PRINT_EDGE = 2


def draw_spoof_cues(rng: np.random.Generator, cues: Sequence[int] = SPOOF_CUES) -> set[int]:
    """1-3 distinct artifacts of ``cues`` (fewer when ``cues`` has fewer); with the default, ``rng.choice(6, ...)``."""
    pool = np.asarray(cues, dtype=np.int64)
    if pool.size == 0:
        raise ValueError("draw_spoof_cues: cues must name at least one artifact")
    k = int(rng.integers(1, min(4, pool.size + 1)))
    return set(pool[rng.choice(pool.size, size=k, replace=False)].tolist())


def _spoof(
    img: np.ndarray, rng: np.random.Generator, chosen: set[int] | None = None, cues: Sequence[int] = SPOOF_CUES
) -> np.ndarray:
    """Print/replay artifacts, 1-3 of them drawn from ``cues``, none of which moves pixels. ``img`` float32
    [112, 112, 3] in 0-255.

    ``chosen``: force these artifacts (0 tone, 1 banding, 2 print edge, 3 moire, 4 glare, 5 blur) to measure a
    liveness model per cue; the random choice is drawn either way, so the rest of the draws stay the same. With the
    default ``cues`` the draws are those of ``rng.choice(6, ...)``: every default render stays the same."""
    xx, yy = _grid()
    drawn = draw_spoof_cues(rng, cues)
    chosen = drawn if chosen is None else chosen
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
            sl_in[ax] = slice(IMAGE_SIZE - d - w, IMAGE_SIZE - d) if far else slice(d, d + w)
            sl_out[ax] = slice(IMAGE_SIZE - d, IMAGE_SIZE) if far else slice(0, d)
            img[tuple(sl_in)] = inner
            img[tuple(sl_out)] = outer
    if 3 in chosen:  # moire: two nearly aligned fine gratings beat against each other
        a, f = rng.uniform(0, math.pi), rng.uniform(0.28, 0.45)
        g1 = np.sin((xx * math.cos(a) + yy * math.sin(a)) * (2 * math.pi * f))
        a2, f2 = a + rng.uniform(0.03, 0.2), f * rng.uniform(0.92, 1.08)
        g2 = np.sin((xx * math.cos(a2) + yy * math.sin(a2)) * (2 * math.pi * f2) + rng.uniform(0, 6.3))
        img = img + (rng.uniform(18, 36) * g1 * g2)[..., None] * rng.uniform(0.5, 1.0, 3).astype(np.float32)
    if 4 in chosen:  # glare: a bright elliptical reflection
        cx, cy = rng.uniform(0, IMAGE_SIZE, 2)
        sx, sy = rng.uniform(6, 35, 2)
        blob = np.exp(-0.5 * (((xx - cx) / sx) ** 2 + ((yy - cy) / sy) ** 2))
        img = img + (rng.uniform(70, 180) * blob)[..., None]
    if 5 in chosen:  # recapture blur
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.9, 1.8))
    return img


def paint_scene(
    idn: Identity,
    lm: np.ndarray,
    parts: dict[str, np.ndarray],
    teeth: bool,
    ears_visible: bool,
    rng: np.random.Generator,
    scale: float,
    bank: np.ndarray,
) -> np.ndarray:
    """The posed face on a fresh background, lit, with sensor grain: float32 [112, 112, 3] (0-255), before the
    spoof/blur/tone stages. Draws from ``rng`` in a fixed order (background, light, paint, grain offset, amount)."""
    bg = _background(rng)
    light = _draw_light(rng)
    face = paint_face(idn, lm, parts, teeth, ears_visible, rng, bg.copy(), scale, light.lx, bank)
    img = _light(face, bg, parts, scale, light)
    ox, oy = rng.integers(0, IMAGE_SIZE, 2)
    img += bank[oy : oy + IMAGE_SIZE, ox : ox + IMAGE_SIZE] * np.float32(rng.uniform(0.0, 6.0))
    return img


def render_face(
    idn: Identity, rng: np.random.Generator, spoof: bool, bank: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int]:
    """One image of ``idn``, nuisance drawn from ``rng``: (uint8 [112, 112, 3] RGB, landmarks float32 [68, 2], expr)."""
    u = rng.uniform
    expression = int(rng.integers(len(EXPRESSIONS)))
    yaw, pitch, roll = math.radians(u(-30, 30)), math.radians(u(-15, 15)), math.radians(u(-10, 10))
    scale = PX_PER_UNIT * u(0.8, 1.1)
    k = u(0.75, 1.0) if expression else 0.0
    lm, parts, teeth, ears_visible = head_geometry(idn, expression, k, yaw, pitch, roll, scale, u(-4, 4, 2))
    img = paint_scene(idn, lm, parts, teeth, ears_visible, rng, scale, bank)
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
