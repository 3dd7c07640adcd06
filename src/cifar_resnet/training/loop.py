"""The training loop: epochs of mixed-precision SGD with checkpoints, early stopping and exact resume."""

from __future__ import annotations

import math
import random
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..config import TrainParams
from ..distributed import DistInfo, sum_across_ranks, sync_buffers
from ..errors import UserError
from ..inference import autocast, autocast_dtype, evaluate_logits, loss_and_accuracy, wants_channels_last
from .augment import derive_seed
from .checkpoint import save_checkpoint
from .lookahead import Lookahead
from .schedule import LRSchedule, epoch_count, steps_in_epoch

# How often the progress bar reads the running loss from the device (each read waits for
# the device to finish, which on a GPU stalls the queue of the next steps).
PROGRESS_EVERY = 50


@dataclass(frozen=True)
class EpochResult:
    """Metrics of one epoch; epoch 0 is the untrained baseline; NaN marks what was not measured."""

    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float

    def measured(self) -> dict[str, float]:
        """{"train/loss": ..., "val/acc": ..., "lr": ...} for what was measured (NaN marks what was not)."""
        names = ("train_loss", "train_acc", "val_loss", "val_acc", "lr")
        return {name.replace("_", "/"): getattr(self, name) for name in names if not math.isnan(getattr(self, name))}

    @property
    def val_spiked(self) -> bool:
        """The validation loss was measured but unusable (not finite or exploded), so recorded as NaN.

        Without a validation split both val_loss and val_acc are NaN; a spike keeps val_acc.
        """
        return math.isnan(self.val_loss) and not math.isnan(self.val_acc)


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


@dataclass
class TrainingRun:
    """What fit() trains: built once by training.run.build_run (assemble_run), for the stage, tests and benchmarks."""

    model: torch.nn.Module  # on `device`
    feeder: Any  # LoaderFeeder or DeviceFeeder: len() batches, .epoch(n) yields augment.MixedBatch
    val_images: torch.Tensor
    val_labels: torch.Tensor
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    cfg: TrainParams
    device: torch.device
    seed: int
    mean: list[float]  # the training split's channel statistics, which normalise every input
    std: list[float]
    num_classes: int
    dist_info: DistInfo = DistInfo()
    eval_batch_size: int = 256
    lookahead: Optional[Lookahead] = None  # train.lookahead's average, updated after optimiser steps

    @property
    def exploding_loss(self) -> float:
        """A loss this far above a uniform guess's (ln C) means the run has diverged, not learned."""
        return 100 * math.log(max(self.num_classes, 2))


@dataclass(frozen=True)
class Precision:
    """How batches are computed: autocast dtype (None = fp32) and memory format."""

    amp_dtype: Optional[torch.dtype]
    channels_last: bool

    @classmethod
    def for_run(cls, cfg: TrainParams, device: torch.device) -> "Precision":
        dtype = autocast_dtype(cfg.precision, device)
        return cls(dtype, wants_channels_last(cfg.channels_last, device, dtype))


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
        if math.isnan(value) or result.val_spiked:  # a spiked validation says nothing either way
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


def compiled(module: torch.nn.Module, compile: bool | str) -> torch.nn.Module:
    """torch.compile as train.compile asks: true is torch's default mode, a string names the mode."""
    return torch.compile(module, mode=None if compile is True else compile)


class Prepared(NamedTuple):
    """How a run computes on its device: what `train_one_epoch` takes besides the run."""

    trainable: torch.nn.Module  # run.model, possibly wrapped (DDP, torch.compile)
    precision: Precision
    scaler: torch.amp.GradScaler


