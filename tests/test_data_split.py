"""Stratified splits and caps: proportions, coverage, determinism, and empty-split errors."""

from __future__ import annotations

import numpy as np
import pytest

from cifar_resnet.data import ImageSet, prepare_splits, stratified_cap, stratified_split
from cifar_resnet.data.sources import load_raw_dataset
from cifar_resnet.errors import UserError


def labels_with(counts):
    """Shuffled labels with the given count per class."""
    labels = np.repeat(np.arange(len(counts)), counts)
    return np.random.default_rng(0).permutation(labels)


def tagged_set(labels):
    """An ImageSet whose first pixel encodes each image's original index, to track it."""
    n = len(labels)
    images = np.zeros((n, 32, 32, 3), np.uint8)
    images[:, 0, 0, 0], images[:, 0, 0, 1] = np.arange(n) % 256, np.arange(n) // 256
    return ImageSet(images, np.asarray(labels, np.int64))


def ids(s: ImageSet):
    return s.images[:, 0, 0, 0].astype(int) + 256 * s.images[:, 0, 0, 1].astype(int)


def test_split_proportions_per_class():
    labels = labels_with([100, 50, 10, 3, 2])
    train, val = stratified_split(labels, 0.2, seed=0)
    # round(0.2 * n), at least one per class, and every class keeps a training example.
    assert np.bincount(labels[val], minlength=5).tolist() == [20, 10, 2, 1, 1]
    assert np.bincount(labels[train], minlength=5).tolist() == [80, 40, 8, 2, 1]


def test_split_disjoint_covering_sorted():
    labels = labels_with([30, 20, 11])
    train, val = stratified_split(labels, 0.25, seed=3)
    assert np.intersect1d(train, val).size == 0
    np.testing.assert_array_equal(np.union1d(train, val), np.arange(len(labels)))
    assert (np.diff(train) > 0).all() and (np.diff(val) > 0).all()
    assert train.dtype == np.int64 and val.dtype == np.int64


def test_split_seeded():
    labels = labels_with([50, 50])
    a, b, c = (stratified_split(labels, 0.3, seed=s)[1] for s in (1, 1, 2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_split_zero_fraction_and_singletons():
    labels = labels_with([5, 1])
    train, val = stratified_split(labels, 0.0, seed=0)
    assert val.size == 0 and train.size == 6
    train, val = stratified_split(labels, 0.5, seed=0)
    # A class with one example stays in training.
    assert np.flatnonzero(labels == 1)[0] in train
    with pytest.raises(UserError, match="val_fraction"):
        stratified_split(labels, 1.0, seed=0)


def test_cap_proportional_and_seeded():
    labels = labels_with([600, 300, 100])
    idx = stratified_cap(labels, 100, seed=0)
    assert len(idx) == 100 and (np.diff(idx) > 0).all()
    assert np.bincount(labels[idx]).tolist() == [60, 30, 10]
    np.testing.assert_array_equal(idx, stratified_cap(labels, 100, seed=0))
    assert not np.array_equal(idx, stratified_cap(labels, 100, seed=1))
    # Remainders go to the largest fractions; the total is exact.
    odd = stratified_cap(labels_with([5, 5, 5]), 7, seed=0)
    assert len(odd) == 7 and sorted(np.bincount(labels_with([5, 5, 5])[odd]).tolist()) == [2, 2, 3]


def test_cap_none_or_large_keeps_all():
    labels = labels_with([3, 4])
    np.testing.assert_array_equal(stratified_cap(labels, None, seed=0), np.arange(7))
    np.testing.assert_array_equal(stratified_cap(labels, 100, seed=0), np.arange(7))
    with pytest.raises(UserError, match="keeps no images"):
        stratified_cap(labels, 0, seed=0)


def test_prepare_splits_caps_then_splits():
    train = tagged_set(labels_with([400, 400, 200]))
    test = tagged_set(labels_with([50, 50, 50]))
    splits = prepare_splits(train, test, val_fraction=0.1, max_train=500, max_test=None, seed=0)
    assert set(splits) == {"train", "val", "test"}
    assert len(splits["train"]) + len(splits["val"]) == 500 and len(splits["val"]) == 50
    assert np.intersect1d(ids(splits["train"]), ids(splits["val"])).size == 0
    # The pool keeps the class mix: 2:2:1.
    pool = np.concatenate([splits["train"].labels, splits["val"].labels])
    assert np.bincount(pool).tolist() == [200, 200, 100]
    # Test is untouched without a cap.
    np.testing.assert_array_equal(splits["test"].images, test.images)
    again = prepare_splits(train, test, 0.1, 500, None, seed=0)
    np.testing.assert_array_equal(ids(again["val"]), ids(splits["val"]))
    capped = prepare_splits(train, test, 0.1, None, 30, seed=0)
    assert len(capped["test"]) == 30 and np.bincount(capped["test"].labels).tolist() == [10, 10, 10]
    assert len(capped["train"]) + len(capped["val"]) == 1000


def test_prepare_splits_keeps_boxes(tmp_path):
    train, test, _ = load_raw_dataset("shapes", None, tmp_path, synthetic_train=60, synthetic_test=20)
    splits = prepare_splits(train, test, 0.2, None, None, seed=0)
    assert all(s.boxes is not None and len(s.boxes) == len(s) for s in splits.values())


def test_prepare_splits_empty_errors():
    test = tagged_set([0, 1])
    with pytest.raises(UserError, match="train split is empty"):
        prepare_splits(tagged_set([]), test, 0.1, None, None, seed=0)
    # Two classes with one image each: nothing can be held out for validation.
    with pytest.raises(UserError, match="validation split is empty.*data.val_fraction to 0"):
        prepare_splits(tagged_set([0, 1, 0, 1]), test, 0.1, 2, None, seed=0)
    ok = prepare_splits(tagged_set([0, 1, 0, 1]), test, 0.0, 2, None, seed=0)
    assert len(ok["train"]) == 2 and len(ok["val"]) == 0
