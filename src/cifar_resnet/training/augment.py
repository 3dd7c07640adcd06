"""Augmentation: albumentations per image (CPU loader), batched tensor ops (any device), CutMix/MixUp.

All randomness is derived from (seed, epoch, index-or-step), never from a running RNG,
so an epoch draws the same crops, flips and mixes whether the run is fresh or resumed,
and whichever loader worker handles an image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..config import AugmentParams, MixParams

# Names in params.yaml -> (OpenCV border flag, torch.nn.functional.pad mode).
BORDER_MODES = {"reflect": (4, "reflect"), "constant": (0, "constant"), "replicate": (1, "replicate")}  # cv2.BORDER_*


def derive_seed(*parts: int) -> int:
    """A 32-bit seed from non-negative integers (seed, epoch, index), the same in every process."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def build_image_transform(augment: AugmentParams, mean: Sequence[float], std: Sequence[float]):
    """Albumentations pipeline: pad + random crop, flip, affine, OneOf(CoarseDropout, GaussNoise), normalise."""
    import albumentations as A  # heavy import: only training pays for it

    border = BORDER_MODES[augment.border_mode][0]
    steps = []
    if augment.crop_padding > 0:
        size = 32 + 2 * augment.crop_padding
        steps += [A.PadIfNeeded(min_height=size, min_width=size, border_mode=border), A.RandomCrop(height=32, width=32)]
    if augment.hflip:
        steps.append(A.HorizontalFlip(p=0.5))
    if augment.affine.p > 0:
        a = augment.affine
        steps.append(A.Affine(translate_percent=(-a.translate, a.translate), scale=(1 - a.scale, 1 + a.scale),
                              rotate=(-a.rotate, a.rotate), border_mode=border, p=a.p))
    if augment.erasing.p > 0:
        e = augment.erasing
        # Holes are filled with the dataset mean, which normalises to zero: no new colour is invented.
        mean_pixel = tuple(float(m) * 255.0 for m in mean)
        steps.append(A.OneOf([
            A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(e.hole_min, e.hole_max),
                            hole_width_range=(e.hole_min, e.hole_max), fill=mean_pixel, p=1.0),
            A.GaussNoise(std_range=(e.noise_std_min, e.noise_std_max), p=1.0),
        ], p=e.p))
    steps.append(A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0))
    return A.Compose(steps)


def crop_flip_batch(images: torch.Tensor, padding: int, hflip: bool, border_mode: str, seed: int) -> torch.Tensor:
    """Random pad-and-crop and horizontal flip of a whole NCHW batch at once, on its own device."""
    n, _, height, width = images.shape
    generator = torch.Generator().manual_seed(seed)
    if padding > 0:
        padded = F.pad(images, (padding,) * 4, mode=BORDER_MODES[border_mode][1])
        dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(images.device)
        dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(images.device)
        rows = (dy[:, None] + torch.arange(height, device=images.device))[:, :, None]  # (N, H, 1)
        cols = (dx[:, None] + torch.arange(width, device=images.device))[:, None, :]  # (N, 1, W)
        batch = torch.arange(n, device=images.device)[:, None, None]
        images = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
    if hflip:
        flip = (torch.rand(n, generator=generator) < 0.5).to(images.device)
        images = torch.where(flip[:, None, None, None], images.flip(3), images)
    return images.contiguous()


@dataclass(frozen=True)
class MixedBatch:
    """A batch whose targets are `lam` parts labels_a and `1 - lam` parts labels_b."""

    images: torch.Tensor
    labels_a: torch.Tensor
    labels_b: torch.Tensor
    lam: float


def cutmix(images: torch.Tensor, labels: torch.Tensor, alpha: float, rng: np.random.Generator) -> MixedBatch:
    """Paste a random box from a shuffled copy of the batch; lam is the share of original pixels kept."""
    n, _, height, width = images.shape
    lam = float(rng.beta(alpha, alpha))
    cut_h, cut_w = int(height * np.sqrt(1 - lam)), int(width * np.sqrt(1 - lam))
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    perm = torch.from_numpy(rng.permutation(n)).to(images.device)
    mixed = images.clone()
    mixed[:, :, y0:y1, x0:x1] = images[perm, :, y0:y1, x0:x1]
    # The box may be clipped at the border: lam is the pixel share actually kept.
    kept = 1.0 - (y1 - y0) * (x1 - x0) / (height * width)
    return MixedBatch(mixed, labels, labels[perm], kept)


def mixup(images: torch.Tensor, labels: torch.Tensor, alpha: float, rng: np.random.Generator) -> MixedBatch:
    """Blend the batch with a shuffled copy of itself."""
    lam = float(rng.beta(alpha, alpha))
    perm = torch.from_numpy(rng.permutation(len(images))).to(images.device)
    return MixedBatch(lam * images + (1 - lam) * images[perm], labels, labels[perm], lam)


def mix_batch(images: torch.Tensor, labels: torch.Tensor, cutmix_cfg: MixParams, mixup_cfg: MixParams, seed: int) -> MixedBatch:
    """CutMix with probability cutmix.p, else MixUp with probability mixup.p, else the batch unchanged."""
    rng = np.random.default_rng(seed)
    draw = rng.random()
    if draw < cutmix_cfg.p:
        return cutmix(images, labels, cutmix_cfg.alpha, rng)
    if draw < cutmix_cfg.p + mixup_cfg.p:
        return mixup(images, labels, mixup_cfg.alpha, rng)
    return MixedBatch(images, labels, labels, 1.0)
