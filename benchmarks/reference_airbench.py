"""A reference: Keller Jordan's airbench94, written from the paper, as the stick the recipes are measured by.

    python benchmarks/reference_airbench.py --source ../shared/data/cifar10-jpeg-train.tar.gz --seeds 0 1

Written from "94% on CIFAR-10 in 3.29 Seconds on a Single GPU" (Jordan, 2024,
arXiv:2404.00498) and its published hyperparameters, independently of the pipeline: its
own network, data augmentation, optimiser, schedule, lookahead and test-time views. It
shares only the project's folder reader (the same images, decoded the same way) and
nothing of the training code, so the pipeline's `fit` can be held against it.

What it trains (the paper's airbench94, unchanged):
- the network: a 2x2 convolution fixed to whiten the 2x2 patches of 5,000 training
  images (uncentred covariance, eigenvalues + 5e-4, each filter also negated), GELU; then
  three blocks of conv3x3, 2x2 max-pool, BatchNorm, GELU, conv3x3, BatchNorm, GELU at
  widths 64, 256, 256; a 3x3 max-pool, a bias-free linear layer and logits times 1/9.
  Convolutions start as identities on their first input channels; BatchNorm scales are
  fixed at 1, its momentum 0.6 in Jordan's convention (0.4 in torch's) and eps 1e-12.
- the data: reflect-padded random translation by up to 2 pixels, alternating flips (a
  random half of the images in the first epoch, then each image the other way round).
- the optimiser: SGD with Nesterov momentum 0.85 on the summed loss (label smoothing
  0.2), batch 1024, learning rate 11.5 per 1,024 images and weight decay 0.0153 per
  1,024, both divided by 1,024 x (1 + 1 / (1 - momentum)); the BatchNorm shifts at 64x
  the rate with the same decay per step; the whitening bias trains for 3 epochs only.
- the schedule: 9.9 epochs, the rate rising linearly from 0.2 to 1 of its peak over
  the first 23% of the steps, then falling linearly to 0.07.
- lookahead: every 5 steps the weights move to an average that lags them, with decay
  0.95**5 x progress**3; after the last step the weights are the average.
- test-time views: plain; flip (the image and its mirror); "tta" (Jordan's level 2: the
  image and its mirror at weight 1/2, both also moved one pixel up-left and down-right,
  reflected borders, at weight 1/2), all by averaging logits.

On the CPU it computes under bf16 autocast with fp32 weights (Jordan's GPU code keeps
fp16 weights) in channels_last, where the CPU runs bf16 natively. The training time it
prints covers the whitening, the network's construction and the training steps, from
images in memory to a trained model: the test views are not timed. It prints figures;
it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
from cifar_resnet.data.arrays import ImageSet  # noqa: E402
from cifar_resnet.data.folder import load_image_folder  # noqa: E402
from cifar_resnet.inference import cpu_has_native_bf16  # noqa: E402


@dataclass(frozen=True)
class Hyper:
    """airbench94's published hyperparameters (the paper's Table and its code's defaults)."""

    batch_size: int = 1024
    epochs: float = 9.9
    lr: float = 11.5  # per 1024 images, on the summed loss
    momentum: float = 0.85
    weight_decay: float = 0.0153  # per 1024 images
    bias_scaler: float = 64.0  # the BatchNorm shifts' learning-rate multiplier
    label_smoothing: float = 0.2
    whiten_bias_epochs: int = 3
    translate: int = 2
    widths: tuple[int, int, int] = (64, 256, 256)
    bn_momentum: float = 0.6  # Jordan's convention: the running statistics keep 0.6 of themselves
    bn_eps: float = 1e-12
    logit_scale: float = 1 / 9
    whiten_images: int = 5000
    whiten_eps: float = 5e-4
    warmup: float = 0.23
    lr_start: float = 0.2  # of the peak
    lr_end: float = 0.07
    lookahead_every: int = 5
    lookahead_decay: float = 0.95**5


# --- the network -------------------------------------------------------------------------

class Norm(nn.BatchNorm2d):
    """BatchNorm with the scale fixed at 1: only the shift learns."""

    def __init__(self, channels: int, momentum: float, eps: float) -> None:
        super().__init__(channels, momentum=1 - momentum, eps=eps)
        self.weight.requires_grad_(False)


