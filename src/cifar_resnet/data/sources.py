"""One entry point for every dataset the pipeline knows: name in, (train, test, classes) out."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from ..errors import UserError
from .arrays import ImageSet
from .cifar import CIFAR_ARCHIVES, load_cifar
from .digits import load_digits32
from .folder import load_image_folder
from .shapes import SHAPES_SPEC, build_shapes_archive

# Class counts known before any data is read (for model summaries; the stages use classes.json).
# A folder dataset has as many as it has class folders, known only once it is read.
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "shapes": 10, "digits": 10}

Loaded = tuple[ImageSet, ImageSet, list[str]]
# What a loader takes: (dataset, source, work_dir, (synthetic train size, test size, seed)).
Loader = Callable[[str, str | os.PathLike | None, str | os.PathLike, tuple[int, int, int]], Loaded]


def _cifar(dataset: str, source: str | os.PathLike | None, work_dir: str | os.PathLike, synthetic: tuple[int, int, int]) -> Loaded:
    return load_cifar(CIFAR_ARCHIVES[dataset], source, work_dir)


def _shapes(dataset: str, source: str | os.PathLike | None, work_dir: str | os.PathLike, synthetic: tuple[int, int, int]) -> Loaded:
    archive = Path(work_dir) / SHAPES_SPEC.filename
    build_shapes_archive(archive, *synthetic)
    # Read it back through the real extraction and parsing code: that is what this set tests.
    return load_cifar(SHAPES_SPEC, archive, work_dir)


def _digits(dataset: str, source: str | os.PathLike | None, work_dir: str | os.PathLike, synthetic: tuple[int, int, int]) -> Loaded:
    return load_digits32()


def _folder(dataset: str, source: str | os.PathLike | None, work_dir: str | os.PathLike, synthetic: tuple[int, int, int]) -> Loaded:
    return load_image_folder(source, work_dir)


# data.dataset's names (names.DATASETS; tests/test_name_lists.py holds the two equal) and what loads each.
LOADERS: dict[str, Loader] = {"cifar10": _cifar, "cifar100": _cifar, "shapes": _shapes, "digits": _digits, "folder": _folder}
DATASETS = tuple(LOADERS)


def load_raw_dataset(
    dataset: str,
    source: str | os.PathLike | None,
    work_dir: str | os.PathLike,
    synthetic_train: int = 5000,
    synthetic_test: int = 1000,
    synthetic_seed: int = 0,
) -> Loaded:
    """Load `dataset` (using work_dir for downloads and extraction); `source` is used by CIFAR and folder."""
    if dataset not in LOADERS:
        raise UserError(f"unknown dataset {dataset!r}; data.dataset must be one of {', '.join(DATASETS)}")
    return LOADERS[dataset](dataset, source, work_dir, (synthetic_train, synthetic_test, synthetic_seed))
