"""Learning-rate schedules behind one interface: step after each batch, step after each epoch."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch.optim.lr_scheduler import LambdaLR, OneCycleLR, ReduceLROnPlateau, StepLR

from ..config import TrainParams
from ..errors import UserError


class LRSchedule:
    """Wraps a torch scheduler and knows whether it advances per batch or per epoch."""

    def __init__(self, kind: str, scheduler, per_batch: bool) -> None:
        self.kind, self.scheduler, self.per_batch = kind, scheduler, per_batch

    def after_batch(self) -> None:
        if self.per_batch:
            self.scheduler.step()

    def after_epoch(self, val_loss: float) -> None:
        if self.kind == "plateau":
            self.scheduler.step(val_loss)
        elif not self.per_batch and self.scheduler is not None:
            self.scheduler.step()

    def state_dict(self) -> dict:
        return self.scheduler.state_dict() if self.scheduler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state)


def epoch_count(epochs: float) -> int:
    """Epochs a run of train.epochs = `epochs` enters: the last one may be partial."""
    return math.ceil(epochs)


def total_steps(epochs: float, steps_per_epoch: int) -> int:
    """Optimiser steps of a whole run: a fractional last epoch stops after its share of batches."""
    return math.ceil(epochs * steps_per_epoch)


def steps_in_epoch(epoch: int, epochs: float, steps_per_epoch: int) -> int:
    """Batches trained in `epoch` (1-based): all of them but in a fractional last epoch."""
    return min(steps_per_epoch, total_steps(epochs, steps_per_epoch) - (epoch - 1) * steps_per_epoch)


def warmup_cosine(warmup_steps: int, total_steps: int):
    """LR multiplier per step: linear warm-up to 1, then cosine decay to 0."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def warmup_linear(total_steps: int, warmup_share: float, start: float, end: float):
    """LR multiplier per step: linear from `start` to 1 over the first `warmup_share` of the
    steps, then linear to `end` at the last (Jordan's airbench94: 0.2, 23%, 0.07)."""
    warmup_steps = int(warmup_share * total_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return start + (1.0 - start) * step / warmup_steps
        return 1.0 + (end - 1.0) * min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)

    return factor


def _onecycle(optimizer: torch.optim.Optimizer, cfg: TrainParams, steps_per_epoch: int) -> LRSchedule:
    # OneCycleLR sets each group's peak to max_lr; scale per group to keep LR ratios
    # between parameter groups (e.g. a slower pretrained backbone).
    peaks = [cfg.max_lr * group.get("lr_scale", 1.0) for group in optimizer.param_groups]
    return LRSchedule("onecycle", OneCycleLR(
        optimizer, max_lr=peaks, total_steps=total_steps(cfg.epochs, steps_per_epoch), pct_start=cfg.pct_start,
        div_factor=cfg.div_factor, final_div_factor=cfg.final_div_factor, anneal_strategy="cos",
    ), per_batch=True)


def _cosine(optimizer: torch.optim.Optimizer, cfg: TrainParams, steps_per_epoch: int) -> LRSchedule:
    factor = warmup_cosine(cfg.warmup_epochs * steps_per_epoch, total_steps(cfg.epochs, steps_per_epoch))
    return LRSchedule("cosine", LambdaLR(optimizer, factor), per_batch=True)


def _linear(optimizer: torch.optim.Optimizer, cfg: TrainParams, steps_per_epoch: int) -> LRSchedule:
    # OneCycle's bounds (start max_lr / div_factor, end that / final_div_factor), straight
    # lines between them, and the momentum left as train.momentum sets it (OneCycleLR
    # cycles it between 0.85 and 0.95).
    start = 1.0 / cfg.div_factor
    factor = warmup_linear(total_steps(cfg.epochs, steps_per_epoch), cfg.pct_start, start, start / cfg.final_div_factor)
    return LRSchedule("linear", LambdaLR(optimizer, factor), per_batch=True)


def _step(optimizer: torch.optim.Optimizer, cfg: TrainParams, steps_per_epoch: int) -> LRSchedule:
    return LRSchedule("step", StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma), per_batch=False)


def _plateau(optimizer: torch.optim.Optimizer, cfg: TrainParams, steps_per_epoch: int) -> LRSchedule:
    scheduler = ReduceLROnPlateau(optimizer, mode="min", factor=cfg.gamma, patience=cfg.plateau_patience)
    return LRSchedule("plateau", scheduler, per_batch=False)


def _constant(optimizer: torch.optim.Optimizer, cfg: TrainParams, steps_per_epoch: int) -> LRSchedule:
    return LRSchedule("none", None, per_batch=False)


# train.scheduler's names and what builds each; the params schema allows exactly these
# (tests/test_name_lists.py checks the two agree).
SCHEDULES: dict[str, Callable[[torch.optim.Optimizer, TrainParams, int], LRSchedule]] = {
    "onecycle": _onecycle,
    "linear": _linear,
    "step": _step,
    "plateau": _plateau,
    "cosine": _cosine,
    "none": _constant,
}


def build_schedule(optimizer: torch.optim.Optimizer, cfg: TrainParams, steps_per_epoch: int) -> LRSchedule:
    """The schedule `cfg.scheduler` names, peaking at (or starting from) cfg.max_lr."""
    if cfg.scheduler not in SCHEDULES:  # validated params cannot get here; a hand-built TrainParams can
        raise UserError(f"unknown scheduler {cfg.scheduler!r} (valid: {', '.join(SCHEDULES)})")
    return SCHEDULES[cfg.scheduler](optimizer, cfg, steps_per_epoch)
