"""Stage `train`: build and train the model, log with dvclive (what it writes: cifar_resnet.pipeline.train)."""

import argparse
from pathlib import Path

import _local_src  # noqa: F401  (first: this tree's src/, whatever is installed)

from cifar_resnet.config import load_params
from cifar_resnet.errors import run_stage
from cifar_resnet.pipeline import train


def main() -> None:
    parser = argparse.ArgumentParser(description=train.__doc__)
    parser.add_argument("--data", type=Path, required=True, help="output folder of the split stage")
    parser.add_argument("--model", type=Path, required=True, help="final weights (.pt)")
    parser.add_argument("--config", type=Path, required=True, help="final model's architecture config (.json)")
    parser.add_argument("--baseline", type=Path, required=True, help="weights before training (.pt), same config")
    parser.add_argument("--summary", type=Path, required=True, help="model summary metrics (.json)")
    parser.add_argument("--checkpoints", type=Path, required=True, help="finished run's best.pt, last.pt, epoch_NNN.pt")
    parser.add_argument("--resume", type=Path, required=True, help="folder for an unfinished run's checkpoints")
    parser.add_argument("--live", type=Path, required=True, help="dvclive folder")
    args = parser.parse_args()
    paths = train.TrainPaths(args.data, args.model, args.config, args.baseline, args.summary, args.checkpoints,
                             args.resume, args.live)
    # torchrun reruns this script once per device; the resume key holds its import closure.
    train.run(load_params(), paths, Path(__file__), _local_src.SRC, params_file=Path("params.yaml"))


if __name__ == "__main__":
    run_stage(main)
