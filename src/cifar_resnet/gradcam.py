"""Class-activation maps (pytorch-grad-cam), overlays, figures and a localisation score."""

from __future__ import annotations

import contextlib
import io
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
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, ScoreCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from .data.arrays import IMAGE_SHAPE, ImageSet
from .errors import UserError
from .fileio import atomic_path
from .figures import prediction_titles
from .inference import make_eval_tensors
from .models.resnet import default_cam_layer
from .models.summary import forward_zeros

CAM_METHODS = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "scorecam": ScoreCAM,
    "eigencam": EigenCAM,
}


def resolve_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule at dotted path `name` (e.g. "layer4" or "layer4.1.conv2")."""
    try:
        if not name:
            raise AttributeError(name)
        return model.get_submodule(name)
    except AttributeError:
        candidates = ", ".join(child for child, _ in model.named_children())
        raise UserError(f"unknown target layer {name!r} (top-level layers: {candidates}; use dots for deeper ones, e.g. layer4.1.conv2)") from None


def resolve_target_layer(name: str, stem: str, arch: str) -> str:
    """The layer `name` stands for: "auto" is the last stage that keeps a spatial map at 32x32,
    as the network `arch` states it for `stem` (models.resnet.default_cam_layer). Other names pass through.
    """
    if name != "auto":
        return name
    return default_cam_layer(arch, stem)


def feature_map_size(model: nn.Module, target_layer: str, image_size: tuple[int, int] = IMAGE_SHAPE[:2]) -> tuple[int, int]:
    """(height, width) of the feature map `target_layer` gives for one image; UserError if it has none.

    A CAM weights a layer's channels over its spatial map: a layer without one (fc) makes
    grad-cam fail deep inside, and a 1x1 map (avgpool) gives a flat, meaningless CAM.
    """
    layer = resolve_layer(model, target_layer)
    shapes = []
    forward_zeros(model, [(layer, lambda module, args, output: shapes.append(tuple(getattr(output, "shape", ()))))], image_size)
    if not shapes:
        raise UserError(f"target layer {target_layer!r} is not used in the model's forward pass; pick one such as layer4")
    shape = shapes[-1]
    if len(shape) != 4 or shape[2] * shape[3] < 2:
        raise UserError(
            f"target layer {target_layer!r} outputs shape {shape}, not a spatial feature map; "
            "pick an earlier layer, such as layer3"
        )
    return shape[2], shape[3]


def _cam_class(method: str) -> type:
    """The pytorch-grad-cam class for `method`."""
    if method not in CAM_METHODS:
        raise UserError(f"unknown CAM method {method!r} (valid: {', '.join(CAM_METHODS)})")
    return CAM_METHODS[method]


def _class_targets(targets: Optional[Sequence[int]], count: int) -> Optional[list[ClassifierOutputTarget]]:
    """Wrap class indices as grad-cam targets; None lets grad-cam use each predicted class."""
    if targets is None:
        return None
    if len(targets) != count:
        raise ValueError(f"got {len(targets)} targets for {count} inputs")
    return [ClassifierOutputTarget(int(t)) for t in targets]


def compute_cams(
    model: nn.Module,
    inputs: torch.Tensor,
    target_layer: str = "layer4",
    method: str = "gradcam",
    targets: Optional[Sequence[int]] = None,
    batch_size: int = 64,
) -> np.ndarray:
    """CAMs (N, H, W) in [0, 1] for normalised `inputs` (N, 3, H, W); targets None means the predicted class.

    The images go through grad-cam `batch_size` at a time: one forward and backward pass per
    batch (not per image) keeps hundreds of images fast on a CPU, and the cap bounds the
    activations and gradients held at once for wide models.
    Runs on the model's device. Must not be called under torch.inference_mode (gradients are needed).
    """
    cam_class = _cam_class(method)
    layer = resolve_layer(model, target_layer)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    class_targets = _class_targets(targets, len(inputs))
    was_training = model.training
    # grad-cam calls model.eval() and model.zero_grad(): remember both to hand the model back unchanged.
    saved_grads = [p.grad for p in model.parameters()]
    cam = cam_class(model=model, target_layers=[layer])
    chunks = []
    try:
        with torch.enable_grad(), _quiet_progress(method):
            for start in range(0, len(inputs), batch_size):
                # An input that requires grad makes the layer's output require grad even if the weights are frozen.
                chunk = inputs[start : start + batch_size].detach().clone().requires_grad_(True)
                chunk_targets = None if class_targets is None else class_targets[start : start + batch_size]
                chunks.append(np.asarray(cam(input_tensor=chunk, targets=chunk_targets), dtype=np.float32))
    finally:
        # Not `with cam:` -- its __exit__ swallows IndexError; release() removes the hooks either way.
        cam.activations_and_grads.release()
        cam.outputs = None  # drop the last batch's autograd graph now, not when `cam` is collected
        model.train(was_training)
        for param, grad in zip(model.parameters(), saved_grads):
            param.grad = grad
    if not chunks:
        return np.zeros((0, *inputs.shape[-2:]), dtype=np.float32)
    return np.clip(np.concatenate(chunks), 0.0, 1.0)


def _quiet_progress(method: str) -> contextlib.AbstractContextManager:
    """ScoreCAM prints a tqdm bar per image to stderr; swallow it (other methods print nothing)."""
    if method == "scorecam":
        return contextlib.redirect_stderr(io.StringIO())
    return contextlib.nullcontext()


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


def peak_locations(cams: np.ndarray, image_size: tuple[int, int] = IMAGE_SHAPE[:2], atol: float = 1e-6) -> np.ndarray:
    """Each CAM's peak as (x, y) image coordinates (pixel x spans [x, x + 1)); NaN for a flat CAM.

    `image_size` is (height, width) of the images the CAMs explain; a CAM of another size
    (e.g. a raw 4x4 layer4 map) is mapped onto it, so its peak cell's centre is what counts.
    The peak is the centre of all pixels within `atol` of the maximum: grad-cam's bilinear
    upsampling turns a peak in an edge cell of the feature map into a plateau of equal
    pixels, and np.argmax would pick that plateau's top-left pixel, biasing peaks toward
    the image's top and left. A flat CAM (grad-cam returns all zeros when no activation
    helps the class) has no peak: it localises nothing.
    """
    cams = np.asarray(cams, dtype=np.float64)
    if cams.ndim != 3:
        raise ValueError(f"expected cams (N, H, W), got shape {cams.shape}")
    n, cam_h, cam_w = cams.shape
    top = cams.max(axis=(1, 2), keepdims=True)
    plateau = cams >= top - atol
    count = plateau.sum(axis=(1, 2))
    ys, xs = np.mgrid[0:cam_h, 0:cam_w]
    # Centres of CAM pixels, in CAM pixel units, then scaled to image pixels.
    centre_x = (plateau * (xs + 0.5)).sum(axis=(1, 2)) / count * (image_size[1] / cam_w)
    centre_y = (plateau * (ys + 0.5)).sum(axis=(1, 2)) / count * (image_size[0] / cam_h)
    flat = (top - cams.min(axis=(1, 2), keepdims=True)).reshape(n) <= atol
    peaks = np.stack([centre_x, centre_y], axis=1)
    peaks[flat] = np.nan
    return peaks


def peak_in_box(cams: np.ndarray, boxes: np.ndarray, image_size: tuple[int, int] = IMAGE_SHAPE[:2]) -> np.ndarray:
    """Whether each CAM's peak (see peak_locations) lies in its (x0, y0, x1, y1) box, x1 and y1 exclusive."""
    cams, boxes = np.asarray(cams), np.asarray(boxes)
    if cams.ndim != 3 or boxes.shape != (len(cams), 4):
        raise ValueError(f"expected cams (N, H, W) and boxes (N, 4), got {cams.shape} and {boxes.shape}")
    xs, ys = peak_locations(cams, image_size).T
    x0, y0, x1, y1 = boxes.T
    # Box pixels x0..x1-1 span [x0, x1) in image coordinates; NaN (no peak) compares False.
    return (x0 <= xs) & (xs < x1) & (y0 <= ys) & (ys < y1)


