"""Stage `download`: fetch or generate the raw dataset, parse it, write train/test arrays.

Outputs (one folder, replaced atomically): train.npz, test.npz, classes.json.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..config import DataParams
from ..data import load_raw_dataset, save_classes, save_imageset
from ..fileio import atomic_dir


@dataclass(frozen=True)
class DownloadPaths:
    out: Path  # folder for train.npz, test.npz, classes.json


def run(data: DataParams, paths: DownloadPaths) -> None:
    # Archives are downloaded and unpacked in a scratch folder that never outlives the stage.
    with tempfile.TemporaryDirectory(prefix="cifar-download-") as scratch:
        train, test, classes = load_raw_dataset(
            data.dataset,
            data.source,
            scratch,
            synthetic_train=data.synthetic.train_size,
            synthetic_test=data.synthetic.test_size,
            synthetic_seed=data.synthetic.seed,
        )
    with atomic_dir(paths.out) as out:
        save_imageset(out / "train.npz", train)
        save_imageset(out / "test.npz", test)
        save_classes(out / "classes.json", classes)
    print(f"{data.dataset}: {len(train)} train and {len(test)} test images, {len(classes)} classes -> {paths.out}")
