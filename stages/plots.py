"""Stage `plots`: training curves from the dvclive logs (what it writes: cifar_resnet.pipeline.plots).

It reads no parameters: params.yaml is neither loaded nor a dependency.
"""

import argparse
from pathlib import Path

import _local_src  # noqa: F401  (first: this tree's src/, whatever is installed)

from cifar_resnet.errors import run_stage
from cifar_resnet.pipeline import plots


def main() -> None:
    parser = argparse.ArgumentParser(description=plots.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--live", type=Path, required=True, help="dvclive folder of the train stage")
    parser.add_argument("--out", type=Path, required=True, help="folder for the PNGs, metrics.csv and metrics.npz")
    args = parser.parse_args()
    plots.run(plots.PlotsPaths(args.live, args.out))


if __name__ == "__main__":
    run_stage(main)
