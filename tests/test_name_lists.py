"""Each closed list of names is defined once (cifar_resnet.names) and everything else agrees with it.

The schema (config.py) builds its Literal types from names.py, and each registry that acts on a
name is keyed by exactly one of its tuples: these tests hold the registries, the schema's other
Literals (whose registries config.py cannot import) and params.yaml's comments to the library.
The order matters too: error messages list the names in it.
"""

import re
import subprocess
import sys
import types
from pathlib import Path
from typing import Literal, Union, get_args, get_origin

import pytest
import torch

from cifar_resnet import names
from cifar_resnet.config import (
    AugmentParams, DataParams, EarlyStoppingParams, GradcamParams, ModelParams, Params, TrainParams,
)
from cifar_resnet.errors import UserError
from conftest import REPO


def allowed(section, field: str) -> set:
    """The values the schema's Literal type allows for `section.field`."""
    return set(get_args(section.model_fields[field].annotation))


def literal(section, field: str) -> tuple:
    """The schema's Literal values for `section.field`, in their order."""
    return get_args(section.model_fields[field].annotation)


def test_names_import_without_torch():
    # config.py imports names.py and every stage imports config.py: the download stage must not pay for torch.
    code = "import cifar_resnet.names, sys; assert 'torch' not in sys.modules, 'names.py imports torch'"
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": str(REPO / "src")}, timeout=60)


@pytest.mark.parametrize("section, field, expected", [
    (DataParams, "dataset", names.DATASETS),
    (ModelParams, "arch", names.ARCHITECTURES),
    (ModelParams, "stem", names.STEMS),
    (AugmentParams, "border_mode", names.BORDER_MODES),
    (TrainParams, "optimizer", names.OPTIMIZERS),
    (TrainParams, "scheduler", names.SCHEDULERS),
    (GradcamParams, "method", names.CAM_METHODS),
])
def test_schema_literals_are_the_names(section, field, expected):
    assert literal(section, field) == expected


def test_datasets():
    from cifar_resnet.data import DATASETS, NUM_CLASSES
    from cifar_resnet.data.sources import LOADERS, load_raw_dataset

    assert tuple(LOADERS) == DATASETS == names.DATASETS
    assert set(NUM_CLASSES) < set(DATASETS)  # only folder datasets learn their class count from the data
    with pytest.raises(UserError, match=r"unknown dataset 'svhn'; data.dataset must be one of cifar10, cifar100, "):
        load_raw_dataset("svhn", None, "unused")


def test_architectures_and_stems():
    from cifar_resnet.models import ARCHITECTURES, build_model, list_models
    from cifar_resnet.models.resnet import FIXED_LAYOUTS, STAGED_LAYOUTS, STEMS

    assert tuple(STAGED_LAYOUTS) == names.STAGED_LAYOUT_ARCHS
    assert tuple(FIXED_LAYOUTS) == names.FIXED_LAYOUT_ARCHS
    assert ARCHITECTURES == names.ARCHITECTURES and set(list_models()) == set(ARCHITECTURES)
    assert STEMS == names.STEMS
    with pytest.raises(UserError, match=r"unknown stem 'tiny' \(valid: cifar, imagenet\)"):
        build_model("resnet18", 10, width=4, stem="tiny")


@pytest.mark.parametrize("arch", names.ARCHITECTURES)
def test_fixed_layouts_are_the_three_stage_networks(arch):
    # The schema refuses layer4 (and blocks, and the ImageNet stem) for exactly names.FIXED_LAYOUT_ARCHS.
    from cifar_resnet.models import build_model
    from cifar_resnet.models.resnet import default_cam_layer

    blocks = None if arch in names.FIXED_LAYOUT_ARCHS else [1, 1, 1, 1]
    stages = {name for name, _ in build_model(arch, 2, width=4, blocks=blocks).named_children() if name.startswith("layer")}
    assert ("layer4" in stages) == (arch not in names.FIXED_LAYOUT_ARCHS)
    assert default_cam_layer(arch, "cifar") == max(stages)  # the last stage: 4x4 or 3x3 at 32x32 with this stem


def test_border_modes():
    from cifar_resnet.training.augment import BORDER_MODES, GRID_PADDING

    assert tuple(BORDER_MODES) == tuple(GRID_PADDING) == names.BORDER_MODES


def test_cam_methods():
    from cifar_resnet.gradcam import CAM_METHODS, _cam_class

    assert tuple(CAM_METHODS) == names.CAM_METHODS
    with pytest.raises(UserError, match=r"unknown CAM method 'x' \(valid: gradcam, gradcam\+\+, scorecam, eigencam\)"):
        _cam_class("x")


