"""A posed parametric 3D face -> projected 2D points in the 112x112 crop (landmarks and drawing outlines)."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from facetx.data.contract import IMAGE_SIZE
from facetx.data.landmarks import IBUG68
from facetx.data.synthetic.identity import HAIR_STYLES, Identity, expression_offsets

PX_PER_UNIT = 32.0  # pixels per unit (1 unit ~ distance between eye centers) at scale 1
_EYE_Y = 0.45 * IMAGE_SIZE  # eye line at frontal pose, scale 1


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


@lru_cache(maxsize=64)
def _unit_steps(n: int) -> np.ndarray:
    return np.linspace(0.0, 1.0, n)


def fast_linspace(a: float, b: float, n: int) -> np.ndarray:
    """``np.linspace(a, b, n)`` without its per-call overhead."""
    return a + (b - a) * _unit_steps(n)


@lru_cache(maxsize=1)
def _five_centroid_weights() -> np.ndarray:
    """[68] weights: ``w @ landmarks`` is the centroid of the 5 alignment points."""
    w = np.zeros(68)
    for g in IBUG68.five_point_groups:
        w[list(g)] += 1.0 / (5 * len(g))
    return w


_Y_TOP = -1.8  # skull vertex height
_SIDE = 1.66  # ring angle (~95 deg) of the face outline's sides; behind it: ears, hair
_BALD_STYLES = ("shaved", "horseshoe")  # no hair on top: the face outline runs up to the skull vertex
_FRECKLES = np.array(  # fixed barycentric weights on (nose side, cheek jaw point, lower eyelid) triangles
    [(0.6, 0.2, 0.2), (0.4, 0.3, 0.3), (0.3, 0.2, 0.5), (0.5, 0.1, 0.4), (0.25, 0.45, 0.3), (0.45, 0.4, 0.15)]
)


def _skull_f(y: np.ndarray, jaw_y: float) -> np.ndarray:
    """Relative width of the skull at height ``y`` (1 at the jaw top, 0 at the vertex)."""
    t = np.clip((jaw_y - y) / (jaw_y - _Y_TOP), 0.0, 1.0)
    return (1.0 - t**2.5) ** 0.4


def head_geometry(
    idn: Identity,
    expression: int,
    k: float,
    yaw: float,
    pitch: float,
    roll: float,
    scale: float,
    centroid_shift_px: np.ndarray,
) -> tuple[np.ndarray, dict[str, np.ndarray], bool, np.ndarray]:
    """Pose the identity's 3D face and project it.

    Returns (landmarks [68, 2] px, named point sets in px, teeth visible, which ears are visible [2]).
    ``scale`` is pixels per unit; ``centroid_shift_px`` the offset [2] in px of the 5-point centroid from its frontal
    place.
    """
    q, drop, teeth = expression_offsets(idn.shape, expression, k)
    chin = idn.chin_y + drop
    zc = 0.15 - idn.skull_depth  # center depth of the head cross-sections
    q[:17] = _jaw_contour(idn, chin, yaw)
    parts, hairline = _face_outline(idn, q, zc, yaw)
    parts.update(_hair_shell(idn, hairline, zc, yaw))
    parts["ears"], ears_visible, ear_radius, ear_y = _ears(idn, zc, yaw)
    parts.update(_neck_and_shoulders(idn.face_w, chin))
    parts.update(_marks_and_accessories(q, idn, ear_radius, ear_y, zc))
    parts["center"] = np.array([(0.0, 0.2, -0.6)])  # center of the shading ellipsoid
    landmarks, points = _project(q, parts, idn, _rotation(yaw, pitch, roll), scale, centroid_shift_px)
    return landmarks, points, teeth, ears_visible


def _jaw_contour(idn: Identity, chin: float, yaw: float) -> np.ndarray:
    """Jaw landmarks 0-16 [17, 3]: silhouettes of horizontal head sections (the contour slides around the head as it
    turns)."""
    fw, depth, jy = idn.face_w, idn.skull_depth, idn.jaw_y
    phi = fast_linspace(-math.pi / 2, math.pi / 2, 17)
    s, c = np.abs(np.sin(phi)), np.abs(np.cos(phi))
    a = fw * s ** (2 / idn.jaw_n)
    y = jy + (chin - jy) * c ** (2 / idn.jaw_n)
    b = depth * a / fw
    lo, hi = _visible_range(a, b, yaw)
    ang = np.where(phi < 0, np.maximum(lo, -1.75), np.minimum(hi, 1.75))  # clamped: the near side shows the ear
    ang[8] = 0.0
    return _ring(a, b, 0.15 + 0.12 * (y - jy) / (chin - jy) - b, y, ang)


def _skull_requests(idn: Identity, q: np.ndarray) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Points wanted on the skull surface: (name, heights, ring angles), the fringe or side swoop included."""
    hl_c, hl_t, rec = idn.hairline
    bald, style = idn.style in _BALD_STYLES, HAIR_STYLES[idn.style]
    kk = fast_linspace(1.0, -1.0, 11)
    hl_y = hl_c + (hl_t - hl_c) * np.abs(kk) ** 2.2 - rec * np.sin(math.pi * np.abs(kk)) ** 2
    side_ys = fast_linspace(idn.jaw_y, _Y_TOP if bald else hl_t, 6 if bald else 3)
    req = [("hairline", hl_y, kk * 1.3), ("right", side_ys, np.full(len(side_ys), _SIDE)),
           ("left", side_ys[::-1], np.full(len(side_ys), -_SIDE))]  # fmt: skip
    if style is not None and style.fringe:  # ragged fringe from the hairline down to just above the brows
        y_f = q[17:27, 1].min() - 0.1 + 0.05 * (np.arange(11) % 2)
        req += [("front_top", hl_y - 0.05, kk * 1.3), ("front_bottom", y_f[::-1], -kk * 1.2)]
    elif idn.style == "side_part":  # a swoop from the parting across the forehead
        ks = fast_linspace(0.35, -1.0, 8) * idn.part
        yu = hl_c + (hl_t - hl_c) * np.abs(ks) ** 2.2
        dip = 0.35 * (np.abs(ks - 0.35 * idn.part) / 1.35) ** 1.5
        req += [("front_top", yu - 0.05, ks * 1.3), ("front_bottom", (yu + dip)[::-1], ks[::-1] * 1.3)]
    return req


