"""Stage `train`: build the ResNet from `model.*`, train it with `train.*`, log with dvclive.

Outputs: the final model (best or last epoch's weights, train.final_model, + JSON config), the baseline model (the
weights before the first update: random or pretrained, for the evaluate stage), the model
summary metrics, the finished run's checkpoints, the dvclive folder. An interrupted run's
checkpoints wait in the --resume folder (not a DVC output), keyed by params, code and data.
"""

import argparse
import sys
from pathlib import Path

import _local_src  # noqa: F401  (first: this tree's src/, whatever is installed)

from cifar_resnet.config import load_params
from cifar_resnet.data import load_classes, load_imageset
from cifar_resnet.errors import run_stage


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


def main() -> None:
    args, params = parse_args(), load_params()
    classes = load_classes(args.data / "classes.json")
    data_files = [args.data / name for name in ("train.npz", "val.npz", "classes.json")]
    train_set = load_imageset(data_files[0], num_classes=len(classes))
    val_set = load_imageset(data_files[1], num_classes=len(classes))
    from cifar_resnet.distributed import launched_by_torchrun, run_under_torchrun
    from cifar_resnet.training.run import check_consistency

    check_consistency(params.train, len(train_set), len(val_set))
    if params.train.nproc > 1 and not launched_by_torchrun():
        print(f"launching {params.train.nproc} processes with torchrun", flush=True)  # this script, once per device
        sys.exit(run_under_torchrun(params.train.nproc, sys.argv))

    from cifar_resnet.provenance import import_closure
    from cifar_resnet.training.session import RunSources, TrainOutputs, train_resumably

    outputs = TrainOutputs(args.model, args.config, args.baseline, args.summary, args.checkpoints, args.live, args.resume)
    # The resume key holds this script's import closure: a checkpoint of other code is never resumed.
    # params.yaml is read again before the outputs are written: a run it no longer describes is not published.
    sources = RunSources(import_closure(__file__, _local_src.SRC), data_files, _local_src.SRC.parent, Path("params.yaml"))
    train_resumably(params, classes, train_set, val_set, outputs, sources)


if __name__ == "__main__":
    run_stage(main)
