"""Stage `evaluate`: the model's test metrics, tables and figures (what it writes: cifar_resnet.pipeline.evaluate)."""

import argparse
from pathlib import Path

import _local_src  # noqa: F401  (first: this tree's src/, whatever is installed)

from cifar_resnet.config import load_params
from cifar_resnet.errors import run_stage
from cifar_resnet.pipeline import evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=evaluate.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="output folder of the split stage")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--baseline", type=Path, default=None,
                        help="weights of the untrained (or freshly pretrained) model, same --config; "
                             "its metrics go under 'baseline'")
    parser.add_argument("--metrics", type=Path, required=True, help="detail metrics JSON to write")
    parser.add_argument("--plots", type=Path, required=True, help="folder for the tables and figures listed above")
    parser.add_argument("--headline", type=Path, default=None, help="headline metrics JSON to write (DVC's metrics file)")
    parser.add_argument("--train-summary", type=Path, default=None,
                        help="the train stage's dvclive summary, whose best.val_acc goes into --headline")
    args = parser.parse_args()
    paths = evaluate.EvaluatePaths(args.data, args.model, args.config, args.baseline, args.metrics, args.plots,
                                   args.headline, args.train_summary)
    evaluate.run(load_params(), paths)


if __name__ == "__main__":
    run_stage(main)
