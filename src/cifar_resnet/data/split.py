"""Seeded, class-stratified train/validation splits and size caps."""

from __future__ import annotations

import numpy as np

from ..errors import UserError
from .arrays import ImageSet


def _round_half_up(x: float) -> int:
    """Round to the nearest integer, halves up (Python's round() sends 2.5 to 2)."""
    return int(np.floor(x + 0.5))


def stratified_split(labels, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train_idx, val_idx) holding out ~val_fraction of every class."""
    if not 0.0 <= val_fraction < 1.0:
        raise UserError(f"data.val_fraction is {val_fraction}; it must be at least 0 and below 1")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    val_parts = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = _round_half_up(val_fraction * len(idx))
        if len(idx) == 1:
            k = 0  # a lone example is worth more for training than as a one-image validation class
        elif val_fraction > 0:
            # Every class gets a validation example, and keeps a training one.
            k = min(max(k, 1), len(idx) - 1)
        val_parts.append(idx[:k])
    val = np.sort(np.concatenate(val_parts)) if val_parts else np.zeros(0, dtype=np.int64)
    train = np.setdiff1d(np.arange(len(labels)), val)
    return train.astype(np.int64), val.astype(np.int64)


def _proportional_quotas(counts: np.ndarray, total: int) -> np.ndarray:
    """Split `total` across classes in proportion to `counts` (largest-remainder method)."""
    exact = counts * (total / counts.sum())
    quotas = np.floor(exact).astype(np.int64)
    # Hand the leftover slots to the largest remainders; ties go to the lower class (stable sort).
    order = np.argsort(-(exact - quotas), kind="stable")
    quotas[order[: total - quotas.sum()]] += 1
    return np.minimum(quotas, counts)


def stratified_cap(labels, max_n: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a seeded subset of at most max_n, keeping class proportions; None keeps all."""
    labels = np.asarray(labels)
    if max_n is None or max_n >= len(labels):
        return np.arange(len(labels), dtype=np.int64)
    if max_n < 1:
        raise UserError(f"a size cap of {max_n} keeps no images; use a positive number or null")
    classes, counts = np.unique(labels, return_counts=True)
    quotas = _proportional_quotas(counts, max_n)
    rng = np.random.default_rng(seed)
    parts = [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quotas)]
    return np.sort(np.concatenate(parts)).astype(np.int64)


def prepare_splits(
    train: ImageSet,
    test: ImageSet,
    val_fraction: float,
    max_train: int | None,
    max_test: int | None,
    seed: int,
) -> dict[str, ImageSet]:
    """The "train", "val" and "test" sets: cap the training pool, split off validation, cap test."""
    # Independent streams, so changing one cap doesn't reshuffle the other choices.
    cap_seq, split_seq, test_seq = np.random.SeedSequence(seed).spawn(3)
    seed_of = lambda seq: int(seq.generate_state(1)[0])  # noqa: E731
    pool = train.subset(stratified_cap(train.labels, max_train, seed_of(cap_seq)))
    train_idx, val_idx = stratified_split(pool.labels, val_fraction, seed_of(split_seq))
    splits = {
        "train": pool.subset(train_idx),
        "val": pool.subset(val_idx),
        "test": test.subset(stratified_cap(test.labels, max_test, seed_of(test_seq))),
    }
    if len(splits["train"]) == 0:
        raise UserError(
            f"the train split is empty (max_train={max_train}, val_fraction={val_fraction}, "
            f"{len(train)} training images); raise data.max_train or lower data.val_fraction"
        )
    if val_fraction > 0 and len(splits["val"]) == 0:
        raise UserError(
            f"the validation split is empty (max_train={max_train}, val_fraction={val_fraction}); "
            "raise data.max_train or data.val_fraction, or set data.val_fraction to 0"
        )
    if len(splits["test"]) == 0:
        raise UserError("the test split is empty; the dataset has no test images, check data.source")
    return splits
