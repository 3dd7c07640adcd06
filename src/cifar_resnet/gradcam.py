"""Class-activation maps (pytorch-grad-cam): the target layer, and the maps themselves.

Drawing them is cifar_resnet.gradcam_figures; scoring how well they localise, cifar_resnet.localisation.
"""

from __future__ import annotations

import contextlib
import io
from typing import Optional, Sequence

import numpy as np
import torch
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, ScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from .data.arrays import IMAGE_SHAPE
from .errors import UserError
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
