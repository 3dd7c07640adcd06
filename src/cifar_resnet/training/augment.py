"""Augmentation: albumentations per image (CPU loader), batched tensor ops (any device), CutMix/MixUp.

The batched ops (crop, flip, affine, erasing) reproduce build_image_transform's pipeline in
distribution, not pixel for pixel: the same parameter draws, order and border handling,
from torch generators instead of albumentations' own.

All randomness is derived from (seed, epoch, index-or-step), never from a running RNG,
so an epoch draws the same crops, flips and mixes whether the run is fresh or resumed,
and whichever loader worker handles an image.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..config import AffineParams, AugmentParams, ErasingParams, MixParams

# Names in params.yaml -> (OpenCV border flag, torch.nn.functional.pad mode).
BORDER_MODES = {"reflect": (4, "reflect"), "constant": (0, "constant"), "replicate": (1, "replicate")}  # cv2.BORDER_*


def to_device(draws: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Per-batch random draws (made on the CPU) onto the device without blocking the host.

    A plain .to("cuda") from pageable memory waits for the copy, and so for every kernel
    queued before it; from pinned memory with non_blocking the copy is just queued.
    """
    if device.type == "cuda":
        return draws.pin_memory().to(device, non_blocking=True)
    return draws.to(device)


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
    if augment.hflip is True:  # "alternate" flips the source image instead: see alternating_flips
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
        dy = to_device(torch.randint(0, 2 * padding + 1, (n,), generator=generator), images.device)
        dx = to_device(torch.randint(0, 2 * padding + 1, (n,), generator=generator), images.device)
        rows = (dy[:, None] + torch.arange(height, device=images.device))[:, :, None]  # (N, H, 1)
        cols = (dx[:, None] + torch.arange(width, device=images.device))[:, None, :]  # (N, 1, W)
        batch = torch.arange(n, device=images.device)[:, None, None]
        images = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
    if hflip:
        flip = to_device(torch.rand(n, generator=generator) < 0.5, images.device)
        images = torch.where(flip[:, None, None, None], images.flip(3), images)
    return images.contiguous()


def alternating_flips(images: int, seed: int, epoch: int) -> torch.Tensor:
    """Which of `images` images `hflip: alternate` mirrors in `epoch` (1-based), as a bool tensor.

    A random half in epoch 1, then the other half: each image flips every other epoch.
    Both feeders mirror the source image before the rest of the pipeline, which is the
    same in distribution as flipping after the crop (padding and crop are symmetric) and
    lets the loader and the device path flip the very same images.
    """
    first = torch.rand(images, generator=torch.Generator().manual_seed(derive_seed(seed, 3))) < 0.5
    return first ^ (epoch % 2 == 0)


# grid_sample's padding for each border mode. With align_corners=True "reflection" mirrors
# about the outermost pixel centres, i.e. cv2.BORDER_REFLECT_101 (what "reflect" means here).
GRID_PADDING = {"reflect": "reflection", "constant": "zeros", "replicate": "border"}


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)


def affine_matrices(n: int, height: int, width: int, affine: AffineParams, generator: torch.Generator) -> torch.Tensor:
    """Per-image forward 3x3 pixel-coordinate matrices drawn as albumentations' Affine draws them.

    Translation is a whole number of pixels (int() of the fraction times the size), x and y
    scales are independent (keep_ratio=False), and the image turns and scales about its
    centre (W/2 - 0.5, H/2 - 0.5): M = centre @ translate @ rotate @ scale @ uncentre.
    """
    tx = torch.trunc(_uniform(n, -affine.translate, affine.translate, generator) * width)
    ty = torch.trunc(_uniform(n, -affine.translate, affine.translate, generator) * height)
    sx = _uniform(n, 1 - affine.scale, 1 + affine.scale, generator)
    sy = _uniform(n, 1 - affine.scale, 1 + affine.scale, generator)
    angle = torch.deg2rad(_uniform(n, -affine.rotate, affine.rotate, generator))
    cos, sin = torch.cos(angle), torch.sin(angle)
    cx, cy = width / 2 - 0.5, height / 2 - 0.5
    m = torch.zeros(n, 3, 3, dtype=torch.float64)
    m[:, 0, 0], m[:, 0, 1] = cos * sx, sin * sy
    m[:, 1, 0], m[:, 1, 1] = -sin * sx, cos * sy
    m[:, 0, 2] = cx + tx - (m[:, 0, 0] * cx + m[:, 0, 1] * cy)
    m[:, 1, 2] = cy + ty - (m[:, 1, 0] * cx + m[:, 1, 1] * cy)
    m[:, 2, 2] = 1.0
    return m


