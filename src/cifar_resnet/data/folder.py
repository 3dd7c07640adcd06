"""Your own images: `train/<class>/*` and `test/<class>/*` files, as a folder or a tar archive.

Every image is converted to RGB and resized to 32x32 (see `decode_image`); the classes
are the sorted class-folder names, and images are ordered by sorted path, so the same
files always give the same arrays (and the same .npz bytes).
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from .. import images
from ..errors import UserError
from ..fileio import atomic_dir
from .arrays import IMAGE_SHAPE, ImageSet
from .cifar import safe_extract

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
LAYOUT = "train/<class>/*.jpg|png|... and test/<class>/*"
# Below this many images, starting worker processes costs more than they save.
PARALLEL_MIN_IMAGES = 2000
CHUNK_IMAGES = 500  # images per task: small enough to balance the workers, large enough to amortise the pickling


def _visible(folder: Path) -> list[Path]:
    """The entries of `folder` by sorted name, without hidden ones (.DS_Store, ._x, .git: never data)."""
    return sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)


def find_split_root(folder: Path, shown: str) -> Path:
    """The folder holding train/ and test/: `folder` itself or one folder directly inside it."""
    candidates = [folder] + [p for p in _visible(folder) if p.is_dir()]
    found = [c for c in candidates if (c / "train").is_dir() or (c / "test").is_dir()]
    if not found:
        raise UserError(f"{shown} has no train/ and test/ folders (expected {LAYOUT}, possibly in one top folder)")
    root = found[0]
    if root != folder and len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise UserError(f"{shown} holds several datasets ({names}); point data.source at one of them")
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise UserError(f"{_shown(root / split, folder, shown)} is missing: a folder dataset needs {LAYOUT}")
    return root


def _shown(path: Path, folder: Path, shown: str) -> str:
    """How errors name `path`: inside the user's data.source, not our scratch extraction folder."""
    rel = path.relative_to(folder)
    return shown if rel == Path(".") else f"{shown}/{rel.as_posix()}"


def list_split(split_dir: Path, folder: Path, shown: str) -> dict[str, list[Path]]:
    """{class name: image files by sorted name} of one split, or UserError for anything else in it."""
    classes: dict[str, list[Path]] = {}
    for entry in _visible(split_dir):
        where = _shown(entry, folder, shown)
        if not entry.is_dir():
            raise UserError(f"{where}: a file directly in {split_dir.name}/; images belong in {split_dir.name}/<class>/")
        files = _visible(entry)
        for f in files:
            if not f.is_file() or f.suffix.lower() not in IMAGE_EXTENSIONS:
                raise UserError(f"{_shown(f, folder, shown)}: not an image file "
                                f"({', '.join(sorted(IMAGE_EXTENSIONS))}); move or delete it")
        if not files:
            raise UserError(f"{where} is an empty class folder; add images or delete it")
        classes[entry.name] = files
    if not classes:
        raise UserError(f"{_shown(split_dir, folder, shown)} has no class folders (expected {LAYOUT})")
    return classes


def display_name(name: str) -> str:
    """A folder name as plain text: bytes that are not UTF-8 are written as \\xNN.

    Python keeps such bytes of a file name as lone surrogates ('\\udce9'), which no UTF-8 text
    can hold: classes.json, matplotlib's titles and the terminal would all fail on them later.
    """
    return os.fsencode(name).decode("utf-8", errors="backslashreplace")


def class_names(folders: list[str], shown: str) -> list[str]:
    """The displayable class names of the class folders, or UserError if two would read the same."""
    names = [display_name(folder) for folder in folders]
    if len(set(names)) != len(names):
        twice = next(name for name in names if names.count(name) > 1)
        raise UserError(f"{shown}: two class folders both read as {twice!r} (one is not UTF-8); rename one")
    return names


def check_same_classes(train: list[str], test: list[str], shown: str) -> None:
    """train/ and test/ must name the same classes, or labels would mean different things."""
    if train != test:
        only_train = ", ".join(sorted(set(train) - set(test))) or "none"
        only_test = ", ".join(sorted(set(test) - set(train))) or "none"
        raise UserError(f"{shown}: train/ and test/ have different class folders "
                        f"(only in train: {only_train}; only in test: {only_test})")


