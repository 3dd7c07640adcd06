"""Stage `plots`: loss, accuracy and learning-rate curves (PNG) and the metrics as CSV."""

import argparse
from pathlib import Path

from cifar_resnet.errors import run_stage
from cifar_resnet.fileio import atomic_dir
from cifar_resnet.plotting import read_dvclive_history, write_training_plots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--live", type=Path, required=True, help="dvclive folder of the train stage")
    parser.add_argument("--out", type=Path, required=True, help="folder for the PNGs and metrics.csv")
    args = parser.parse_args()

    history = read_dvclive_history(args.live)
    with atomic_dir(args.out) as out:
        written = write_training_plots(history, out)
    print(f"{len(written)} files -> {args.out}")


if __name__ == "__main__":
    run_stage(main)
