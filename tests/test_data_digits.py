"""The sklearn handwritten digits, upscaled to 32x32 RGB with a fixed stratified 80/20 split."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits

from cifar_resnet.data import load_digits32, load_raw_dataset


def test_digits_shapes_and_split():
    train, test, classes = load_digits32()
    assert classes == [str(d) for d in range(10)]
    assert len(train) + len(test) == 1797
    assert train.images.shape[1:] == (32, 32, 3) and train.images.dtype == np.uint8
    assert train.labels.dtype == np.int64 and train.boxes is None
    # Stratified 80/20: every class is split in the same proportion.
    n_train, n_test = np.bincount(train.labels, minlength=10), np.bincount(test.labels, minlength=10)
    frac = n_test / (n_train + n_test)
    assert np.all(np.abs(frac - 0.2) < 0.01)


def test_digits_pixels_match_sklearn():
    train, test, _ = load_digits32()
    images = np.concatenate([train.images, test.images])
    assert images.min() == 0 and images.max() == 255
    # Grey: all three channels equal; nearest x4: every 4x4 block is one value.
    assert (images[..., 0] == images[..., 1]).all() and (images[..., 1] == images[..., 2]).all()
    blocks = images[..., 0].reshape(-1, 8, 4, 8, 4)
    assert (blocks == blocks[:, :, :1, :, :1]).all()
    # Every original digit appears exactly once, with its label, across train and test.
    bunch = load_digits()
    want = sorted((np.rint(im * 255 / 16).astype(np.uint8).tobytes(), int(y)) for im, y in zip(bunch.images, bunch.target))
    got = sorted(
        (im[::4, ::4, 0].tobytes(), int(y))
        for s in (train, test) for im, y in zip(s.images, s.labels)
    )
    assert got == want


def test_digits_are_deterministic_and_reachable_by_name(tmp_path):
    a_train, a_test, _ = load_digits32()
    b_train, b_test, classes = load_raw_dataset("digits", None, tmp_path)
    np.testing.assert_array_equal(a_train.images, b_train.images)
    np.testing.assert_array_equal(a_test.labels, b_test.labels)
    assert classes[0] == "0"
