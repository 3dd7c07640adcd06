"""Stage `split`: seeded, stratified train/val split, caps applied (what it writes: cifar_resnet.pipeline.split)."""

import argparse
from pathlib import Path

import _local_src  # noqa: F401  (first: this tree's src/, whatever is installed)

from cifar_resnet.config import load_params
from cifar_resnet.errors import run_stage
from cifar_resnet.pipeline import split


def main() -> None:
    parser = argparse.ArgumentParser(description=split.__doc__)
    parser.add_argument("--raw", type=Path, required=True, help="output folder of the download stage")
    parser.add_argument("--out", type=Path, required=True, help="folder for train/val/test.npz and classes.json")
    args = parser.parse_args()
    split.run(load_params(), split.SplitPaths(args.raw, args.out))


if __name__ == "__main__":
    run_stage(main)
