"""Class-activation maps (pytorch-grad-cam), overlays, figure grids and a localisation score."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, ScoreCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from .errors import UserError
from .fileio import atomic_path

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
) -> np.ndarray:
    """CAMs (N, H, W) in [0, 1] for normalised `inputs` (N, 3, H, W); targets None means the predicted class.

    Runs on the model's device. Must not be called under torch.inference_mode (gradients are needed).
    """
    cam_class = _cam_class(method)
    layer = resolve_layer(model, target_layer)
    was_training = model.training
    # grad-cam calls model.eval() and model.zero_grad(): remember both to hand the model back unchanged.
    saved_grads = [p.grad for p in model.parameters()]
    # An input that requires grad makes the layer's output require grad even if the weights are frozen.
    inputs = inputs.detach().clone().requires_grad_(True)
    cam = cam_class(model=model, target_layers=[layer])
    try:
        with torch.enable_grad(), _quiet_progress(method):
            result = cam(input_tensor=inputs, targets=_class_targets(targets, len(inputs)))
    finally:
        # Not `with cam:` -- its __exit__ swallows IndexError; release() removes the hooks either way.
        cam.activations_and_grads.release()
        model.train(was_training)
        for param, grad in zip(model.parameters(), saved_grads):
            param.grad = grad
    return np.clip(np.asarray(result, dtype=np.float32), 0.0, 1.0)


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


def plot_cam_grid(
    images_uint8: Sequence[np.ndarray],
    cams: Sequence[np.ndarray],
    titles: Sequence[str],
    path: str | Path,
    ncols: int = 3,
) -> None:
    """Save a PNG grid of CAM overlays, one titled panel per image."""
    if not (len(images_uint8) == len(cams) == len(titles)) or len(cams) == 0:
        raise ValueError(f"need as many images, cams and titles (got {len(images_uint8)}, {len(cams)}, {len(titles)}), at least one")
    ncols = max(1, min(ncols, len(cams)))
    nrows = -(-len(cams) // ncols)
    # A bare Figure (no pyplot) renders with Agg and never touches the process-wide backend.
    fig = Figure(figsize=(2.4 * ncols, 2.7 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, image, cam, title in zip(axes, images_uint8, cams, titles):
        # Nearest keeps the 32x32 pixels honest when upscaled to the panel size.
        ax.imshow(overlay(image, cam), interpolation="nearest")
        ax.set_title(title, fontsize=9)
    for ax in axes:
        ax.axis("off")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)  # explicit format: the temporary name ends in .tmp


def peak_in_box(cams: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Whether each CAM's argmax pixel lies in its (x0, y0, x1, y1) box, x1 and y1 exclusive."""
    cams, boxes = np.asarray(cams), np.asarray(boxes)
    if cams.ndim != 3 or boxes.shape != (len(cams), 4):
        raise ValueError(f"expected cams (N, H, W) and boxes (N, 4), got {cams.shape} and {boxes.shape}")
    # Ties go to the first maximum in row-major order (np.argmax).
    flat = cams.reshape(len(cams), -1).argmax(axis=1)
    ys, xs = np.unravel_index(flat, cams.shape[1:])
    x0, y0, x1, y1 = boxes.T
    return (x0 <= xs) & (xs < x1) & (y0 <= ys) & (ys < y1)


def localisation_score(cams: np.ndarray, boxes: np.ndarray) -> float:
    """The fraction of CAMs whose peak lies inside the object's box."""
    if len(cams) == 0:
        raise ValueError("localisation_score needs at least one cam")
    return float(peak_in_box(cams, boxes).mean())
