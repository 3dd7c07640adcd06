"""Optimisers over parameter groups (weight decay and LR scale per group)."""

from __future__ import annotations

from typing import Callable, Iterable, Optional

import torch


def parameter_groups(
    model: torch.nn.Module,
    weight_decay: float,
    decay_norm_and_bias: bool = True,
    lr_scale: Optional[Callable[[str], float]] = None,
    norm_lr_scale: float = 1.0,
) -> list[dict]:
    """Trainable parameters in groups. With decay_norm_and_bias=False, BatchNorm weights and all
    biases (every 1-D parameter) get no weight decay, a common refinement for ResNets. `lr_scale`
    maps a parameter name to an LR multiplier (e.g. 0.1 for a pretrained backbone); parameters
    with another multiplier go to another group, which carries it as `lr_scale`.

    `norm_lr_scale` multiplies the LR of BatchNorm parameters and divides their weight decay,
    so that their decay per step (LR x weight decay) stays as it was: airbench's 64x on its
    BatchNorm shifts, which otherwise learn too slowly at the LR the convolutions need.
    """
    norm = {id(p) for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for p in m.parameters()}
    groups: dict[tuple[bool, float, float], list[torch.nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue  # frozen: the optimiser never sees it
        decayed = decay_norm_and_bias or parameter.ndim > 1
        scale = lr_scale(name) if lr_scale is not None else 1.0
        boost = norm_lr_scale if id(parameter) in norm else 1.0
        groups.setdefault((decayed, scale * boost, boost), []).append(parameter)
    return [
        {"params": params, "weight_decay": weight_decay / boost if decayed else 0.0,
         **({"lr_scale": scale} if scale != 1.0 else {})}
        for (decayed, scale, boost), params in groups.items()
    ]


# How the update runs: one fused kernel for all parameters, one multi-tensor (foreach) op per
# step, or torch's per-parameter loop. "auto" picks fused on CUDA and foreach elsewhere.
KERNELS = ("auto", "fused", "foreach", "for-loop")


def kernel_flags(kernels: str, device: torch.device) -> dict[str, bool]:
    """The `fused` / `foreach` arguments of torch's SGD, Adam and AdamW for `kernels` on `device`.

    Fused kernels are the fastest on CUDA, but on the CPU they round differently from the
    per-parameter loop; foreach rounds exactly as that loop does (tests/test_training.py
    checks it), so "auto" keeps CPU results bit-identical to the loop's.
    """
    if kernels not in KERNELS:
        raise ValueError(f"unknown optimizer kernels {kernels!r}")
    if kernels == "auto":
        kernels = "fused" if device.type == "cuda" else "foreach"
    return {"fused": kernels == "fused", "foreach": kernels == "foreach"}


def _sgd(groups: list[dict], lr: float, momentum: float, nesterov: bool, flags: dict[str, bool]) -> torch.optim.Optimizer:
    # Nesterov needs momentum: without it torch refuses, and there is nothing to look ahead with.
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0, **flags)


def _adam(groups: list[dict], lr: float, momentum: float, nesterov: bool, flags: dict[str, bool]) -> torch.optim.Optimizer:
    return torch.optim.Adam(groups, lr=lr, **flags)  # its betas are its momentum: train.momentum is SGD's


def _adamw(groups: list[dict], lr: float, momentum: float, nesterov: bool, flags: dict[str, bool]) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, lr=lr, **flags)


# train.optimizer's names (names.OPTIMIZERS; tests/test_name_lists.py holds the two equal) and
# what builds each from (groups, lr, momentum, nesterov, kernel flags).
OPTIMIZERS: dict[str, Callable[[list[dict], float, float, bool, dict[str, bool]], torch.optim.Optimizer]] = {
    "sgd": _sgd,
    "adam": _adam,
    "adamw": _adamw,
}


def build_optimizer(
    groups: Iterable[dict], name: str, lr: float, momentum: float = 0.9, nesterov: bool = True,
    kernels: str = "auto", device: Optional[torch.device] = None,
) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov), Adam or AdamW. A group's optional `lr_scale` multiplies `lr` for it
    (schedules keep that ratio), e.g. a slower pretrained backbone. `kernels` (see KERNELS) picks
    how the update runs on `device` (default: the first parameter's)."""
    groups = [dict(g, params=list(g["params"]), lr=lr * g.get("lr_scale", 1.0)) for g in groups]
    if device is None:
        device = next((p.device for g in groups for p in g["params"]), torch.device("cpu"))
    flags = kernel_flags(kernels, device)
    if name not in OPTIMIZERS:  # validated params cannot get here; a direct call can
        raise ValueError(f"unknown optimizer {name!r}")
    return OPTIMIZERS[name](groups, lr, momentum, nesterov, flags)
