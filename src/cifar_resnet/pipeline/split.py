"""Stage `split`: seeded, stratified train/val split of the training set; caps applied.

Outputs (one folder, replaced atomically): train.npz, val.npz, test.npz, classes.json.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import Params
from ..data import load_classes, load_imageset, prepare_splits, save_classes, save_imageset
from ..fileio import atomic_dir


@dataclass(frozen=True)
class SplitPaths:
    raw: Path  # output folder of the download stage
    out: Path  # folder for train/val/test.npz and classes.json


def run(params: Params, paths: SplitPaths) -> None:
    data = params.data
    classes = load_classes(paths.raw / "classes.json", producer="download")
    train = load_imageset(paths.raw / "train.npz", num_classes=len(classes), producer="download")
    test = load_imageset(paths.raw / "test.npz", num_classes=len(classes), producer="download")
    splits = prepare_splits(train, test, data.val_fraction, data.max_train, data.max_test, seed=params.seed)
    with atomic_dir(paths.out) as out:
        for name, images in splits.items():
            save_imageset(out / f"{name}.npz", images)
        save_classes(out / "classes.json", classes)
    print(", ".join(f"{name}: {len(images)}" for name, images in splits.items()) + f" -> {paths.out}")