def warp_batch(images: torch.Tensor, matrices: torch.Tensor, border_mode: str) -> torch.Tensor:
    """Bilinear warp of NCHW images by forward pixel matrices (N, 3, 3), like cv2.warpAffine."""
    n, _, height, width = images.shape
    # affine_grid maps output to input in [-1, 1] coordinates (pixel centres at +-1 with
    # align_corners=True): theta = to_unit @ inverse(M) @ from_unit.
    to_unit = torch.tensor([[2 / (width - 1), 0, -1], [0, 2 / (height - 1), -1], [0, 0, 1]], dtype=torch.float64)
    theta = to_unit @ torch.linalg.inv(matrices) @ torch.linalg.inv(to_unit)
    theta = to_device(theta[:, :2].float(), images.device)
    source = images.float()  # grid_sample in float32 whatever the input precision
    grid = F.affine_grid(theta, [n, 1, height, width], align_corners=True)
    warped = F.grid_sample(source, grid, mode="bilinear", padding_mode=GRID_PADDING[border_mode], align_corners=True)
    return warped.to(images.dtype)


def affine_batch(images: torch.Tensor, affine: AffineParams, border_mode: str, seed: int) -> torch.Tensor:
    """albumentations' Affine(p) on a batch of 0..1 pixel images: each image warped with probability p.

    Bilinear, fill 0 (black) for the constant border, output rounded to the uint8 grid as cv2 does.
    """
    n, _, height, width = images.shape
    generator = torch.Generator().manual_seed(seed)
    apply = to_device(torch.rand(n, generator=generator) < affine.p, images.device)
    matrices = affine_matrices(n, height, width, affine, generator)
    # cv2 warps the uint8 image and rounds to whole grey levels: so do we, to keep the same value grid.
    warped = (warp_batch(images.float(), matrices, border_mode) * 255).round_() / 255
    # Untouched images are copied, not resampled through an identity grid (exact, as albumentations).
    return torch.where(apply[:, None, None, None], warped.to(images.dtype), images)


def _randint(low: torch.Tensor | int, high: torch.Tensor | int, n: int, generator: torch.Generator) -> torch.Tensor:
    """Integers uniform in [low, high] inclusive, with per-image bounds."""
    return (low + torch.floor(torch.rand(n, generator=generator, dtype=torch.float64) * (high - low + 1))).long()


def hole_masks(n: int, height: int, width: int, erasing: ErasingParams, generator: torch.Generator,
               device: torch.device | str = "cpu") -> torch.Tensor:
    """(N, 1, H, W) masks of one rectangle each, as CoarseDropout(num_holes_range=(1, 1)) draws it.

    Height and width are independent integers in [hole_min, hole_max] (capped at the image
    size), and the hole lies wholly inside the image.
    """
    hole_h = _randint(erasing.hole_min, min(erasing.hole_max, height), n, generator)
    hole_w = _randint(erasing.hole_min, min(erasing.hole_max, width), n, generator)
    top = _randint(0, height - hole_h, n, generator)
    left = _randint(0, width - hole_w, n, generator)
    # Only the four numbers per image cross to the device; the masks are built there.
    top, left, hole_h, hole_w = (to_device(t, torch.device(device)) for t in (top, left, hole_h, hole_w))
    rows, cols = torch.arange(height, device=device), torch.arange(width, device=device)
    in_rows = (rows >= top[:, None]) & (rows < (top + hole_h)[:, None])  # (N, H)
    in_cols = (cols >= left[:, None]) & (cols < (left + hole_w)[:, None])  # (N, W)
    return (in_rows[:, :, None] & in_cols[:, None, :])[:, None]


