"""A training run built once from validated params: what the stage, the benchmarks and the tests train.

`build_run` makes the run (seed, model, data-fitted layers, feeder, optimiser, schedule)
and touches nothing outside it: no file, no output, no process group. `start_run` is the
train stage's start: it picks the device, joins the data-parallel group, calls
`build_run`, then writes the untrained weights and the model summary. The benchmarks call
`build_run` and fit's `loop.prepare` themselves, so what they time is what the stage
trains, by construction. The store an interrupted run resumes from is training/resume.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from ..config import Params, TrainParams
from ..data.arrays import ImageSet
from ..distributed import DistInfo, init_distributed
from ..errors import UserError
from ..fileio import write_json
from ..inference import make_eval_tensors, select_device
from ..models import backbone_lr_scale, model_summary, prepare_model, save_model, save_weights
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


def build_feeder(train_set: ImageSet, cfg: TrainParams, mean: list[float], std: list[float], seed: int,
                 device: torch.device, dist_info: DistInfo = DistInfo()) -> DeviceFeeder | LoaderFeeder:
    """This process's share of the training batches, augmented as cfg.augment asks and normalised
    with `mean` and `std`: on the device (cfg.data_on_device) or from DataLoader workers."""
    if cfg.batch_size % dist_info.world_size:
        raise UserError(f"train.batch_size = {cfg.batch_size} does not split evenly over {dist_info.world_size} processes")
    batch_size = cfg.batch_size // dist_info.world_size
    shard = {"rank": dist_info.rank, "world_size": dist_info.world_size}
    if cfg.data_on_device:
        return DeviceFeeder(train_set, cfg.augment, mean, std, batch_size, seed, device, **shard)
    return LoaderFeeder(train_set, cfg.augment, mean, std, batch_size, seed,
                        num_workers=cfg.num_workers, pin_memory=device.type == "cuda", **shard)


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
    The model is placed on `device` here, before the optimiser and the lookahead average are
    made over its parameters. The optimiser's kernels are chosen here too: fused on CUDA,
    foreach elsewhere (cfg.optimizer_kernels); torch takes `fused` only when an optimiser
    is made. For loader feeding on CUDA: pinned batches (copied with non_blocking by the
    loop) from persistent workers. How the run computes (precision, memory format, DDP,
    compile, cuDNN's autotuner) is `loop.prepare`'s, at the start of fit.
    """
    mean, std = channel_stats(train_set.images)
    feeder = build_feeder(train_set, cfg, mean, std, seed, device, dist_info)
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


@dataclass
class StartedRun:
    """A run ready to fit, with what the stage reports and writes around it."""

    run: TrainingRun
    model_config: dict[str, Any]  # everything later stages need to rebuild the model
    description: str
    summary: dict[str, Any] = field(default_factory=dict)  # models.model_summary of the untrained model
    notes: list[str] = field(default_factory=list)  # what was done to the model (pretrained, frozen, whitened)

    def save_final(self, checkpoint: Path, model_path: Path, config_path: Path) -> None:
        """The final model: the weights of `checkpoint` (best.pt, the best validation epoch, as the
        seeds keep, or last.pt, the final epoch: train.final_model), with its config."""
        self.run.model.load_state_dict(load_checkpoint(checkpoint)["model"])
        save_model(model_path, config_path, self.run.model.cpu(), self.model_config)


def build_run(params: Params, train_set: ImageSet, val_set: ImageSet, classes: list[str], device: torch.device,
              dist_info: DistInfo = DistInfo()) -> StartedRun:
    """Seed, build the model, fit its data-dependent layers, assemble its run on `device`.

    Writes no file, prints nothing and joins no process group (`start_run` does those for
    the stage), so a benchmark or a test builds exactly the stage's run. The model is built
    right after seeding, before any checkpoint is loaded: the same weights on every run of
    this configuration. Its summary is taken before it moves to `device`.
    """
    cfg = params.train
    seed_everything(params.seed)
    prepared = prepare_model(params.model, len(classes))
    if params.model.pretrained is None:
        prepared.notes += filter(None, [fit_data_dependent_layers(prepared.model, train_set)])
    summary = model_summary(prepared.model)
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
    return StartedRun(run, model_config, description, summary, prepared.notes)


def join_devices(requested: str) -> tuple[torch.device, DistInfo]:
    """The device `train.device` asks for, after joining torchrun's process group if launched by it
    (each process then trains on the GPU of its local rank)."""
    device = select_device(requested)
    dist_info = init_distributed(device.type)
    if device.type == "cuda" and dist_info.active:
        device = torch.device("cuda", dist_info.local_rank)
    return device, dist_info


def start_run(
    params: Params, train_set: ImageSet, val_set: ImageSet, classes: list[str], baseline_path: Path, summary_path: Path
) -> StartedRun:
    """The train stage's start: pick the device, join a data-parallel group, `build_run`.

    The main process then says what was done to the model, and writes the untrained (or
    pretrained) weights to `baseline_path` (CPU tensors: the same bytes from any device)
    and the model summary to `summary_path`.
    """
    device, dist_info = join_devices(params.train.device)
    started = build_run(params, train_set, val_set, classes, device, dist_info)
    if dist_info.is_main:
        for note in started.notes:
            print(note)
        save_weights(baseline_path, started.run.model)
        write_json(summary_path, {"model": started.summary})
    return started
