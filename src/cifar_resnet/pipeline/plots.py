"""Stage `plots`: training curves from the dvclive logs, as PNGs plus the metrics as CSV and NPZ.

Writes overview.png (2x2: loss, accuracy, learning rate, generalisation gap), loss.png and
accuracy.png (train and validation together), one PNG per logged curve (train_loss,
val_loss, train_acc, val_acc, lr), metrics.csv and metrics.npz. Every curve marks the best
epoch (highest validation accuracy). Without a validation split the val_* files are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..fileio import atomic_dir
from ..plotting import best_epoch, read_dvclive_history, write_training_plots


@dataclass(frozen=True)
class PlotsPaths:
    live: Path  # dvclive folder of the train stage
    out: Path  # folder for the PNGs, metrics.csv and metrics.npz


def run(paths: PlotsPaths) -> None:
    """The curves of `paths.live` into `paths.out`; the stage reads no parameters, so none are taken."""
    history = read_dvclive_history(paths.live)
    with atomic_dir(paths.out) as out:
        written = write_training_plots(history, out)
    print(f"{len(written)} files -> {paths.out} (best epoch {best_epoch(history)})")