def erasing_batch(images: torch.Tensor, erasing: ErasingParams, fill: Sequence[float], seed: int) -> torch.Tensor:
    """OneOf(CoarseDropout, GaussNoise) with probability p on a batch of 0..1 pixel images.

    The hole is filled with `fill` (the dataset mean: zero after normalisation). The noise
    has a per-image std drawn in [noise_std_min, noise_std_max] of the pixel range, is
    independent per pixel and channel and is clipped to the range, as GaussNoise does on
    uint8 images before Normalize. Expects 0..1 pixels on the uint8 grid.
    """
    n, channels, height, width = images.shape
    device = images.device
    generator = torch.Generator().manual_seed(seed)
    erase = torch.rand(n, generator=generator) < erasing.p
    hole = torch.rand(n, generator=generator) < 0.5  # OneOf of two transforms with p=1: even odds
    sigma = _uniform(n, erasing.noise_std_min, erasing.noise_std_max, generator).float()
    erase, hole = to_device(erase, device), to_device(hole, device)
    masks = hole_masks(n, height, width, erasing, generator, device) & (erase & hole)[:, None, None, None]
    # The noise itself is drawn on the device: a batch of it is as large as the batch.
    noise_generator = torch.Generator(device=device).manual_seed(derive_seed(seed, 1))
    noise = torch.randn(images.shape, generator=noise_generator, device=device, dtype=torch.float32)
    # albumentations adds the noise to uint8 pixels truncated toward zero to whole grey levels,
    # which shrinks small noise (about 0.5 level less std): reproduced, as it is what training saw.
    noise = torch.trunc(noise * (to_device(sigma, device) * 255)[:, None, None, None]) / 255
    noisy = (images.float() + noise).clamp(0.0, 1.0).to(images.dtype)
    fill_t = to_device(torch.tensor(list(fill), dtype=images.dtype), device).view(1, channels, 1, 1)
    images = torch.where((erase & ~hole)[:, None, None, None], noisy, images)
    return torch.where(masks, fill_t, images)


def augment_batch(images: torch.Tensor, augment: AugmentParams, fill: Sequence[float], seed: int) -> torch.Tensor:
    """Every per-image augmentation of `augment` on a batch of 0..1 pixel images, in albumentations' order.

    Pad + crop, flip, affine, erasing; normalisation comes after, as in build_image_transform.
    Each step has its own stream derived from `seed`, so switching one on or off leaves the
    draws of the others unchanged.
    """
    images = crop_flip_batch(images, augment.crop_padding, augment.hflip is True, augment.border_mode, seed)
    if augment.affine.p > 0:
        images = affine_batch(images, augment.affine, augment.border_mode, derive_seed(seed, 1))
    if augment.erasing.p > 0:
        images = erasing_batch(images, augment.erasing, fill, derive_seed(seed, 2))
    return images


class MixedBatch(NamedTuple):
    """A batch whose targets are `lam` parts labels_a and `1 - lam` parts labels_b (lam 1.0: not mixed).

    What the feeders yield. A NamedTuple, so a DataLoader pins its tensors for CUDA
    (it pins the fields of named tuples) and hands it back with its type.
    """

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
    perm = to_device(torch.from_numpy(rng.permutation(n)), images.device)
    mixed = images.clone()
    mixed[:, :, y0:y1, x0:x1] = images[perm, :, y0:y1, x0:x1]
    # The box may be clipped at the border: lam is the pixel share actually kept.
    kept = 1.0 - (y1 - y0) * (x1 - x0) / (height * width)
    return MixedBatch(mixed, labels, labels[perm], kept)


def mixup(images: torch.Tensor, labels: torch.Tensor, alpha: float, rng: np.random.Generator) -> MixedBatch:
    """Blend the batch with a shuffled copy of itself."""
    lam = float(rng.beta(alpha, alpha))
    perm = to_device(torch.from_numpy(rng.permutation(len(images))), images.device)
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
