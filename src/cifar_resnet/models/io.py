"""The final-model files shared by later stages: a state_dict plus a JSON config to rebuild it.

Also the helpers every `.pt` reader of the library shares (final model, checkpoints,
pretrained weights): one safe torch.load and one state-dict comparison.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Collection, Optional

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from torch import nn

from ..config import ModelParams
from ..errors import UserError, describe_error, first_line
from ..fileio import atomic_file, write_json
from .resnet import Network, build_model

# Which stage writes the final model, for "not found" messages.
PRODUCER = "train"
_BUILD_KEYS = ("arch", "num_classes", "width", "stem", "dropout", "blocks", "block_dropout", "norm_momentum", "norm_eps")
# What the evaluate, export and gradcam stages read from the config besides the build keys.
_REQUIRED = ("arch", "num_classes", "classes", "mean", "std")


class _SavedConfig(BaseModel):
    """What a model config must hold beyond ModelParams' keys (checked by ModelParams itself)."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)
    num_classes: int = Field(ge=1, le=100_000)
    classes: list[str]
    mean: list[float] = Field(min_length=3, max_length=3)
    std: list[Annotated[float, Field(gt=0.0)]] = Field(min_length=3, max_length=3)

    @model_validator(mode="after")
    def _one_name_per_class(self) -> "_SavedConfig":
        if len(self.classes) != self.num_classes:
            raise ValueError(f"classes lists {len(self.classes)} names but num_classes is {self.num_classes}")
        return self


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
) -> tuple[Network, dict[str, Any]]:
    """Rebuild the model described by `config_path`, load `weights_path`, return it in eval mode."""
    config = _read_config(Path(config_path))
    model = _build(config, Path(config_path))
    state = _read_state(Path(weights_path), device)
    problem = state_mismatch(model.state_dict(), state)
    if problem:
        raise UserError(f"{weights_path}: does not match {config_path} ({problem})")
    model.load_state_dict(state)
    return model.to(device).eval(), config


def state_mismatch(
    own: dict[str, torch.Tensor], state: dict[str, Any], fresh: Collection[str] = (), counters_optional: bool = False
) -> Optional[str]:
    """The first key or shape of `state` that does not fit the model whose state dict is `own`, in one line.

    torch's own message spans many lines. Keys under the top-level modules named in `fresh`
    (about to be re-initialised) are not compared. With `counters_optional`, BatchNorm's
    num_batches_tracked may be absent from `state`: old files lack them, and a caller that
    merges `state` into `own` keeps their fresh value.
    """
    def kept(key: str) -> bool:
        return key.split(".")[0] not in fresh

    def may_lack(key: str) -> bool:
        return counters_optional and key.endswith("num_batches_tracked")

    missing = [key for key in own if kept(key) and key not in state and not may_lack(key)]
    unexpected = [key for key in state if kept(key) and key not in own]
    if missing:
        return f"{len(missing)} tensors of this model are missing there, e.g. {missing[0]!r}"
    if unexpected:
        return f"{len(unexpected)} tensors there have no place here, e.g. {unexpected[0]!r}"
    for key, tensor in own.items():
        if kept(key) and key in state:
            shape = getattr(state[key], "shape", None)  # a crafted file may hold non-tensors
            if shape != tensor.shape:
                return f"{key!r} has shape {tuple(shape) if shape is not None else None} there, {tuple(tensor.shape)} here"
    return None


def _read_config(path: Path) -> dict[str, Any]:
    """Parse the JSON config, turning absence or corruption into a UserError."""
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: model config not found (produced by the {PRODUCER} stage; run `dvc repro {PRODUCER}`)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not a valid model config ({first_line(err)})") from None
    except RecursionError:  # json nests one Python call per [ or {: thousands of them overflow the stack
        raise UserError(f"{path}: not a valid model config (nested too deeply)") from None
    if not isinstance(config, dict):
        raise UserError(f"{path}: not a valid model config (expected a JSON object)")
    return config


def _check_config(config: dict[str, Any], path: Path) -> None:
    """Every key the stages use is present and sane: a corrupt file is a UserError, not a crash later."""
    missing = [key for key in _REQUIRED if key not in config]
    if missing:
        raise UserError(f"{path}: model config lacks {', '.join(missing)}; retrain with `dvc repro train`")
    model_keys = {key: config[key] for key in ModelParams.model_fields if key in config}
    for schema, values in ((ModelParams, model_keys), (_SavedConfig, config)):
        try:
            schema.model_validate(values)
        except ValidationError as err:
            first = err.errors()[0]
            key = ".".join(str(part) for part in first["loc"])
            what = f"{key} = {first['input']!r}: " if key else ""
            message = first["msg"].removeprefix("Value error, ")
            raise UserError(f"{path}: not a valid model config ({what[:120]}{message}); retrain with `dvc repro train`") from None


def _build_kwargs(config: dict[str, Any]) -> dict[str, Any]:
    """The build_model arguments found in `config` (checked by _check_config)."""
    return {key: config[key] for key in _BUILD_KEYS if config.get(key) is not None}


def _build(config: dict[str, Any], path: Path) -> Network:
    """build_model from a checked config."""
    _check_config(config, path)
    try:
        return build_model(**_build_kwargs(config))
    except (TypeError, ValueError) as err:
        raise UserError(f"{path}: not a valid model config ({first_line(err)})") from None


def load_torch_file(
    path: str | Path, map_location: str | torch.device, not_found: str, unloadable: str, advice: str = ""
) -> Any:
    """torch.load with weights_only=True: tensors and containers, never arbitrary code.

    A missing file is the UserError "PATH: `not_found`"; any other failure is
    "PATH: `unloadable` (Type: first line of torch's message)`advice`".
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: {not_found}") from None
    except Exception as err:  # torch raises several types for corrupt or unsafe files
        raise UserError(f"{path}: {unloadable} ({describe_error(err)}){advice}") from None


def _read_state(path: Path, device: str | torch.device) -> dict[str, torch.Tensor]:
    """The final model's state_dict, read safely."""
    state = load_torch_file(
        path, device,
        not_found=f"model weights not found (produced by the {PRODUCER} stage; run `dvc repro {PRODUCER}`)",
        unloadable="not loadable model weights",
    )
    if not isinstance(state, dict):
        raise UserError(f"{path}: not loadable model weights (expected a state_dict, got {type(state).__name__})")
    return state
