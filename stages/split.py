"""Stage `split`: seeded, stratified train/val split of the training set; caps applied.

Outputs (one folder, replaced atomically): train.npz, val.npz, test.npz, classes.json.
"""

import argparse
from pathlib import Path

import _local_src  # noqa: F401  (first: this tree's src/, whatever is installed)

from cifar_resnet.config import load_params
from cifar_resnet.data import load_classes, load_imageset, prepare_splits, save_classes, save_imageset
from cifar_resnet.errors import run_stage
from cifar_resnet.fileio import atomic_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--raw", type=Path, required=True, help="output folder of the download stage")
    parser.add_argument("--out", type=Path, required=True, help="folder for train/val/test.npz and classes.json")
    args = parser.parse_args()
    params = load_params()
    data = params.data

    classes = load_classes(args.raw / "classes.json", producer="download")
    train = load_imageset(args.raw / "train.npz", num_classes=len(classes), producer="download")
    test = load_imageset(args.raw / "test.npz", num_classes=len(classes), producer="download")
    splits = prepare_splits(train, test, data.val_fraction, data.max_train, data.max_test, seed=params.seed)
    with atomic_dir(args.out) as out:
        for name, images in splits.items():
            save_imageset(out / f"{name}.npz", images)
        save_classes(out / "classes.json", classes)
    print(", ".join(f"{name}: {len(images)}" for name, images in splits.items()) + f" -> {args.out}")


if __name__ == "__main__":
    run_stage(main)
