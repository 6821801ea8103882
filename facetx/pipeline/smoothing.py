"""Per-track smoothing: the One Euro filter for landmarks, an exponential average for per-frame head outputs.

One Euro (Casiez, Roussel, Vogel, CHI 2012): a low-pass filter whose cutoff rises with speed, so a still face stops
jittering and a moving one does not lag. Speeds are measured in face sizes per second (``scale``), so one setting
works for a face 60 px wide and one 600 px wide, as MediaPipe's landmark smoothing does.
"""

from __future__ import annotations

import math

import numpy as np


def _alpha(cutoff_hz: float | np.ndarray, dt: float) -> float | np.ndarray:
    tau = 1.0 / (2.0 * math.pi * cutoff_hz)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """Filter points ``[K, 2]`` over time.

    ``min_cutoff`` (Hz): the cutoff at rest (lower: smoother, more lag when starting to move); ``beta``: how fast the
    cutoff rises with speed (in face sizes per second); ``d_cutoff`` (Hz): the cutoff of the speed estimate.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 10.0, d_cutoff: float = 1.0) -> None:
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError(f"OneEuroFilter: need min_cutoff > 0, d_cutoff > 0, beta >= 0; got {min_cutoff}, "
                             f"{d_cutoff}, {beta}")  # fmt: skip
        self.min_cutoff, self.beta, self.d_cutoff = float(min_cutoff), float(beta), float(d_cutoff)
        self.reset()

    def reset(self) -> None:
        """Forget the past (a new track, or the same track after a gap)."""
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t: float | None = None

    def __call__(self, x: np.ndarray, t: float, scale: float = 1.0) -> np.ndarray:
        """The filtered ``x`` at time ``t`` (seconds); ``scale``: the face size in the units of ``x``."""
        x = np.asarray(x, dtype=np.float32)
        if self._x is None or self._t is None or t <= self._t:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), t
            return x
        dt = t - self._t
        dx = (x - self._x) / (dt * max(scale, 1e-6))  # face sizes per second
        self._dx = self._dx + _alpha(self.d_cutoff, dt) * (dx - self._dx)
        cutoff = self.min_cutoff + self.beta * np.abs(self._dx)
        self._x = self._x + _alpha(cutoff, dt) * (x - self._x)
        self._t = t
        return self._x.copy()


class Ema:
    """Exponential moving average of a vector, ``momentum`` of the past kept per update (0: no smoothing)."""

    def __init__(self, momentum: float = 0.7) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"Ema: momentum must be in [0, 1), got {momentum}")
        self.momentum = float(momentum)
        self.value: np.ndarray | None = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        self.value = x.copy() if self.value is None else self.momentum * self.value + (1 - self.momentum) * x
        return self.value
