"""Stage `train`: build the ResNet from `model.*`, train it with `train.*`, log with dvclive.

Outputs: the final model (weights + JSON config), the baseline model (the weights before
the first update: random or pretrained, for the evaluate stage's comparison), the model
summary metrics, checkpoints (best, last, every N epochs; kept between runs so an
interrupted run resumes), the dvclive folder.
"""

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path

from cifar_resnet.config import load_params
from cifar_resnet.data import load_classes, load_imageset
from cifar_resnet.errors import UserError, run_stage


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="output folder of the split stage")
    parser.add_argument("--model", type=Path, required=True, help="final weights (.pt)")
    parser.add_argument("--config", type=Path, required=True, help="final model's architecture config (.json)")
    parser.add_argument("--baseline", type=Path, required=True, help="weights before training (.pt), same config")
    parser.add_argument("--summary", type=Path, required=True, help="model summary metrics (.json)")
    parser.add_argument("--checkpoints", type=Path, required=True, help="folder for best.pt, last.pt, epoch_NNN.pt")
    parser.add_argument("--live", type=Path, required=True, help="dvclive folder")
    return parser.parse_args()


def params_hash(params) -> str:
    """Hash of everything that shapes a training run: a checkpoint resumes only under the same hash."""
    train = params.train.model_dump()
    # Where and how fast batches are fed does not change what is learned on the CPU.
    train.pop("num_workers")
    shaping = {"seed": params.seed, "data": params.data.model_dump(), "model": params.model.model_dump(), "train": train}
    return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:16]


def check_consistency(cfg, train_size: int, val_size: int) -> None:
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


