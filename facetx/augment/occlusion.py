"""Synthetic occluders for aligned face crops (rectangle, hand, glasses), as an albumentations image-only transform.

Placement assumes an aligned crop (eyes near ``y ~ 0.45 H``, ``x ~ 0.35 W`` and ``0.65 W``; mouth near
``y ~ 0.8 H``). Landmarks are not moved: labels keep the true (now hidden) location.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np

KINDS: tuple[str, ...] = ("rectangle", "hand", "glasses")
_SHIFT = 4  # cv2 fixed-point bits: sub-pixel geometry so small crops still get smooth shapes
_ONE = 1 << _SHIFT


def _fx(pts: np.ndarray) -> np.ndarray:
    """Float pixel coordinates -> int32 fixed point for cv2 drawing with ``shift=_SHIFT``."""
    return np.round(np.asarray(pts, dtype=np.float64) * _ONE).astype(np.int32)


def _blend(img: np.ndarray, color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """img float32 [H, W, 3]; color [3] or [H, W, 3]; alpha float32 [H, W] in [0, 1]."""
    a = alpha[..., None]
    return img * (1.0 - a) + np.asarray(color, dtype=np.float32) * a


def _draw_rectangle(img: np.ndarray, rng: np.random.Generator, size_range: tuple[float, float]) -> np.ndarray:
    h, w = img.shape[:2]
    rw, rh = rng.uniform(*size_range) * w, rng.uniform(*size_range) * h
    cx, cy = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h
    x0, x1 = int(max(0, round(cx - rw / 2))), int(min(w, round(cx + rw / 2)))
    y0, y1 = int(max(0, round(cy - rh / 2))), int(min(h, round(cy + rh / 2)))
    out = img.copy()
    if rng.random() < 0.3:  # textured patch, not only flat colour, so the network cannot key on flatness
        out[y0:y1, x0:x1] = rng.uniform(0, 255, size=(y1 - y0, x1 - x0, 3))
    else:
        out[y0:y1, x0:x1] = rng.uniform(0, 255, size=3)
    return out


def _skin_color(rng: np.random.Generator) -> np.ndarray:
    light, dark = np.array([226.0, 182.0, 154.0]), np.array([88.0, 56.0, 40.0])
    t = rng.random()
    # Mostly a brightness change; per-channel jitter kept small so the hue stays skin-like.
    return np.clip((light * (1 - t) + dark * t) * rng.uniform(0.9, 1.1) + rng.normal(0.0, 3.0, 3), 0, 255)


def _draw_hand(img: np.ndarray, rng: np.random.Generator, scale_range: tuple[float, float]) -> np.ndarray:
    """Palm ellipse + 4 finger capsules + (usually) a thumb, skin coloured and shaded, around the mouth/cheeks."""
    h, w = img.shape[:2]
    size = rng.uniform(*scale_range) * 0.4 * w  # palm width in pixels
    center = np.array([rng.uniform(0.25, 0.75) * w, rng.uniform(0.55, 0.9) * h])
    angle = np.deg2rad(rng.uniform(-110.0, 110.0))  # finger direction, 0 = pointing up
    up = np.array([np.sin(angle), -np.cos(angle)])  # local +v: towards the fingertips
    right = np.array([np.cos(angle), np.sin(angle)]) * (-1.0 if rng.random() < 0.5 else 1.0)  # mirror = other hand

    def at(u: float, v: float) -> np.ndarray:
        return center + u * size * right + v * size * up

    masks: list[np.ndarray] = []
    palm = np.zeros((h, w), np.uint8)
    axes = _fx([0.5 * size, 0.55 * size])
    cv2.ellipse(palm, tuple(_fx(center)), tuple(axes), float(np.rad2deg(angle)), 0, 360, 255, -1, cv2.LINE_AA, _SHIFT)
    masks.append(palm)
    finger_w = size * rng.uniform(0.19, 0.24)
    lengths = np.array([0.72, 0.92, 0.88, 0.66]) * rng.uniform(0.85, 1.1) * rng.uniform(0.7, 1.0, 4)  # some curled
    spread = np.deg2rad(np.array([-9.0, -3.0, 3.0, 9.0]) * rng.uniform(0.3, 1.6))
    for u0, length, fan in zip((-0.36, -0.12, 0.12, 0.36), lengths, spread, strict=True):
        base = at(u0, 0.35)
        tip = base + length * size * (np.cos(fan) * up + np.sin(fan) * right)
        masks.append(_capsule(h, w, base, tip, finger_w))
    if rng.random() < 0.8:  # thumb hidden behind the palm otherwise
        t_ang = np.deg2rad(rng.uniform(35.0, 75.0))
        base = at(-0.4, -0.15)
        tip = base + 0.62 * size * (np.cos(t_ang) * up - np.sin(t_ang) * right)
        masks.append(_capsule(h, w, base, tip, 1.15 * finger_w))

    union = np.max(np.stack(masks), axis=0).astype(np.float32) / 255.0
    if union.max() <= 0:
        return img
    # Each part's outline as a darker crease, so fingers read as separate fingers and the silhouette has an edge.
    kernel = np.ones((3, 3), np.uint8)
    inside_palm = cv2.erode(masks[0], kernel, iterations=2).astype(np.float32) / 255.0
    edges = [cv2.morphologyEx(m, cv2.MORPH_GRADIENT, kernel).astype(np.float32) / 255.0 for m in masks]
    # Finger bases overlap the palm; their outlines there would look like loops drawn on the palm.
    crease = np.max(np.stack([edges[0]] + [e * (1.0 - inside_palm) for e in edges[1:]]), axis=0)
    sigma = max(0.8, 0.12 * size)
    inner = cv2.GaussianBlur(union, (0, 0), sigma)  # ~1 inside, falls off at the rim: rounded-volume shading
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    light = rng.normal(size=2)
    light /= np.linalg.norm(light) + 1e-6
    grad = ((xx - center[0]) * light[0] + (yy - center[1]) * light[1]) / size
    # Peak shade stays near 1 so bright skin does not clip per channel (which would shift its hue to yellow).
    shade = (0.62 + 0.35 * np.sqrt(np.clip(inner, 0, 1))) * (1.0 + 0.12 * np.clip(grad, -1, 1)) * (1.0 - 0.3 * crease)
    color = _skin_color(rng).astype(np.float32)[None, None, :] * shade[..., None]
    return _blend(img, np.clip(color, 0, 255), union)


def _capsule(h: int, w: int, p0: np.ndarray, p1: np.ndarray, width: float) -> np.ndarray:
    """uint8 [H, W] mask of a segment with round caps (cv2 thick lines end in half discs)."""
    mask = np.zeros((h, w), np.uint8)
    thickness = max(1, int(round(width)))
    cv2.line(mask, tuple(_fx(p0)), tuple(_fx(p1)), 255, thickness, cv2.LINE_AA, _SHIFT)
    return mask


def _superellipse(n: float, a: float, b: float, num: int = 64) -> np.ndarray:
    """[num, 2] outline of |x/a|^n + |y/b|^n = 1 (n = 2 ellipse, larger n = rounded rectangle)."""
    t = np.linspace(0.0, 2 * np.pi, num, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    return np.stack([a * np.sign(c) * np.abs(c) ** (2 / n), b * np.sign(s) * np.abs(s) ** (2 / n)], axis=1)


def _draw_glasses(img: np.ndarray, rng: np.random.Generator, tinted_lens_p: float) -> np.ndarray:
    """Two lens frames (round to rectangular) + bridge + temple arms over the eyes; optional tinted lenses."""
    h, w = img.shape[:2]
    scale = rng.uniform(0.9, 1.15)
    mid = np.array([(0.5 + rng.normal(0.0, 0.015)) * w, rng.uniform(0.4, 0.5) * h])
    roll = np.deg2rad(rng.uniform(-8.0, 8.0))
    along = np.array([np.cos(roll), np.sin(roll)])  # towards the image's right lens
    down = np.array([-np.sin(roll), np.cos(roll)])
    half_gap = 0.15 * w * rng.uniform(0.93, 1.07)
    rw = 0.115 * w * scale
    rh = rw * rng.uniform(0.65, 0.95)
    shape = _superellipse(float(rng.choice([2.0, 2.0, 3.0, 5.0])), rw, rh)
    rot = np.stack([along, down], axis=0)  # local (x, y) -> image offset
    lenses = [mid + s * half_gap * along + shape @ rot for s in (-1.0, 1.0)]
    thickness = max(1, int(round(rng.uniform(0.012, 0.035) * w)))
    if rng.random() < 0.8:
        frame_color = np.full(3, rng.uniform(0, 60)) + rng.normal(0, 5, 3)
    else:  # coloured frame, still fairly dark
        frame_color = rng.uniform(20, 160, 3)
    out = img
    if rng.random() < tinted_lens_p:
        tint = np.zeros((h, w), np.uint8)
        cv2.fillPoly(tint, [_fx(p) for p in lenses], 255, cv2.LINE_AA, _SHIFT)
        sunglasses = rng.random() < 0.5
        tint_color = rng.uniform(0, 40, 3) if sunglasses else rng.uniform(40, 200, 3)
        opacity = rng.uniform(0.6, 0.9) if sunglasses else rng.uniform(0.2, 0.5)
        out = _blend(out, tint_color, tint.astype(np.float32) / 255.0 * opacity)
    frame = np.zeros((h, w), np.uint8)
    cv2.polylines(frame, [_fx(p) for p in lenses], True, 255, thickness, cv2.LINE_AA, _SHIFT)
    inner = [mid - (half_gap - rw) * along - 0.2 * rh * down, mid + (half_gap - rw) * along - 0.2 * rh * down]
    bridge = np.stack([inner[0], mid - 0.35 * rh * down, inner[1]])
    cv2.polylines(frame, [_fx(bridge)], False, 255, thickness, cv2.LINE_AA, _SHIFT)
    arm = rng.uniform(0.08, 0.16) * w
    for s in (-1.0, 1.0):  # temple arms run from the outer top of each lens towards the ears
        start = mid + s * (half_gap + rw * 0.95) * along - 0.3 * rh * down
        end = start + s * arm * along - 0.05 * arm * down
        cv2.line(frame, tuple(_fx(start)), tuple(_fx(end)), 255, thickness, cv2.LINE_AA, _SHIFT)
    return _blend(out, frame_color, frame.astype(np.float32) / 255.0)


def _check_range(name: str, value: Sequence[float], low: float, high: float) -> tuple[float, float]:
    vals = tuple(float(v) for v in value)
    if len(vals) != 2 or not low <= vals[0] <= vals[1] <= high:
        raise ValueError(f"OcclusionMask: {name} must be (min, max) with {low} <= min <= max <= {high}, got {value}")
    return vals  # type: ignore[return-value]


class OcclusionMask(A.ImageOnlyTransform):
    """Draw one occluder, of a kind picked uniformly from ``kinds``, onto a uint8 ``[H, W, 3]`` RGB face crop.

    Args:
        kinds: subset of ``("rectangle", "hand", "glasses")``.
        rectangle_size: side of a rectangle as a fraction of the image side, ``(min, max)``.
        hand_scale: palm width as a multiple of ``0.4 W``, ``(min, max)``.
        tinted_lens_p: probability that glasses get tinted (sun/coloured) semi-transparent lenses.
        p: probability of drawing anything.

    Randomness comes from the transform's (Compose-shared) ``random_generator``, so a seeded Compose or FaceAugment
    reproduces the occluders.
    """

    def __init__(
        self,
        kinds: Sequence[str] = KINDS,
        rectangle_size: Sequence[float] = (0.15, 0.45),
        hand_scale: Sequence[float] = (0.8, 1.2),
        tinted_lens_p: float = 0.4,
        p: float = 0.5,
    ) -> None:
        if isinstance(kinds, str):
            kinds = (kinds,)
        kinds = tuple(str(k) for k in kinds)
        bad = [k for k in kinds if k not in KINDS]
        if not kinds or bad:
            raise ValueError(f"OcclusionMask: kinds must be a non-empty subset of {KINDS}, got {list(kinds)}")
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"OcclusionMask: p must be in [0, 1], got {p}")
        if not 0.0 <= float(tinted_lens_p) <= 1.0:
            raise ValueError(f"OcclusionMask: tinted_lens_p must be in [0, 1], got {tinted_lens_p}")
        super().__init__(p=float(p))
        self.kinds = kinds
        self.rectangle_size = _check_range("rectangle_size", rectangle_size, 0.0, 1.0)
        self.hand_scale = _check_range("hand_scale", hand_scale, 0.05, 3.0)
        self.tinted_lens_p = float(tinted_lens_p)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        # Draw everything from the shared generator here; apply() is then a pure function of params (replayable).
        kind = self.kinds[int(self.random_generator.integers(len(self.kinds)))]
        return {"kind": kind, "draw_seed": int(self.random_generator.integers(2**63))}

    def apply(self, img: np.ndarray, kind: str, draw_seed: int, **params: Any) -> np.ndarray:
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"OcclusionMask: expected a uint8 [H, W, 3] image, got {img.dtype} {img.shape}")
        rng = np.random.default_rng(draw_seed)
        draw: dict[str, Callable[[np.ndarray], np.ndarray]] = {
            "rectangle": lambda im: _draw_rectangle(im, rng, self.rectangle_size),
            "hand": lambda im: _draw_hand(im, rng, self.hand_scale),
            "glasses": lambda im: _draw_glasses(im, rng, self.tinted_lens_p),
        }
        out = draw[kind](img.astype(np.float32))
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("kinds", "rectangle_size", "hand_scale", "tinted_lens_p")
