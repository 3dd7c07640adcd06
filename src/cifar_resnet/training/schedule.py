"""Learning-rate schedules behind one interface: step after each batch, step after each epoch."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR, OneCycleLR, ReduceLROnPlateau, StepLR

from ..config import TrainParams


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


def warmup_cosine(warmup_steps: int, total_steps: int):
    """LR multiplier per step: linear warm-up to 1, then cosine decay to 0."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def build_schedule(optimizer: torch.optim.Optimizer, cfg: TrainParams, steps_per_epoch: int) -> LRSchedule:
    """The schedule `cfg.scheduler` names, peaking at (or starting from) cfg.max_lr."""
    total = cfg.epochs * steps_per_epoch
    if cfg.scheduler == "onecycle":
        # OneCycleLR sets each group's peak to max_lr; scale per group to keep LR ratios
        # between parameter groups (e.g. a slower pretrained backbone).
        peaks = [cfg.max_lr * group.get("lr_scale", 1.0) for group in optimizer.param_groups]
        return LRSchedule("onecycle", OneCycleLR(
            optimizer, max_lr=peaks, total_steps=total, pct_start=cfg.pct_start,
            div_factor=cfg.div_factor, final_div_factor=cfg.final_div_factor, anneal_strategy="cos",
        ), per_batch=True)
    if cfg.scheduler == "cosine":
        return LRSchedule("cosine", LambdaLR(optimizer, warmup_cosine(cfg.warmup_epochs * steps_per_epoch, total)), per_batch=True)
    if cfg.scheduler == "step":
        return LRSchedule("step", StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma), per_batch=False)
    if cfg.scheduler == "plateau":
        return LRSchedule("plateau", ReduceLROnPlateau(optimizer, mode="min", factor=cfg.gamma, patience=cfg.plateau_patience), per_batch=False)
    return LRSchedule("none", None, per_batch=False)
