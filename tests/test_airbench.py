"""The patch-whitened airbench network: layout, frozen layers, whitening, and its optimiser groups."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cifar_resnet.data.arrays import ImageSet
from cifar_resnet.models import build_model, count_parameters
from cifar_resnet.models.airbench import whitening_filters
from cifar_resnet.training.optim import build_optimizer, parameter_groups
from cifar_resnet.training.run import WHITENING_IMAGES, fit_data_dependent_layers

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.timeout(120)]


def correlated_images(n: int, seed: int = 0) -> torch.Tensor:
    """NCHW images whose neighbouring pixels and channels correlate, as in photographs."""
    generator = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.avg_pool2d(torch.randn(n, 1, 36, 36, generator=generator), 5, stride=1)
    return 5 * smooth * torch.tensor([1.0, 0.8, 0.6]).view(1, 3, 1, 1) + 0.5 * torch.randn(n, 3, 32, 32, generator=generator)


def test_layout_and_parameter_count() -> None:
    # Jordan's airbench94 at width 64: a 2x2 whitening layer (24 filters), stages of 64, 256, 256.
    model = build_model("airbench", 10, width=64).eval()
    shapes = {}
    hooks = [getattr(model, name).register_forward_hook(lambda m, a, out, name=name: shapes.__setitem__(name, tuple(out.shape)))
             for name in ("act", "layer1", "layer2", "layer3")]
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    for hook in hooks:
        hook.remove()
    assert shapes == {"act": (1, 24, 31, 31), "layer1": (1, 64, 15, 15), "layer2": (1, 256, 7, 7), "layer3": (1, 256, 3, 3)}
    # Whitening 24*3*4 + 24; convolutions 24*64*9 + 64*64*9 + 64*256*9 + 3*256*256*9; BatchNorm
    # 2 * (2*64 + 4*256); classifier 256 * 10, no bias.
    assert count_parameters(model) == 1_972_792


def test_whitening_and_batchnorm_scales_are_frozen_and_the_convolutions_start_as_identities() -> None:
    model = build_model("airbench", 10, width=8)
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    norm_scales = {f"layer{i}.bn{j}.weight" for i in (1, 2, 3) for j in (1, 2)}
    assert frozen == {"conv1.weight"} | norm_scales
    x = torch.randn(2, 8, 5, 5)
    conv = model.layer1.conv2  # 8 -> 8 channels: all of it starts as the identity
    torch.testing.assert_close(conv(x), x)
    widening = model.layer2.conv1  # 8 -> 32: its first 8 filters copy the input
    torch.testing.assert_close(widening(x)[:, :8], x)


def test_whitening_filters_decorrelate_the_patches() -> None:
    images = correlated_images(64)
    filters = whitening_filters(images)
    assert filters.shape == (24, 3, 2, 2)
    torch.testing.assert_close(filters[12:], -filters[:12])
    out = torch.nn.functional.conv2d(images, filters[:12]).permute(1, 0, 2, 3).reshape(12, -1).double()
    covariance = torch.cov(out)
    # Unit variance (every eigenvalue here dwarfs eps, 5e-4), every pair uncorrelated.
    assert torch.allclose(covariance.diagonal(), torch.ones(12, dtype=torch.float64), atol=0.01)
    off_diagonal = covariance - torch.diag(covariance.diagonal())
    assert off_diagonal.abs().max() < 0.02


def test_whitening_filters_do_not_depend_on_image_order_or_eigenvector_signs() -> None:
    images = correlated_images(32)
    filters = whitening_filters(images)
    shuffled = whitening_filters(images[torch.randperm(32, generator=torch.Generator().manual_seed(1))])
    torch.testing.assert_close(shuffled, filters, atol=1e-5, rtol=1e-4)
    flat = filters[:12].reshape(12, -1)
    assert (flat[torch.arange(12), flat.abs().argmax(dim=1)] > 0).all()  # the sign rule: largest entry positive


def test_the_train_stage_fits_the_whitening_layer_from_training_images_only_for_airbench() -> None:
    rng = np.random.default_rng(0)
    images = ImageSet(rng.integers(0, 256, (WHITENING_IMAGES + 50, 32, 32, 3), dtype=np.uint8), np.zeros(WHITENING_IMAGES + 50))
    model = build_model("airbench", 10, width=8)
    note = fit_data_dependent_layers(model, images)
    assert note == f"input layer whitened on the 2x2 patches of {WHITENING_IMAGES} training images"
    assert torch.count_nonzero(model.conv1.bias) == 0
    again = build_model("airbench", 10, width=8)
    fit_data_dependent_layers(again, images)
    assert torch.equal(again.conv1.weight, model.conv1.weight)  # a function of the images alone
    assert fit_data_dependent_layers(build_model("resnet9", 10, width=8), images) is None


def test_norm_lr_scale_speeds_up_batchnorm_parameters_and_keeps_their_decay_per_step() -> None:
    model = build_model("airbench", 10, width=8)
    groups = parameter_groups(model, 1e-3, norm_lr_scale=64.0)
    norm_shifts = {id(model.get_submodule(f"layer{i}.bn{j}").bias) for i in (1, 2, 3) for j in (1, 2)}
    (fast,) = [g for g in groups if g.get("lr_scale") == 64.0]
    assert {id(p) for p in fast["params"]} == norm_shifts
    assert fast["weight_decay"] == pytest.approx(1e-3 / 64)
    optimizer = build_optimizer(groups, "sgd", lr=0.5)
    lr_times_decay = {round(g["lr"] * g["weight_decay"], 12) for g in optimizer.param_groups}
    assert lr_times_decay == {round(0.5 * 1e-3, 12)}
    assert sorted(g["lr"] for g in optimizer.param_groups) == [0.5, 32.0]
