"""Checkpoints: everything needed to inspect or continue a run, written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from ..fileio import atomic_file


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """torch.save to a temporary file, then rename: a crash never leaves a half-written checkpoint."""
    with atomic_file(path) as file:
        torch.save(state, file)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with weights_only=True: plain tensors and containers, never arbitrary code."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: checkpoint not found (run `dvc repro train`)") from None
    except Exception as err:  # torch raises several types for corrupt or unsafe files
        raise UserError(f"{path}: not a loadable checkpoint ({type(err).__name__}: {str(err).splitlines()[0]})") from None
