"""The params.yaml schema: typed sections, validated once on load, one-line errors.

Stages call `load_params()`; the rest of the library takes these objects (or plain
values) as arguments and never reads params.yaml itself.
"""

from __future__ import annotations

import copy
import math
import reprlib
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from . import names
from .errors import UserError, first_line


class _Section(BaseModel):
    # Unknown keys are typos until proven otherwise: reject them instead of ignoring them.
    # YAML spells infinity and NaN .inf and .nan; no setting means either, and they would
    # only surface later as a crash or a silent NaN (e.g. Beta(inf, inf), weight_decay inf).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _not_a_bool(value: Any) -> Any:
    # YAML's true/false load as Python bools, and bool is a subclass of int: pydantic would
    # take `seed: true` as seed 1. A yes/no where a number belongs is a mistake, not a 1 or a 0.
    if isinstance(value, bool):
        raise PydanticCustomError("int_type", "Input should be a valid integer, not true or false")
    return value


# Every integer setting is an Int: an int that refuses true and false.
Int = Annotated[int, BeforeValidator(_not_a_bool)]

# numpy's legacy seeding (np.random.seed, worker seeds) takes 32-bit seeds; torch takes 64-bit.
MAX_SEED = 2**32 - 1
# Generated images are held in memory: a million 32x32 RGB images is 3 GB already.
MAX_SYNTHETIC = 1_000_000


# The closed name lists (dataset, arch, stem, border_mode, optimizer, scheduler, CAM method)
# come from names.py, which the registries are keyed by; importing the registries themselves
# would make every stage, download included, depend on model and training code.
# tests/test_name_lists.py holds each registry, and the other Literals here, to the library.


class SyntheticParams(_Section):
    """Size and seed of the offline `shapes` dataset (ignored by the other datasets).

    It has its own seed so that changing the top-level `seed` (training randomness)
    does not regenerate data, nor re-download CIFAR.
    """

    train_size: Int = Field(5000, ge=10, le=MAX_SYNTHETIC)
    test_size: Int = Field(1000, ge=10, le=MAX_SYNTHETIC)
    seed: Int = Field(0, ge=0, le=MAX_SEED)


class DataParams(_Section):
    dataset: Literal[names.DATASETS] = "cifar10"
    source: Optional[str] = None
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    max_train: Optional[Int] = Field(None, ge=2)
    max_test: Optional[Int] = Field(None, ge=1)
    synthetic: SyntheticParams = SyntheticParams()

    @model_validator(mode="after")
    def _folder_has_a_source(self) -> "DataParams":
        # Caught here, before any stage works, rather than when the download stage reads it.
        if self.dataset == "folder" and self.source is None:
            raise ValueError("dataset folder needs data.source: a folder or .tar/.tar.gz/.tgz holding "
                             "train/<class>/* and test/<class>/*")
        return self


