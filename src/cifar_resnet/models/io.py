"""The final-model files shared by later stages: a state_dict plus a JSON config to rebuild it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from ..errors import UserError
from ..fileio import atomic_file, write_json
from .resnet import ResNet, build_model

# Which stage writes the final model, for "not found" messages.
PRODUCER = "train"
_BUILD_KEYS = ("arch", "num_classes", "width", "stem", "dropout", "blocks", "block_dropout")


def save_model(weights_path: str | Path, config_path: str | Path, model: nn.Module, config: dict[str, Any]) -> None:
    """Write the state_dict (torch.save) and `config` (JSON), each atomically."""
    save_weights(weights_path, model)
    write_json(config_path, config)


def save_weights(weights_path: str | Path, model: nn.Module) -> None:
    """Write the state_dict alone, atomically: other weights for a config already written."""
    # CPU tensors so the file loads on any machine, whatever device trained it.
    state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    with atomic_file(weights_path) as file:
        torch.save(state, file)


def load_model(
    weights_path: str | Path, config_path: str | Path, device: str | torch.device = "cpu"
) -> tuple[ResNet, dict[str, Any]]:
    """Rebuild the model described by `config_path`, load `weights_path`, return it in eval mode."""
    config = _read_config(Path(config_path))
    model = _build(config, Path(config_path))
    state = _read_state(Path(weights_path), device)
    problem = _mismatch(model.state_dict(), state)
    if problem:
        raise UserError(f"{weights_path}: does not match {config_path} ({problem})")
    model.load_state_dict(state)
    return model.to(device).eval(), config


def _mismatch(expected: dict[str, torch.Tensor], state: dict[str, Any]) -> Optional[str]:
    """Describe the first key or shape mismatch in one line (torch's own message spans many)."""
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    if missing or unexpected:
        return f"{len(missing)} missing and {len(unexpected)} unexpected keys, e.g. {(missing or unexpected)[0]!r}"
    for key, tensor in expected.items():
        shape = getattr(state[key], "shape", None)
        if shape != tensor.shape:
            return f"{key!r} has shape {tuple(shape) if shape is not None else None}, expected {tuple(tensor.shape)}"
    return None


def _read_config(path: Path) -> dict[str, Any]:
    """Parse the JSON config, turning absence or corruption into a UserError."""
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: model config not found (produced by the {PRODUCER} stage; run `dvc repro {PRODUCER}`)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not a valid model config ({_first_line(err)})") from None
    if not isinstance(config, dict):
        raise UserError(f"{path}: not a valid model config (expected a JSON object)")
    return config


def _build_kwargs(config: dict[str, Any], path: Path) -> dict[str, Any]:
    """The build_model arguments found in `config`; arch and num_classes are required."""
    missing = [key for key in ("arch", "num_classes") if key not in config]
    if missing:
        raise UserError(f"{path}: model config lacks {', '.join(missing)}")
    return {key: config[key] for key in _BUILD_KEYS if config.get(key) is not None}


def _build(config: dict[str, Any], path: Path) -> ResNet:
    """build_model from a config; wrong value types are a corrupt config, not a crash."""
    try:
        return build_model(**_build_kwargs(config, path))
    except (TypeError, ValueError) as err:
        raise UserError(f"{path}: not a valid model config ({_first_line(err)})") from None


def _read_state(path: Path, device: str | torch.device) -> dict[str, torch.Tensor]:
    """torch.load with weights_only=True: tensors and containers, never arbitrary code."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: model weights not found (produced by the {PRODUCER} stage; run `dvc repro {PRODUCER}`)") from None
    except Exception as err:  # torch raises several types for corrupt or unsafe files
        raise UserError(f"{path}: not loadable model weights ({type(err).__name__}: {_first_line(err)})") from None
    if not isinstance(state, dict):
        raise UserError(f"{path}: not loadable model weights (expected a state_dict, got {type(state).__name__})")
    return state


def _first_line(err: BaseException) -> str:
    """The first line of an exception message (UserErrors are one line)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
