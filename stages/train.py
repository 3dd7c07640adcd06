"""Stage `train`: build the ResNet from `model.*`, train it with `train.*`, log with dvclive.

Outputs: the final model (weights + JSON config), best/last checkpoints, the dvclive folder.
"""

import argparse
import hashlib
import json
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
    parser.add_argument("--checkpoints", type=Path, required=True, help="folder for best.pt and last.pt")
    parser.add_argument("--live", type=Path, required=True, help="dvclive folder")
    return parser.parse_args()


def params_hash(params) -> str:
    """Hash of everything that shapes a training run (stored in checkpoints)."""
    shaping = {"seed": params.seed, "data": params.data.model_dump(), "model": params.model.model_dump(), "train": params.train.model_dump()}
    return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:16]


def main() -> None:
    args = parse_args()
    params = load_params()
    cfg = params.train

    classes = load_classes(args.data / "classes.json")
    train_set = load_imageset(args.data / "train.npz", num_classes=len(classes))
    val_set = load_imageset(args.data / "val.npz", num_classes=len(classes))
    if cfg.batch_size > len(train_set):
        raise UserError(
            f"train.batch_size = {cfg.batch_size} is larger than the {len(train_set)} training images "
            "(lower it or raise data.max_train)"
        )

    # Heavy imports after the cheap checks, so a user mistake fails fast.
    import torch
    from dvclive import Live

    from cifar_resnet.models import build_model, count_parameters, save_model
    from cifar_resnet.training import (
        build_onecycle, build_optimizer, channel_stats, fit, load_checkpoint,
        make_eval_tensors, make_train_loader, seed_everything, select_device, train_transform,
    )

    seed_everything(params.seed)
    device = select_device(cfg.device)
    mean, std = channel_stats(train_set.images)
    model_config = {
        **params.model.model_dump(),
        "blocks": None,
        "num_classes": len(classes),
        "classes": classes,
        "mean": mean,
        "std": std,
    }
    model = build_model(
        params.model.arch, len(classes), width=params.model.width, stem=params.model.stem, dropout=params.model.dropout
    ).to(device)
    loader = make_train_loader(
        train_set,
        train_transform(cfg.augment.crop_padding, cfg.augment.hflip, mean, std, seed=params.seed),
        cfg.batch_size,
        cfg.num_workers,
        seed=params.seed,
        pin_memory=device.type == "cuda",
    )
    val_x, val_y = make_eval_tensors(val_set, mean, std)
    optimizer = build_optimizer(model, cfg.optimizer, cfg.max_lr, cfg.weight_decay, cfg.momentum, cfg.nesterov)
    scheduler = build_onecycle(
        optimizer, cfg.max_lr, cfg.epochs, len(loader), cfg.pct_start, cfg.div_factor, cfg.final_div_factor
    )
    print(
        f"{params.model.arch} (width {params.model.width}, {params.model.stem} stem): "
        f"{count_parameters(model):,} parameters on {device}; {len(train_set)} train / {len(val_set)} val images"
    )

    started = time.perf_counter()
    with Live(str(args.live), dvcyaml=False, save_dvc_exp=False) as live:

        def log_epoch(result) -> None:
            live.step = result.epoch  # x axis = epoch number, starting at 1
            for name in ("train_loss", "train_acc", "val_loss", "val_acc"):
                value = getattr(result, name)
                if value == value:  # NaN when there is no validation split
                    live.log_metric(name.replace("_", "/"), value)
            live.log_metric("lr", result.lr)
            live.make_summary()
            print(
                f"epoch {result.epoch}/{cfg.epochs}  train loss {result.train_loss:.4f} acc {result.train_acc:.4f}  "
                f"val loss {result.val_loss:.4f} acc {result.val_acc:.4f}  lr {result.lr:.5f}  "
                f"[{time.perf_counter() - started:.1f}s]",
                flush=True,
            )

        fit(
            model, loader, val_x, val_y, optimizer, scheduler, cfg.epochs, device, args.checkpoints,
            run_info={"model_config": model_config, "params_hash": params_hash(params)},
            label_smoothing=cfg.label_smoothing,
            on_epoch_end=log_epoch,
        )

    # The final model is the best epoch's weights (by validation accuracy), as the seeds keep.
    best = load_checkpoint(args.checkpoints / "best.pt")
    model.load_state_dict(best["model"])
    save_model(args.model, args.config, model.cpu(), model_config)
    print(f"best epoch {best['epoch']} -> {args.model} ({time.perf_counter() - started:.1f}s training)")


if __name__ == "__main__":
    run_stage(main)