class ModelParams(_Section):
    arch: Literal[names.ARCHITECTURES] = "resnet34"
    width: Int = Field(64, ge=1, le=1024)
    stem: Literal[names.STEMS] = "cifar"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    # Per-stage block counts overriding the arch's layout, e.g. [5, 5, 5, 5] (seed 001).
    blocks: Optional[Annotated[list[Annotated[Int, Field(ge=1, le=64)]], Field(min_length=4, max_length=4)]] = None
    block_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    pretrained: Optional[str] = None  # null | imagenet | path to a state dict
    freeze: Literal["none", "backbone"] = "none"
    # Every BatchNorm layer's running-statistics momentum (torch's convention: the share of
    # each new batch) and eps. airbench94 uses 0.4 and 1e-12 (Jordan writes 0.6, his own
    # convention's 1 - 0.4): statistics that follow the fast-moving weights of a 10-epoch run.
    norm_momentum: float = Field(0.1, gt=0.0, le=1.0)
    norm_eps: float = Field(1.0e-5, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _fixed_layouts_are_fixed(self) -> "ModelParams":
        # ResNet-9 and airbench have one layout each, made for 32x32 images, and torchvision
        # has no weights for them.
        if self.arch in names.FIXED_LAYOUT_ARCHS:
            if self.stem != "cifar":
                raise ValueError(f"{self.arch} takes only stem cifar (its own input layer)")
            if self.blocks is not None:
                raise ValueError(f"{self.arch} has a fixed layout; blocks applies to resnet18, resnet34 and resnet50")
            if self.pretrained == "imagenet":
                raise ValueError(f"torchvision has no ImageNet weights for {self.arch}; use a state dict file or null")
        return self


class AffineParams(_Section):
    """Random affine warp (seed 001: translate 10%, scale 0.85-1.15, rotate 15 degrees, p 0.5)."""

    p: float = Field(0.0, ge=0.0, le=1.0)
    translate: float = Field(0.1, ge=0.0, le=0.5)  # fraction of the image size
    scale: float = Field(0.15, ge=0.0, lt=1.0)  # zoom in [1 - scale, 1 + scale]
    rotate: float = Field(15.0, ge=0.0, le=180.0)  # degrees


class ErasingParams(_Section):
    """OneOf(CoarseDropout, GaussNoise) (seed 001: p 0.3, 8-16 px holes, noise std 0.0125-0.0278)."""

    p: float = Field(0.0, ge=0.0, le=1.0)
    hole_min: Int = Field(8, ge=1, le=32)  # pixels
    hole_max: Int = Field(16, ge=1, le=32)
    noise_std_min: float = Field(0.0125, ge=0.0, le=1.0)  # fraction of the pixel range
    noise_std_max: float = Field(0.0278, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _ranges_ordered(self) -> "ErasingParams":
        if self.hole_min > self.hole_max:
            raise ValueError(f"hole_min {self.hole_min} is larger than hole_max {self.hole_max}")
        if self.noise_std_min > self.noise_std_max:
            raise ValueError(f"noise_std_min {self.noise_std_min} is larger than noise_std_max {self.noise_std_max}")
        return self


class MixParams(_Section):
    """A batch-level mixing (CutMix or MixUp): applied to a share `p` of batches, ratio ~ Beta(alpha, alpha)."""

    p: float = Field(0.0, ge=0.0, le=1.0)
    alpha: float = Field(1.0, gt=0.0)


class AugmentParams(_Section):
    crop_padding: Int = Field(4, ge=0, le=16)
    border_mode: Literal[names.BORDER_MODES] = "reflect"
    # true: each image flipped with probability 1/2 every epoch. "alternate" (Jordan's
    # airbench): a random half in epoch 1, then each image the other way round than the epoch
    # before, so every two epochs show every image both ways.
    hflip: Union[bool, Literal["alternate"]] = True
    affine: AffineParams = AffineParams()
    erasing: ErasingParams = ErasingParams()
    cutmix: MixParams = MixParams()
    mixup: MixParams = MixParams(alpha=0.2)

    @model_validator(mode="after")
    def _mixing_shares_fit(self) -> "AugmentParams":
        if self.cutmix.p + self.mixup.p > 1.0:
            raise ValueError(f"cutmix.p + mixup.p = {self.cutmix.p + self.mixup.p} exceeds 1 (they never apply to the same batch)")
        return self


class EarlyStoppingParams(_Section):
    metric: Literal["val_acc", "val_loss"] = "val_acc"
    patience: Optional[Int] = Field(None, ge=1)  # epochs without improvement; null = off
    min_delta: float = Field(0.0, ge=0.0)


class TrainParams(_Section):
    # A fraction ends the run inside its last epoch: 9.9 trains 9 whole epochs and 90% of
    # the batches of a tenth (airbench94's length); the schedule spans exactly the steps trained.
    epochs: Annotated[Union[int, float], BeforeValidator(_not_a_bool)] = Field(30, gt=0, le=100_000)
    batch_size: Int = Field(128, ge=1)
    optimizer: Literal[names.OPTIMIZERS] = "sgd"
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    nesterov: bool = True
    max_lr: float = Field(0.1, gt=0.0, le=10.0)
    weight_decay: float = Field(5.0e-4, ge=0.0)
    backbone_lr_scale: float = Field(1.0, gt=0.0, le=1.0)  # LR multiplier of a pretrained backbone (seed 002)
    decay_norm_and_bias: bool = True
    # LR multiplier of BatchNorm parameters, their weight decay divided by it (airbench: 64).
    norm_lr_scale: float = Field(1.0, gt=0.0, le=1024.0)
    l1: float = Field(0.0, ge=0.0)
    scheduler: Literal[names.SCHEDULERS] = "onecycle"
    div_factor: float = Field(25.0, ge=1.0)
    final_div_factor: float = Field(1.0e4, ge=1.0)
    pct_start: float = Field(0.3, gt=0.0, lt=1.0)
    step_size: Int = Field(10, ge=1)
    gamma: float = Field(0.1, gt=0.0, lt=1.0)
    plateau_patience: Int = Field(3, ge=0)
    warmup_epochs: Int = Field(0, ge=0)
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    # Jordan's lookahead: every 5 steps the weights move to a lagging average of themselves,
    # which lags more as the run ends (training.lookahead).
    lookahead: bool = False
    # airbench: its whitening layer's bias learns for this many epochs, then stays (null = always learns).
    freeze_whitening_bias_after: Optional[Int] = Field(None, ge=0)
    clip_grad_norm: Optional[float] = Field(None, gt=0.0)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: Union[Literal["auto"], bool] = "auto"
    # true: torch.compile's default mode. "reduce-overhead" also replays the step as CUDA
    # graphs, one launch instead of hundreds: for small models whose GPU step waits on the
    # host. "max-autotune" times kernel choices too (slow to compile). Graphs are CUDA only.
    compile: Union[bool, Literal["reduce-overhead", "max-autotune"]] = False
    optimizer_kernels: Literal["auto", "fused", "foreach", "for-loop"] = "auto"
    cudnn_benchmark: bool = True
    early_stopping: EarlyStoppingParams = EarlyStoppingParams()
    target_val_acc: Optional[float] = Field(None, gt=0.0, le=1.0)
    final_model: Literal["best", "last"] = "best"
    checkpoint_every: Int = Field(0, ge=0)
    augment: AugmentParams = AugmentParams()
    data_on_device: bool = False
    num_workers: Int = Field(2, ge=0, le=64)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    nproc: Int = Field(1, ge=1, le=1024)

    @model_validator(mode="after")
    def _consistent(self) -> "TrainParams":
        if self.optimizer == "sgd" and self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs momentum > 0 (set train.momentum or train.nesterov: false)")
        if self.scheduler == "cosine" and self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs {self.warmup_epochs} leaves no epochs to anneal (epochs = {self.epochs})")
        if self.freeze_whitening_bias_after is not None and self.nproc > 1:
            # DDP would wait for the gradient of a parameter that stopped taking one.
            raise ValueError("freeze_whitening_bias_after works in one process only (set train.nproc: 1)")
        if self.batch_size % self.nproc:
            raise ValueError(f"batch_size {self.batch_size} does not split evenly over nproc = {self.nproc} processes")
        return self


# train.* keys that set how fast a run goes, never what it learns: dvc.yaml's train stage
# does not depend on them and the resume key leaves them out, so changing one neither retrains
# nor refuses a resume. num_workers: each image's augmentation is seeded by itself, whichever
# process loads it. Not such keys: precision, channels_last, compile, optimizer_kernels,
# cudnn_benchmark and device pick the kernels, which can change the last bits of a result;
# nproc splits each batch (BatchNorm sees one share), data_on_device augments by another path,
# checkpoint_every changes what models/checkpoints holds.
RESULT_NEUTRAL_TRAIN_KEYS = ("num_workers",)


class EvaluateParams(_Section):
    batch_size: Int = Field(256, ge=1)
    tta: bool = False  # also report accuracy with horizontal-flip test-time augmentation
    # TTA also moves the image and its mirror this many pixels left, right, up and down
    # (reflected borders): 10 views instead of 2 (0 = flip only).
    tta_shift: Int = Field(0, ge=0, le=4)
    calibration_bins: Int = Field(15, ge=2, le=100)  # confidence bins of the ECE and reliability diagram
    calibrate: bool = True  # also report test loss and ECE after temperature scaling fitted on the validation split
    # How the test images are scored: fp32 (the exported models' precision) or autocast as
    # train.precision spells it (auto: bf16 where the hardware runs it natively, then also
    # channels_last). bf16 halves the stage's time on such a CPU; predictions may differ
    # from fp32's on a handful of near-ties.
    precision: Literal["fp32", "auto", "bf16", "fp16"] = "fp32"
    wrong_images: Int = Field(16, ge=0, le=100)  # most confidently wrong test images in a grid (0 = none)

    @model_validator(mode="after")
    def _shift_needs_tta(self) -> "EvaluateParams":
        if self.tta_shift and not self.tta:
            raise ValueError(f"tta_shift {self.tta_shift} adds views to the flip TTA, which is off (set evaluate.tta: true)")
        return self


class ExportParams(_Section):
    parity_images: Int = Field(64, ge=1)
    tolerance: float = Field(1.0e-4, gt=0.0)
    latency_batches: list[Annotated[Int, Field(ge=1, le=4096)]] = Field(default_factory=lambda: [1, 64], min_length=1)
    warmup: Int = Field(5, ge=0)
    repeats: Int = Field(30, ge=1)
    onnx: bool = True  # also export ONNX and time it with onnxruntime


class GradcamParams(_Section):
    images: Int = Field(6, ge=1, le=64)  # grid images (one per class first), also written one overlay per image
    score_images: Int = Field(200, ge=0)  # test images for the localisation score (datasets with boxes)
    method: Literal[names.CAM_METHODS] = "gradcam"
    # auto: the last stage with a spatial map at 32x32, as each network states it
    # (default_cam_layer): layer4 with the CIFAR stem, layer3 with the ImageNet stem (which
    # downsamples 32x, leaving layer4 at 1x1) and in resnet9 and airbench (three stages).
    target_layer: str = "auto"


class Params(_Section):
    seed: Int = Field(42, ge=0, le=MAX_SEED)
    data: DataParams = DataParams()
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    export: ExportParams = ExportParams()
    gradcam: GradcamParams = GradcamParams()

    @model_validator(mode="after")
    def _cam_layer_has_a_map(self) -> "Params":
        # Caught here, when any stage starts, rather than by the gradcam stage after training.
        if self.train.freeze_whitening_bias_after is not None and self.model.arch != "airbench":
            raise ValueError(f"train.freeze_whitening_bias_after: {self.model.arch} has no whitening layer (airbench has)")
        layer = self.gradcam.target_layer
        if self.model.arch in names.FIXED_LAYOUT_ARCHS and (layer == "layer4" or layer.startswith("layer4.")):
            raise ValueError(f"gradcam.target_layer {layer}: {self.model.arch} has three stages; use auto or layer3")
        if self.model.stem == "imagenet" and (layer == "layer4" or layer.startswith("layer4.")):
            raise ValueError(
                f"gradcam.target_layer {layer} is 1x1 on 32x32 images with model.stem imagenet, too small for a "
                "class-activation map; use auto or layer3"
            )
        return self


def _field_path(loc: tuple) -> str:
    """The dotted params key of an error location, without pydantic's union-branch tags."""
    model: Any = Params
    parts = []
    for part in loc:
        fields = getattr(model, "model_fields", {})
        if isinstance(part, str) and part in fields:
            parts.append(part)
            model = fields[part].annotation
        elif isinstance(part, int):
            parts.append(str(part))  # an item of a list value
        else:
            break
    return ".".join(parts)


# An error message shows the rejected value, cut short: a value built from YAML aliases (or
# merely a long list) must not grow the one-line message, nor the memory behind it.
_SHORT_REPR = reprlib.Repr()  # Python 3.11 takes no limits in the constructor
_SHORT_REPR.maxlevel, _SHORT_REPR.maxlist, _SHORT_REPR.maxdict = 3, 6, 6
_SHORT_REPR.maxstring = _SHORT_REPR.maxother = 60
MAX_VALUE_REPR = 80


def short_repr(value: Any) -> str:
    """repr(value), bounded in time and size whatever the value (nesting and length are cut)."""
    text = _SHORT_REPR.repr(value)
    return text if len(text) <= MAX_VALUE_REPR else text[: MAX_VALUE_REPR - 3] + "..."


def _describe(errors: list[dict[str, Any]]) -> str:
    """One line for the first problem: the dotted key, the value given, what is allowed."""
    first = errors[0]
    if first["type"] == "extra_forbidden":
        key = ".".join(str(part) for part in first["loc"])
        return f"unknown key {key} (check the spelling; see params.yaml for the valid keys)"
    key = _field_path(first["loc"]) or "(top level)"
    if first["type"] == "value_error":
        message = first["msg"].removeprefix("Value error, ")
        return message if key == "(top level)" else f"{key}: {message}"  # a cross-section check names its keys
    # A value rejected by every branch of a union yields one error per branch: merge them.
    same_key = [e["msg"] for e in errors if _field_path(e["loc"]) == key and e["type"] != "extra_forbidden"]
    allowed = " or ".join([same_key[0]] + [m.removeprefix("Input should be ") for m in same_key[1:]])
    return f"{key} = {short_repr(first['input'])}: {allowed}"


def validate_params(raw: Any, origin: str = "params.yaml") -> Params:
    """Validate a parsed params mapping; any problem becomes a UserError naming the key."""
    if not isinstance(raw, dict):
        raise UserError(f"{origin}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        errors = err.errors()
        problems = {_field_path(e["loc"]) if e["type"] != "extra_forbidden" else e["loc"] for e in errors}
        more = len(problems) - 1
        suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        raise UserError(f"{origin}: {_describe(errors)}{suffix}") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load, except that a key given twice in one mapping is an error (PyYAML keeps
    the last silently) and so is an alias (*name): nested aliases ("billion laughs") turn a few
    KB of YAML into gigabytes, and params never need them.
    """

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"alias *{event.anchor} (line {event.start_mark.line + 1}): params take no YAML "
                "aliases; write the value out", event.start_mark,
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (line {key_node.start_mark.line + 1})", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


class DialectError(yaml.YAMLError):
    """A value that YAML 1.1 and YAML 1.2 (DVC) read differently."""


def _parse_as_dvc(text: str) -> Any:
    """The YAML 1.2 reading of `text`, by the very parser DVC reads params.yaml with
    (dvc.utils.serialize.parse_yaml: ruamel.yaml, typ "safe")."""
    from ruamel.yaml import YAML
    from ruamel.yaml import YAMLError as RuamelError

    try:
        return YAML(typ="safe").load(text)
    except RuamelError as err:
        problem = getattr(err, "problem", None)
        raise yaml.YAMLError(problem or first_line(err)) from None


def _same(old: Any, new: Any) -> bool:
    """Whether two scalars read the same: equal and of one type (1 and True, 1 and 1.0 differ)."""
    if type(old) is not type(new):
        # PyYAML (1.1) wants a dot in a float, so 5e-4 is a string there; the stages have
        # always taken such a string as the number, so it is the same value.
        return isinstance(old, str) and isinstance(new, float) and _as_float(old) == new
    return old == new or (isinstance(old, float) and math.isnan(old) and math.isnan(new))


def _as_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _first_difference(old: Any, new: Any, key: str = "") -> str | None:
    """One line for the first value that YAML 1.1 (`old`) and YAML 1.2 (`new`) read differently."""
    where = key or "(top level)"
    if isinstance(old, dict) and isinstance(new, dict):
        for old_key, new_key in zip(old, new):
            if not _same(old_key, new_key):
                return f"key {new_key!r} in {where} reads as {old_key!r} in YAML 1.1"
        for old_key, new_key in zip(old, new):
            found = _first_difference(old[old_key], new[new_key], f"{key}.{new_key}" if key else str(new_key))
            if found:
                return found
        return None
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for index, (old_item, new_item) in enumerate(zip(old, new)):
            found = _first_difference(old_item, new_item, f"{key}.{index}" if key else str(index))
            if found:
                return found
        return None
    if _same(old, new):
        return None
    return f"{where} = {short_repr(new)} in YAML 1.2 (as DVC reads it) but {short_repr(old)} in YAML 1.1"


def parse_yaml(text: str, key: str = "") -> Any:
    """Parse params YAML as DVC does (YAML 1.2), refusing anything read differently in YAML 1.1.

    DVC decides what changed by its YAML 1.2 reading; PyYAML (and many people) read YAML 1.1,
    where `010` is 8, `off` and `yes` are booleans and `1:20` is 80. Such a value would mean
    one thing to `dvc status` and another to whoever reads the file, so it is refused
    (yaml.YAMLError naming the key): write it unambiguously (10, false, "1:20").
    Duplicate keys and aliases are refused too. `key`: the dotted params key `text` is the value of.
    """
    old = yaml.load(text, Loader=_UniqueKeyLoader)  # first: refuses duplicates and aliases
    new = _parse_as_dvc(text)
    difference = _first_difference(old, new, key)
    if difference:
        raise DialectError(f"{difference}; write it so both read the same (e.g. quote a string)")
    return new


def set_dotted(raw: dict, key: str, value: Any) -> None:
    """Set the dotted params `key` (e.g. train.augment.cutmix.p) in the nested mapping `raw`, in place.

    Missing sections are created: an unknown key is left for validate_params to name.
    """
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UserError(f"{part} is not a section of params.yaml")
    node[leaf] = value


def apply_overrides(raw: dict, items: list[str]) -> dict:
    """A copy of the params mapping `raw` with `key.sub=value` overrides applied.

    Values are YAML, as `dvc exp run -S` takes them: `model.blocks=[5, 5, 5, 5]`, `model.pretrained=null`.
    """
    merged = copy.deepcopy(raw)
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise UserError(f"-S {item!r}: expected key=value, e.g. -S model.width=32")
        try:
            set_dotted(merged, key, parse_yaml(text, key))
        except DialectError as err:
            raise UserError(f"-S {item!r}: {err}") from None
        except yaml.YAMLError as err:
            raise UserError(f"-S {item!r}: not a YAML value ({_yaml_problem(err)})") from None
        except UserError as err:
            raise UserError(f"-S {item!r}: {err}") from None
    return merged


# params.yaml is a few KB; a file far larger is a mistake (or an attack on the parser).
MAX_PARAMS_BYTES = 1 << 20


def _read_params_text(path: Path) -> str:
    with path.open("rb") as f:
        data = f.read(MAX_PARAMS_BYTES + 1)
    if len(data) > MAX_PARAMS_BYTES:
        raise UserError(f"{path}: larger than {MAX_PARAMS_BYTES >> 10} KiB; params.yaml is a few KB of settings")
    return data.decode("utf-8")


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml."""
    path = Path(path)
    try:
        raw = parse_yaml(_read_params_text(path))
    except FileNotFoundError:
        raise UserError(f"{path}: not found (run the stage from the repository root)") from None
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start}); save it as UTF-8") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror or err})") from None
    except DialectError as err:
        raise UserError(f"{path}: {err}") from None
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({_yaml_problem(err)})") from None
    return validate_params(raw if raw is not None else {}, origin=str(path))


def _yaml_problem(err: yaml.YAMLError) -> str:
    """The problem of a YAML error in one line (PyYAML's own message spans several)."""
    if isinstance(err, yaml.MarkedYAMLError) and err.problem:
        return err.problem
    return first_line(err)
