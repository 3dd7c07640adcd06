"""Checkpoints: everything needed to inspect or continue a run, written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..fileio import atomic_file
from ..models.io import load_torch_file


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """torch.save to a temporary file, then rename: a crash never leaves a half-written checkpoint."""
    with atomic_file(path) as file:
        torch.save(state, file)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with weights_only=True: plain tensors and containers, never arbitrary code."""
    return load_torch_file(
        path, map_location, not_found="checkpoint not found (run `dvc repro train`)", unloadable="not a loadable checkpoint"
    )
