"""Training: augmentation and data feeding, optimiser and schedule, the epoch loop, checkpoints."""

from .augment import (
    affine_batch, augment_batch, build_image_transform, crop_flip_batch, cutmix, derive_seed, erasing_batch, mix_batch,
    mixup,
)
from .checkpoint import load_checkpoint, resumable_checkpoint, save_checkpoint
from .feeding import DeviceFeeder, LoaderFeeder, channel_stats, make_eval_tensors, normalise
from .loop import (
    EarlyStopper, EpochResult, FitOutcome, autocast_dtype, evaluate_logits, fit, loss_and_accuracy,
    seed_everything, select_device, train_one_epoch, wants_channels_last,
)
from .optim import build_optimizer, parameter_groups
from .schedule import LRSchedule, build_schedule

__all__ = [
    "DeviceFeeder", "EarlyStopper", "EpochResult", "FitOutcome", "LRSchedule", "LoaderFeeder",
    "affine_batch", "augment_batch", "autocast_dtype", "build_image_transform", "build_optimizer", "build_schedule", "channel_stats",
    "crop_flip_batch", "cutmix", "derive_seed", "erasing_batch", "evaluate_logits", "fit", "load_checkpoint",
    "loss_and_accuracy", "make_eval_tensors", "mix_batch", "mixup", "normalise", "parameter_groups", "resumable_checkpoint",
    "save_checkpoint", "seed_everything", "select_device", "train_one_epoch", "wants_channels_last",
]
