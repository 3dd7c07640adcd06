"""Class-activation map figures: which test images to show, their maps blended over them, and the PNGs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from pytorch_grad_cam.utils.image import show_cam_on_image
from torch import nn

from .data.arrays import ImageSet
from .fileio import atomic_path
from .figures import prediction_titles
from .gradcam import compute_cams
from .inference import make_eval_tensors
from .localisation import peak_locations


def grid_positions(labels: Sequence[int], count: int) -> list[int]:
    """Which test images the grid shows: the first of each class in class order, then the
    second of each, and so on round-robin, `count` in all (every image when there are fewer).

    The first images alone can all be of one class: a folder of images is read in sorted-path
    order, class by class (CIFAR-10 as JPEG folders: six airplanes). One image per class shows
    what the model looks at across the classes.
    """
    labels = np.asarray(labels)
    by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]  # positions, in test-set order
    longest = max((len(positions) for positions in by_class), default=0)
    order = [int(positions[rank]) for rank in range(longest) for positions in by_class if rank < len(positions)]
    return order[:count]


def explain_predictions(
    model: nn.Module, shown: ImageSet, mean: Sequence[float], std: Sequence[float], classes: Sequence[str],
    target_layer: str, method: str, positions: Optional[Sequence[int]] = None,
) -> tuple[np.ndarray, list[str], list[str]]:
    """CAMs for the class the model predicts on each of `shown`'s images, with figure titles
    (prediction, confidence, true class) and one file name per image, numbered by `positions`
    (each image's place in the test set; by default its place in `shown`)."""
    inputs, labels = make_eval_tensors(shown, mean, std)
    model.eval()
    with torch.no_grad():
        probabilities = model(inputs).softmax(dim=1)
    cams = compute_cams(model, inputs, target_layer=target_layer, method=method)
    positions = range(len(shown)) if positions is None else positions
    names = [overlay_filename(i, classes[t]) for i, t in zip(positions, labels.tolist(), strict=True)]
    return cams, prediction_titles(probabilities, labels, classes), names


def overlay(image_uint8: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """The CAM as a JET heat map blended over an RGB uint8 HWC image; returns uint8 HWC."""
    image = np.asarray(image_uint8)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 HWC image, got dtype {image.dtype} shape {image.shape}")
    if cam.shape != image.shape[:2]:
        raise ValueError(f"cam shape {cam.shape} does not match image shape {image.shape[:2]}")
    # show_cam_on_image wants float RGB in [0, 1]; a mask outside [0, 1] would wrap around in its uint8 cast.
    rgb = image.astype(np.float32) / 255.0
    return show_cam_on_image(rgb, np.clip(cam, 0.0, 1.0).astype(np.float32), use_rgb=True)


# How the methods are named in figure titles.
METHOD_NAMES = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "scorecam": "Score-CAM", "eigencam": "Eigen-CAM"}

_PANEL_INCHES = 1.45  # one 32x32 picture; a pair (image, heat map) is two of these side by side
_BAR_INCHES = 0.8  # the colour bar's strip
# Two pairs and the bar at 100 dpi: 660 pixels, so two runs fit side by side on a 1400-pixel page.


def _draw_box(ax, box: np.ndarray) -> None:
    """The object's (x0, y0, x1, y1) box as a white outline."""
    x0, y0, x1, y1 = (int(v) for v in box)
    # imshow centres pixel x on x, so the box's pixels x0..x1-1 span x0 - 0.5 .. x1 - 0.5.
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="white", linewidth=1.5))


def _draw_peak(ax, cam: np.ndarray, image_size: tuple[int, int]) -> None:
    """The CAM's peak as a white '+', where the localisation score locates it (none for a flat CAM)."""
    (peak_x, peak_y), = peak_locations(cam[None], image_size)
    if np.isfinite(peak_x):
        ax.plot(peak_x - 0.5, peak_y - 0.5, marker="+", markersize=10, markeredgewidth=2, color="white")


def _draw_pair(subfig, image: np.ndarray, cam: np.ndarray, title: str, box: Optional[np.ndarray]) -> None:
    """One example: the test image on the left, the CAM blended over it on the right, under one title."""
    left, right = subfig.subplots(1, 2)
    # Nearest keeps the 32x32 pixels honest when upscaled to the panel size.
    left.imshow(image, interpolation="nearest")
    right.imshow(overlay(image, cam), interpolation="nearest")
    if box is not None:  # only boxed datasets (shapes) are scored, so only there is the peak worth marking
        _draw_box(left, box)
        _draw_box(right, box)
        _draw_peak(right, cam, image.shape[:2])
    for ax in (left, right):
        ax.set_xticks([])
        ax.set_yticks([])
    subfig.suptitle(title, fontsize=9)  # titles come from figures.prediction_titles, `$` escaped there


