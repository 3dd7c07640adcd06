"""Stage `download`: fetch or generate the raw dataset, parse it, write train/test arrays.

Outputs (one folder, replaced atomically): train.npz, test.npz, classes.json.
"""

import argparse
import tempfile
from pathlib import Path

import _local_src  # noqa: F401  (first: this tree's src/, whatever is installed)

from cifar_resnet.config import load_params
from cifar_resnet.data import load_raw_dataset, save_classes, save_imageset
from cifar_resnet.errors import run_stage
from cifar_resnet.fileio import atomic_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="folder for train.npz, test.npz, classes.json")
    args = parser.parse_args()
    params = load_params()
    data = params.data

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
    with atomic_dir(args.out) as out:
        save_imageset(out / "train.npz", train)
        save_imageset(out / "test.npz", test)
        save_classes(out / "classes.json", classes)
    print(f"{data.dataset}: {len(train)} train and {len(test)} test images, {len(classes)} classes -> {args.out}")


if __name__ == "__main__":
    run_stage(main)