def prepare(run: TrainingRun) -> Prepared:
    """Ready `run` to train on its device, as cfg asks: cuDNN's autotuner, autocast dtype and
    memory format, the gradient scaler, the DDP wrapper and torch.compile.

    fit() starts with it, and the benchmarks call it on the run `build_run` made, so what
    they time is the stage's training step. channels_last converts run.model in place (the
    same parameters: the optimiser is unchanged). The model is already on its device and the
    optimiser's kernels are chosen (run.assemble_run: torch takes `fused` only when an
    optimiser is made).
    """
    cfg, device, dist_info = run.cfg, run.device, run.dist_info
    if device.type == "cuda":
        # Training shapes are fixed, so timing cuDNN's algorithms once per shape pays off.
        # Set here, in the train path, not at import: evaluation and export keep the default.
        torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
    precision = Precision.for_run(cfg, device)
    # Gradient scaling is only needed for fp16, whose range is too narrow for small gradients.
    scaler = torch.amp.GradScaler(device.type, enabled=precision.amp_dtype == torch.float16)
    if precision.channels_last:
        run.model = run.model.to(memory_format=torch.channels_last)
    trainable = run.model
    if dist_info.active:
        from torch.nn.parallel import DistributedDataParallel

        trainable = DistributedDataParallel(run.model, device_ids=[dist_info.local_rank] if device.type == "cuda" else None)
    if cfg.compile:
        trainable = compiled(trainable, cfg.compile)
    return Prepared(trainable, precision, scaler)


def _diverged(epoch: int, what: str) -> UserError:
    # Only trained epochs are checkpointed: before epoch 2 there is nothing to keep.
    kept = f"the checkpoints of epoch {epoch - 1} are kept" if epoch > 1 else "no checkpoint was written"
    return UserError(f"training diverged at epoch {epoch}: {what} (lower train.max_lr); {kept}")


def train_one_epoch(
    trainable: torch.nn.Module, run: TrainingRun, epoch: int, scaler: torch.amp.GradScaler, precision: Precision
) -> tuple[float, float, float]:
    """One pass over the feeder's batches; returns (mean loss, accuracy, last learning rate used).

    `trainable` is run.model, possibly wrapped (DDP, torch.compile). Loss, hits and the
    finiteness check accumulate on the device and are read at the end of the epoch (and
    every PROGRESS_EVERY steps for a live progress bar), so a GPU is never stalled by a
    per-step host sync. The feeder's batches come mixed (CutMix/MixUp): the loss and
    accuracy count each target by its mixing share. In data-parallel training they are
    summed over all processes' shards.
    """
    from tqdm import tqdm

    cfg, device = run.cfg, run.device
    trainable.train()
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss * n, hits, images
    finite = torch.ones((), dtype=torch.bool, device=device)
    lr = run.optimizer.param_groups[0]["lr"]
    # disable=None: a live bar on a terminal, silence in logs and tests.
    steps = steps_in_epoch(epoch, cfg.epochs, len(run.feeder))
    bar = tqdm(run.feeder.epoch(epoch), total=steps, desc=f"epoch {epoch}/{cfg.epochs}", leave=False,
               disable=None if run.dist_info.is_main else True, unit="batch")
    for step, batch in enumerate(bar):
        if step == steps:
            break  # a fractional last epoch (train.epochs 9.9) ends here
        # The feeder has augmented and mixed the batch; from pinned memory these copies only queue.
        images = batch.images.to(device, non_blocking=True)
        labels_a = batch.labels_a.to(device, non_blocking=True)
        labels_b = labels_a if batch.lam == 1.0 else batch.labels_b.to(device, non_blocking=True)
        if precision.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision.amp_dtype):
            logits = trainable(images)
            loss = batch.lam * F.cross_entropy(logits, labels_a, label_smoothing=cfg.label_smoothing)
            if batch.lam < 1.0:
                loss = loss + (1 - batch.lam) * F.cross_entropy(logits, labels_b, label_smoothing=cfg.label_smoothing)
        if cfg.l1 > 0:
            loss = loss + cfg.l1 * l1_penalty(run.model)
        run.optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.clip_grad_norm is not None:
            scaler.unscale_(run.optimizer)  # clip the true gradients, not the loss-scaled ones
            torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.clip_grad_norm)
        scaler.step(run.optimizer)
        scaler.update()
        lr = run.optimizer.param_groups[0]["lr"]
        run.schedule.after_batch()
        if run.lookahead is not None:
            run.lookahead.after_step(run.model, (epoch - 1) * len(run.feeder) + step + 1)
        predicted = logits.detach().argmax(1)
        hits = batch.lam * (predicted == labels_a).sum() + (1 - batch.lam) * (predicted == labels_b).sum()
        totals += torch.stack([loss.detach().double() * len(labels_a), hits.double(), totals.new_tensor(len(labels_a))])
        finite &= torch.isfinite(loss.detach())
        if (step + 1) % PROGRESS_EVERY == 0:
            if not finite.item():
                break  # a NaN step has already poisoned the weights: stop wasting the epoch
            if not bar.disable:
                bar.set_postfix(loss=f"{totals[0] / totals[2]:.3f}", acc=f"{totals[1] / totals[2]:.3f}")
    if not finite.item():
        raise _diverged(epoch, "the training loss is not finite")
    loss_sum, hits, seen = sum_across_ranks(totals.tolist(), run.dist_info, device)
    return loss_sum / max(seen, 1), hits / max(seen, 1), lr


