"""How well class-activation maps localise the object: the "pointing game" on datasets with boxes (shapes)."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from .data.arrays import IMAGE_SHAPE, ImageSet
from .gradcam import compute_cams
from .inference import make_eval_tensors


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
