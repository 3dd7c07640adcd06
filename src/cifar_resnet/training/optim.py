"""Optimisers over parameter groups (weight decay and LR scale per group)."""

from __future__ import annotations

from typing import Callable, Iterable, Optional

import torch


def parameter_groups(
    model: torch.nn.Module,
    weight_decay: float,
    decay_norm_and_bias: bool = True,
    lr_scale: Optional[Callable[[str], float]] = None,
) -> list[dict]:
    """Trainable parameters in groups. With decay_norm_and_bias=False, BatchNorm weights and all
    biases (every 1-D parameter) get no weight decay, a common refinement for ResNets. `lr_scale`
    maps a parameter name to an LR multiplier (e.g. 0.1 for a pretrained backbone); parameters
    with another multiplier go to another group, which carries it as `lr_scale`."""
    groups: dict[tuple[bool, float], list[torch.nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue  # frozen: the optimiser never sees it
        decayed = decay_norm_and_bias or parameter.ndim > 1
        scale = lr_scale(name) if lr_scale is not None else 1.0
        groups.setdefault((decayed, scale), []).append(parameter)
    return [
        {"params": params, "weight_decay": weight_decay if decayed else 0.0, **({"lr_scale": scale} if scale != 1.0 else {})}
        for (decayed, scale), params in groups.items()
    ]


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