@dataclass
class _RunState:
    """What a checkpoint restores besides the model, optimiser, schedule and scaler."""

    history: list[EpochResult] = field(default_factory=list)
    stop_reason: str = ""
    best_epoch: int = 0


def _checkpoint(run: TrainingRun, scaler, stopper, state: _RunState, run_info) -> dict[str, Any]:
    return {
        "epoch": state.history[-1].epoch if state.history else 0,
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.schedule.state_dict(),
        "scaler": scaler.state_dict(),
        "lookahead": run.lookahead.state_dict() if run.lookahead is not None else None,
        "early_stopping": stopper.state_dict(),
        "history": [asdict(r) for r in state.history],
        "stop_reason": state.stop_reason,
        "best_epoch": state.best_epoch,
        "run_info": run_info,
    }


def _restore(run: TrainingRun, scaler, stopper, resume: dict[str, Any]) -> _RunState:
    run.model.load_state_dict(resume["model"])
    # The update's kernels (fused, foreach) are this machine's choice, not the checkpoint's:
    # load_state_dict would adopt the saved ones (a GPU run's fused kernels on a CPU resume).
    kernels = [{k: group[k] for k in ("fused", "foreach") if k in group} for group in run.optimizer.param_groups]
    run.optimizer.load_state_dict(resume["optimizer"])
    for group, chosen in zip(run.optimizer.param_groups, kernels):
        group.update(chosen)
    run.schedule.load_state_dict(resume["scheduler"])
    scaler.load_state_dict(resume["scaler"])
    if run.lookahead is not None:
        run.lookahead.load_state_dict(resume["lookahead"])
    stopper.load_state_dict(resume["early_stopping"])
    return _RunState([EpochResult(**r) for r in resume["history"]], resume["stop_reason"], resume["best_epoch"])


def _validate(run: TrainingRun, precision: Precision) -> tuple[float, float]:
    """Validation loss and accuracy of the bare model (no DDP wrapper: no gradient sync needed)."""
    logits = evaluate_logits(run.model, run.val_images, run.eval_batch_size, run.device, precision.channels_last,
                             precision.amp_dtype)
    return loss_and_accuracy(logits, run.val_labels)


def check_divergence(result: EpochResult, limit: float) -> EpochResult:
    """Stop a run whose training loss is not finite or has exploded; return the result to record.

    Only the training loss says the weights are ruined. A validation loss that is not finite
    or exploded (a transient spike: a few confidently wrong images) is reported on stderr
    and recorded as NaN (null in JSON, left out of the curves); training goes on. A NaN
    val_loss with a NaN val_acc means no validation split, which is no spike.
    """
    if not math.isfinite(result.train_loss) or result.train_loss > limit:
        raise _diverged(result.epoch, f"the training loss is {result.train_loss:.4g}")
    if math.isinf(result.val_loss) or result.val_loss > limit or result.val_spiked:
        print(f"warning: epoch {result.epoch}: the validation loss is {result.val_loss:.4g}, recorded as null; "
              f"training goes on", file=sys.stderr, flush=True)
        return replace(result, val_loss=math.nan)
    return result


