"""ResNet-18/34/50 for 32x32 images, with torchvision's module and parameter names.

The names match torchvision.models.resnet exactly, so with stem="imagenet" and width=64
a torchvision state_dict loads into these models (and vice versa) unchanged. Dropout, in
the blocks or before the classifier, is stateless and adds no state_dict keys.
build_model also builds ResNet-9 (resnet9.py) and the patch-whitened airbench network
(airbench.py), whose three-stage layouts are fixed.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from .. import names
from ..errors import UserError
from .airbench import AirbenchNet
from .freezable import FreezableNetwork
from .resnet9 import ResNet9

STEMS = names.STEMS


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (a BatchNorm follows)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution with no bias (a BatchNorm follows)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or projected) shortcut; `block_dropout` drops
    activations between the two convolutions (as in wide ResNets) while training."""

    expansion: int = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None, block_dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.block_dropout = block_dropout  # a plain float: no module, no state_dict key
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        if self.block_dropout > 0.0:
            out = F.dropout(out, p=self.block_dropout, training=self.training)
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided, as in torchvision "ResNet v1.5"), 1x1 expand by 4;
    `block_dropout` drops activations before the expanding 1x1 convolution while training."""

    expansion: int = 4

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None, block_dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.block_dropout = block_dropout  # a plain float: no module, no state_dict key
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        if self.block_dropout > 0.0:
            out = F.dropout(out, p=self.block_dropout, training=self.training)
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


Block = Union[type[BasicBlock], type[Bottleneck]]


class ResNet(FreezableNetwork):
    """A four-stage ResNet; `stem` picks the CIFAR (3x3, no pool) or ImageNet (7x7 + pool) entry."""

    def __init__(
        self,
        block: Block,
        layers: Sequence[int],
        num_classes: int,
        width: int = 64,
        stem: str = "cifar",
        dropout: float = 0.0,
        block_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _check_args(layers, num_classes, width, stem, dropout, block_dropout)
        self.block_dropout = block_dropout
        self.inplanes = width
        if stem == "cifar":
            # 32x32 inputs cannot afford a 4x downsampling before the first stage.
            self.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool: nn.Module = nn.Identity()  # keeps the module name stable across stems
        else:
            self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, width, layers[0], stride=1)
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout)  # stateless: adds no state_dict keys
        self.fc = nn.Linear(width * 8 * block.expansion, num_classes)
        self._init_weights()

    def _make_layer(self, block: Block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        """One stage: the first block may change stride/width, the rest keep it."""
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                _conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample, self.block_dropout)]
        self.inplanes = planes * block.expansion
        layers.extend(block(self.inplanes, planes, block_dropout=self.block_dropout) for _ in range(1, blocks))
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        """Kaiming-normal convolutions and unit/zero BatchNorm, as torchvision does."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.constant_(module.weight, 1)
                nn.init.constant_(module.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(self.dropout(x))

    @staticmethod
    def default_cam_layer(stem: str) -> str:
        """The deepest stage with a spatial map at 32x32: layer4 (4x4) with the CIFAR stem; the
        ImageNet stem downsamples 32x, leaving layer4 at 1x1 and layer3 (2x2) the deepest usable."""
        return "layer3" if stem == "imagenet" else "layer4"


def _check_args(
    layers: Optional[Sequence[int]], num_classes: int, width: int, stem: str, dropout: float, block_dropout: float
) -> None:
    """Reject impossible shapes up front with one line, not a deep torch error (`layers` None: a fixed layout)."""
    if stem not in STEMS:
        raise UserError(f"unknown stem {stem!r} (valid: {', '.join(STEMS)})")
    if layers is not None and (len(layers) != 4 or any(int(n) < 1 for n in layers)):
        raise UserError(f"blocks must be four positive integers (one per stage), got {list(layers)}")
    if width < 1:
        raise UserError(f"width must be a positive integer, got {width}")
    if num_classes < 1:
        raise UserError(f"num_classes must be a positive integer, got {num_classes}")
    if not 0.0 <= dropout < 1.0:
        raise UserError(f"dropout must be in [0, 1), got {dropout}")
    if not 0.0 <= block_dropout < 1.0:
        raise UserError(f"block_dropout must be in [0, 1), got {block_dropout}")


# Keyed by names.STAGED_LAYOUT_ARCHS and names.FIXED_LAYOUT_ARCHS, in their order
# (tests/test_name_lists.py holds them equal). The four-stage ResNets (torchvision's layouts) ...
STAGED_LAYOUTS: dict[str, tuple[Block, list[int]]] = {
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet34": (BasicBlock, [3, 4, 6, 3]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
}
# ... the three-stage networks with one fixed layout each ...
FIXED_LAYOUTS: dict[str, type] = {"resnet9": ResNet9, "airbench": AirbenchNet}
# ... and every architecture build_model accepts.
ARCHITECTURES: tuple[str, ...] = (*STAGED_LAYOUTS, *FIXED_LAYOUTS)


# What build_model returns: the classes share their top-level module names where they can.
Network = Union[ResNet, ResNet9, AirbenchNet]


def network_class(arch: str) -> type[FreezableNetwork]:
    """The class build_model makes `arch` with."""
    if arch not in ARCHITECTURES:
        raise UserError(f"unknown architecture {arch!r} (valid: {', '.join(list_models())})")
    return FIXED_LAYOUTS.get(arch, ResNet)


def default_cam_layer(arch: str, stem: str = "cifar") -> str:
    """The layer a class-activation map of `arch` with `stem` uses by default, as the network states it."""
    return network_class(arch).default_cam_layer(stem)


def list_models() -> list[str]:
    """The architecture names build_model accepts."""
    return sorted(ARCHITECTURES)


def build_model(
    arch: str,
    num_classes: int,
    width: int = 64,
    stem: str = "cifar",
    dropout: float = 0.0,
    blocks: Optional[Sequence[int]] = None,
    block_dropout: float = 0.0,
    norm_momentum: float = 0.1,
    norm_eps: float = 1e-5,
) -> "Network":
    """Build `arch` (optionally with `blocks` overriding its per-stage block counts), its
    BatchNorm layers with `norm_momentum` and `norm_eps` (torch's defaults unless given)."""
    if arch not in ARCHITECTURES:
        raise UserError(f"unknown architecture {arch!r} (valid: {', '.join(list_models())})")
    if arch in FIXED_LAYOUTS:
        _check_fixed_layout_args(arch, stem, blocks)
        _check_args(None, num_classes, width, stem, dropout, block_dropout)
        model = FIXED_LAYOUTS[arch](num_classes, width, dropout, block_dropout)
    else:
        block, layers = STAGED_LAYOUTS[arch]
        model = ResNet(block, list(blocks) if blocks is not None else layers, num_classes, width, stem, dropout,
                       block_dropout)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum, module.eps = norm_momentum, norm_eps
    return model


def _check_fixed_layout_args(arch: str, stem: str, blocks: Optional[Sequence[int]]) -> None:
    """ResNet-9's and airbench's layouts are fixed and made for 32x32 inputs."""
    if stem != "cifar":
        raise UserError(f"{arch} takes only the cifar stem (its own input layer), got stem {stem!r}")
    if blocks is not None:
        raise UserError(f"{arch} has a fixed layout; blocks applies to the four-stage ResNets, got {list(blocks)}")


def count_parameters(model: nn.Module) -> int:
    """All parameters, trainable or not (buffers such as BN running stats excluded)."""
    return sum(p.numel() for p in model.parameters())
