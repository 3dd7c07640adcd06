"""Grad-CAM helpers: CAMs per method, layer lookup, figures, the localisation score."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cifar_resnet.errors import UserError
from cifar_resnet.gradcam import (
    CAM_METHODS,
    compute_cams,
    localisation_score,
    overlay,
    peak_in_box,
    plot_cam_grid,
    resolve_layer,
)
from cifar_resnet.models import build_model


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # On a small, busy CPU box, OpenMP threads spin against each other (100x slowdowns seen).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    # Tiny on purpose: ScoreCAM runs one forward pass per channel of the target layer.
    return build_model("resnet18", 4, width=8, blocks=[1, 1, 1, 1])


def _hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._backward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("method", sorted(CAM_METHODS))
def test_compute_cams_shape_range_and_model_untouched(model: torch.nn.Module, method: str) -> None:
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cams = compute_cams(model, torch.randn(2, 3, 32, 32), target_layer="layer4", method=method)
    assert cams.shape == (2, 32, 32) and cams.dtype == np.float32
    assert np.isfinite(cams).all() and cams.min() >= 0.0 and cams.max() <= 1.0
    assert model.training and _hooks(model) == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_compute_cams_with_targets_and_under_no_grad(model: torch.nn.Module) -> None:
    model.eval()
    inputs = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # callers often are; gradients are re-enabled inside
        cams = compute_cams(model, inputs, target_layer="layer4.0.conv2", targets=[1, 3])
    assert cams.shape == (2, 32, 32) and not model.training
    with pytest.raises(ValueError):
        compute_cams(model, inputs, targets=[1])
    with pytest.raises(UserError, match="gradcam"):
        compute_cams(model, inputs, method="lime")


def test_resolve_layer(model: torch.nn.Module) -> None:
    assert resolve_layer(model, "layer4") is model.layer4
    assert resolve_layer(model, "layer4.0.conv2") is model.layer4[0].conv2
    for bad in ["layer9", "layer4.7.conv2", ""]:
        with pytest.raises(UserError) as info:
            resolve_layer(model, bad)
        assert "layer4" in str(info.value) and "fc" in str(info.value)


def test_overlay_and_grid(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(4)]
    cams = [rng.random((32, 32), dtype=np.float32) for _ in range(4)]
    blended = overlay(images[0], cams[0])
    assert blended.shape == (32, 32, 3) and blended.dtype == np.uint8
    path = tmp_path / "figs" / "gradcam.png"
    plot_cam_grid(images, cams, [f"pred: cat (0.9{i})\ntrue: dog" for i in range(4)], path, ncols=3)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 1000
    assert [p.name for p in path.parent.iterdir()] == ["gradcam.png"]


def test_peak_in_box_and_localisation_score() -> None:
    cams = np.zeros((2, 32, 32), dtype=np.float32)
    cams[0, 10, 20] = 1.0  # row (y) 10, column (x) 20
    cams[1, 5, 5] = 1.0
    boxes = np.array([[15, 8, 25, 12], [6, 6, 30, 30]])  # x0, y0, x1, y1
    assert peak_in_box(cams, boxes).tolist() == [True, False]
    assert localisation_score(cams, boxes) == 0.5
    # x1/y1 are exclusive: a peak on the far edge is outside.
    assert peak_in_box(cams[:1], np.array([[15, 8, 20, 12]])).tolist() == [False]
    assert peak_in_box(cams[:1], np.array([[15, 8, 21, 11]])).tolist() == [True]