def decode_image(path: str, shown: str) -> np.ndarray:
    """One image file as uint8 (32, 32, 3), or UserError naming it if it cannot be read.

    The project's one decoder (cifar_resnet.images, with its RESIZE: larger JPEGs decoded at
    1/2 to 1/8 scale by libjpeg, then PIL BICUBIC with reducing_gap=2.0), which predict.py
    also uses, so a model is served with the resize it was trained with.
    """
    try:
        return images.decode_image(path, IMAGE_SHAPE[0], images.RESIZE)
    except images.ImageReadError as err:
        raise UserError(f"{shown} is not a readable image ({err}); replace or delete it") from None


def _decode_chunk(items: list[tuple[str, str]]) -> np.ndarray:
    """Decode (path, shown name) pairs in a worker process."""
    out = np.empty((len(items), *IMAGE_SHAPE), dtype=np.uint8)
    for i, (path, shown) in enumerate(items):
        out[i] = decode_image(path, shown)
    return out


def default_workers() -> int:
    """One process per core this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def decode_images(items: list[tuple[str, str]], workers: int | None = None) -> np.ndarray:
    """Decode (path, shown name) pairs into (N, 32, 32, 3), in order, over `workers` processes."""
    workers = default_workers() if workers is None else workers
    if workers <= 1 or len(items) < PARALLEL_MIN_IMAGES:
        return _decode_chunk(items)
    chunks = [items[i:i + CHUNK_IMAGES] for i in range(0, len(items), CHUNK_IMAGES)]
    # spawn: workers inherit no threads or locks of the parent (torch's OpenMP pool, say).
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return np.concatenate(list(pool.map(_decode_chunk, chunks)))


def _split_items(split: dict[str, list[Path]], folder: Path, shown: str) -> tuple[list[tuple[str, str]], np.ndarray]:
    """(path, shown name) pairs by sorted class then file name, and their labels."""
    items, labels = [], []
    for label, files in enumerate(split.values()):
        items += [(str(f), _shown(f, folder, shown)) for f in files]
        labels += [label] * len(files)
    return items, np.asarray(labels, dtype=np.int64)


def read_image_folder(folder: str | os.PathLike, shown: str | None = None,
                      workers: int | None = None) -> tuple[ImageSet, ImageSet, list[str]]:
    """Parse a folder holding train/ and test/ (maybe inside one top folder) into (train, test, classes)."""
    folder = Path(folder)
    shown = shown or str(folder)
    root = find_split_root(folder, shown)
    train_files = list_split(root / "train", folder, shown)
    test_files = list_split(root / "test", folder, shown)
    check_same_classes(list(train_files), list(test_files), _shown(root, folder, shown))
    classes = class_names(list(train_files), _shown(root, folder, shown))
    sets = []
    for split in (train_files, test_files):
        items, labels = _split_items(split, folder, shown)
        sets.append(ImageSet(decode_images(items, workers), labels))
    return sets[0], sets[1], classes


def load_image_folder(source: str | os.PathLike | None, work_dir: str | os.PathLike,
                      workers: int | None = None) -> tuple[ImageSet, ImageSet, list[str]]:
    """(train, test, classes) from data.source: a folder, or a tar archive extracted into work_dir."""
    if source is None:
        raise UserError(f"data.dataset = folder needs data.source: a folder or .tar/.tar.gz/.tgz holding {LAYOUT}")
    source = Path(source).expanduser()
    if not source.exists():
        raise UserError(f"data.source {source} does not exist; point it at a folder or archive holding {LAYOUT}")
    if source.is_dir():
        return read_image_folder(source, str(source), workers)
    if not source.name.lower().endswith(ARCHIVE_SUFFIXES):
        raise UserError(f"data.source {source} is a file but not a {'/'.join(ARCHIVE_SUFFIXES)} archive; "
                        f"point it at a folder or archive holding {LAYOUT}")
    extracted = Path(work_dir) / "extracted"
    # The same checked extraction as the CIFAR archives: no absolute paths, '..', links or devices.
    # Members are written in place: the atomic_dir is discarded whole if anything fails.
    with atomic_dir(extracted) as tmp:
        safe_extract(source, tmp, atomic_members=False)
    return read_image_folder(extracted, str(source), workers)