class IdentityConv(nn.Conv2d):
    """3x3 convolution, no bias, its first in_channels filters starting as identities."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(cin, cout, kernel_size=3, padding=1, bias=False)
        with torch.no_grad():
            nn.init.dirac_(self.weight[:cin])


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, hyper: Hyper) -> None:
        super().__init__()
        self.conv_a, self.norm_a = IdentityConv(cin, cout), Norm(cout, hyper.bn_momentum, hyper.bn_eps)
        self.conv_b, self.norm_b = IdentityConv(cout, cout), Norm(cout, hyper.bn_momentum, hyper.bn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.norm_a(F.max_pool2d(self.conv_a(x), 2)))
        return F.gelu(self.norm_b(self.conv_b(x)))


class Airbench94(nn.Module):
    def __init__(self, hyper: Hyper, classes: int = 10) -> None:
        super().__init__()
        self.whiten = nn.Conv2d(3, 24, kernel_size=2, bias=True)
        self.whiten.weight.requires_grad_(False)
        w1, w2, w3 = hyper.widths
        self.blocks = nn.Sequential(Block(24, w1, hyper), Block(w1, w2, hyper), Block(w2, w3, hyper))
        self.head = nn.Linear(w3, classes, bias=False)
        self.logit_scale = hyper.logit_scale

    @torch.no_grad()
    def init_whitening(self, images: torch.Tensor, eps: float) -> None:
        """Filters from the eigendecomposition of the uncentred covariance of 2x2 patches."""
        patches = images.double().unfold(2, 2, 1).unfold(3, 2, 1)  # N, C, 31, 31, 2, 2
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, 12)
        covariance = patches.T @ patches / len(patches)
        values, vectors = torch.linalg.eigh(covariance)
        filters = (vectors.T / torch.sqrt(values + eps)[:, None]).reshape(12, 3, 2, 2)
        self.whiten.weight.copy_(torch.cat([filters, -filters]).float())
        self.whiten.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(F.gelu(self.whiten(x)))
        x = F.max_pool2d(x, x.shape[-1]).flatten(1)
        return self.head(x) * self.logit_scale


# --- data --------------------------------------------------------------------------------

def to_tensor(images: ImageSet, mean: torch.Tensor, std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(images.images).permute(0, 3, 1, 2).float().div_(255)
    return (x - mean) / std, torch.from_numpy(images.labels.astype(np.int64))


def translated(padded: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """A random crop of each reflect-padded image: a translation by up to `pad` pixels each way."""
    n, size = len(padded), padded.shape[-1] - 2 * pad
    shifts = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator).to(padded.device)
    out = torch.empty(n, padded.shape[1], size, size, dtype=padded.dtype, device=padded.device)
    for dy in range(2 * pad + 1):  # one slice per offset pair: 25 at pad 2
        for dx in range(2 * pad + 1):
            idx = torch.nonzero((shifts[:, 0] == dy) & (shifts[:, 1] == dx)).flatten()
            out[idx] = padded[idx, :, dy:dy + size, dx:dx + size]
    return out


# --- training ----------------------------------------------------------------------------

def lr_factor(step: int, total: int, hyper: Hyper) -> float:
    warmup = int(hyper.warmup * total)
    if step < warmup:
        return hyper.lr_start + (1 - hyper.lr_start) * step / warmup
    return 1 + (hyper.lr_end - 1) * (step - warmup) / (total - warmup)


class Lookahead:
    def __init__(self, model: nn.Module) -> None:
        self.average = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: nn.Module, decay: float) -> None:
        state = model.state_dict()
        for name, average in self.average.items():
            average.lerp_(state[name], 1 - decay)
            state[name].copy_(average)


@dataclass
class Result:
    seed: int
    train_seconds: float
    steps: int
    accuracy: dict[str, float] = field(default_factory=dict)


def bf16_on(device: torch.device) -> bool:
    return device.type == "cuda" or cpu_has_native_bf16()


def train(train_set: ImageSet, seed: int, device: torch.device, hyper: Hyper = Hyper()) -> tuple[nn.Module, Result, tuple]:
    """airbench94 on `train_set`; returns the model, its timing and the normalisation."""
    started = time.perf_counter()
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.from_numpy(train_set.images).float().div_(255)
    mean, std = pixels.mean(dim=(0, 1, 2)).view(1, 3, 1, 1), pixels.std(dim=(0, 1, 2)).view(1, 3, 1, 1)
    del pixels
    images, labels = to_tensor(train_set, mean, std)
    # The whole split stays on the device, augmented there a whole epoch at a time, as Jordan's loader does.
    padded = F.pad(images, (hyper.translate,) * 4, mode="reflect").to(device)
    model = Airbench94(hyper, int(labels.max()) + 1)
    model.init_whitening(images[:hyper.whiten_images], hyper.whiten_eps)
    labels = labels.to(device)
    amp = bf16_on(device)
    model = model.to(device, memory_format=torch.channels_last if amp else torch.contiguous_format)

    kilostep = hyper.batch_size * (1 + 1 / (1 - hyper.momentum))
    lr, decay = hyper.lr / kilostep, hyper.weight_decay * hyper.batch_size / kilostep
    norm_biases = [p for n, p in model.named_parameters() if "norm" in n and p.requires_grad]
    others = [p for n, p in model.named_parameters() if "norm" not in n and p.requires_grad]
    optimizer = torch.optim.SGD([
        {"params": norm_biases, "lr": lr * hyper.bias_scaler, "weight_decay": decay / (lr * hyper.bias_scaler)},
        {"params": others, "lr": lr, "weight_decay": decay / lr},
    ], momentum=hyper.momentum, nesterov=True)
    batches = len(labels) // hyper.batch_size
    total = math.ceil(batches * hyper.epochs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total, hyper))
    lookahead = Lookahead(model)
    flips = (torch.rand(len(labels), generator=generator) < 0.5).to(device)
    step = 0
    for epoch in range(math.ceil(hyper.epochs)):
        model.whiten.bias.requires_grad_(epoch < hyper.whiten_bias_epochs)
        epoch_images = translated(padded, hyper.translate, generator)
        if epoch > 0:
            flips = ~flips  # every image the other way round than last epoch
        epoch_images = torch.where(flips[:, None, None, None], epoch_images.flip(3), epoch_images)
        order = torch.randperm(len(labels), generator=generator).to(device)
        model.train()
        for b in range(batches):
            index = order[b * hyper.batch_size:(b + 1) * hyper.batch_size]
            x, y = epoch_images[index], labels[index]
            if amp:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss = F.cross_entropy(model(x), y, label_smoothing=hyper.label_smoothing, reduction="sum")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            if step % hyper.lookahead_every == 0:
                lookahead.update(model, hyper.lookahead_decay * (step / total) ** 3)
            if step >= total:
                break
        if step >= total:
            break
    lookahead.update(model, 1.0)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return model, Result(seed, time.perf_counter() - started, step), (mean, std)


# --- scoring -----------------------------------------------------------------------------

@torch.no_grad()
def logits_of(model: nn.Module, images: torch.Tensor, device: torch.device, batch: int = 1000) -> torch.Tensor:
    model.eval()
    amp = bf16_on(device)
    out = []
    for start in range(0, len(images), batch):
        x = images[start:start + batch].to(device)
        if amp:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out.append(model(x).float().cpu())
    return torch.cat(out)


def accuracies(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, device: torch.device) -> dict[str, float]:
    """Plain, flip (2 views) and Jordan's level-2 TTA (6 views), each averaging logits."""
    plain = logits_of(model, images, device)
    flip = (plain + logits_of(model, images.flip(3), device)) / 2
    padded = F.pad(images, (1,) * 4, mode="reflect")
    moved = [padded[:, :, :32, :32], padded[:, :, 2:, 2:]]
    moved_logits = [(logits_of(model, m, device) + logits_of(model, m.flip(3), device)) / 2 for m in moved]
    tta = flip / 2 + (moved_logits[0] + moved_logits[1]) / 4

    def score(logits: torch.Tensor) -> float:
        return round((logits.argmax(1) == labels).float().mean().item(), 4)

    return {"plain": score(plain), "flip": score(flip), "tta": score(tta)}


def run(train_set: ImageSet, test_set: ImageSet, seed: int, device: torch.device, hyper: Hyper = Hyper()) -> Result:
    """Train on `train_set` and score on `test_set`."""
    model, result, (mean, std) = train(train_set, seed, device, hyper)
    images, labels = to_tensor(test_set, mean, std)
    result.accuracy = accuracies(model, images, labels, device)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, required=True, help="folder or archive with train/<class>/ and test/<class>/")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--epochs", type=float, default=Hyper.epochs)
    parser.add_argument("--max-train", type=int, help="train on at most this many images (a quick check)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as work:
        train_set, test_set, _ = load_image_folder(args.source, work)
    if args.max_train:
        train_set = train_set.subset(np.arange(min(args.max_train, len(train_set))))
    hyper = Hyper(epochs=args.epochs)
    for seed in args.seeds:
        result = run(train_set, test_set, seed, torch.device(args.device), hyper)
        print(json.dumps({"seed": seed, "train_seconds": round(result.train_seconds, 1), "steps": result.steps,
                          **result.accuracy}), flush=True)


if __name__ == "__main__":
    main()
