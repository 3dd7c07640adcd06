"""A training run assembled once from validated params, and the store an interrupted run resumes from.

The train stage, the tests and the benchmarks all build their runs with `assemble_run`,
so what they exercise is what the stage runs.

Resuming: DVC deletes a stage's outputs before it reruns the stage, and a `persist`
output would switch off DVC's run-cache (so returning to earlier params would retrain).
So the checkpoints of a run in progress live in a `ResumeStore`, a folder outside DVC's
outputs, keyed by everything the run depends on: params, the code of the stage's import
closure and the prepared data. A run resumes only from a store with the same key, and
the store is emptied once the run's outputs are written, so a finished run is never
"resumed" again and only an interrupted one is.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch

from ..config import RESULT_NEUTRAL_TRAIN_KEYS, Params, TrainParams
from ..data.arrays import ImageSet
from ..distributed import DistInfo, init_distributed
from ..errors import UserError
from ..fileio import atomic_dir, write_json
from ..inference import make_eval_tensors, select_device
from ..models import backbone_lr_scale, model_summary, prepare_model, save_model, save_weights
from ..provenance import describe_change, digests, value_digest
from .checkpoint import load_checkpoint
from .feeding import DeviceFeeder, LoaderFeeder, channel_stats
from .lookahead import Lookahead
from .loop import TrainingRun, seed_everything
from .optim import build_optimizer, parameter_groups
from .schedule import build_schedule, total_steps


def check_consistency(cfg: TrainParams, train_size: int, val_size: int) -> None:
    """Settings that are valid alone but contradict the data."""
    if cfg.batch_size > train_size:
        raise UserError(
            f"train.batch_size = {cfg.batch_size} is larger than the {train_size} training images "
            "(lower it or raise data.max_train)"
        )
    needs_val = {
        "train.scheduler = plateau": cfg.scheduler == "plateau",
        "train.early_stopping.patience": cfg.early_stopping.patience is not None,
        "train.target_val_acc": cfg.target_val_acc is not None,
    }
    for setting, used in needs_val.items():
        if used and val_size == 0:
            raise UserError(f"{setting} needs a validation split, but data.val_fraction leaves it empty")


def assemble_run(
    model: torch.nn.Module,
    train_set: ImageSet,
    val_set: ImageSet,
    cfg: TrainParams,
    seed: int,
    device: torch.device,
    num_classes: int,
    dist_info: DistInfo = DistInfo(),
    lr_scale: Optional[Callable[[str], float]] = None,
) -> TrainingRun:
    """Feeder, validation tensors, optimiser and schedule around `model`, as `cfg` asks.

    `cfg.batch_size` is the global batch: each of dist_info.world_size processes feeds its
    share. `lr_scale` maps parameter names to LR multipliers (a slower pretrained backbone).
    The GPU defaults: the optimiser's fused kernels on CUDA (foreach elsewhere;
    cfg.optimizer_kernels), cuDNN's autotuner on CUDA (cfg.cudnn_benchmark), and for loader
    feeding on CUDA pinned batches (copied with non_blocking by the loop) from persistent workers.
    """
    if device.type == "cuda":
        # Training shapes are fixed, so timing cuDNN's algorithms once per shape pays off.
        # Set here, in the train path, not at import: evaluation and export keep the default.
        torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
    if cfg.batch_size % dist_info.world_size:
        raise UserError(f"train.batch_size = {cfg.batch_size} does not split evenly over {dist_info.world_size} processes")
    batch_size = cfg.batch_size // dist_info.world_size
    mean, std = channel_stats(train_set.images)
    shard = {"rank": dist_info.rank, "world_size": dist_info.world_size}
    if cfg.data_on_device:
        feeder = DeviceFeeder(train_set, cfg.augment, mean, std, batch_size, seed, device, **shard)
    else:
        feeder = LoaderFeeder(train_set, cfg.augment, mean, std, batch_size, seed,
                              num_workers=cfg.num_workers, pin_memory=device.type == "cuda", **shard)
    val_images, val_labels = make_eval_tensors(val_set, mean, std)
    model = model.to(device)
    groups = parameter_groups(model, cfg.weight_decay, cfg.decay_norm_and_bias, lr_scale, cfg.norm_lr_scale)
    optimizer = build_optimizer(groups, cfg.optimizer, cfg.max_lr, cfg.momentum, cfg.nesterov, cfg.optimizer_kernels, device)
    schedule = build_schedule(optimizer, cfg, len(feeder))
    lookahead = Lookahead(model, total_steps(cfg.epochs, len(feeder))) if cfg.lookahead else None
    return TrainingRun(model, feeder, val_images, val_labels, optimizer, schedule, cfg, device, seed, mean, std,
                       num_classes, dist_info, lookahead=lookahead)


# Airbench's whitening input layer is fitted to the patches of this many training images
# (Jordan's figure): enough for a stable 12x12 covariance, a second of work.
WHITENING_IMAGES = 5000


def fit_data_dependent_layers(model: torch.nn.Module, train_set: ImageSet) -> Optional[str]:
    """Fit the layers a model computes from its training images instead of learning them
    (airbench's whitening input layer): from the first WHITENING_IMAGES of `train_set`,
    normalised as the network sees them. Returns a line saying so, or None if it has none."""
    if not hasattr(model, "fit_whitening"):
        return None
    sample = train_set.subset(np.arange(min(len(train_set), WHITENING_IMAGES)))
    images, _ = make_eval_tensors(sample, *channel_stats(train_set.images))
    model.fit_whitening(images)
    return f"input layer whitened on the 2x2 patches of {len(sample)} training images"


def run_key(params: Params, code: list[Path], data: list[Path], code_root: Path) -> dict[str, Any]:
    """What a training run is made of: its params, the code it runs and the data it reads.

    The result-neutral train keys (config.RESULT_NEUTRAL_TRAIN_KEYS: num_workers) are left
    out of the params: how many processes feed the batches does not change what is learned
    (each image's augmentation is seeded by itself).
    """
    train = params.train.model_dump(exclude=set(RESULT_NEUTRAL_TRAIN_KEYS))
    shaping = {"seed": params.seed, "data": params.data.model_dump(), "model": params.model.model_dump(), "train": train}
    return {"params": value_digest(shaping), "code": digests(code, code_root), "data": digests(data)}


class ResumeStore:
    """The checkpoints of the run in progress, in a folder DVC does not manage (see the module doc)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    # How long a lock whose recorded holder is dead may stay busy before it is broken: the
    # holder's forked children (DataLoader workers) inherit the locked file and notice its
    # death only at their next check, up to 30 s later.
    stale_grace_s = 2.0

    @contextmanager
    def exclusive(self) -> Iterator["ResumeStore"]:
        """Hold the store for one training process; a second one is refused with a clear error.

        The lock is an flock, released by the kernel once every process holding the locked
        file has ended, so a live orphan trainer always blocks the next run. But a killed
        trainer's forked workers hold the same file: when the pid recorded in it is dead,
        the lock is waited for briefly, then broken by replacing the file (the orphans keep
        the old one).
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        with self._locked() as lock:
            lock.seek(0)
            lock.truncate()
            lock.write(f"pid {os.getpid()}")
            lock.flush()
            yield self

    @contextmanager
    def _locked(self) -> Iterator[Any]:
        """The lock file, flocked by this process (see `exclusive`)."""
        path = self.folder / ".lock"
        stale_since = None
        while True:
            lock = open(path, "a+")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _recorded_holder(lock)
                if holder is None or _alive(holder):
                    lock.close()
                    raise UserError(f"{self.folder} is in use by another training run "
                                    f"({f'pid {holder}' if holder else 'another process'}); "
                                    "wait for it to end or stop it") from None
                stale_since = stale_since or time.monotonic()
                if time.monotonic() - stale_since >= self.stale_grace_s:
                    _replace_if_same(path, lock)
                else:
                    time.sleep(0.1)
                lock.close()
                continue
            if _same_file(path, lock):  # not replaced by a breaker between our open and flock
                break
            lock.close()
        with lock:
            yield lock

    def checkpoints(self) -> list[Path]:
        return sorted(p for p in self.folder.glob("*.pt") if not p.name.startswith("."))

    def clear(self) -> None:
        for entry in self.folder.iterdir() if self.folder.is_dir() else ():
            if entry.name in (".lock", ".lock-break"):
                continue
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()

    def resumable(self, key: dict[str, Any]) -> tuple[Optional[dict[str, Any]], str]:
        """The interrupted run's last checkpoint if it has exactly this key, and one line saying what was decided.

        Read-only, so every data-parallel process can ask; the main one then clears a store
        it does not resume, so nothing in it can pass for this run's.
        """
        last = self.folder / "last.pt"
        if not last.exists():
            return None, "starting fresh"
        try:
            state = load_checkpoint(last)
        except UserError as err:
            return None, f"ignoring an unreadable interrupted run ({err}): starting fresh"
        change = describe_change(state.get("run_info", {}).get("key") or {}, key)
        if change is not None:
            return None, f"an interrupted run in {self.folder} was made with {change}: starting fresh"
        return state, f"resuming from {last} after epoch {state['epoch']}"

    def publish(self, out: str | Path) -> None:
        """Move the finished run's checkpoints into the output folder `out` (replaced atomically), emptying the store."""
        with atomic_dir(out) as tmp:
            for checkpoint in self.checkpoints():
                shutil.move(checkpoint, tmp / checkpoint.name)
        self.clear()


def _recorded_holder(lock) -> Optional[int]:
    """The pid `exclusive` wrote into the lock file, or None if there is none (yet)."""
    lock.seek(0)
    found = re.fullmatch(r"pid (\d+)", lock.read().strip())
    return int(found[1]) if found else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def _same_file(path: Path, lock) -> bool:
    """Whether `path` still names the file `lock` has open."""
    try:
        return os.stat(path).st_ino == os.fstat(lock.fileno()).st_ino
    except FileNotFoundError:
        return False


def _replace_if_same(path: Path, stale) -> None:
    """Unlink the stale lock file, unless another breaker has already replaced it.

    Breakers take turns through a second flock, held only for this check and unlink (no
    process forks while holding it), so two of them never both break and both lock.
    """
    with open(path.with_name(".lock-break"), "a") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        if _same_file(path, stale):
            path.unlink()


@dataclass
class StartedRun:
    """A run ready to fit, with what the stage reports and writes around it."""

    run: TrainingRun
    model_config: dict[str, Any]  # everything later stages need to rebuild the model
    description: str

    def save_final(self, checkpoint: Path, model_path: Path, config_path: Path) -> None:
        """The final model: the weights of `checkpoint` (best.pt, the best validation epoch, as the
        seeds keep, or last.pt, the final epoch: train.final_model), with its config."""
        self.run.model.load_state_dict(load_checkpoint(checkpoint)["model"])
        save_model(model_path, config_path, self.run.model.cpu(), self.model_config)


def start_run(
    params: Params, train_set: ImageSet, val_set: ImageSet, classes: list[str], baseline_path: Path, summary_path: Path
) -> StartedRun:
    """Seed, pick the device, join a data-parallel group, build the model and its run.

    The main process writes the untrained (or pretrained) weights to `baseline_path` and
    the model summary to `summary_path`. The model is built right after seeding, before
    any checkpoint is loaded: the same weights on every run of this configuration.
    """
    cfg = params.train
    seed_everything(params.seed)
    device = select_device(cfg.device)
    dist_info = init_distributed(device.type)
    if device.type == "cuda" and dist_info.active:
        device = torch.device("cuda", dist_info.local_rank)
    prepared = prepare_model(params.model, len(classes))
    if params.model.pretrained is None:
        prepared.notes += filter(None, [fit_data_dependent_layers(prepared.model, train_set)])
    summary = model_summary(prepared.model)
    if dist_info.is_main:
        for note in prepared.notes:
            print(note)
        save_weights(baseline_path, prepared.model)
        write_json(summary_path, {"model": summary})
    lr_scale = backbone_lr_scale(prepared.backbone, cfg.backbone_lr_scale) if cfg.backbone_lr_scale != 1.0 else None
    run = assemble_run(prepared.model, train_set, val_set, cfg, params.seed, device, len(classes), dist_info, lr_scale)
    model_config = {**params.model.model_dump(), "num_classes": len(classes), "classes": classes,
                    "mean": run.mean, "std": run.std}
    processes = f" x {dist_info.world_size} processes" if dist_info.active else ""
    description = (
        f"{params.model.arch} (width {params.model.width}, {params.model.stem} stem): {summary['params']:,} parameters "
        f"({summary['trainable_params']:,} trainable), {summary['macs'] / 1e6:,.1f} M multiply-adds per image, "
        f"on {device}{processes}; {len(train_set)} train / {len(val_set)} val images"
    )
    return StartedRun(run, model_config, description)
