"""Stage `train`: build the ResNet from `model.*`, train it with `train.*`, log with dvclive.

Outputs: the final model (best epoch's weights + JSON config), the baseline model (the
weights before the first update: random or pretrained, for the evaluate stage), the model
summary metrics, the finished run's checkpoints, the dvclive folder. An interrupted run's
checkpoints wait in the --resume folder (not a DVC output), keyed by params, code and data.
"""

import argparse
import contextlib
import sys
from pathlib import Path

import _local_src  # noqa: F401  (first: this tree's src/, whatever is installed)

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
    parser.add_argument("--checkpoints", type=Path, required=True, help="finished run's best.pt, last.pt, epoch_NNN.pt")
    parser.add_argument("--resume", type=Path, required=True, help="folder for an unfinished run's checkpoints")
    parser.add_argument("--live", type=Path, required=True, help="dvclive folder")
    return parser.parse_args()


def log_to_live(live, result) -> None:
    """One epoch's curves, then dvclive's next_step (summary written, DVC Studio / VS Code updated).

    The summary (`dvc exp show`, `dvc metrics diff`) keeps results, not curve ends: the best
    validation accuracy so far and its epoch, but not the learning rate, whose last value
    is a near-zero schedule end in every run.
    """
    for name, value in result.measured().items():
        live.log_metric(name, value)
    live.summary.pop("lr", None)
    best = live.summary.get("best", {})
    if result.epoch > 0 and result.val_acc > best.get("val_acc", -1.0):  # NaN (no val split) never is
        live.summary["best"] = {"val_acc": result.val_acc, "epoch": result.epoch}
    live.next_step()


def main() -> None:
    args, params = parse_args(), load_params()
    classes = load_classes(args.data / "classes.json")
    train_set = load_imageset(args.data / "train.npz", num_classes=len(classes))
    val_set = load_imageset(args.data / "val.npz", num_classes=len(classes))
    from cifar_resnet.distributed import launched_by_torchrun, run_under_torchrun
    from cifar_resnet.training.run import check_consistency

    check_consistency(params.train, len(train_set), len(val_set))
    if params.train.nproc > 1 and not launched_by_torchrun():
        print(f"launching {params.train.nproc} processes with torchrun", flush=True)  # this script, once per device
        sys.exit(run_under_torchrun(params.train.nproc, sys.argv))

    from cifar_resnet.distributed import process_rank
    from cifar_resnet.training.run import ResumeStore

    # Rank 0 holds the store before writing anything: a second trainer is refused untouched.
    store = ResumeStore(args.resume)
    with store.exclusive() if process_rank() == 0 else contextlib.nullcontext():
        train(args, params, classes, train_set, val_set, store)


def train(args, params, classes, train_set, val_set, store) -> None:
    """Start or resume the run, log every epoch to dvclive, write the outputs (rank 0)."""
    # Heavy imports after the cheap checks, so a user mistake fails fast.
    from dvclive import Live

    from cifar_resnet.distributed import shutdown
    from cifar_resnet.provenance import import_closure
    from cifar_resnet.training import EpochPrinter, fit
    from cifar_resnet.training.run import run_key, start_run

    started = start_run(params, train_set, val_set, classes, args.baseline, args.summary)
    run = started.run
    data_files = [args.data / name for name in ("train.npz", "val.npz", "classes.json")]
    key = run_key(params, import_closure(__file__, _local_src.SRC), data_files, _local_src.SRC.parent)
    if not run.dist_info.is_main:  # rank 0 logs and writes; the other replicas only train
        fit(run, store.folder, resume=store.resumable(key)[0])
        return shutdown(run.dist_info)
    resume, decision = store.resumable(key)
    if resume is None:
        store.clear()
    print(f"{started.description}; {decision}", flush=True)
    printer = EpochPrinter(params.train.epochs, first_trained=resume["epoch"] + 1 if resume else 1)
    with Live(str(args.live), dvcyaml=False, save_dvc_exp=False) as live:
        # Live starts empty and every epoch, restored ones first, is logged once, in order:
        # the curves never duplicate or miss an epoch, however the last run ended.
        def log_epoch(result) -> None:
            log_to_live(live, result)
            print(printer.line(result), flush=True)

        try:
            outcome = fit(run, store.folder, {"model_config": started.model_config, "key": key}, log_epoch, resume)
        except KeyboardInterrupt:
            last = store.resumable(key)[0]
            done = f"after epoch {last['epoch']}" if last else "before the first epoch"
            raise UserError(f"interrupted {done}; run `dvc repro` again to resume") from None
        shutdown(run.dist_info)
        store.publish(args.checkpoints)
        started.save_best(args.checkpoints / "best.pt", args.model, args.config)
        live.log_artifact(str(args.model), type="model", name="cifar-resnet", cache=False,
                          desc=f"{params.model.arch} trained on {params.data.dataset}",
                          labels=[params.model.arch, params.data.dataset])
    print(f"{outcome.stop_reason} after epoch {outcome.history[-1].epoch}; best epoch {outcome.best_epoch} -> {args.model}")

if __name__ == "__main__":
    run_stage(main)
