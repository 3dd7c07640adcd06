"""ImageSet files: round trips, atomic writes, and one-line errors for bad or missing files."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from cifar_resnet.data import ImageSet, load_classes, load_imageset, save_classes, save_imageset
from cifar_resnet.errors import UserError


def make_set(n: int = 12, with_boxes: bool = True, seed: int = 0) -> ImageSet:
    """A small random ImageSet with valid boxes."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 5, n).astype(np.int64)
    boxes = None
    if with_boxes:
        x0, y0 = rng.integers(0, 16, n), rng.integers(0, 16, n)
        boxes = np.stack([x0, y0, x0 + rng.integers(1, 16, n), y0 + rng.integers(1, 16, n)], 1).astype(np.int32)
    return ImageSet(images, labels, boxes)


@pytest.mark.parametrize("with_boxes", [True, False])
def test_round_trip(tmp_path, with_boxes):
    s = make_set(with_boxes=with_boxes)
    path = tmp_path / "sub" / "train.npz"
    save_imageset(path, s)
    back = load_imageset(path, num_classes=5)
    np.testing.assert_array_equal(back.images, s.images)
    np.testing.assert_array_equal(back.labels, s.labels)
    assert back.images.dtype == np.uint8 and back.labels.dtype == np.int64
    if with_boxes:
        np.testing.assert_array_equal(back.boxes, s.boxes)
        assert back.boxes.dtype == np.int32
    else:
        assert back.boxes is None
    with zipfile.ZipFile(path) as z:
        assert {i.filename for i in z.infolist()} == ({"images.npy", "labels.npy"} | ({"boxes.npy"} if with_boxes else set()))
        assert all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist())
    # Only the final file remains: no temporary siblings, no doubled ".npz" suffix.
    assert [p.name for p in path.parent.iterdir()] == ["train.npz"]


def test_len_and_subset():
    s = make_set(10)
    sub = s.subset(np.array([3, 1]))
    assert len(s) == 10 and len(sub) == 2
    np.testing.assert_array_equal(sub.images[0], s.images[3])
    np.testing.assert_array_equal(sub.boxes[1], s.boxes[1])
    assert s.subset(s.labels == s.labels[0]).labels.tolist() == [s.labels[0]] * int((s.labels == s.labels[0]).sum())
    assert ImageSet(s.images, s.labels).subset([0]).boxes is None


def test_missing_file_names_the_stage(tmp_path):
    with pytest.raises(UserError, match=r"val\.npz not found; run `dvc repro split`"):
        load_imageset(tmp_path / "val.npz")
    with pytest.raises(UserError, match="dvc repro prepare"):
        load_imageset(tmp_path / "val.npz", producer="prepare")


def _raw_npz(path, **arrays):
    """Write an npz without any validation, to fake a damaged file."""
    with open(path, "wb") as f:
        np.savez(f, **arrays)


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"images": np.zeros((2, 32, 32, 3), np.float32), "labels": np.zeros(2, np.int64)}, "images are float32"),
        ({"images": np.zeros((2, 28, 28, 3), np.uint8), "labels": np.zeros(2, np.int64)}, r"expected uint8 \(N, 32, 32, 3\)"),
        ({"images": np.zeros((2, 32, 32, 3), np.uint8), "labels": np.zeros(3, np.int64)}, "expected 2 integers"),
        ({"images": np.zeros((2, 32, 32, 3), np.uint8), "labels": np.zeros(2, np.float32)}, "labels are float32"),
        ({"images": np.zeros((2, 32, 32, 3), np.uint8), "labels": np.array([0, 7])}, "5 classes"),
        ({"images": np.zeros((2, 32, 32, 3), np.uint8), "labels": np.zeros(2, np.int64), "boxes": np.zeros((2, 3), np.int32)}, "boxes are"),
        ({"images": np.zeros((1, 32, 32, 3), np.uint8), "labels": np.zeros(1, np.int64), "boxes": np.array([[5, 5, 5, 9]])}, "boxes are empty or outside"),
        ({"images": np.zeros((1, 32, 32, 3), np.uint8), "labels": np.zeros(1, np.int64), "boxes": np.array([[0, 0, 33, 9]])}, "outside"),
        ({"images": np.zeros((2, 32, 32, 3), np.uint8)}, "no labels array"),
    ],
)
def test_invalid_files_raise_one_line(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    _raw_npz(path, **arrays)
    with pytest.raises(UserError, match=message) as info:
        load_imageset(path, num_classes=5)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_corrupt_file(tmp_path):
    path = tmp_path / "train.npz"
    path.write_bytes(b"<html>not found</html>")
    with pytest.raises(UserError, match="not a readable .npz"):
        load_imageset(path)


def test_save_refuses_invalid_set_and_leaves_nothing(tmp_path):
    s = make_set(4)
    bad = ImageSet(s.images.astype(np.float32), s.labels)
    with pytest.raises(UserError, match="refusing to save"):
        save_imageset(tmp_path / "x.npz", bad)
    assert list(tmp_path.iterdir()) == []


def test_classes_round_trip_and_errors(tmp_path):
    path = tmp_path / "classes.json"
    save_classes(path, ["cat", "dog", "ünïcode"])
    assert load_classes(path) == ["cat", "dog", "ünïcode"]
    with pytest.raises(UserError, match="dvc repro split"):
        load_classes(tmp_path / "missing.json")
    path.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        load_classes(path)
    path.write_text('{"a": 1}')
    with pytest.raises(UserError, match="list of class names"):
        load_classes(path)
    path.write_text("[1, 2]")
    with pytest.raises(UserError, match="list of class names"):
        load_classes(path)


def test_deeply_nested_classes_json_is_one_line(tmp_path):
    path = tmp_path / "classes.json"
    path.write_text("[" * 100_000 + "]" * 100_000)  # RecursionError inside json, not a JSONDecodeError
    with pytest.raises(UserError, match=r"not valid JSON \(nested too deeply\)"):
        load_classes(path)


def test_a_header_declaring_a_huge_array_is_refused_before_allocating(tmp_path):
    path = tmp_path / "train.npz"
    save_imageset(path, make_set(4))
    forged = tmp_path / "forged.npz"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(forged, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == "images.npy":
                # A shape of 10**7 images, 28.6 GiB that numpy would allocate first; the header keeps
                # its length (6 padding spaces give way to 6 more digits).
                data = data.replace(b"(4, 32, 32, 3), }" + b" " * 6, b"(9999999, 32, 32, 3), }", 1)
                assert b"9999999" in data
            target.writestr(info, data)
    with pytest.raises(UserError, match=r"array 'images\.npy' declares shape \(9999999, 32, 32, 3\) of uint8 "
                                        r"\(30719996928 bytes\) but holds 12288 bytes") as info:
        load_imageset(forged)
    assert "\n" not in str(info.value)
