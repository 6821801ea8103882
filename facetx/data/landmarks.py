"""Landmark layouts: point count, horizontal-flip permutation, NME normalization and the 5 alignment points.

Left/right are image left/right (the subject's right eye is the image-left eye), as in the 300-W and WFLW annotations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True, eq=False)
class LandmarkLayout:
    """One annotation scheme.

    - ``flip_map``: int64 ``[K]``; after a horizontal flip, point ``k`` of the flipped face is point ``flip_map[k]`` of
      the original (an involution: ``flip_map[flip_map] == arange(K)``).
    - ``nme_indices``: the two outer eye corners whose distance normalizes NME (inter-ocular).
    - ``five_point_groups``: left eye center, right eye center, nose tip, left and right mouth corner, each the mean of
      a group of points (ArcFace 5-point alignment order).
    """

    name: str
    num_points: int
    flip_map: np.ndarray
    nme_indices: tuple[int, int]
    five_point_groups: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        fm = np.asarray(self.flip_map, dtype=np.int64)
        if fm.shape != (self.num_points,) or not np.array_equal(np.sort(fm), np.arange(self.num_points)):
            raise ValueError(f"layout {self.name!r}: flip_map must be a permutation of range({self.num_points})")
        if not np.array_equal(fm[fm], np.arange(self.num_points)):
            raise ValueError(f"layout {self.name!r}: flip_map must be an involution (flip twice = identity)")
        if len(self.five_point_groups) != 5:
            raise ValueError(
                f"layout {self.name!r}: five_point_groups needs 5 groups, got {len(self.five_point_groups)}"
            )
        fm.setflags(write=False)
        object.__setattr__(self, "flip_map", fm)

    def five_points(self, landmarks: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """``[..., K, 2]`` landmarks -> ``[..., 5, 2]`` alignment points (same type and units)."""
        if landmarks.shape[-2] != self.num_points:
            raise ValueError(
                f"layout {self.name!r} expects [..., {self.num_points}, 2] landmarks, got {landmarks.shape}"
            )
        pts = [landmarks[..., list(g), :].mean(-2) for g in self.five_point_groups]
        if isinstance(landmarks, torch.Tensor):
            return torch.stack(pts, dim=-2)
        return np.stack(pts, axis=-2)


def _flip_map(num_points: int, pairs: list[tuple[int, int]]) -> np.ndarray:
    fm = np.arange(num_points)
    for a, b in pairs:
        fm[a], fm[b] = b, a
    return fm


_IBUG68_PAIRS = (
    [(i, 16 - i) for i in range(8)]  # jaw
    + [(17, 26), (18, 25), (19, 24), (20, 23), (21, 22)]  # brows
    + [(31, 35), (32, 34)]  # nostrils
    + [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    + [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]  # outer lips
    + [(60, 64), (61, 63), (65, 67)]  # inner lips
)

# The flip pairs used by the WFLW reference code (HRNet facial landmarks, mmpose).
_WFLW98_PAIRS = (
    [(i, 32 - i) for i in range(16)]  # contour
    + [(33, 46), (34, 45), (35, 44), (36, 43), (37, 42), (38, 50), (39, 49), (40, 48), (41, 47)]  # brows
    + [(60, 72), (61, 71), (62, 70), (63, 69), (64, 68), (65, 75), (66, 74), (67, 73)]  # eyes
    + [(55, 59), (56, 58)]  # nose base
    + [(76, 82), (77, 81), (78, 80), (87, 83), (86, 84)]  # outer lips
    + [(88, 92), (89, 91), (95, 93), (96, 97)]  # inner lips, pupils
)

IBUG68 = LandmarkLayout(
    name="ibug68",
    num_points=68,
    flip_map=_flip_map(68, _IBUG68_PAIRS),
    nme_indices=(36, 45),
    five_point_groups=(tuple(range(36, 42)), tuple(range(42, 48)), (30,), (48,), (54,)),
)

WFLW98 = LandmarkLayout(
    name="wflw98",
    num_points=98,
    flip_map=_flip_map(98, _WFLW98_PAIRS),
    nme_indices=(60, 72),
    five_point_groups=((96,), (97,), (54,), (76,), (82,)),
)

LAYOUTS: dict[str, LandmarkLayout] = {IBUG68.name: IBUG68, WFLW98.name: WFLW98}


def get_layout(name: str) -> LandmarkLayout:
    """Layout by name (``"ibug68"`` or ``"wflw98"``)."""
    try:
        return LAYOUTS[name]
    except KeyError:
        raise ValueError(f"unknown landmark layout {name!r}; expected one of {sorted(LAYOUTS)}") from None
