"""Training: augmentation and data feeding, optimiser and schedule, the epoch loop, checkpoints.

Running a trained model (device choice, eval tensors, logits) lives in `cifar_resnet.inference`.
"""

from .augment import (
    affine_batch, alternating_flips, augment_batch, build_image_transform, crop_flip_batch, cutmix, derive_seed,
    erasing_batch, mix_batch, mixup,
)
from .checkpoint import load_checkpoint, save_checkpoint
from .feeding import DeviceFeeder, LoaderFeeder, channel_stats
from .loop import (
    EarlyStopper, EpochResult, FitOutcome, Precision, TrainingRun, check_divergence, fit, seed_everything,
    train_one_epoch,
)
from .progress import EpochPrinter
from .optim import build_optimizer, parameter_groups
from .schedule import LRSchedule, build_schedule

__all__ = [
    "DeviceFeeder", "EarlyStopper", "EpochPrinter", "EpochResult", "FitOutcome", "LRSchedule", "LoaderFeeder", "Precision",
    "TrainingRun", "affine_batch", "alternating_flips", "augment_batch", "build_image_transform", "build_optimizer",
    "build_schedule", "channel_stats", "check_divergence", "crop_flip_batch", "cutmix", "derive_seed", "erasing_batch", "fit",
    "load_checkpoint", "mix_batch", "mixup", "parameter_groups", "save_checkpoint", "seed_everything", "train_one_epoch",
]
