"""The ResNet builders: shapes, TorchScript, the published parameter count, torchvision parity."""

from __future__ import annotations

import pytest
import torch
import torchvision

from cifar_resnet.errors import UserError
from cifar_resnet.models import build_model, count_parameters, list_models

# TorchScript is deprecated since torch 2.11 but still what the export stage ships.
pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch\\.jit:FutureWarning"),
    pytest.mark.usefixtures("one_torch_thread"),  # torch on one thread: see conftest
]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _layout_cases() -> list:
    """Every network with the CIFAR stem, the ResNets also with the ImageNet stem. ResNet50's
    ImageNet-stem case is the slowest (seconds) and runs in the full suite only: its bottleneck
    blocks stay in the quick loop through the CIFAR-stem case."""
    cases = [(arch, stem) for arch in list_models() for stem in ("cifar", "imagenet")
             if stem == "cifar" or arch not in ("resnet9", "airbench")]
    return [pytest.param(*case, marks=pytest.mark.slow) if case == ("resnet50", "imagenet") else case for case in cases]


@pytest.mark.parametrize("arch, stem", _layout_cases())
def test_forward_script_and_trace_match_eager(arch: str, stem: str) -> None:
    model = build_model(arch, num_classes=10, width=8, stem=stem, dropout=0.2).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        eager = model(x)
        scripted = torch.jit.script(model)(x)
        traced = torch.jit.trace(model, x)(x)
    assert eager.shape == (2, 10)
    assert torch.isfinite(eager).all()
    torch.testing.assert_close(scripted, eager, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(traced, eager, atol=1e-5, rtol=1e-5)


def test_stems_differ_only_in_entry() -> None:
    cifar = build_model("resnet18", 10, width=8, stem="cifar")
    imagenet = build_model("resnet18", 10, width=8, stem="imagenet")
    assert cifar.conv1.kernel_size == (3, 3) and cifar.conv1.stride == (1, 1)
    assert isinstance(cifar.maxpool, torch.nn.Identity)
    assert imagenet.conv1.kernel_size == (7, 7) and isinstance(imagenet.maxpool, torch.nn.MaxPool2d)
    # Same names either way, so checkpoints and layer paths (e.g. for Grad-CAM) are stem-agnostic.
    assert [n for n, _ in cifar.named_modules()] == [n for n, _ in imagenet.named_modules()]


def test_dropout_adds_no_state_dict_keys() -> None:
    plain = build_model("resnet18", 10, width=8)
    dropped = build_model("resnet18", 10, width=8, dropout=0.5)
    assert dropped.dropout.p == 0.5
    assert list(plain.state_dict()) == list(dropped.state_dict())


def test_unknown_arch_lists_valid_names() -> None:
    with pytest.raises(UserError) as info:
        build_model("resnet101", 10)
    message = str(info.value)
    assert "resnet101" in message and "\n" not in message
    for name in list_models():
        assert name in message


@pytest.mark.parametrize(
    "kwargs, named",
    [({"stem": "tiny"}, r"stem 'tiny'"), ({"blocks": [2, 2, 2]}, r"blocks .* got \[2, 2, 2\]"),
     ({"blocks": [2, 0, 2, 2]}, r"blocks .* got \[2, 0, 2, 2\]"), ({"dropout": 1.0}, r"dropout .* got 1\.0"),
     ({"width": 0}, r"width .* got 0")],
)
def test_bad_arguments_are_user_errors_naming_the_argument_and_value(kwargs: dict, named: str) -> None:
    with pytest.raises(UserError, match=named):
        build_model("resnet18", 10, **kwargs)


@pytest.mark.parametrize(
    "kwargs, named",
    [({"stem": "imagenet"}, r"{arch} takes only the cifar stem.*'imagenet'"),
     ({"blocks": [1, 1, 1, 1]}, r"{arch} has a fixed layout.*\[1, 1, 1, 1\]"), ({"width": 0}, r"width .* got 0")],
)
@pytest.mark.parametrize("arch", ["resnet9", "airbench"])
def test_fixed_layouts_reject_what_they_cannot_take(arch: str, kwargs: dict, named: str) -> None:
    with pytest.raises(UserError, match=named.format(arch=arch)):
        build_model(arch, 10, **kwargs)


def test_resnet9_layout() -> None:
    # Page's DAWNBench network at width 64: prep 64, stages 128 (+ residual), 256, 512 (+ residual).
    model = build_model("resnet9", 10, width=64).eval()
    shapes = {}
    hooks = [getattr(model, name).register_forward_hook(lambda m, a, out, name=name: shapes.__setitem__(name, tuple(out.shape)))
             for name in ("relu", "layer1", "layer2", "layer3")]
    with torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    for hook in hooks:
        hook.remove()
    assert shapes == {"relu": (1, 64, 32, 32), "layer1": (1, 128, 16, 16), "layer2": (1, 256, 8, 8), "layer3": (1, 512, 4, 4)}
    # Convolutions 3*64*9 + 64*128*9 + 2*128*128*9 + 128*256*9 + 256*512*9 + 2*512*512*9, BatchNorm
    # 2 * (64 + 128 * 3 + 256 + 512 * 3), classifier 512 * 10 + 10.
    assert count_parameters(model) == 6_573_130


def test_seed_config_parameter_count() -> None:
    # The published figure for 4 stages x 5 basic blocks, width 64, CIFAR stem, 100 classes.
    model = build_model("resnet18", 100, width=64, stem="cifar", dropout=0.3, blocks=[5, 5, 5, 5])
    assert count_parameters(model) == 30_032_292


@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet50"])
def test_torchvision_parity(arch: str) -> None:
    ours = build_model(arch, num_classes=1000, width=64, stem="imagenet").eval()
    theirs = getattr(torchvision.models, arch)(weights=None).eval()
    ours_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    theirs_shapes = {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    assert ours_shapes == theirs_shapes
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=0)
