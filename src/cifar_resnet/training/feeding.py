"""Feeding images to the model: albumentations for training, plain tensors for evaluation."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..data.arrays import ImageSet


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 NHWC images, on the 0..1 scale."""
    pixels = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    std = pixels.std(axis=0)
    # A constant channel (e.g. grey digits) would divide by zero when normalising.
    std = np.where(std < 1e-6, 1.0, std)
    return pixels.mean(axis=0).tolist(), std.tolist()


def train_transform(crop_padding: int, hflip: bool, mean: Sequence[float], std: Sequence[float], seed: int):
    """Albumentations pipeline: pad + random crop, horizontal flip, normalise (seed 001's core)."""
    import albumentations as A  # heavy import: only the train stage pays for it
    import cv2

    steps = []
    if crop_padding > 0:
        size = 32 + 2 * crop_padding
        steps += [
            A.PadIfNeeded(min_height=size, min_width=size, border_mode=cv2.BORDER_REFLECT_101),
            A.RandomCrop(height=32, width=32),
        ]
    if hflip:
        steps.append(A.HorizontalFlip(p=0.5))
    steps.append(A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0))
    return A.Compose(steps, seed=seed)


class AugmentedImages(Dataset):
    """An ImageSet seen through an albumentations transform, as (CHW float tensor, label)."""

    def __init__(self, images: ImageSet, transform) -> None:
        self.images = images
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image = self.transform(image=self.images.images[index])["image"]
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), int(self.images.labels[index])


def _reseed_worker_transform(worker_id: int) -> None:
    # Every worker starts with a copy of the same seeded transform; without a reseed they
    # would all draw the same crops and flips. torch.initial_seed() differs per worker and
    # per epoch and is itself derived from the loader's seeded generator, so runs repeat.
    info = torch.utils.data.get_worker_info()
    info.dataset.transform.set_random_seed(torch.initial_seed() % 2**32)


def make_train_loader(
    images: ImageSet, transform, batch_size: int, num_workers: int, seed: int, pin_memory: bool = False
) -> DataLoader:
    """A shuffled, seeded loader that drops the last partial batch (BatchNorm dislikes size-1 batches)."""
    generator = torch.Generator().manual_seed(seed)
    drop_last = len(images) > batch_size
    return DataLoader(
        AugmentedImages(images, transform),
        batch_size=batch_size,
        shuffle=True,
        drop_last=drop_last,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=pin_memory,
        worker_init_fn=_reseed_worker_transform if num_workers > 0 else None,
        generator=generator,
    )


def make_eval_tensors(images: ImageSet, mean: Sequence[float], std: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised NCHW float tensors and int64 labels for a whole split (no augmentation)."""
    x = torch.from_numpy(images.images).permute(0, 3, 1, 2).float().div_(255.0)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - mean_t) / std_t, torch.from_numpy(images.labels.astype(np.int64))
