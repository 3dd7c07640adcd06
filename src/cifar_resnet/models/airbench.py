"""A patch-whitened convolutional network after Keller Jordan's airbench94 (2024).

Jordan's "94% on CIFAR-10 in 3.29 seconds on a single GPU" (arXiv:2404.00498) trains
this layout to 94% in about ten epochs. Its input layer is not learned: a 2x2
convolution whose filters whiten the training images' 2x2 patches (their eigenvectors
scaled by 1/sqrt(eigenvalue), each filter also negated), computed from the data before
training (`fit_whitening`). Then three stages, each a 3x3 convolution, a 2x2 max-pool,
BatchNorm and GELU, then a second 3x3 convolution, BatchNorm and GELU. Max-pooling
straight after the convolution runs BatchNorm and GELU on a quarter of the pixels. The
BatchNorm scales stay at 1 and only their shifts train. The convolutions start as
identities on their first input channels (Dirac), and the logits are scaled by 1/9. At
`width` c the stages have c, 4c and 4c channels; c = 64 is the published network.

His training tricks are pipeline options, not part of the network: lookahead weight
averaging (`train.lookahead`), alternating flips (`augment.hflip: alternate`), 64x
learning rate on the BatchNorm shifts (`train.norm_lr_scale`) and translated test-time
views (`evaluate.tta_shift`), the whitening bias frozen after three epochs
(`train.freeze_whitening_bias_after`) and his BatchNorm momentum and eps (`model.norm_momentum`,
`model.norm_eps`). The
top-level names (conv1, act, layer1-3, pool, dropout, fc) follow ResNet's where they can,
so Grad-CAM paths, the backbone/head split and the checkpoint format work unchanged. Its
32x32 input leaves maps of 31, 15, 7 and 3 pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .freezable import FreezableNetwork

LOGIT_SCALE = 1 / 9  # Jordan's: keeps the initial softmax from saturating at high learning rates
WHITENING_KERNEL = 2
WHITENING_EPS = 5e-4  # added to the eigenvalues: the smallest would otherwise blow up noise


def batch_norm(planes: int) -> nn.BatchNorm2d:
    """BatchNorm whose scale stays 1 (not trained): only its shift learns."""
    norm = nn.BatchNorm2d(planes)
    norm.weight.requires_grad_(False)
    return norm


def dirac_conv(in_planes: int, out_planes: int) -> nn.Conv2d:
    """3x3 convolution (padding 1, no bias) whose first `in_planes` filters start as identities."""
    conv = nn.Conv2d(in_planes, out_planes, kernel_size=3, padding=1, bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[:in_planes])
    return conv


class Stage(nn.Module):
    """conv, 2x2 max-pool, BN, GELU, then conv, BN, GELU; `block_dropout` drops activations between them."""

    def __init__(self, in_planes: int, planes: int, block_dropout: float = 0.0) -> None:
        super().__init__()
        self.block_dropout = block_dropout  # a plain float: no module, no state_dict key
        self.conv1 = dirac_conv(in_planes, planes)
        self.pool = nn.MaxPool2d(2)
        self.bn1 = batch_norm(planes)
        self.conv2 = dirac_conv(planes, planes)
        self.bn2 = batch_norm(planes)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.pool(self.conv1(x))))
        if self.block_dropout > 0.0:
            out = F.dropout(out, p=self.block_dropout, training=self.training)
        return self.act(self.bn2(self.conv2(out)))


def whitening_filters(images: torch.Tensor, kernel: int = WHITENING_KERNEL, eps: float = WHITENING_EPS) -> torch.Tensor:
    """Filters that whiten the `kernel` x `kernel` patches of NCHW `images`, and their negatives.

    Returns 2 * C * kernel**2 filters of shape (C, kernel, kernel): the eigenvectors of the
    patches' covariance, each divided by sqrt(its eigenvalue + eps), largest eigenvalue
    first. Computed in float64 on the CPU. Each eigenvector's sign is fixed (its largest
    entry positive), so the filters do not depend on which LAPACK build decomposed them.
    """
    channels = images.shape[1]
    patches = F.unfold(images.detach().to("cpu", torch.float64), kernel).transpose(1, 2).reshape(-1, channels * kernel**2)
    patches = patches - patches.mean(dim=0)
    covariance = patches.T @ patches / len(patches)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
    eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)
    largest = eigenvectors.abs().argmax(dim=0)
    eigenvectors = eigenvectors * eigenvectors[largest, torch.arange(len(largest))].sign()
    filters = (eigenvectors / torch.sqrt(eigenvalues.clamp(min=0) + eps)).T.reshape(-1, channels, kernel, kernel)
    return torch.cat([filters, -filters]).float()


class AirbenchNet(FreezableNetwork):
    """The patch-whitened network for 32x32 images (see the module doc)."""

    @staticmethod
    def default_cam_layer(stem: str) -> str:
        """The deepest stage with a spatial map at 32x32: layer3 (3x3), the last of three (the only stem is cifar)."""
        return "layer3"

    def __init__(self, num_classes: int, width: int = 64, dropout: float = 0.0, block_dropout: float = 0.0) -> None:
        super().__init__()
        whitened = 2 * 3 * WHITENING_KERNEL**2
        # Until fit_whitening sets them, the frozen filters are torch's random initialisation.
        self.conv1 = nn.Conv2d(3, whitened, kernel_size=WHITENING_KERNEL, bias=True)
        self.conv1.weight.requires_grad_(False)
        self.act = nn.GELU()
        self.layer1 = Stage(whitened, width, block_dropout)  # 15x15
        self.layer2 = Stage(width, width * 4, block_dropout)  # 7x7
        self.layer3 = Stage(width * 4, width * 4, block_dropout)  # 3x3
        self.pool = nn.AdaptiveMaxPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout)  # stateless: adds no state_dict keys
        self.fc = nn.Linear(width * 4, num_classes, bias=False)
        self.logit_scale = LOGIT_SCALE  # an attribute, which TorchScript reads (not a global)

    @torch.no_grad()
    def fit_whitening(self, images: torch.Tensor) -> None:
        """Set the input layer to whiten the patches of `images` (normalised NCHW, as the network sees them)."""
        self.conv1.weight.copy_(whitening_filters(images))
        self.conv1.bias.zero_()

    def whitening_bias(self) -> nn.Parameter:
        """The input layer's bias: the one learned part of it (train.freeze_whitening_bias_after)."""
        return self.conv1.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv1(x))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(self.pool(x), 1)
        return self.fc(self.dropout(x)) * self.logit_scale
