"""ResNet-9: the residual network of DAWNBench's fastest CIFAR-10 entries (David Page, 2018).

Three stages, each one 3x3 convolution that widens the map and a 2x2 max-pool that halves
it; stages 1 and 3 add a residual unit of two 3x3 convolutions. At `width` c the channels
are c (prep), 2c, 4c, 8c; c = 64 is the published network (6.6 M parameters).

Against ResNet18 it spends its arithmetic at lower resolutions: one convolution at 32x32,
then pooling. On a CPU that runs faster per multiply-add, and per minute of training it
learns more (docs/performance.md, "The recipe now: ResNet-9 width 32"). The top-level module names
(conv1, bn1, relu, layer1-3, dropout, fc) follow ResNet's, so Grad-CAM layer paths, the
backbone/head split and the checkpoint format work unchanged. There are no torchvision
weights for it: model.pretrained takes only a state dict saved from a ResNet-9.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .freezable import FreezableNetwork

# Page's network scales its logits by 1/8: with the initial weights' large outputs,
# unscaled logits start the softmax saturated, and the high learning rates it trains at
# (0.4 at batch 512) then diverge.
LOGIT_SCALE = 0.125


def conv_bn_relu(in_planes: int, out_planes: int) -> nn.Sequential:
    """3x3 convolution (padding 1, no bias: a BatchNorm follows), BatchNorm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_planes),
        nn.ReLU(inplace=True),
    )


class Residual(nn.Module):
    """x + f(x), f two conv-BN-ReLU units; `block_dropout` drops activations between them."""

    def __init__(self, planes: int, block_dropout: float = 0.0) -> None:
        super().__init__()
        self.block_dropout = block_dropout  # a plain float: no module, no state_dict key
        self.conv1 = conv_bn_relu(planes, planes)
        self.conv2 = conv_bn_relu(planes, planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        if self.block_dropout > 0.0:
            out = F.dropout(out, p=self.block_dropout, training=self.training)
        return x + self.conv2(out)


def stage(in_planes: int, planes: int, residual: bool, block_dropout: float) -> nn.Sequential:
    """Widen to `planes`, halve the map, optionally add a residual unit."""
    layers: list[nn.Module] = [conv_bn_relu(in_planes, planes), nn.MaxPool2d(2)]
    if residual:
        layers.append(Residual(planes, block_dropout))
    return nn.Sequential(*layers)


class ResNet9(FreezableNetwork):
    """ResNet-9 for 32x32 images."""

    @staticmethod
    def default_cam_layer(stem: str) -> str:
        """The deepest stage with a spatial map at 32x32: layer3 (4x4), the last of three (the only stem is cifar)."""
        return "layer3"

    def __init__(self, num_classes: int, width: int = 64, dropout: float = 0.0, block_dropout: float = 0.0) -> None:
        super().__init__()
        # The prep convolution keeps ResNet's stem names (conv1, bn1, relu).
        self.conv1 = nn.Conv2d(3, width, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = stage(width, width * 2, residual=True, block_dropout=block_dropout)  # 16x16
        self.layer2 = stage(width * 2, width * 4, residual=False, block_dropout=block_dropout)  # 8x8
        self.layer3 = stage(width * 4, width * 8, residual=True, block_dropout=block_dropout)  # 4x4
        self.pool = nn.AdaptiveMaxPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout)  # stateless: adds no state_dict keys
        self.fc = nn.Linear(width * 8, num_classes)
        self.logit_scale = LOGIT_SCALE  # an attribute, which TorchScript reads (not a global)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(self.pool(x), 1)
        return self.fc(self.dropout(x)) * self.logit_scale