class _Silent:
    """Stands in for dvclive's Live on processes other than rank 0."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None


def main() -> None:
    args = parse_args()
    params = load_params()
    cfg = params.train

    classes = load_classes(args.data / "classes.json")
    train_set = load_imageset(args.data / "train.npz", num_classes=len(classes))
    val_set = load_imageset(args.data / "val.npz", num_classes=len(classes))
    check_consistency(cfg, len(train_set), len(val_set))

    from cifar_resnet.distributed import init_distributed, launched_by_torchrun, run_under_torchrun, shutdown

    if cfg.nproc > 1 and not launched_by_torchrun():
        # Data-parallel training: run this same stage under torchrun, one process per device.
        print(f"launching {cfg.nproc} processes with torchrun", flush=True)
        sys.exit(run_under_torchrun(cfg.nproc, sys.argv))

    # Heavy imports after the cheap checks, so a user mistake fails fast.
    import torch
    from dvclive import Live

    from cifar_resnet.fileio import write_json
    from cifar_resnet.models import backbone_lr_scale, model_summary, prepare_model, save_model, save_weights
    from cifar_resnet.training import (
        DeviceFeeder, LoaderFeeder, build_optimizer, build_schedule, channel_stats, fit, load_checkpoint,
        make_eval_tensors, parameter_groups, resumable_checkpoint, seed_everything, select_device,
    )

    seed_everything(params.seed)
    device = select_device(cfg.device)
    dist_info = init_distributed(device.type)
    if device.type == "cuda" and dist_info.active:
        device = torch.device("cuda", dist_info.local_rank)
    main_process = dist_info.is_main
    if cfg.batch_size % dist_info.world_size:
        raise UserError(f"train.batch_size = {cfg.batch_size} does not split evenly over {dist_info.world_size} processes")
    batch_size = cfg.batch_size // dist_info.world_size  # batch_size is the global batch
    mean, std = channel_stats(train_set.images)
    model_config = {**params.model.model_dump(), "num_classes": len(classes), "classes": classes, "mean": mean, "std": std}
    # Built right after seeding, before any checkpoint is loaded: the same weights on every
    # run of this configuration, so the baseline is the true starting point even on resume.
    prepared = prepare_model(params.model, len(classes))
    model = prepared.model
    if main_process:
        for note in prepared.notes:
            print(note)
        summary = model_summary(model)
        save_weights(args.baseline, model)
        write_json(args.summary, {"model": summary})
    model = model.to(device)
    shard = {"rank": dist_info.rank, "world_size": dist_info.world_size}
    if cfg.data_on_device:
        feeder = DeviceFeeder(train_set, cfg.augment, mean, std, batch_size, params.seed, device, **shard)
    else:
        feeder = LoaderFeeder(train_set, cfg.augment, mean, std, batch_size, params.seed,
                              num_workers=cfg.num_workers, pin_memory=device.type == "cuda", **shard)
    val_x, val_y = make_eval_tensors(val_set, mean, std)
    lr_scale = backbone_lr_scale(prepared.backbone, cfg.backbone_lr_scale) if cfg.backbone_lr_scale != 1.0 else None
    groups = parameter_groups(model, cfg.weight_decay, cfg.decay_norm_and_bias, lr_scale)
    optimizer = build_optimizer(groups, cfg.optimizer, cfg.max_lr, cfg.momentum, cfg.nesterov)
    schedule = build_schedule(optimizer, cfg, len(feeder))
    run_hash = params_hash(params)
    resume, decision = resumable_checkpoint(args.checkpoints, run_hash)
    if resume is None and args.checkpoints.exists() and main_process:
        # Stale checkpoints of another configuration must not pass for this run's.
        for stale in args.checkpoints.glob("*.pt"):
            stale.unlink()
    if main_process:
        processes = f" x {dist_info.world_size} processes" if dist_info.active else ""
        print(
            f"{params.model.arch} (width {params.model.width}, {params.model.stem} stem): "
            f"{summary['params']:,} parameters ({summary['trainable_params']:,} trainable), "
            f"{summary['macs'] / 1e6:,.1f} M multiply-adds per image, on {device}{processes}; "
            f"{len(train_set)} train / {len(val_set)} val images; {decision}"
        )

    started = time.perf_counter()
    # resume=False: dvclive starts empty and every epoch is re-logged from the checkpoint's
    # history, so the curves never duplicate or miss an epoch, however the last run ended.
    # Only rank 0 logs; the other processes get a logger-shaped no-op.
    with (Live(str(args.live), dvcyaml=False, save_dvc_exp=False) if main_process else _Silent()) as live:

        def log_epoch(result) -> None:
            live.step = result.epoch  # x axis = epoch; 0 is the untrained baseline
            for name in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
                value = getattr(result, name)
                if not math.isnan(value):
                    live.log_metric(name.replace("_", "/"), value)
            live.make_summary()
            print(
                f"epoch {result.epoch}/{cfg.epochs}  train loss {result.train_loss:.4f} acc {result.train_acc:.4f}  "
                f"val loss {result.val_loss:.4f} acc {result.val_acc:.4f}  lr {result.lr:.5f}  "
                f"[{time.perf_counter() - started:.1f}s]",
                flush=True,
            )

        try:
            outcome = fit(
                model, feeder, val_x, val_y, optimizer, schedule, cfg, device, args.checkpoints, params.seed,
                run_info={"model_config": model_config, "params_hash": run_hash},
                on_epoch_end=log_epoch if main_process else None, resume=resume, dist_info=dist_info,
            )
        except KeyboardInterrupt:
            last = resumable_checkpoint(args.checkpoints, run_hash)[0]
            done = f"after epoch {last['epoch']}" if last else "before the first epoch"
            raise UserError(f"interrupted {done}; run `dvc repro` again to resume") from None

    shutdown(dist_info)
    if not main_process:
        return
    # The final model is the best epoch's weights (by validation accuracy), as the seeds keep.
    best = load_checkpoint(args.checkpoints / "best.pt")
    model.load_state_dict(best["model"])
    save_model(args.model, args.config, model.cpu(), model_config)
    print(f"{outcome.stop_reason} after epoch {outcome.history[-1].epoch}; best epoch {outcome.best_epoch} -> {args.model} "
          f"({time.perf_counter() - started:.1f}s)")


if __name__ == "__main__":
    run_stage(main)
