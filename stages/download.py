"""Stage `download`: fetch or generate the raw dataset (what it writes: cifar_resnet.pipeline.download)."""

import argparse
from pathlib import Path

import _local_src  # noqa: F401  (first: this tree's src/, whatever is installed)

from cifar_resnet.config import load_params
from cifar_resnet.errors import run_stage
from cifar_resnet.pipeline import download


def main() -> None:
    parser = argparse.ArgumentParser(description=download.__doc__)
    parser.add_argument("--out", type=Path, required=True, help="folder for train.npz, test.npz, classes.json")
    args = parser.parse_args()
    download.run(load_params().data, download.DownloadPaths(args.out))


if __name__ == "__main__":
    run_stage(main)
