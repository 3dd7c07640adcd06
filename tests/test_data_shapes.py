"""The synthetic shapes set: deterministic, balanced, exact boxes, and it survives the real archive path."""

from __future__ import annotations

import numpy as np
import pytest

from cifar_resnet.data import SHAPE_CLASSES, SHAPES_SPEC, build_shapes_archive, generate_shapes, load_raw_dataset, md5sum
from cifar_resnet.data import shapes as shapes_module


def test_shapes_dtypes_and_classes():
    train, test, classes = generate_shapes(40, 20, seed=0)
    assert classes == SHAPE_CLASSES and len(set(classes)) == 10
    assert train.images.shape == (40, 32, 32, 3) and train.images.dtype == np.uint8
    assert train.labels.dtype == np.int64 and test.labels.shape == (20,)
    assert train.boxes.shape == (40, 4) and train.boxes.dtype == np.int32
    # Real pictures, not blank frames: plenty of distinct values per image.
    assert all(len(np.unique(im)) > 50 for im in train.images)


def test_deterministic_for_a_seed():
    a, b = generate_shapes(30, 10, seed=7), generate_shapes(30, 10, seed=7)
    for x, y in zip(a[:2], b[:2]):
        np.testing.assert_array_equal(x.images, y.images)
        np.testing.assert_array_equal(x.labels, y.labels)
        np.testing.assert_array_equal(x.boxes, y.boxes)


def test_seeds_and_splits_differ():
    train, test, _ = generate_shapes(30, 30, seed=1)
    other, _, _ = generate_shapes(30, 30, seed=2)
    assert not np.array_equal(train.images, other.images)
    # Train and test come from independent streams, not the same draws twice.
    assert not np.array_equal(train.images, test.images)
    # The test set does not depend on how many training images were asked for.
    _, test_again, _ = generate_shapes(50, 30, seed=1)
    np.testing.assert_array_equal(test.images, test_again.images)


@pytest.mark.parametrize("n", [100, 95, 7])
def test_balanced(n):
    train, _, _ = generate_shapes(n, 10, seed=0)
    counts = np.bincount(train.labels, minlength=10)
    assert counts.sum() == n and counts.max() - counts.min() <= 1


def test_boxes_are_tight_around_the_object():
    rng = np.random.default_rng(3)
    s, alpha = shapes_module._generate(rng, 200)
    x0, y0, x1, y1 = s.boxes.T
    assert ((0 <= x0) & (x0 < x1) & (x1 <= 32) & (0 <= y0) & (y0 < y1) & (y1 <= 32)).all()
    areas = (x1 - x0) * (y1 - y0)
    assert areas.min() >= 9 and areas.max() <= 32 * 32
    for i in range(len(s)):
        a = alpha[i]
        inside = np.zeros_like(a, dtype=bool)
        inside[y0[i]:y1[i], x0[i]:x1[i]] = True
        # No coverage outside the box, and the object touches every side of it.
        assert a[~inside].max() == 0
        assert a[y0[i]].max() > 0 and a[y1[i] - 1].max() > 0
        assert a[:, x0[i]].max() > 0 and a[:, x1[i] - 1].max() > 0
    # Anti-aliased: edge pixels are partly covered, not all-or-nothing.
    assert ((alpha > 0) & (alpha < 1)).any(axis=(1, 2)).all()


def test_object_differs_from_background():
    train, _, _ = generate_shapes(100, 10, seed=5)
    for im, (x0, y0, x1, y1) in zip(train.images.astype(float), train.boxes):
        mask = np.zeros((32, 32), bool)
        mask[y0:y1, x0:x1] = True
        if mask.all():
            continue
        # The box holds the object, so its mean colour departs from the rest of the frame.
        assert np.abs(im[mask].mean(0) - im[~mask].mean(0)).max() > 3


def test_classes_look_different():
    # Mean covered area per class separates e.g. ring/cross/ellipse from square/circle/hexagon:
    # a cheap check that the classes are not accidentally the same drawing.
    rng = np.random.default_rng(0)
    s, alpha = shapes_module._generate(rng, 400)
    box_area = ((s.boxes[:, 2] - s.boxes[:, 0]) * (s.boxes[:, 3] - s.boxes[:, 1])).astype(float)
    fill = alpha.sum(axis=(1, 2)) / box_area
    per_class = np.array([fill[s.labels == c].mean() for c in range(10)])
    assert per_class.max() - per_class.min() > 0.3
    assert per_class[SHAPE_CLASSES.index("square")] > per_class[SHAPE_CLASSES.index("ring")]


def test_archive_round_trip_through_load_raw_dataset(tmp_path):
    train, test, classes = generate_shapes(50, 20, seed=4)
    got_train, got_test, got_classes = load_raw_dataset(
        "shapes", None, tmp_path, synthetic_train=50, synthetic_test=20, synthetic_seed=4
    )
    assert got_classes == classes
    for a, b in [(train, got_train), (test, got_test)]:
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.boxes, b.boxes)
    # It really went through the archive and its extraction.
    assert (tmp_path / SHAPES_SPEC.filename).is_file()
    assert (tmp_path / "extracted" / SHAPES_SPEC.folder / "data_batch_2").is_file()


def test_archive_bytes_are_reproducible(tmp_path):
    build_shapes_archive(tmp_path / "a.tar.gz", 20, 10, seed=1)
    build_shapes_archive(tmp_path / "b.tar.gz", 20, 10, seed=1)
    build_shapes_archive(tmp_path / "c.tar.gz", 20, 10, seed=2)
    assert md5sum(tmp_path / "a.tar.gz") == md5sum(tmp_path / "b.tar.gz") != md5sum(tmp_path / "c.tar.gz")
