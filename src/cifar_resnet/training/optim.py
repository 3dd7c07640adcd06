"""Optimisers over parameter groups (weight decay and LR scale per group)."""

from __future__ import annotations

from typing import Iterable

import torch


def parameter_groups(model: torch.nn.Module, weight_decay: float, decay_norm_and_bias: bool = True) -> list[dict]:
    """Trainable parameters in groups; with decay_norm_and_bias=False, BatchNorm weights and all
    biases (every 1-D parameter) get no weight decay, a common refinement for ResNets."""
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if decay_norm_and_bias:
        return [{"params": [p for _, p in trainable], "weight_decay": weight_decay}]
    decayed = [p for _, p in trainable if p.ndim > 1]
    exempt = [p for _, p in trainable if p.ndim <= 1]
    return [g for g in ({"params": decayed, "weight_decay": weight_decay}, {"params": exempt, "weight_decay": 0.0}) if g["params"]]


def build_optimizer(
    groups: Iterable[dict], name: str, lr: float, momentum: float = 0.9, nesterov: bool = True
) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov), Adam or AdamW. A group's optional `lr_scale` multiplies `lr` for it
    (schedules keep that ratio), e.g. a slower pretrained backbone."""
    groups = [dict(g, lr=lr * g.get("lr_scale", 1.0)) for g in groups]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}")