def _skull_points(idn: Identity, q: np.ndarray, zc: float, yaw: float) -> dict[str, np.ndarray]:
    """The skull surface points of :func:`_skull_requests`, all in one call, ring angles clipped to the visible arc."""
    req = _skull_requests(idn, q)
    ys_all, phi_all = np.concatenate([r[1] for r in req]), np.concatenate([r[2] for r in req])
    f = _skull_f(ys_all, idn.jaw_y)
    fw, depth = idn.face_w, idn.skull_depth
    lo, hi = _visible_range(fw * f, depth * f, yaw)
    surf = _ring(fw * f, depth * f, zc, ys_all, np.clip(phi_all, lo, hi))
    return dict(zip([r[0] for r in req], np.split(surf, np.cumsum([len(r[1]) for r in req])[:-1]), strict=True))


def _face_outline(idn: Identity, q: np.ndarray, zc: float, yaw: float) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The face outline (jaw, temples, then the hairline or the skull top) and the hair over the forehead ("front")
    if the style has one; also the hairline points [11, 3] (the hair streaks start there)."""
    got = _skull_points(idn, q, zc, yaw)
    hairline = got["hairline"]
    if idn.style in _BALD_STYLES:
        face = [q[:17], got["right"], got["left"]]
    else:
        face = [q[:17], got["right"], hairline, got["left"]]
    parts: dict[str, np.ndarray] = {"face": np.concatenate(face)}
    if "front_top" in got:
        parts["front"] = np.concatenate([got["front_top"], got["front_bottom"]])
    return parts, hairline


def _hair_shell(idn: Identity, hairline: np.ndarray, zc: float, yaw: float) -> dict[str, np.ndarray]:
    """The hair shell: the skull grown by the style's volume (its silhouette hull is drawn behind the face), a ponytail,
    combed streaks from the ``hairline``. Empty when shaved."""
    style = HAIR_STYLES[idn.style]
    if style is None:
        return {}
    fw, depth, jy = idn.face_w, idn.skull_depth, idn.jaw_y
    vol, y_cut = style.vol, style.y_cut
    ys = fast_linspace(_Y_TOP - 1.2 * vol + 0.02, min(y_cut, jy), 9)
    f = _skull_f(jy - (jy - ys) / (1 + vol), jy)
    aa, bb = fw * f * (1 + vol) + 0.04, depth * f * (1 + vol)
    if idn.style == "horseshoe":
        keep = ys > -0.7
        ys, aa, bb = ys[keep], aa[keep], bb[keep]
    if y_cut > jy:  # long hair: falls straight with a little flare below the jaw top
        yl = fast_linspace(jy + 0.3, y_cut, 5)
        ys = np.concatenate([ys, yl])
        aa = np.concatenate([aa, fw * (1 + vol) + 0.06 + 0.1 * (yl - jy)])
        bb = np.concatenate([bb, np.full(5, depth * (1 + vol) * 0.7)])
    lo, hi = _visible_range(aa, bb, yaw)
    parts = {"hair": _ring(np.tile(aa, 2), np.tile(bb, 2), zc, np.tile(ys, 2), np.concatenate([lo, hi]))}
    if style.tail:
        x0, x1 = 0.5 * idn.part * fw, 0.5 * idn.part * fw + 0.45 * idn.part
        parts["tail"] = np.array([(x0 - 0.15, -0.6, zc - 0.7), (x0 + 0.2, -0.6, zc - 0.7),
                                  (x1 + 0.15, 2.0, zc - 0.5), (x1 - 0.2, 2.0, zc - 0.5)])  # fmt: skip
    if idn.style not in _BALD_STYLES:
        parts["streaks"] = np.concatenate([hairline[1:-1:2], hairline[1:-1:2] + (0, -0.6, -0.25)])
    return parts


def _ears(idn: Identity, zc: float, yaw: float) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Ears: ellipses (center, top, side point) sticking out of the head sides, hidden when their side turns away.

    Returns (points [6, 3], which ears are visible [2], ring half-width at the ears, ear height) in units.
    """
    depth, jy = idn.skull_depth, idn.jaw_y
    ye = jy - 0.05
    ea = idn.face_w * float(_skull_f(np.array(ye), jy)) + 0.12
    elo, ehi = _visible_range(np.array(ea), np.array(depth), yaw)
    ears_visible = np.array([-1.85 > elo - 0.25, 1.85 < ehi + 0.25])
    sg, es = np.array([-1.0, 1.0]), idn.ear_size
    cen = _ring(ea, depth, zc, np.full(2, ye), sg * 1.85)
    lat = cen + np.stack([sg * 0.16 * es, 0 * sg, 0 * sg + 0.05], 1)
    return np.stack([cen, cen + (0, -0.28 * es, 0), lat], 1).reshape(6, 3), ears_visible, ea, ye


