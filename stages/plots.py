"""Stage `plots`: training curves from the dvclive logs, as PNGs plus the metrics as CSV and NPZ.

Writes overview.png (2x2: loss, accuracy, learning rate, generalisation gap), loss.png and
accuracy.png (train and validation together), one PNG per logged curve (train_loss,
val_loss, train_acc, val_acc, lr), metrics.csv and metrics.npz. Every curve marks the best
epoch (highest validation accuracy). Without a validation split the val_* files are skipped.
"""

import argparse
from pathlib import Path

import _local_src  # noqa: F401  (first: this tree's src/, whatever is installed)

from cifar_resnet.errors import run_stage
from cifar_resnet.fileio import atomic_dir
from cifar_resnet.plotting import best_epoch, read_dvclive_history, write_training_plots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--live", type=Path, required=True, help="dvclive folder of the train stage")
    parser.add_argument("--out", type=Path, required=True, help="folder for the PNGs, metrics.csv and metrics.npz")
    args = parser.parse_args()

    history = read_dvclive_history(args.live)
    with atomic_dir(args.out) as out:
        written = write_training_plots(history, out)
    print(f"{len(written)} files -> {args.out} (best epoch {best_epoch(history)})")


if __name__ == "__main__":
    run_stage(main)
