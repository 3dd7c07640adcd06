"""Matplotlib figures and tables from the per-epoch metrics dvclive logged.

Figures are bare `matplotlib.figure.Figure`s (Agg rendering, no pyplot), so drawing here
never changes the process-wide backend nor leaks open figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .errors import UserError
from .fileio import atomic_path

# dvclive's metric names -> our column names; one TSV per metric under plots/metrics/.
SERIES = {
    "train/loss": "train_loss",
    "val/loss": "val_loss",
    "train/acc": "train_acc",
    "val/acc": "val_acc",
    "lr": "lr",
}

# One PNG per curve: file stem -> (column, y-axis label).
SINGLE_CURVES = {
    "train_loss": ("train_loss", "training loss"),
    "val_loss": ("val_loss", "validation loss"),
    "train_acc": ("train_acc", "training accuracy"),
    "val_acc": ("val_acc", "validation accuracy"),
    "lr": ("lr", "learning rate"),
}

# Train and validation of one quantity on shared axes: file stem -> (columns, y-axis label).
PAIRED_CURVES = {
    "loss": (("train_loss", "val_loss"), "loss"),
    "accuracy": (("train_acc", "val_acc"), "accuracy"),
}

_STYLE = {"train": "-", "val": "--"}  # line style by split; the learning rate is drawn solid


def read_dvclive_history(live_dir: str | Path) -> pd.DataFrame:
    """One row per epoch (`step`), one column per logged series found in a dvclive folder."""
    metrics_dir = Path(live_dir) / "plots" / "metrics"
    frames = []
    for name, column in SERIES.items():
        tsv = metrics_dir / f"{name}.tsv"
        if tsv.exists():
            frame = pd.read_csv(tsv, sep="\t")
            frames.append(frame[["step", frame.columns[-1]]].rename(columns={frame.columns[-1]: column}).set_index("step"))
    if not frames:
        raise UserError(f"{metrics_dir}: no training metrics found (run `dvc repro train`)")
    return pd.concat(frames, axis=1).sort_index().reset_index()


def has_curve(history: pd.DataFrame, column: str) -> bool:
    """Whether `column` was logged for at least one epoch (val_* are absent when val_fraction is 0)."""
    return column in history and bool(history[column].notna().any())


def best_metric(history: pd.DataFrame) -> Optional[str]:
    """The column that defines the best epoch: val_acc, or train_acc without a validation split."""
    trained = history[history["step"] > 0]
    for column in ("val_acc", "train_acc"):
        if has_curve(trained, column):
            return column
    return None


def best_epoch(history: pd.DataFrame) -> Optional[int]:
    """The epoch with the highest validation accuracy (training accuracy if there is no validation).

    Epoch 0 (the untrained baseline) never counts and ties go to the earliest epoch: the same
    rule the train stage uses to pick the weights it saves, so the plots mark that model's epoch.
    """
    column = best_metric(history)
    if column is None:
        return None
    trained = history[history["step"] > 0]
    if column == "val_acc" and "val_loss" in trained:
        # An epoch whose validation loss spiked (val_acc logged, val_loss not) ranks below every
        # other, as in the train stage (training.loop._score); of only such epochs the first wins.
        usable = trained[trained["val_loss"].notna()]
        if usable.empty:
            return int(trained["step"].iloc[0])
        trained = usable
    return int(trained.loc[trained[column].idxmax(), "step"])


def _mark_best(ax: Axes, history: pd.DataFrame, columns: list[str], best: Optional[int]) -> None:
    """A dotted vertical line at the best epoch, and a star on each curve there."""
    if best is None:
        return
    ax.axvline(best, color="grey", linestyle=":", label=f"best epoch ({best})")
    row = history[history["step"] == best]
    for column in columns:
        value = row[column].iloc[0]
        if np.isfinite(value):
            ax.plot([best], [value], marker="*", markersize=11, color="black", linestyle="none", zorder=3)


def draw_curves(ax: Axes, history: pd.DataFrame, columns, ylabel: str, best: Optional[int]) -> list[str]:
    """The logged curves among `columns`, with the best epoch marked; returns the columns drawn."""
    drawn = [column for column in columns if has_curve(history, column)]
    if not drawn:
        ax.text(0.5, 0.5, f"{ylabel}: not logged", ha="center", va="center", transform=ax.transAxes)
        ax.axis("off")
        return drawn
    for column in drawn:
        split = column.split("_")[0]
        label = {"train": "train", "val": "validation"}.get(split, column)
        ax.plot(history["step"], history[column], _STYLE.get(split, "-"), marker="o", markersize=3, label=label)
    _mark_best(ax, history, drawn, best)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    return drawn


def draw_generalisation_gap(ax: Axes, history: pd.DataFrame, best: Optional[int]) -> None:
    """Training minus validation accuracy per epoch: growing means overfitting."""
    if not (has_curve(history, "train_acc") and has_curve(history, "val_acc")):
        # An empty panel would look like a bug; say why it is empty instead.
        ax.text(0.5, 0.5, "no validation split\n(data.val_fraction = 0):\nno generalisation gap",
                ha="center", va="center", transform=ax.transAxes)
        ax.axis("off")
        return
    gap = history.assign(gap=history["train_acc"] - history["val_acc"])
    ax.axhline(0, color="grey", linewidth=0.8)
    draw_curves(ax, gap, ["gap"], "train acc - val acc", best)
    ax.set_title("generalisation gap", fontsize=10)


def _overview_title(history: pd.DataFrame, best: Optional[int]) -> str:
    """The overview's headline: the best epoch and the metric that chose it."""
    if best is None:
        return "Training curves"
    column = best_metric(history)
    value = history.loc[history["step"] == best, column].iloc[0]
    return f"Training curves: best epoch {best} ({column.replace('_', ' ')} {value:.4f})"


