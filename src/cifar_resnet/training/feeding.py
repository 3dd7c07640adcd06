"""Feeding training batches: a CPU DataLoader with albumentations, or the whole split on the device.

Both feeders give the same interface: `len(feeder)` batches per epoch and
`feeder.epoch(n)` yielding normalised batches, already CutMix/MixUp-mixed, as
`MixedBatch(images, labels_a, labels_b, lam)`. Their order, augmentation and mixing
depend only on the seed, the epoch and the batch's place in it, so a resumed run sees
the same batches.
"""

from __future__ import annotations

import random
from typing import Iterator, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..config import AugmentParams
from ..data.arrays import ImageSet
from .augment import (
    MixedBatch, alternating_flips, augment_batch, build_image_transform, derive_seed, mix_batch, to_device,
)


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 NHWC images, on the 0..1 scale.

    Computed from each channel's histogram of the 256 values, exactly as from the pixels
    but without a float64 copy of them: that copy took 9 s for CIFAR-10's 45,000 images
    on 2 cores, about 1% of a whole CPU training run.
    """
    channels = images.shape[-1]
    flat = images.reshape(-1, channels)
    values = np.arange(256, dtype=np.float64) / 255.0
    counts = np.stack([np.bincount(flat[:, c], minlength=256) for c in range(channels)]).astype(np.float64)
    total = max(len(flat), 1)
    mean = counts @ values / total
    std = np.sqrt((counts * (values[None, :] - mean[:, None]) ** 2).sum(axis=1) / total)
    # A constant channel (e.g. grey digits) would divide by zero when normalising.
    std = np.where(std < 1e-6, 1.0, std)
    return mean.tolist(), std.tolist()


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled image order of one epoch: a function of (seed, epoch) alone."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(seed, epoch)))


def shard(order: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """This process's share of an epoch: every world_size-th image, equal counts on every rank."""
    usable = len(order) - len(order) % world_size
    return order[rank:usable:world_size]


def batch_count(images: int, batch_size: int) -> int:
    """Batches per epoch: the partial last batch is dropped, unless it is the only one.

    BatchNorm fails on a batch of one and a tiny last batch skews its statistics.
    """
    return images // batch_size if images > batch_size else min(images, 1)


def mix(images: torch.Tensor, labels: torch.Tensor, augment: AugmentParams, seed: int, epoch: int, step: int,
        rank: int) -> MixedBatch:
    """CutMix/MixUp of one batch, drawn from (seed, epoch, step, rank) alone: the same on resume."""
    return mix_batch(images, labels, augment.cutmix, augment.mixup, derive_seed(seed, epoch, step, 1, rank))