def test_optimizers():
    from cifar_resnet.training import build_optimizer
    from cifar_resnet.training.optim import OPTIMIZERS

    assert tuple(OPTIMIZERS) == names.OPTIMIZERS
    groups = [{"params": [torch.nn.Parameter(torch.zeros(2))]}]
    built = {name: type(build_optimizer(groups, name, 0.1)) for name in names.OPTIMIZERS}
    assert built == {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
    with pytest.raises(ValueError, match="unknown optimizer 'lion'"):
        build_optimizer(groups, "lion", 0.1)


def test_schedulers():
    from cifar_resnet.training.schedule import SCHEDULES, build_schedule

    assert tuple(SCHEDULES) == names.SCHEDULERS
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    for name in SCHEDULES:
        assert build_schedule(optimizer, TrainParams(scheduler=name, epochs=2), 3).kind == name
    with pytest.raises(UserError, match=r"unknown scheduler 'triangle' \(valid: onecycle, linear, step, plateau, cosine, none\)"):
        build_schedule(optimizer, TrainParams.model_construct(scheduler="triangle"), 3)


def test_precisions():
    from cifar_resnet.inference import AUTOCAST_DTYPES, autocast_dtype

    assert allowed(TrainParams, "precision") == {"auto", *AUTOCAST_DTYPES}
    with pytest.raises(UserError, match=r"unknown precision 'fp8' \(valid: auto, fp32, bf16, fp16\)"):
        autocast_dtype("fp8", torch.device("cpu"))


def test_early_stopping_metrics_are_epoch_results():
    # EarlyStopper reads the metric by name from each EpochResult.
    from dataclasses import fields

    from cifar_resnet.training.loop import EpochResult

    assert allowed(EarlyStoppingParams, "metric") <= {field.name for field in fields(EpochResult)}


def test_devices():
    from cifar_resnet.inference import select_device

    for name in allowed(TrainParams, "device"):
        try:
            assert select_device(name).type in ("cpu", "cuda")
        except UserError as err:  # only a CUDA request on a machine without CUDA
            assert name == "cuda" and not torch.cuda.is_available(), err


def test_freeze_settings():
    from cifar_resnet.models import prepare_model

    trainable = {}
    for setting in allowed(ModelParams, "freeze"):
        model = prepare_model(ModelParams(arch="resnet18", width=4, freeze=setting), 10).model
        trainable[setting] = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"none": {"conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc"}, "backbone": {"fc"}}


def test_optimizer_kernels():
    from cifar_resnet.training.optim import KERNELS

    assert allowed(TrainParams, "optimizer_kernels") == set(KERNELS)


# params.yaml's keys whose comment lists their choices, and the names those must be.
NAMED_KEYS = {
    "data.dataset": names.DATASETS,
    "model.arch": names.ARCHITECTURES,
    "model.stem": names.STEMS,
    "train.optimizer": names.OPTIMIZERS,
    "train.scheduler": names.SCHEDULERS,
    "train.augment.border_mode": names.BORDER_MODES,
    "gradcam.method": names.CAM_METHODS,
}
_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w.]*):(?P<value>[^#]*)(?:#(?P<comment>.*))?$")


def listed_choices(path: Path) -> dict[str, list[str]]:
    """{dotted key: choices} for each key of the YAML file whose comment lists them as `a (why) | b | c`.

    A description before the first choice ends with ": " ("torch.compile the model: false | true").
    Recipes set dotted keys under `set:`, which is left out of the key.
    """
    found, parents = {}, []
    for line in path.read_text().splitlines():
        match = _KEY_LINE.match(line)
        if not match:
            continue
        depth = len(match["indent"]) // 2
        parents[depth:] = [match["key"]]
        comment = re.sub(r"\([^()]*\)", "", match["comment"] or "")  # explanations in parentheses
        if "|" in comment:
            parts = [part.strip() for part in comment.split("|")]
            parts[0] = parts[0].rpartition(": ")[2]
            found[".".join(parents).removeprefix("set.")] = parts
    return found


def _schema_choices(annotation) -> set | None:
    """The values a settings type allows, as YAML spells them; None if not a closed list."""
    if get_origin(annotation) is Literal:
        return {str(value) for value in get_args(annotation)}
    if annotation is bool:
        return {"true", "false"}
    if annotation is type(None):
        return {"null"}
    if get_origin(annotation) in (Union, types.UnionType):
        parts = [_schema_choices(arg) for arg in get_args(annotation)]
        return None if None in parts else set().union(*parts)
    return None


def _annotation(key: str):
    model, annotation = Params, None
    for part in key.split("."):
        annotation = model.model_fields[part].annotation
        model = annotation
    return annotation


@pytest.mark.parametrize("path", ["params.yaml", *sorted(p.relative_to(REPO).as_posix() for p in (REPO / "recipes").glob("*.yaml"))])
def test_comments_list_the_choices(path):
    """A comment listing a key's choices lists exactly the schema's (names.py's for the named lists)."""
    listed = listed_choices(REPO / path)
    if path == "params.yaml":
        assert set(NAMED_KEYS) <= set(listed), f"params.yaml lists no choices for {set(NAMED_KEYS) - set(listed)}"
    for key, choices in listed.items():
        expected = set(NAMED_KEYS[key]) if key in NAMED_KEYS else _schema_choices(_annotation(key))
        if expected is not None:  # an open setting (e.g. model.pretrained: a path) lists examples
            assert set(choices) == expected, f"{path}: {key}'s comment lists {choices}, the schema allows {sorted(expected)}"
