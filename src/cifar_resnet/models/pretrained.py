"""Pretrained weights: torchvision's ImageNet weights or a local state dict, into our ResNets.

`load_pretrained` copies every tensor that fits and reports, in one-line notes a stage
prints, what it could not take: a classifier head of another class count is replaced, and
a stem convolution of another kernel size (the 7x7 ImageNet kernel into the 3x3 CIFAR
stem) is freshly initialised together with the BatchNorm that follows it. Anything else
that does not fit (another width, another block layout) is a UserError.

Every file is read with torch.load(weights_only=True): tensors and containers, never code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from ..errors import UserError, describe_error
from .io import load_torch_file, state_mismatch
from .resnet import STAGED_LAYOUTS, Network

IMAGENET = "imagenet"
# Where a state dict sits inside a checkpoint: ours ("model"), common trainers' ("state_dict"),
# and seed 001's ("model_state_dict").
CHECKPOINT_KEYS = ("model", "state_dict", "model_state_dict")
# Prefixes added by DistributedDataParallel and torch.compile when a wrapped model is saved.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


@dataclass(frozen=True)
class PretrainedResult:
    """What load_pretrained did: notes for the user, and the top-level modules it left fresh."""

    notes: list[str]
    reinitialised: tuple[str, ...]


def imagenet_weights(arch: str):
    """torchvision's recommended ImageNet weights (a WeightsEnum member) for `arch`."""
    import torchvision

    try:
        return torchvision.models.get_model_weights(arch).DEFAULT
    except (KeyError, ValueError):
        raise UserError(f"torchvision has no ImageNet weights for {arch!r}") from None


def imagenet_file(arch: str) -> Path:
    """Where torch.hub caches `arch`'s ImageNet weights, and where a manual copy must go."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(imagenet_weights(arch).url).path)


def read_imagenet_state(arch: str) -> tuple[dict[str, torch.Tensor], str]:
    """The ImageNet state dict (downloaded into the torch cache on first use) and its description."""
    weights = imagenet_weights(arch)
    target = imagenet_file(arch)
    cached = target.exists()
    try:
        state = weights.get_state_dict(progress=False, check_hash=True, weights_only=True, map_location="cpu")
    except Exception as err:  # urllib, socket, hash and unpickling errors all end here
        reason = describe_error(err)
        if cached:
            raise UserError(
                f"{target}: not loadable ImageNet weights ({reason}); delete it to download it again, "
                f"or replace it with {weights.url}"
            ) from None
        raise UserError(
            f"could not download torchvision's {weights} weights from {weights.url} ({reason}); "
            f"on a machine without internet, download that file elsewhere and place it as {target} "
            f"(torch.hub.get_dir()/checkpoints; TORCH_HOME moves it)"
        ) from None
    return _tensors_only(state, target), f"torchvision's {weights} ({target.name})"


def read_state_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A local state dict in torchvision's or our key layout, plain or inside a checkpoint dict."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"model.pretrained = {str(path)!r}: no such file (give {IMAGENET!r} for torchvision's weights, "
            "a state dict file, or null)"
        )
    obj = load_torch_file(
        path, "cpu", not_found="no such file", unloadable="not a loadable state dict",
        advice="; files load with weights_only=True, so save model.state_dict(), not the model object",
    )
    if isinstance(obj, dict):
        for key in CHECKPOINT_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    return _strip_wrappers(_tensors_only(obj, path))


def load_pretrained(model: Network, source: str, arch: str) -> PretrainedResult:
    """Load `source` (``"imagenet"`` or a file path) into a freshly built `model` of `arch`."""
    if source == IMAGENET:
        state, origin = read_imagenet_state(arch)
        layout = STAGED_LAYOUTS[arch][1] if arch in STAGED_LAYOUTS else None
        hint = f"; ImageNet weights fit {arch} only at width 64 with its standard blocks {layout}"
    else:
        state, origin = read_state_file(source), str(source)
        hint = ""
    return transfer_state(model, state, origin, hint)


def transfer_state(model: Network, state: dict[str, torch.Tensor], origin: str, hint: str = "") -> PretrainedResult:
    """Copy `state` into `model`, replacing the head and the stem where their shapes differ."""
    own = model.state_dict()
    notes: list[str] = []
    reinitialised: list[str] = []

    if any(key not in state or state[key].shape != own[key].shape for key in ("fc.weight", "fc.bias")):
        reinitialised.append("fc")
        theirs = state.get("fc.weight")
        before = f"{theirs.shape[0]}" if theirs is not None and theirs.ndim == 2 else "no head"
        notes.append(f"fc replaced: {before} -> {model.fc.out_features} classes (freshly initialised)")

    ours, theirs = own["conv1.weight"], state.get("conv1.weight")
    if theirs is not None and theirs.shape != ours.shape and theirs.shape[:2] == ours.shape[:2]:
        # Same channels, another kernel: the stem of the other entry. Its BatchNorm statistics
        # describe the old convolution's outputs, so bn1 starts afresh with it.
        reinitialised += ["conv1", "bn1"]
        k_ours, k_theirs = ours.shape[-1], theirs.shape[-1]
        stem = "CIFAR" if k_ours == 3 else "ImageNet"
        notes.append(
            f"conv1 and bn1 freshly initialised: the {stem} stem's {k_ours}x{k_ours} convolution cannot take "
            f"the {k_theirs}x{k_theirs} kernel of the pretrained weights"
        )

    problem = state_mismatch(own, state, fresh=reinitialised, counters_optional=True)
    if problem:
        raise UserError(f"{origin} does not fit this model ({problem}){hint}")
    merged = {}
    for key, tensor in own.items():
        keep_fresh = key.split(".")[0] in reinitialised or key not in state  # only BN step counters may be absent
        merged[key] = tensor if keep_fresh else state[key]
    model.load_state_dict(merged)
    loaded = sum(1 for key in own if key.split(".")[0] not in reinitialised and key in state)
    notes.insert(0, f"pretrained: {loaded} of {len(own)} tensors loaded from {origin}")
    return PretrainedResult(notes, tuple(reinitialised))


def _tensors_only(obj: Any, origin: Any) -> dict[str, torch.Tensor]:
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(
            f"{origin}: not a state dict (expected a mapping of names to tensors, or a checkpoint holding "
            f"one under {' or '.join(repr(k) for k in CHECKPOINT_KEYS)})"
        )
    return obj


def _strip_wrappers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in WRAPPER_PREFIXES:
        if all(key.startswith(prefix) for key in state):
            state = {key[len(prefix):]: value for key, value in state.items()}
    return state