class EpochBatches(Sampler):
    """Yields one key per batch, (epoch, step, image indices), so each image's augmentation
    can be seeded by its epoch and index, and each batch's mixing by its epoch and step.

    In data-parallel training each process gets its own shard of the same epoch order.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.n, self.batch_size, self.seed, self.epoch = n, batch_size, seed, 1
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return batch_count(self.n // self.world_size, self.batch_size)

    def __iter__(self) -> Iterator[tuple[int, int, list[int]]]:
        order = shard(epoch_order(self.n, self.seed, self.epoch), self.rank, self.world_size).tolist()
        for step in range(len(self)):
            yield self.epoch, step, order[step * self.batch_size : (step + 1) * self.batch_size]


class AugmentedImages(Dataset):
    """An ImageSet seen through an albumentations transform, as (CHW float tensor, label)."""

    def __init__(self, images: ImageSet, transform, seed: int, alternate_flips: bool = False) -> None:
        self.images, self.transform, self.seed = images, transform, seed
        self.alternate_flips = alternate_flips
        self._flips: Optional[tuple[int, np.ndarray]] = None  # (epoch, which images it mirrors)
        # One NumPy and one Python generator shared by every step of the pipeline, reseeded
        # in place per image: a tenth of the cost of transform.set_random_seed(), which
        # builds fresh generators for each step (it was 40% of the loader's time).
        self._numpy_rng, self._python_rng = np.random.default_rng(seed), random.Random(seed)
        transform.set_random_state(self._numpy_rng, self._python_rng)

    def __len__(self) -> int:
        return len(self.images)

    def reseed(self, seed: int) -> None:
        self._numpy_rng.bit_generator.state = np.random.PCG64(seed).state
        self._python_rng.seed(seed)

    def flips(self, epoch: int) -> np.ndarray:
        """alternating_flips of this epoch, made once per epoch (per worker)."""
        if self._flips is None or self._flips[0] != epoch:
            self._flips = (epoch, alternating_flips(len(self.images), self.seed, epoch).numpy())
        return self._flips[1]

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        # Reseeding per image makes the draw independent of which worker runs it and of
        # what ran before: the basis of exact resumption.
        self.reseed(derive_seed(self.seed, epoch, index))
        image = self.images.images[index]
        if self.alternate_flips and self.flips(epoch)[index]:
            image = np.ascontiguousarray(image[:, ::-1])
        image = self.transform(image=image)["image"]
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), int(self.images.labels[index])


class MixedBatches(Dataset):
    """Whole batches of AugmentedImages, mixed: a loader worker makes a batch start to finish,
    so the main process only moves finished batches to the device."""

    def __init__(self, images: AugmentedImages, augment: AugmentParams, rank: int) -> None:
        self.images, self.augment, self.rank = images, augment, rank

    def __getitem__(self, key: tuple[int, int, list[int]]) -> MixedBatch:
        epoch, step, indices = key
        samples = [self.images[(epoch, index)] for index in indices]
        images = torch.stack([image for image, _ in samples])
        labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
        return mix(images, labels, self.augment, self.images.seed, epoch, step, self.rank)


class LoaderFeeder:
    """Batches from a DataLoader: albumentations and mixing in worker processes, pinned memory for CUDA."""

    def __init__(self, images: ImageSet, augment: AugmentParams, mean, std, batch_size: int, seed: int,
                 num_workers: int = 0, pin_memory: bool = False, rank: int = 0, world_size: int = 1) -> None:
        self.sampler = EpochBatches(len(images), batch_size, seed, rank, world_size)
        augmented = AugmentedImages(images, build_image_transform(augment, mean, std), seed, augment.hflip == "alternate")
        self.loader = DataLoader(
            MixedBatches(augmented, augment, rank),
            batch_size=None,  # the sampler's keys are whole batches
            sampler=self.sampler,
            num_workers=num_workers,
            # Workers (and their imports) start once per run, not once per epoch.
            persistent_workers=num_workers > 0,
            # Pinned batches let the loop's non_blocking copies overlap the GPU's work.
            pin_memory=pin_memory,
        )

    def __len__(self) -> int:
        return len(self.loader)

    def epoch(self, epoch: int) -> Iterator[MixedBatch]:
        self.sampler.epoch = epoch
        return iter(self.loader)


# Images the device feeder augments in one go on a GPU. Building one batch at a time cost
# the host a few dozen small ops per batch (random draws, their copies, the crop's gather,
# the warp), and on a GPU the training step is host-bound: the H200 spent 17-30% of each
# ResNet18 step there (docs/performance.md). A chunk of many batches pays those ops once;
# 8192 CIFAR images are 100 MB as float32, small beside a GPU's memory. On the CPU there is
# no launch cost to save, and a chunk that large falls out of the caches: one batch at a
# time fed 36,000 images/s against 22,000 (crop + flip, batch 512, 2 cores).
AUGMENT_CHUNK_IMAGES = 8192


def chunk_batches(batch_size: int, device: torch.device, chunk_images: Optional[int] = None) -> int:
    """How many whole batches the device feeder augments at once (at least one).

    chunk_images None: AUGMENT_CHUNK_IMAGES on CUDA, one batch elsewhere.
    """
    if chunk_images is None:
        chunk_images = AUGMENT_CHUNK_IMAGES if device.type == "cuda" else batch_size
    return max(chunk_images // batch_size, 1)


class DeviceFeeder:
    """The whole split as one uint8 tensor on the device; every augmentation as batched tensor ops.

    The fast path for GPUs (no loader processes, no host-to-device copies per batch).
    Crop, flip, affine and erasing run on 0..1 pixels before normalising, as the
    albumentations pipeline does, so borders are black and noise is clipped in pixel space.
    On a GPU they run on chunks of many batches at a time, so the host's work per batch
    (which the GPU waits for) shrinks by that factor. A chunk's draws derive from
    (seed, epoch, chunk, rank) and each batch's mixing from (seed, epoch, step, rank), so
    a resumed epoch sees the same batches; with one batch per chunk (the CPU's default)
    chunk and step coincide.
    """

    def __init__(self, images: ImageSet, augment: AugmentParams, mean, std, batch_size: int, seed: int,
                 device: torch.device, rank: int = 0, world_size: int = 1,
                 chunk_images: Optional[int] = None) -> None:
        self.images = torch.from_numpy(images.images).permute(0, 3, 1, 2).contiguous().to(device)
        self.labels = torch.from_numpy(images.labels.astype(np.int64)).to(device)
        self.augment, self.mean = augment, mean
        # Made once: a tensor built from a list on every batch would be a blocking copy each time.
        self.mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        # Drop the partial batch, as the loader does.
        self.batches = max(len(images) // world_size // batch_size, 1)
        self.chunk_batches = chunk_batches(batch_size, torch.device(device), chunk_images)
        self.mixes = augment.cutmix.p > 0 or augment.mixup.p > 0

    def __len__(self) -> int:
        return self.batches

    def augmented_chunk(self, index: torch.Tensor, epoch: int, chunk: int, flips: Optional[torch.Tensor]) -> torch.Tensor:
        """The normalised, augmented images at `index`: one chunk of an epoch.

        `flips`: the epoch's alternating_flips of every image (hflip: alternate), else None.
        """
        seed = derive_seed(self.seed, epoch, chunk, self.rank)
        images = self.images[index]
        if flips is not None:
            images = torch.where(flips[index][:, None, None, None], images.flip(3), images)
        pixels = augment_batch(images.float() / 255.0, self.augment, self.mean, seed)
        return (pixels - self.mean_t) / self.std_t

    def epoch(self, epoch: int) -> Iterator[MixedBatch]:
        order = shard(epoch_order(len(self.labels), self.seed, epoch), self.rank, self.world_size)
        order = to_device(order[: self.batches * self.batch_size], self.labels.device)
        flips = None
        if self.augment.hflip == "alternate":
            flips = to_device(alternating_flips(len(self.labels), self.seed, epoch), self.labels.device)
        for first in range(0, self.batches, self.chunk_batches):
            steps = range(first, min(first + self.chunk_batches, self.batches))
            index = order[first * self.batch_size : steps.stop * self.batch_size]
            images, labels = self.augmented_chunk(index, epoch, first // self.chunk_batches, flips), self.labels[index]
            for step in steps:
                rows = slice((step - first) * self.batch_size, (step - first + 1) * self.batch_size)
                if self.mixes:
                    yield mix(images[rows], labels[rows], self.augment, self.seed, epoch, step, self.rank)
                else:  # no draw to make: skip mix()'s per-batch generator
                    yield MixedBatch(images[rows], labels[rows], labels[rows], 1.0)
