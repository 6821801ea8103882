"""``SyntheticFaces``: the generator as a map-style data set with disjoint splits and verification pairs."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np
import torch

from facetx.data.contract import IMAGE_SIZE, make_sample
from facetx.data.landmarks import IBUG68, LandmarkLayout
from facetx.data.synthetic.identity import Identity, sample_identity
from facetx.data.synthetic.render import render_face
from facetx.metrics import cosine_scores, verification_accuracy

SPLITS: dict[str, int] = {"train": 0, "val": 1, "test": 2}
_TAG_IDENTITY, _TAG_IMAGE, _TAG_PAIRS, _TAG_BANK = 1, 2, 3, 4


@lru_cache(maxsize=4)
def noise_bank(seed: int) -> np.ndarray:
    """A fixed Gaussian noise texture ``[224, 224, 3]``; images take random crops of it (cheaper than fresh noise)."""
    rng = np.random.default_rng(np.random.SeedSequence((seed, _TAG_BANK)))
    return rng.standard_normal((2 * IMAGE_SIZE, 2 * IMAGE_SIZE, 3), dtype=np.float32)


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
        self._identities: dict[int, Identity] = {}
        self.pairs: torch.Tensor | None = None if split == "train" else self._make_pairs(int(num_pairs))

    def __len__(self) -> int:
        return self.num_identities * self.images_per_identity

    def _rng(self, *key: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence((self.seed, SPLITS[self.split], *key)))

    def _identity(self, k: int) -> Identity:
        idn = self._identities.get(k)
        if idn is None:
            if len(self._identities) > 10000:  # bound memory in long-lived workers
                self._identities.clear()
            idn = self._identities[k] = sample_identity(self._rng(_TAG_IDENTITY, k))
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
        image, landmarks, expression = render_face(self._identity(identity), rng, spoof, noise_bank(self.seed))
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