def fit(
    run: TrainingRun,
    checkpoint_dir: str | Path,
    run_info: Optional[dict[str, Any]] = None,
    on_epoch_end: Optional[Callable[[EpochResult], None]] = None,
    resume: Optional[dict[str, Any]] = None,
) -> FitOutcome:
    """Train for cfg.epochs (or until a stopping rule fires), checkpointing every epoch.

    Writes last.pt every epoch, best.pt at each new best validation accuracy (training
    accuracy without a validation split), epoch_NNN.pt every cfg.checkpoint_every epochs.
    A fresh run first evaluates the untrained model (epoch 0). `resume` is a checkpoint
    of this same run: training continues after its epoch, and since every epoch's
    randomness derives from (seed, epoch), the result equals an uninterrupted run.
    `on_epoch_end` sees every epoch, the restored ones first. An epoch whose training loss
    is not finite or exploded raises a UserError before anything of it is saved or logged;
    an unusable validation loss is recorded as NaN (check_divergence) and training goes on.

    In data-parallel training (dist_info.active) the model is wrapped in
    DistributedDataParallel; every process evaluates the same full validation split with
    identical weights, so all take the same stopping decisions; only rank 0 checkpoints.

    It is one function, longer than most here, because the order of an epoch's steps (train,
    validate, check, decide to stop, checkpoint, last.pt last, then report) is what makes
    resume exact and a killed run safe; split up, that order would be spread over callers.
    """
    cfg, dist_info = run.cfg, run.dist_info
    checkpoint_dir = Path(checkpoint_dir)
    run_info = run_info or {}
    trainable, precision, scaler = prepare(run)
    stopper = EarlyStopper(cfg.early_stopping.metric, cfg.early_stopping.patience, cfg.early_stopping.min_delta)

    if resume is not None:
        state = _restore(run, scaler, stopper, resume)
    else:
        val_loss, val_acc = _validate(run, precision)
        state = _RunState([EpochResult(0, math.nan, math.nan, val_loss, val_acc, run.optimizer.param_groups[0]["lr"])])
    if on_epoch_end is not None:
        for result in state.history:
            on_epoch_end(result)

    best_score = max((_score(r) for r in state.history if r.epoch > 0), default=-math.inf)
    for epoch in range(state.history[-1].epoch + 1, epoch_count(cfg.epochs) + 1):
        if state.stop_reason:
            break
        if cfg.freeze_whitening_bias_after is not None:
            # Set every epoch, so a resumed run freezes it just as an uninterrupted one.
            run.model.whitening_bias().requires_grad_(epoch <= cfg.freeze_whitening_bias_after)
        # Dropout and anything else drawing from torch's global RNG: seeded by epoch, so resumable.
        torch.manual_seed(derive_seed(run.seed, epoch, 2, dist_info.rank))
        train_loss, train_acc, lr = train_one_epoch(trainable, run, epoch, scaler, precision)
        sync_buffers(run.model, dist_info)
        val_loss, val_acc = _validate(run, precision)
        result = check_divergence(EpochResult(epoch, train_loss, train_acc, val_loss, val_acc, lr), run.exploding_loss)
        run.schedule.after_epoch(result.val_loss)
        state.history.append(result)
        stopper.update(result)
        if stopper.should_stop:
            state.stop_reason = "early stopping"
        if cfg.target_val_acc is not None and not result.val_spiked and val_acc >= cfg.target_val_acc:
            state.stop_reason = "target accuracy"
        improved = _score(result) > best_score
        if improved:
            best_score, state.best_epoch = _score(result), epoch
        if not dist_info.is_main:
            continue
        snapshot = _checkpoint(run, scaler, stopper, state, run_info)
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
    """What "best" means: validation accuracy, or training accuracy without a validation split.

    An epoch whose validation spiked ranks below every other (-1: accuracies are >= 0), but
    still ranks, so that a run made only of such epochs has a best.pt.
    """
    if result.val_spiked:
        return -1.0
    return result.train_acc if math.isnan(result.val_acc) else result.val_acc