def _colour_bar(fig: Figure, cax) -> None:
    """The JET scale of the heat maps (show_cam_on_image uses OpenCV's JET, the same map as matplotlib's)."""
    bar = fig.colorbar(ScalarMappable(Normalize(0.0, 1.0), cmap="jet"), cax=cax, ticks=[0.0, 0.5, 1.0])
    bar.ax.set_yticklabels(["0 none", "0.5", "1 peak"], fontsize=7)
    bar.ax.set_title("CAM", fontsize=8)  # above the bar: the strip is too narrow for a side label


def _marker_legend(fig: Figure) -> None:
    """What the white outline and the '+' mean; drawn on grey so the white symbols show."""
    handles = [
        Rectangle((0, 0), 1, 1, fill=False, edgecolor="white", linewidth=1.5, label="object's box (shapes dataset)"),
        Line2D([], [], linestyle="none", marker="+", markersize=10, markeredgewidth=2, color="white", label="CAM peak"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=8, facecolor="0.35",
               labelcolor="white", framealpha=1.0)


def cam_figure(
    images_uint8: Sequence[np.ndarray],
    cams: Sequence[np.ndarray],
    titles: Sequence[str],
    ncols: int = 2,
    boxes: Optional[np.ndarray] = None,
    method: str = "",
    layer: str = "",
) -> Figure:
    """Image and CAM side by side per example, `ncols` examples per row, with a colour bar.

    The title names the method and layer; with boxes, a legend explains the white outline
    (the object's box) and the '+' (the CAM's peak, as measure_localisation finds it).
    """
    _check_lengths(images_uint8, cams, titles, boxes)
    ncols = max(1, min(ncols, len(cams)))
    nrows = -(-len(cams) // ncols)
    width = 2 * _PANEL_INCHES * ncols + _BAR_INCHES
    height = (_PANEL_INCHES + 0.45) * nrows + 0.45 + (0.35 if boxes is not None else 0.0)
    # A bare Figure (no pyplot) renders with Agg and never touches the process-wide backend.
    fig = Figure(figsize=(width, height), layout="constrained")
    grid, bar = fig.subfigures(1, 2, width_ratios=[width - _BAR_INCHES, _BAR_INCHES])
    pairs = np.atleast_1d(grid.subfigures(nrows, ncols, squeeze=False).ravel())
    for i, (subfig, image, cam, title) in enumerate(zip(pairs, images_uint8, cams, titles)):
        _draw_pair(subfig, image, cam, title, None if boxes is None else boxes[i])
    _colour_bar(fig, bar.add_axes((0.1, 0.12, 0.18, 0.74)))
    if boxes is not None:
        _marker_legend(fig)
    name = METHOD_NAMES.get(method, method)
    fig.suptitle(f"{name} at {layer}, for the predicted class" if name and layer else "Class-activation maps", fontsize=10)
    return fig


def _save_png(fig: Figure, path: str | Path) -> Path:
    """Write `fig` as a PNG, atomically; returns the path."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)  # explicit format: the temporary name ends in .tmp
    return Path(path)


def _check_lengths(images_uint8, cams, titles, boxes) -> None:
    """One image, CAM, title (and box, if any) per panel, and at least one panel."""
    counts = [len(images_uint8), len(cams), len(titles)] + ([] if boxes is None else [len(boxes)])
    if len(set(counts)) != 1 or counts[0] == 0:
        raise ValueError(f"need as many images, cams, titles (and boxes), at least one; got {counts}")


def plot_cam_grid(
    images_uint8: Sequence[np.ndarray],
    cams: Sequence[np.ndarray],
    titles: Sequence[str],
    path: str | Path,
    ncols: int = 2,
    boxes: Optional[np.ndarray] = None,
    method: str = "",
    layer: str = "",
) -> None:
    """Save cam_figure as a PNG: `ncols` (image, CAM) pairs per row; boxes (x0, y0, x1, y1) outlined."""
    _save_png(cam_figure(images_uint8, cams, titles, ncols, boxes, method, layer), path)


def overlay_filename(index: int, true_class: str) -> str:
    """"03_cat.png": the image's position in the test set, then its true class, safe as a file name."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", true_class).strip("-") or "class"
    return f"{index:02d}_{slug}.png"


def save_cam_images(
    folder: str | Path,
    names: Sequence[str],
    images_uint8: Sequence[np.ndarray],
    cams: Sequence[np.ndarray],
    titles: Sequence[str],
    boxes: Optional[np.ndarray] = None,
    method: str = "",
    layer: str = "",
) -> list[Path]:
    """One PNG per image (the grid's pairs, one per file) under `folder`; returns the paths."""
    _check_lengths(images_uint8, cams, titles, boxes)
    if len(set(names)) != len(names):
        raise ValueError(f"file names must be unique, got {list(names)}")
    return [
        _save_png(cam_figure([image], [cam], [title], 1, None if boxes is None else boxes[i : i + 1], method, layer),
                  Path(folder) / name)
        for i, (name, image, cam, title) in enumerate(zip(names, images_uint8, cams, titles))
    ]
