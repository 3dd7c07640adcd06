"""Real handwritten digits (scikit-learn's bundled 8x8 set) as a 32x32 RGB dataset, no download needed."""

from __future__ import annotations

import numpy as np

from .arrays import ImageSet
from .split import stratified_split

DIGIT_CLASSES = [str(d) for d in range(10)]
_SCALE = 4  # 8x8 -> 32x32
_TEST_FRACTION = 0.2
_SPLIT_SEED = 0


def _to_rgb32(images8: np.ndarray) -> np.ndarray:
    """8x8 grey values 0..16 -> uint8 (N, 32, 32, 3) 0..255."""
    grey = np.rint(images8 * (255.0 / 16.0)).astype(np.uint8)
    # Nearest-neighbour x4 (each pixel becomes a 4x4 block): keeps the original values exactly,
    # where bilinear would invent intermediate strokes.
    big = grey.repeat(_SCALE, axis=1).repeat(_SCALE, axis=2)
    return np.repeat(big[..., None], 3, axis=3)


def load_digits32() -> tuple[ImageSet, ImageSet, list[str]]:
    """The 1797 digits as (train, test, classes) with a fixed stratified 80/20 split (seed 0)."""
    from sklearn.datasets import load_digits  # imported here: only this dataset needs scikit-learn

    bunch = load_digits()
    images = _to_rgb32(np.asarray(bunch.images))
    labels = np.asarray(bunch.target, dtype=np.int64)
    # The set ships without a test split, so a fixed one is made here; it never depends on params.
    train_idx, test_idx = stratified_split(labels, _TEST_FRACTION, _SPLIT_SEED)
    return (
        ImageSet(images[train_idx], labels[train_idx]),
        ImageSet(images[test_idx], labels[test_idx]),
        list(DIGIT_CLASSES),
    )