def localisation_score(cams: np.ndarray, boxes: np.ndarray, image_size: tuple[int, int] = IMAGE_SHAPE[:2]) -> float:
    """The fraction of CAMs whose peak lies inside the object's box (the "pointing game")."""
    if len(cams) == 0:
        raise ValueError("localisation_score needs at least one cam")
    return float(peak_in_box(cams, boxes, image_size).mean())


def chance_level(boxes: np.ndarray, image_size: tuple[int, int] = IMAGE_SHAPE[:2]) -> float:
    """The localisation score of a peak placed uniformly at random: the mean share of the image the boxes cover."""
    boxes = np.asarray(boxes, dtype=np.float64)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return float(areas.mean() / (image_size[0] * image_size[1]))


def measure_localisation(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: Sequence[int],
    boxes: np.ndarray,
    target_layer: str = "layer4",
    method: str = "gradcam",
    batch_size: int = 64,
) -> dict:
    """The localisation score of `method` on `target_layer` for normalised `inputs` with known boxes.

    CAMs are taken for each image's true class, as in the pointing game: the question is
    whether the model looks at the object when it scores that object's class, right or wrong.
    `chance` is what a random peak would score on these boxes (big objects make hits easy).
    """
    cams = compute_cams(model, inputs, target_layer, method, targets=[int(t) for t in labels], batch_size=batch_size)
    image_size = tuple(inputs.shape[-2:])
    return {
        "score": localisation_score(cams, boxes, image_size),
        "chance": chance_level(boxes, image_size),
        "images": len(cams),
        "method": method,
        "layer": target_layer,
    }


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


def score_test_localisation(
    model: nn.Module, test: ImageSet, mean: Sequence[float], std: Sequence[float], count: int, target_layer: str,
    method: str,
) -> tuple[Optional[dict], str]:
    """measure_localisation on the first `count` test images, and a line saying what it found;
    None (and why) when the dataset records no object boxes or `count` is 0."""
    if test.boxes is None or count == 0:
        reason = "the test set has no object boxes" if test.boxes is None else "gradcam.score_images is 0"
        return None, f"localisation not scored ({reason})"
    scored = test.subset(list(range(min(count, len(test)))))
    inputs, labels = make_eval_tensors(scored, mean, std)
    found = measure_localisation(model, inputs, labels.tolist(), scored.boxes, target_layer, method)
    return found, f"localisation {found['score']:.3f} (chance {found['chance']:.3f}) on {found['images']} test images"
