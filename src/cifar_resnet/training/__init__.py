"""Training: data feeding, optimiser and schedule, the epoch loop, checkpoints."""

from .checkpoint import load_checkpoint, save_checkpoint
from .feeding import channel_stats, make_eval_tensors, make_train_loader, train_transform
from .loop import EpochResult, evaluate_logits, fit, select_device, seed_everything
from .optim import build_optimizer, build_onecycle

__all__ = [
    "EpochResult",
    "build_onecycle",
    "build_optimizer",
    "channel_stats",
    "evaluate_logits",
    "fit",
    "load_checkpoint",
    "make_eval_tensors",
    "make_train_loader",
    "save_checkpoint",
    "seed_everything",
    "select_device",
    "train_transform",
]