def _neck_and_shoulders(fw: float, chin: float) -> dict[str, np.ndarray]:
    """Neck and shoulder outlines (3D, units) hanging from the ``chin`` height; ``fw`` the face half-width."""
    nw, zn = 0.6 * fw, -0.7
    neck = np.array([(-nw, chin - 0.7, zn), (-nw * 1.1, chin + 2.5, zn), (nw * 1.1, chin + 2.5, zn),
                     (nw, chin - 0.7, zn)])  # fmt: skip
    shoulders = np.array([(-nw, chin + 0.8, zn - 0.1), (-2.6, chin + 1.3, -0.8), (-3.0, chin + 3.2, -0.8),
                          (3.0, chin + 3.2, -0.8), (2.6, chin + 1.3, -0.8), (nw, chin + 0.8, zn - 0.1)])  # fmt: skip
    return {"neck": neck, "shoulders": shoulders}


def _marks_and_accessories(
    q: np.ndarray, idn: Identity, ear_radius: float, ear_y: float, zc: float
) -> dict[str, np.ndarray]:
    """Beard, glasses, a mole, freckles (those the identity has), placed from the posed landmarks ``q [68, 3]``."""
    parts: dict[str, np.ndarray] = {}
    if idn.beard_style != "none":
        parts["beard"] = _beard_points(q, idn.beard_style)
    if idn.glasses:
        parts.update(_glasses_points(q, idn, ear_radius, ear_y, zc, idn.skull_depth))
    if idn.mole is not None:
        i, j, m, w0, w1 = idn.mole
        parts["mole"] = (q[i] * w0 + q[j] * w1 + q[m] * (1 - w0 - w1))[None]
    if idn.freckles:
        tri_l, tri_r = q[[31, 3, 41]], q[[35, 13, 46]]
        parts["freckles"] = np.concatenate([_FRECKLES @ tri_l, _FRECKLES @ tri_r])
    return parts


def _project(
    q: np.ndarray,
    parts: dict[str, np.ndarray],
    idn: Identity,
    rot: np.ndarray,
    scale: float,
    centroid_shift_px: np.ndarray,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Rotate by ``rot``, project orthographically at ``scale`` px per unit, and place the 5-point centroid at its
    frontal place plus ``centroid_shift_px``, moved back where a landmark would leave the crop.

    Returns (landmarks [68, 2] px, each part's points in px, plus "down": the image direction of the head's down axis).
    """
    names = list(parts)
    sizes = np.cumsum([68] + [len(parts[n]) for n in names])
    xy = (np.concatenate([q, *parts.values()]) @ rot[:2].T) * scale
    w5 = _five_centroid_weights()
    five, five0 = w5 @ xy[:68], w5 @ idn.shape[:, :2]
    off = np.array([IMAGE_SIZE / 2, _EYE_Y + five0[1] * scale]) + centroid_shift_px - five
    lo, hi = xy[:68].min(0) + off, xy[:68].max(0) + off
    off += np.maximum(1.0 - lo, 0) - np.maximum(hi - (IMAGE_SIZE - 2.0), 0)  # keep every landmark inside the crop
    xy += off
    out = {n: xy[sizes[i] : sizes[i + 1]] for i, n in enumerate(names)}
    out["down"] = rot[:2, 1]  # image direction of the head's "down" axis
    return xy[:68], out


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


def _glasses_points(q: np.ndarray, idn: Identity, ea: float, ye: float, zc: float,
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
