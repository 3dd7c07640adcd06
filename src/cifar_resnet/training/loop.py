"""The training loop: one pure-ish function per phase, checkpoints and logging via arguments."""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ..errors import UserError
from .checkpoint import save_checkpoint


@dataclass(frozen=True)
class EpochResult:
    """Metrics of one epoch; val_* are NaN when there is no validation split."""

    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so a run on CPU repeats exactly."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def select_device(requested: str) -> torch.device:
    """`auto` picks CUDA when present; asking for CUDA without one is a user mistake."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device = 'cuda' but no CUDA device is available (use 'auto' or 'cpu')")
    return torch.device(requested)


def train_one_epoch(
    model: torch.nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
    label_smoothing: float = 0.0,
    description: str = "train",
) -> tuple[float, float, float]:
    """One pass over the loader; returns (mean loss, accuracy, last learning rate used)."""
    from tqdm import tqdm

    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    lr = optimizer.param_groups[0]["lr"]
    # disable=None: a live bar on a terminal, silence in logs and tests.
    bar = tqdm(loader, desc=description, leave=False, disable=None, unit="batch")
    for images, labels in bar:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        logits = model(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
        if not torch.isfinite(loss):
            raise UserError(f"training diverged: loss is {loss.item()} (lower train.max_lr)")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        batch = labels.size(0)
        total_loss += loss.item() * batch
        correct += (logits.argmax(1) == labels).sum().item()
        seen += batch
        bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}")
    return total_loss / max(seen, 1), correct / max(seen, 1), lr


@torch.no_grad()
def evaluate_logits(
    model: torch.nn.Module, images: torch.Tensor, batch_size: int, device: torch.device
) -> torch.Tensor:
    """Logits for a whole normalised NCHW tensor, in eval mode, batched; returned on the CPU."""
    model.eval()
    outputs = [model(images[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(outputs) if outputs else torch.empty(0)


def _loss_and_acc(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    if len(labels) == 0:
        return math.nan, math.nan
    return F.cross_entropy(logits, labels).item(), (logits.argmax(1) == labels).float().mean().item()


def fit(
    model: torch.nn.Module,
    loader: DataLoader,
    val_images: torch.Tensor,
    val_labels: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    epochs: int,
    device: torch.device,
    checkpoint_dir: str | Path,
    run_info: Optional[dict[str, Any]] = None,
    label_smoothing: float = 0.0,
    eval_batch_size: int = 256,
    on_epoch_end: Optional[Callable[[EpochResult], None]] = None,
) -> list[EpochResult]:
    """Train for `epochs`, keeping `last.pt` every epoch and `best.pt` at the best validation accuracy.

    Without a validation split, "best" is judged on training accuracy instead.
    `run_info` (e.g. the model config and a params hash) is stored in every checkpoint.
    """
    checkpoint_dir = Path(checkpoint_dir)
    history: list[EpochResult] = []
    best_acc = -math.inf
    for epoch in range(1, epochs + 1):
        train_loss, train_acc, lr = train_one_epoch(
            model, loader, optimizer, scheduler, device, label_smoothing, description=f"epoch {epoch}/{epochs}"
        )
        val_loss, val_acc = _loss_and_acc(evaluate_logits(model, val_images, eval_batch_size, device), val_labels)
        result = EpochResult(epoch, train_loss, train_acc, val_loss, val_acc, lr)
        history.append(result)
        state = {
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "history": [asdict(r) for r in history],
            "run_info": run_info or {},
        }
        save_checkpoint(checkpoint_dir / "last.pt", state)
        score = train_acc if math.isnan(val_acc) else val_acc
        if score > best_acc:
            best_acc = score
            save_checkpoint(checkpoint_dir / "best.pt", state)
        if on_epoch_end is not None:
            on_epoch_end(result)
    return history
