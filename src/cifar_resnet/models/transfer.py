"""A model as `model.*` describes it: architecture, pretrained weights, frozen backbone.

The backbone is every top-level module except the classifier head (dropout + fc) and
except what the pretrained loader had to initialise afresh (a stem that could not take
the weights): those always train. `model.freeze: backbone` freezes the backbone (feature
extraction); `train.backbone_lr_scale` slows it down instead (see `backbone_lr_scale`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from torch import nn

from ..config import ModelParams
from .pretrained import load_pretrained
from .resnet import Network, build_model

HEAD = ("dropout", "fc")


@dataclass
class PreparedModel:
    model: Network
    notes: list[str]  # one line each, for the stage to print
    backbone: tuple[str, ...]  # top-level modules of the backbone (frozen or not)


def backbone_modules(model: nn.Module, fresh: Iterable[str] = ()) -> tuple[str, ...]:
    """Top-level modules holding parameters or buffers, minus the head and the `fresh` ones."""
    skip = set(HEAD) | set(fresh)
    return tuple(name for name, module in model.named_children() if name not in skip and _has_state(module))


def _has_state(module: nn.Module) -> bool:
    return any(True for _ in module.parameters()) or any(True for _ in module.buffers())


def freeze_backbone(model: Network, modules: Iterable[str]) -> None:
    """Stop `modules` learning: no gradients, and eval mode even while the model trains, so
    their BatchNorm layers keep their running statistics (see FreezableNetwork.train)."""
    modules = tuple(modules)
    for name in modules:
        for parameter in getattr(model, name).parameters():
            parameter.requires_grad_(False)
    model.frozen_modules = modules
    model.train(model.training)  # apply to the current mode at once


def backbone_lr_scale(backbone: Iterable[str], scale: float) -> Callable[[str], float]:
    """A parameter name's LR multiplier: `scale` for the backbone's, 1 for the rest."""
    backbone = frozenset(backbone)
    return lambda name: scale if name.split(".")[0] in backbone else 1.0


def prepare_model(params: ModelParams, num_classes: int) -> PreparedModel:
    """Build `params.arch`, load `params.pretrained`, apply `params.freeze`; say what was done."""
    model = build_model(
        params.arch, num_classes, width=params.width, stem=params.stem, dropout=params.dropout,
        blocks=params.blocks, block_dropout=params.block_dropout, norm_momentum=params.norm_momentum,
        norm_eps=params.norm_eps,
    )
    notes: list[str] = []
    fresh: tuple[str, ...] = ()
    if params.pretrained is not None:
        result = load_pretrained(model, params.pretrained, params.arch)
        notes += result.notes
        fresh = result.reinitialised
    backbone = backbone_modules(model, fresh)
    if params.freeze == "backbone":
        freeze_backbone(model, backbone)
        training = [name for name, module in model.named_children() if name not in backbone and _has_state(module)]
        notes.append(
            f"backbone frozen ({', '.join(backbone)}; BatchNorm statistics kept): only {', '.join(training)} train"
        )
        if params.pretrained is None:
            notes.append("model.freeze = backbone without model.pretrained: the frozen backbone keeps its random initialisation")
    return PreparedModel(model, notes, backbone)
