"""Figures and tables of the evaluation: normalised confusion matrix, reliability diagram, worst mistakes.

The *_figure functions return bare `matplotlib.figure.Figure`s (Agg rendering, no pyplot, as
in plotting.py); write_evaluation_plots writes them all, with the tables, into one folder.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from .evaluation import (
    calibration_error, confusion_cells, confusion_matrix, confusion_records, most_confident_wrong, per_class_table,
    reliability_bins, row_normalise,
)
from .fileio import atomic_path, write_json
from .plotting import save_figure

# What write_evaluation_plots writes, in its order.
PLOT_FILES = (
    "confusion.json", "confusion.csv", "confusion_normalised.png", "per_class.csv", "reliability.csv", "reliability.png",
    "wrong.png",
)
CONFUSION_COLUMNS = ("actual", "predicted", "actual_index", "predicted_index", "images")  # confusion.csv's header

# Beyond this many classes (CIFAR-100) per-cell numbers are unreadable: colour alone tells the story.
_ANNOTATE_UP_TO = 20
# Beyond this many classes the names overlap even at 5 pt in the 16-inch figure, and drawing
# them is most of the time (30 s for 2,000 classes): the axes number the classes instead.
_NAME_UP_TO = 200


def confusion_figure(normalised: torch.Tensor, classes: Sequence[str]) -> Figure:
    """The row-normalised confusion matrix (evaluation.row_normalise): true class per row, predicted per column."""
    matrix = np.asarray(normalised, dtype=np.float64)
    n = len(classes)
    # Inches: grows with the classes; the cap keeps CIFAR-100's within a 1400-pixel page at save_figure's dpi.
    side = min(16.0, max(5.0, 2.0 + 0.4 * n))
    fig = Figure(figsize=(side + 1.0, side), layout="constrained")
    ax = fig.subplots()
    # A class absent from the labels has a NaN row: masked, it shows as blank rather than as zeros.
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    fontsize = 8 if n <= _ANNOTATE_UP_TO else 5
    if n <= _NAME_UP_TO:
        names = [literal_text(name) for name in classes]
        ax.set_xticks(range(n), names, rotation=90, fontsize=fontsize)
        ax.set_yticks(range(n), names, fontsize=fontsize)
    index = "" if n <= _NAME_UP_TO else " (index in the dataset's class order)"
    ax.set_xlabel(f"predicted class{index}")
    ax.set_ylabel(f"true class{index}")
    if n <= _ANNOTATE_UP_TO:
        for (row, col), value in np.ndenumerate(matrix):
            if np.isfinite(value) and value > 0:
                # White text on dark cells, black on light ones.
                ax.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if value > 0.6 else "black")
    ax.set_title("Confusion matrix (each row sums to 1)")
    return fig


def reliability_figure(table: Sequence[dict], ece: float) -> Figure:
    """Accuracy per confidence bin against the diagonal (perfect calibration), bin counts below.

    `table` is evaluation.reliability_bins' output; bars above the diagonal mean the model is
    underconfident there, bars below it overconfident.
    """
    lower = np.array([row["lower"] for row in table])
    width = np.array([row["upper"] - row["lower"] for row in table])
    accuracy = np.array([row["accuracy"] for row in table])
    confidence = np.array([row["confidence"] for row in table])
    count = np.array([row["count"] for row in table])
    filled = count > 0

    fig = Figure(figsize=(5.5, 6.5), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.bar(lower[filled], accuracy[filled], width=width[filled], align="edge", edgecolor="black",
            alpha=0.8, label="accuracy")
    top.plot(confidence[filled], confidence[filled], "o", color="darkred", markersize=4,
             label="mean confidence")
    top.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.set_title(f"Reliability diagram (ECE {ece:.4f})")
    top.legend(loc="upper left")
    top.grid(alpha=0.3)
    bottom.bar(lower, count, width=width, align="edge", edgecolor="black", color="grey")
    bottom.set_xlabel("confidence (max softmax probability)")
    bottom.set_ylabel("images")
    bottom.grid(alpha=0.3)
    return fig


def image_grid_figure(images_uint8: Sequence[np.ndarray], titles: Sequence[str], title: str = "") -> Figure:
    """Titled uint8 HWC images in a near-square grid; a figure needs at least one image."""
    if len(images_uint8) != len(titles) or len(titles) == 0:
        raise ValueError(f"need as many images as titles, at least one; got {len(images_uint8)} and {len(titles)}")
    ncols = math.ceil(math.sqrt(len(titles)))
    nrows = math.ceil(len(titles) / ncols)
    fig = Figure(figsize=(2.0 * ncols, 2.4 * nrows + 0.4), layout="constrained")  # 4 columns: 640 pixels
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, image, text in zip(axes, images_uint8, titles):
        ax.imshow(image, interpolation="nearest")  # nearest keeps 32x32 pixels sharp when enlarged
        ax.set_title(text, fontsize=8)
    for ax in axes:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    return fig


def literal_text(text: str) -> str:
    """`text` escaped for matplotlib, which reads "$...$" as mathtext: a class named "a$b$c" stays "a$b$c".

    Escaping (rather than parse_math=False) also holds for tick labels, whose Text objects
    matplotlib makes itself; "\\$" draws "$" both with mathtext and with usetex.
    """
    return text.replace("$", r"\$")


def prediction_titles(probabilities: torch.Tensor, labels: torch.Tensor, classes: Sequence[str]) -> list[str]:
    """A two-line matplotlib title per image: "pred: <class> (<probability>)" above "true: <class>".

    Class names are escaped with literal_text, so they are drawn exactly as spelled.
    """
    confidence, predicted = probabilities.max(dim=1)
    names = [literal_text(name) for name in classes]
    return [
        f"pred: {names[p]} ({c:.2f})\ntrue: {names[t]}"
        for p, c, t in zip(predicted.tolist(), confidence.tolist(), labels.tolist())
    ]


def wrong_predictions_figure(
    images_uint8: np.ndarray, probabilities: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor, classes: Sequence[str]
) -> Figure:
    """The images at `indices` (see evaluation.most_confident_wrong), titled with their predictions.

    With no indices (a model with no mistakes) the figure says so, so its file still exists.
    """
    if len(indices) == 0:
        return message_figure(f"no wrong predictions on the {len(labels)} test images")
    chosen = indices.tolist()
    titles = prediction_titles(probabilities[chosen], labels[chosen], classes)
    return image_grid_figure(images_uint8[chosen], titles, title=f"The {len(chosen)} most confidently wrong test images")


def message_figure(text: str) -> Figure:
    """A small figure holding only `text`: stands in for a figure with nothing to show, so its file exists."""
    fig = Figure(figsize=(5, 2), layout="constrained")
    ax = fig.subplots()
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    ax.axis("off")
    return fig


def write_evaluation_plots(
    out_dir: str | Path,
    logits: torch.Tensor,
    labels: torch.Tensor,
    images_uint8: np.ndarray,
    classes: Sequence[str],
    calibration_bins: int,
    wrong_images: int,
) -> list[Path]:
    """Every evaluation table and figure of one model's test logits, under `out_dir`; returns the paths.

    confusion.json (the confusion plot's data: one record per test image; beyond
    CONFUSION_PLOT_CLASSES classes, only those between the most confused classes), confusion.csv
    (every non-zero cell of the whole matrix), confusion_normalised.png, per_class.csv, reliability.csv (non-empty bins only: an
    empty bin has no accuracy to plot), reliability.png and wrong.png (the `wrong_images` most
    confidently wrong images; a figure saying "disabled" when it is 0).
    """
    out_dir = Path(out_dir)
    predictions, probabilities = logits.argmax(dim=1), logits.softmax(dim=1)
    confusion = confusion_matrix(predictions, labels, len(classes))
    reliability = reliability_bins(probabilities, labels, calibration_bins)
    if wrong_images:
        wrong = most_confident_wrong(probabilities, labels, wrong_images)
        wrong_fig = wrong_predictions_figure(images_uint8, probabilities, labels, wrong, classes)
    else:
        wrong_fig = message_figure("wrong-image grid disabled (wrong_images = 0)")

    write_json(out_dir / "confusion.json", confusion_records(predictions, labels, classes))
    _write_csv(confusion_cells(confusion, classes), out_dir / "confusion.csv", columns=CONFUSION_COLUMNS)
    save_figure(confusion_figure(row_normalise(confusion), classes), out_dir / "confusion_normalised.png")
    _write_csv(per_class_table(confusion, classes), out_dir / "per_class.csv")
    _write_csv([row for row in reliability if row["count"]], out_dir / "reliability.csv")
    save_figure(reliability_figure(reliability, calibration_error(reliability)), out_dir / "reliability.png")
    save_figure(wrong_fig, out_dir / "wrong.png")
    return [out_dir / name for name in PLOT_FILES]


def _write_csv(rows: list[dict], path: Path, columns: Sequence[str] | None = None) -> None:
    """Rows as CSV with a header (no index column), atomically; NaN becomes an empty cell.

    `columns` names the header even when there are no rows (pandas would write an empty file).
    """
    with atomic_path(path) as tmp:
        pd.DataFrame(rows, columns=None if columns is None else list(columns)).to_csv(tmp, index=False)
