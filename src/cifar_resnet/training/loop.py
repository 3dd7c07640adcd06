"""The training loop: epochs of mixed-precision SGD with checkpoints, early stopping and exact resume."""

from __future__ import annotations

import contextlib
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..config import TrainParams
from ..distributed import DistInfo, sum_across_ranks, sync_buffers
from ..errors import UserError
from .augment import derive_seed, mix_batch
from .checkpoint import save_checkpoint
from .schedule import LRSchedule


@dataclass(frozen=True)
class EpochResult:
    """Metrics of one epoch; epoch 0 is the untrained baseline; NaN marks what was not measured."""

    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float


@dataclass
class FitOutcome:
    history: list[EpochResult]
    stop_reason: str  # "completed", "early stopping", "target accuracy"
    best_epoch: int


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices): model initialisation repeats exactly."""
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


def autocast_dtype(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype, or None for full fp32. `auto`: bf16 on CUDA, fp32 on the CPU."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else (
            torch.float16 if device.type == "cuda" else None)
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def wants_channels_last(setting, device: torch.device) -> bool:
    """channels_last pays off on CUDA tensor cores; on the CPU it is usually slower."""
    return device.type == "cuda" if setting == "auto" else bool(setting)


class EarlyStopper:
    """Counts epochs without improvement of a validation metric."""

    def __init__(self, metric: str = "val_acc", patience: Optional[int] = None, min_delta: float = 0.0) -> None:
        self.metric, self.patience, self.min_delta = metric, patience, min_delta
        self.best, self.stale = math.nan, 0

    def _better(self, value: float) -> bool:
        if math.isnan(self.best):
            return True
        if self.metric == "val_loss":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def update(self, result: EpochResult) -> None:
        value = getattr(result, self.metric)
        if math.isnan(value):
            return
        if self._better(value):
            self.best, self.stale = value, 0
        else:
            self.stale += 1

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.stale >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "stale": self.stale}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.stale = state["best"], state["stale"]


def l1_penalty(model: torch.nn.Module) -> torch.Tensor:
    """Sum of |w| over convolution and linear weights (not BatchNorm, not biases)."""
    return sum(p.abs().sum() for p in model.parameters() if p.ndim > 1 and p.requires_grad)


def train_one_epoch(
    model: torch.nn.Module,
    batches: Iterable,
    steps: int,
    optimizer: torch.optim.Optimizer,
    schedule: LRSchedule,
    scaler: torch.amp.GradScaler,
    cfg: TrainParams,
    device: torch.device,
    seed: int,
    epoch: int,
    amp_dtype: Optional[torch.dtype] = None,
    channels_last: bool = False,
    dist_info: DistInfo = DistInfo(),
) -> tuple[float, float, float]:
    """One pass over the batches; returns (mean loss, accuracy, last learning rate used).

    Under CutMix/MixUp the loss and accuracy count each target by its mixing share. In
    data-parallel training they are summed over all processes' shards.
    """
    from tqdm import tqdm

    model.train()
    total_loss, correct, seen = 0.0, 0.0, 0
    lr = optimizer.param_groups[0]["lr"]
    augment = cfg.augment
    # disable=None: a live bar on a terminal, silence in logs and tests.
    bar = tqdm(batches, total=steps, desc=f"epoch {epoch}/{cfg.epochs}", leave=False,
               disable=None if dist_info.is_main else True, unit="batch")
    for step, (images, labels) in enumerate(bar):
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        batch = mix_batch(images, labels, augment.cutmix, augment.mixup, derive_seed(seed, epoch, step, 1, dist_info.rank))
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = model(batch.images)
            smoothing = cfg.label_smoothing
            loss = batch.lam * F.cross_entropy(logits, batch.labels_a, label_smoothing=smoothing)
            if batch.lam < 1.0:
                loss = loss + (1 - batch.lam) * F.cross_entropy(logits, batch.labels_b, label_smoothing=smoothing)
        if cfg.l1 > 0:
            loss = loss + cfg.l1 * l1_penalty(model)
        if not torch.isfinite(loss):
            raise UserError(f"training diverged at epoch {epoch}: loss is {loss.item()} (lower train.max_lr)")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.clip_grad_norm is not None:
            scaler.unscale_(optimizer)  # clip the true gradients, not the loss-scaled ones
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        lr = optimizer.param_groups[0]["lr"]
        schedule.after_batch()
        n = labels.size(0)
        predicted = logits.argmax(1)
        hits = batch.lam * (predicted == batch.labels_a).sum().item() + (1 - batch.lam) * (predicted == batch.labels_b).sum().item()
        total_loss += loss.item() * n
        correct += hits
        seen += n
        bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}")
    total_loss, correct, seen = sum_across_ranks([total_loss, correct, seen], dist_info, device)
    return total_loss / max(seen, 1), correct / max(seen, 1), lr


@torch.no_grad()
def evaluate_logits(
    model: torch.nn.Module, images: torch.Tensor, batch_size: int, device: torch.device, channels_last: bool = False
) -> torch.Tensor:
    """Logits for a whole normalised NCHW tensor, in eval mode, batched; returned in fp32 on the CPU."""
    model.eval()
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].to(device)
        if channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        outputs.append(model(batch).float().cpu())
    return torch.cat(outputs) if outputs else torch.empty(0)


def loss_and_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    if len(labels) == 0:
        return math.nan, math.nan
    return F.cross_entropy(logits, labels).item(), (logits.argmax(1) == labels).float().mean().item()


@dataclass
class _RunState:
    """What a checkpoint restores besides the model, optimiser, schedule and scaler."""

    history: list[EpochResult] = field(default_factory=list)
    stop_reason: str = ""
    best_epoch: int = 0


def _checkpoint(model, optimizer, schedule, scaler, stopper, state: _RunState, run_info) -> dict[str, Any]:
    return {
        "epoch": state.history[-1].epoch if state.history else 0,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": schedule.state_dict(),
        "scaler": scaler.state_dict(),
        "early_stopping": stopper.state_dict(),
        "history": [asdict(r) for r in state.history],
        "stop_reason": state.stop_reason,
        "best_epoch": state.best_epoch,
        "run_info": run_info,
    }


def fit(
    model: torch.nn.Module,
    feeder,
    val_images: torch.Tensor,
    val_labels: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    schedule: LRSchedule,
    cfg: TrainParams,
    device: torch.device,
    checkpoint_dir: str | Path,
    seed: int,
    run_info: Optional[dict[str, Any]] = None,
    on_epoch_end: Optional[Callable[[EpochResult], None]] = None,
    resume: Optional[dict[str, Any]] = None,
    eval_batch_size: int = 256,
    dist_info: DistInfo = DistInfo(),
) -> FitOutcome:
    """Train for cfg.epochs (or until a stopping rule fires), checkpointing every epoch.

    Writes last.pt every epoch, best.pt at each new best validation accuracy (training
    accuracy without a validation split), epoch_NNN.pt every cfg.checkpoint_every epochs.
    A fresh run first evaluates the untrained model (epoch 0). `resume` is a checkpoint
    of this same configuration: training continues after its epoch, and since every
    epoch's randomness derives from (seed, epoch), the result equals an uninterrupted run.
    `on_epoch_end` sees every epoch, the restored ones first.

    In data-parallel training (dist_info.active) the model is wrapped in
    DistributedDataParallel; every process evaluates the same full validation split with
    identical weights, so all take the same stopping decisions; only rank 0 checkpoints.
    """
    checkpoint_dir = Path(checkpoint_dir)
    run_info = run_info or {}
    amp_dtype = autocast_dtype(cfg.precision, device)
    channels_last = wants_channels_last(cfg.channels_last, device)
    # Gradient scaling is only needed for fp16, whose range is too narrow for small gradients.
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    stopper = EarlyStopper(cfg.early_stopping.metric, cfg.early_stopping.patience, cfg.early_stopping.min_delta)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    trainable = model
    if dist_info.active:
        from torch.nn.parallel import DistributedDataParallel

        trainable = DistributedDataParallel(model, device_ids=[dist_info.local_rank] if device.type == "cuda" else None)
    if cfg.compile:
        trainable = torch.compile(trainable)

    state = _RunState()
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        schedule.load_state_dict(resume["scheduler"])
        scaler.load_state_dict(resume["scaler"])
        stopper.load_state_dict(resume["early_stopping"])
        state = _RunState([EpochResult(**r) for r in resume["history"]], resume["stop_reason"], resume["best_epoch"])
    else:
        val_loss, val_acc = loss_and_accuracy(evaluate_logits(model, val_images, eval_batch_size, device, channels_last), val_labels)
        state.history.append(EpochResult(0, math.nan, math.nan, val_loss, val_acc, optimizer.param_groups[0]["lr"]))
    if on_epoch_end is not None:
        for result in state.history:
            on_epoch_end(result)

    first_epoch = state.history[-1].epoch + 1
    best_score = max((_score(r) for r in state.history if r.epoch > 0), default=-math.inf)
    for epoch in range(first_epoch, cfg.epochs + 1):
        if state.stop_reason:
            break
        # Dropout and anything else drawing from torch's global RNG: seeded by epoch, so resumable.
        torch.manual_seed(derive_seed(seed, epoch, 2, dist_info.rank))
        train_loss, train_acc, lr = train_one_epoch(
            trainable, feeder.epoch(epoch), len(feeder), optimizer, schedule, scaler, cfg, device, seed, epoch,
            amp_dtype, channels_last, dist_info,
        )
        # The bare model, not the DDP wrapper: evaluation needs no gradient synchronisation.
        sync_buffers(model, dist_info)
        logits = evaluate_logits(model, val_images, eval_batch_size, device, channels_last)
        val_loss, val_acc = loss_and_accuracy(logits, val_labels)
        schedule.after_epoch(val_loss)
        result = EpochResult(epoch, train_loss, train_acc, val_loss, val_acc, lr)
        state.history.append(result)
        stopper.update(result)
        if stopper.should_stop:
            state.stop_reason = "early stopping"
        if cfg.target_val_acc is not None and val_acc >= cfg.target_val_acc:
            state.stop_reason = "target accuracy"
        improved = _score(result) > best_score
        if improved:
            best_score, state.best_epoch = _score(result), epoch
        if not dist_info.is_main:
            continue
        snapshot = _checkpoint(model, optimizer, schedule, scaler, stopper, state, run_info)
        if improved:
            save_checkpoint(checkpoint_dir / "best.pt", snapshot)
        if cfg.checkpoint_every and epoch % cfg.checkpoint_every == 0:
            save_checkpoint(checkpoint_dir / f"epoch_{epoch:03d}.pt", snapshot)
        # last.pt is written last: once it names an epoch, every other file of that epoch exists.
        save_checkpoint(checkpoint_dir / "last.pt", snapshot)
        if on_epoch_end is not None:
            on_epoch_end(result)
    return FitOutcome(state.history, state.stop_reason or "completed", state.best_epoch)


def _score(result: EpochResult) -> float:
    """What "best" means: validation accuracy, or training accuracy without a validation split."""
    return result.train_acc if math.isnan(result.val_acc) else result.val_acc
