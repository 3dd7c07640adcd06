"""Stage `gradcam`: class-activation maps and a localisation score (what it writes: cifar_resnet.pipeline.gradcam)."""

import argparse
from pathlib import Path

import _local_src  # noqa: F401  (first: this tree's src/, whatever is installed)

from cifar_resnet.config import load_params
from cifar_resnet.errors import run_stage
from cifar_resnet.pipeline import gradcam


def main() -> None:
    parser = argparse.ArgumentParser(description=gradcam.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="output folder of the split stage")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="folder for grid.png and images/")
    parser.add_argument("--metrics", type=Path, required=True, help="JSON for the localisation score")
    args = parser.parse_args()
    cfg = load_params().gradcam
    gradcam.run(cfg, gradcam.GradcamPaths(args.data, args.model, args.config, args.out, args.metrics))


if __name__ == "__main__":
    run_stage(main)