def overview_figure(history: pd.DataFrame) -> Figure:
    """2x2: loss, accuracy, learning rate, generalisation gap; the best epoch marked on each."""
    best = best_epoch(history)
    fig = Figure(figsize=(8.2, 6.0), layout="constrained")
    axes = fig.subplots(2, 2)
    for ax, (columns, ylabel) in zip(axes[0], PAIRED_CURVES.values()):
        draw_curves(ax, history, columns, ylabel, best)
    draw_curves(axes[1, 0], history, ["lr"], "learning rate", best)
    draw_generalisation_gap(axes[1, 1], history, best)
    fig.suptitle(_overview_title(history, best))
    return fig


def training_figures(history: pd.DataFrame) -> dict[str, Figure]:
    """File name -> figure: overview.png, loss.png, accuracy.png and one PNG per logged curve."""
    best = best_epoch(history)
    figures = {"overview.png": overview_figure(history)}
    curves = {stem: (columns, ylabel) for stem, (columns, ylabel) in PAIRED_CURVES.items()}
    curves.update({stem: ([column], ylabel) for stem, (column, ylabel) in SINGLE_CURVES.items()})
    for stem, (columns, ylabel) in curves.items():
        if not any(has_curve(history, column) for column in columns):
            continue  # e.g. val_loss.png without a validation split
        fig = Figure(figsize=(6, 4), layout="constrained")
        draw_curves(fig.subplots(), history, columns, ylabel, best)
        figures[f"{stem}.png"] = fig
    return figures


def metrics_table(history: pd.DataFrame) -> pd.DataFrame:
    """The history with `step` renamed `epoch` and the logged series in a fixed order."""
    columns = ["step"] + [column for column in SERIES.values() if column in history]
    return history[columns].rename(columns={"step": "epoch"})


def save_figure(fig: Figure, path: Path) -> None:
    """Write `fig` as a PNG, atomically."""
    with atomic_path(path) as tmp:
        # 80 dpi: the overview (8.2 inches) is 656 pixels wide, so two runs fit side by side on a
        # 1400-pixel `dvc plots diff` page. Explicit format: the temporary name ends in .tmp.
        fig.savefig(tmp, format="png", dpi=80)


def save_metrics_table(table: pd.DataFrame, csv_path: Path, npz_path: Path) -> None:
    """The same table as CSV (for people and `dvc plots`) and NPZ (one array per column, for NumPy)."""
    with atomic_path(csv_path) as tmp:
        # Python's shortest round-trip float repr: parsing the CSV gives back the NPZ's values exactly.
        table.to_csv(tmp, index=False)
    with atomic_path(npz_path) as tmp, open(tmp, "wb") as f:
        # A file object: np.savez given a name would append ".npz" to the temporary name.
        np.savez(f, **{column: table[column].to_numpy() for column in table.columns})


def write_training_plots(history: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Every figure of training_figures() as PNG, plus metrics.csv and metrics.npz; returns the paths written."""
    out_dir = Path(out_dir)
    written = []
    for name, fig in training_figures(history).items():
        save_figure(fig, out_dir / name)
        written.append(out_dir / name)
    save_metrics_table(metrics_table(history), out_dir / "metrics.csv", out_dir / "metrics.npz")
    return written + [out_dir / "metrics.csv", out_dir / "metrics.npz"]
