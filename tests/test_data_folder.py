"""Image-folder datasets: layouts, formats and modes, archives, determinism, and every user mistake."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from cifar_resnet.config import validate_params
from cifar_resnet.data import load_image_folder, load_imageset, read_image_folder, save_classes, save_imageset
from cifar_resnet.data import folder as folder_module
from cifar_resnet.errors import UserError
from conftest import REPO


def pixels(seed: int, size=(32, 32)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def make_dataset(root: Path, classes=("cat", "dog"), per_class=3, suffix=".png") -> dict[str, np.ndarray]:
    """train/<class>/ and test/<class>/ of lossless 32x32 images; returns {relative path: pixels}."""
    written = {}
    seed = 0
    for split in ("train", "test"):
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                rel = f"{split}/{name}/{i:03d}{suffix}"
                written[rel] = pixels(seed)
                Image.fromarray(written[rel]).save(root / rel)
                seed += 1
    return written


def tar_folder(src: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname=src.name)
    return archive


def test_lossless_images_round_trip_in_sorted_order(tmp_path):
    written = make_dataset(tmp_path / "data", classes=("zebra", "ant"))
    train, test, classes = read_image_folder(tmp_path / "data", workers=1)
    assert classes == ["ant", "zebra"]  # sorted folder names, not creation order
    assert train.boxes is None and train.images.shape == (6, 32, 32, 3) and len(test) == 6
    np.testing.assert_array_equal(train.labels, [0, 0, 0, 1, 1, 1])
    expected = [written[f"train/{c}/{i:03d}.png"] for c in classes for i in range(3)]
    np.testing.assert_array_equal(train.images, np.stack(expected))  # 32x32 images are not resampled


def test_any_size_mode_and_extension_becomes_32x32_rgb(tmp_path):
    root = tmp_path / "data"
    make_dataset(root, classes=("a",), per_class=1)
    odd = root / "train" / "a"
    big = Image.fromarray(pixels(1, (200, 120)))
    big.save(odd / "big.JPG", quality=90)  # upper-case extension; draft-mode JPEG decoding
    big.convert("CMYK").save(odd / "cmyk.jpeg")
    big.convert("L").save(odd / "grey.bmp")
    big.convert("RGBA").save(odd / "alpha.webp")
    big.convert("P").save(odd / "palette.png")
    Image.fromarray(np.full((40, 40), 65535, np.uint16)).save(odd / "sixteen.png")  # 16-bit greyscale white
    Image.fromarray(pixels(2, (8, 8))).save(odd / "tiny.png")  # upscaled too
    train, _, _ = read_image_folder(root, workers=1)
    assert train.images.shape == (8, 32, 32, 3) and train.images.dtype == np.uint8
    names = sorted(p.name for p in odd.iterdir())
    sixteen = train.images[names.index("sixteen.png")]
    assert sixteen.min() == 255  # top 8 bits kept, not clipped garbage
    grey = train.images[names.index("grey.bmp")]
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()


def test_archive_with_a_top_folder_matches_the_folder_and_is_deterministic(tmp_path):
    make_dataset(tmp_path / "mine", suffix=".jpg")
    archive = tar_folder(tmp_path / "mine", tmp_path / "mine.tgz")
    from_folder = read_image_folder(tmp_path / "mine", workers=1)
    saved = []
    for run in range(2):
        train, test, classes = load_image_folder(archive, tmp_path / f"work{run}", workers=1)
        assert classes == from_folder[2]
        np.testing.assert_array_equal(train.images, from_folder[0].images)
        save_imageset(tmp_path / f"train{run}.npz", train)
        saved.append((tmp_path / f"train{run}.npz").read_bytes())
    assert saved[0] == saved[1]
    assert len(load_imageset(tmp_path / "train0.npz", num_classes=2)) == 6


def test_archive_without_folder_members(tmp_path):
    written = make_dataset(tmp_path / "mine")
    archive = tmp_path / "files-only.tar"
    with tarfile.open(archive, "w") as tar:  # no entries for the folders, only for the files
        for rel in sorted(written):
            tar.add(tmp_path / "mine" / rel, arcname=f"top/{rel}", recursive=False)
    train, test, classes = load_image_folder(archive, tmp_path / "work", workers=1)
    assert classes == ["cat", "dog"] and len(train) == len(test) == 6
    np.testing.assert_array_equal(test.images[-1], written["test/dog/002.png"])


def test_parallel_decoding_equals_serial_and_reports_a_bad_file(tmp_path, monkeypatch):
    make_dataset(tmp_path / "data", per_class=6, suffix=".jpg")
    serial = read_image_folder(tmp_path / "data", workers=1)
    # Lower the threshold so these few images go through the worker processes.
    monkeypatch.setattr(folder_module, "PARALLEL_MIN_IMAGES", 0)
    monkeypatch.setattr(folder_module, "CHUNK_IMAGES", 4)
    parallel = read_image_folder(tmp_path / "data", workers=2)
    np.testing.assert_array_equal(serial[0].images, parallel[0].images)
    np.testing.assert_array_equal(serial[1].labels, parallel[1].labels)
    (tmp_path / "data" / "test" / "dog" / "004.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(UserError, match=r"test/dog/004\.jpg is not a readable image"):
        read_image_folder(tmp_path / "data", workers=2)


def break_layout(root: Path, how: str) -> str:
    """Spoil a good dataset in one way; return the text the error must contain."""
    if how == "corrupt":
        data = (root / "train/cat/001.png").read_bytes()
        (root / "train/cat/001.png").write_bytes(data[: len(data) // 2])
        return "train/cat/001.png is not a readable image"
    if how == "empty-class":
        (root / "test/cow").mkdir()
        (root / "train/cow").mkdir()
        (root / "train/cow/0.png").write_bytes((root / "train/cat/000.png").read_bytes())
        return "test/cow is an empty class folder"
    if how == "stray-file":
        (root / "train/dog/notes.txt").write_text("hi")
        return "train/dog/notes.txt: not an image file"
    if how == "file-in-split":
        (root / "train/loose.png").write_bytes((root / "train/cat/000.png").read_bytes())
        return "train/loose.png: a file directly in train/"
    if how == "missing-test":
        for f in (root / "test").rglob("*.png"):
            f.unlink()
        for d in sorted((root / "test").rglob("*"), reverse=True):
            d.rmdir()
        (root / "test").rmdir()
        return "test is missing"
    if how == "mismatched":
        (root / "test/dog").rename(root / "test/wolf")
        return "only in train: dog; only in test: wolf"
    raise ValueError(how)


@pytest.mark.parametrize("how", ["corrupt", "empty-class", "stray-file", "file-in-split", "missing-test", "mismatched"])
@pytest.mark.parametrize("as_archive", [False, True], ids=["folder", "archive"])
def test_every_layout_mistake_is_one_line_naming_the_path(tmp_path, how, as_archive):
    root = tmp_path / "mine"
    make_dataset(root)
    expected = break_layout(root, how)
    source = tar_folder(root, tmp_path / "mine.tar.gz") if as_archive else root
    with pytest.raises(UserError) as err:
        load_image_folder(source, tmp_path / "work", workers=1)
    message = str(err.value)
    assert expected in message and "\n" not in message
    assert message.startswith(str(source))  # the user's path, never our scratch extraction folder


def test_hidden_files_are_ignored(tmp_path):
    make_dataset(tmp_path / "data")
    (tmp_path / "data" / "train" / ".DS_Store").write_bytes(b"\0")
    (tmp_path / "data" / "train" / "cat" / "._000.png").write_bytes(b"\0")
    assert len(read_image_folder(tmp_path / "data", workers=1)[0]) == 6


def test_bad_sources_and_hostile_archives(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_image_folder(tmp_path / "nowhere", tmp_path / "work")
    (tmp_path / "photo.jpg").write_bytes(b"x")
    with pytest.raises(UserError, match="is a file but not a"):
        load_image_folder(tmp_path / "photo.jpg", tmp_path / "work")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="has no train/ and test/ folders"):
        load_image_folder(tmp_path / "empty", tmp_path / "work")
    hostile = tmp_path / "hostile.tar"
    with tarfile.open(hostile, "w") as tar:  # the same checks as the CIFAR archives
        info = tarfile.TarInfo("../evil.png")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(UserError, match="leads outside the folder"):
        load_image_folder(hostile, tmp_path / "work")
    assert not (tmp_path / "evil.png").exists()


def test_folder_dataset_needs_a_source():
    with pytest.raises(UserError, match="data: dataset folder needs data.source"):
        validate_params({"data": {"dataset": "folder"}})
    assert validate_params({"data": {"dataset": "folder", "source": "x"}}).data.dataset == "folder"


def test_download_stage_writes_the_folder_dataset(tmp_path, run_stage):
    make_dataset(tmp_path / "mine", classes=("b", "a"), suffix=".jpg")
    archive = tar_folder(tmp_path / "mine", tmp_path / "mine.tar.gz")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(dataset="folder", source=str(archive))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = run_stage("download", "--out", "raw")
    assert result.returncode == 0, result.stderr
    assert "folder: 6 train and 6 test images, 2 classes" in result.stdout
    assert yaml.safe_load((tmp_path / "raw" / "classes.json").read_text()) == ["a", "b"]
    assert load_imageset(tmp_path / "raw" / "test.npz", num_classes=2).images.shape == (6, 32, 32, 3)


@pytest.mark.slow  # another subprocess run of a script the quick loop already runs
def test_model_summary_takes_the_class_count_of_a_folder_dataset(tmp_path):
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    command = [sys.executable, str(REPO / "scripts" / "model_summary.py"), "-S", "data.dataset=folder",
               "-S", "data.source=mine", "-S", "model.arch=resnet18", "-S", "model.width=8"]
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    before = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert before.returncode == 1 and "pass --classes N" in before.stderr
    save_classes(tmp_path / "data" / "raw" / "classes.json", ["a", "b", "c"])
    after = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert after.returncode == 0 and "3 classes (folder)" in after.stdout, after.stderr


def test_a_class_folder_name_that_is_not_utf8_becomes_a_displayable_name(tmp_path):
    """Python keeps the bytes as lone surrogates, which JSON, matplotlib and terminals cannot encode."""
    latin1 = os.fsdecode(b"caf\xe9")  # 'caf\udce9'
    make_dataset(tmp_path / "data", classes=(latin1, "dog"))
    _, _, classes = read_image_folder(tmp_path / "data", workers=1)
    assert classes == ["caf\\xe9", "dog"]
    assert all(name.encode("utf-8") for name in classes)  # no surrogates left
    save_classes(tmp_path / "classes.json", classes)  # what the evaluate and gradcam stages read


def test_class_folders_that_would_read_the_same_are_refused(tmp_path):
    make_dataset(tmp_path / "data", classes=(os.fsdecode(b"caf\xe9"), "caf\\xe9"))
    with pytest.raises(UserError, match=r"two class folders both read as 'caf\\\\xe9'"):
        read_image_folder(tmp_path / "data", workers=1)
