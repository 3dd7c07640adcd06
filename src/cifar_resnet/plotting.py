"""Matplotlib figures and tables from the per-epoch metrics dvclive logged."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

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


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in CI
    import matplotlib.pyplot as plt

    return plt


def _draw_pair(ax, history: pd.DataFrame, quantity: str, best_step) -> None:
    """Train and validation curves of one quantity, with the best epoch marked."""
    for split, style in (("train", "-"), ("val", "--")):
        column = f"{split}_{quantity}"
        if column in history and history[column].notna().any():
            ax.plot(history["step"], history[column], style, marker="o", markersize=3, label=split)
    if best_step is not None:
        ax.axvline(best_step, color="grey", linestyle=":", label=f"best (epoch {best_step})")
    ax.set_xlabel("epoch")
    ax.set_ylabel({"loss": "loss", "acc": "accuracy"}[quantity])
    ax.grid(alpha=0.3)
    ax.legend()


def _draw_lr(ax, history: pd.DataFrame) -> None:
    ax.plot(history["step"], history["lr"], marker="o", markersize=3)
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate")
    ax.grid(alpha=0.3)


def best_epoch(history: pd.DataFrame):
    """The epoch with the highest validation accuracy (training accuracy if there is no validation)."""
    for column in ("val_acc", "train_acc"):
        if column in history and history[column].notna().any():
            return int(history.loc[history[column].idxmax(), "step"])
    return None


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")


def write_training_plots(history: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """overview.png (2x2), loss.png, accuracy.png, lr.png and metrics.csv; returns the paths written."""
    plt = _pyplot()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    best = best_epoch(history)
    written = []

    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    _draw_pair(axes[0, 0], history, "loss", best)
    _draw_pair(axes[0, 1], history, "acc", best)
    if "lr" in history:
        _draw_lr(axes[1, 0], history)
    if {"train_acc", "val_acc"} <= set(history.columns):
        gap = history["train_acc"] - history["val_acc"]
        axes[1, 1].plot(history["step"], gap, marker="o", markersize=3)
        axes[1, 1].axhline(0, color="grey", linewidth=0.8)
        axes[1, 1].set_xlabel("epoch")
        axes[1, 1].set_ylabel("train acc - val acc")
        axes[1, 1].grid(alpha=0.3)
    else:
        axes[1, 1].axis("off")
    fig.suptitle("Training curves")
    fig.tight_layout()
    _save(fig, out_dir / "overview.png")
    plt.close(fig)
    written.append(out_dir / "overview.png")

    for name, draw in (
        ("loss", lambda ax: _draw_pair(ax, history, "loss", best)),
        ("accuracy", lambda ax: _draw_pair(ax, history, "acc", best)),
        ("lr", lambda ax: _draw_lr(ax, history)),
    ):
        if name == "lr" and "lr" not in history:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        draw(ax)
        fig.tight_layout()
        _save(fig, out_dir / f"{name}.png")
        plt.close(fig)
        written.append(out_dir / f"{name}.png")

    with atomic_path(out_dir / "metrics.csv") as tmp:
        history.rename(columns={"step": "epoch"}).to_csv(tmp, index=False)
    written.append(out_dir / "metrics.csv")
    return written
