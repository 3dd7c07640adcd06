"""Each closed list of names is defined once in the library and the params schema allows exactly it.

The schema (config.py) cannot import the registries: it is read by every stage, and the
download stage must not depend on (and rerun for) model or training code. So the schema
spells its Literal types out and these tests hold them equal to the library's registries.
"""

from typing import get_args

import pytest
import torch

from cifar_resnet.config import AugmentParams, DataParams, EarlyStoppingParams, GradcamParams, ModelParams, TrainParams
from cifar_resnet.errors import UserError


def allowed(section, field: str) -> set:
    """The values the schema's Literal type allows for `section.field`."""
    return set(get_args(section.model_fields[field].annotation))


def test_datasets():
    from cifar_resnet.data import DATASETS, NUM_CLASSES

    assert allowed(DataParams, "dataset") == set(DATASETS)
    assert set(NUM_CLASSES) < set(DATASETS)  # only folder datasets learn their class count from the data


def test_architectures_and_stems():
    from cifar_resnet.models import ARCHITECTURES, build_model, list_models
    from cifar_resnet.models.resnet import STEMS

    assert allowed(ModelParams, "arch") == set(ARCHITECTURES) == set(list_models())
    assert allowed(ModelParams, "stem") == set(STEMS)
    with pytest.raises(UserError, match=r"unknown stem 'tiny' \(valid: cifar, imagenet\)"):
        build_model("resnet18", 10, width=4, stem="tiny")


def test_border_modes():
    from cifar_resnet.training.augment import BORDER_MODES, GRID_PADDING

    assert allowed(AugmentParams, "border_mode") == set(BORDER_MODES) == set(GRID_PADDING)


def test_cam_methods():
    from cifar_resnet.gradcam import CAM_METHODS, _cam_class

    assert allowed(GradcamParams, "method") == set(CAM_METHODS)
    with pytest.raises(UserError, match=r"unknown CAM method 'x' \(valid: gradcam, gradcam\+\+, scorecam, eigencam\)"):
        _cam_class("x")


def test_optimizers():
    # build_optimizer dispatches on the name without a table: every allowed name must build one.
    from cifar_resnet.training import build_optimizer

    groups = [{"params": [torch.nn.Parameter(torch.zeros(2))]}]
    built = {name: type(build_optimizer(groups, name, 0.1)) for name in allowed(TrainParams, "optimizer")}
    assert len(set(built.values())) == len(built), built
    with pytest.raises(ValueError, match="unknown optimizer 'lion'"):
        build_optimizer(groups, "lion", 0.1)


def test_schedulers():
    from cifar_resnet.training.schedule import SCHEDULES, build_schedule

    assert allowed(TrainParams, "scheduler") == set(SCHEDULES)
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
