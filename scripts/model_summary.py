"""Print the model that params.yaml describes, layer by layer: output shape, parameters, MACs.

    python scripts/model_summary.py                           # the model in params.yaml
    python scripts/model_summary.py --depth 2                 # down to the blocks inside each stage
    python scripts/model_summary.py -S model.arch=resnet50 -S model.width=32

`-S key=value` overrides take YAML values, as `dvc exp run -S` does. Pretrained weights are
not loaded (they do not change the shapes); the class count follows data.dataset (for a
folder dataset: --classes N, or data/raw/classes.json once the download stage has run).
The train stage writes the same totals to metrics/model.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from cifar_resnet.config import apply_overrides, validate_params
from cifar_resnet.data import NUM_CLASSES, load_classes
from cifar_resnet.errors import UserError, run_stage


def class_count(dataset: str, given: int | None) -> int:
    """--classes, else the dataset's known count, else the download stage's class list."""
    if given is not None:
        return given
    if dataset in NUM_CLASSES:
        return NUM_CLASSES[dataset]
    raw = Path("data/raw/classes.json")
    if not raw.is_file():
        raise UserError(f"data.dataset {dataset}: the class count is known once {raw} exists; pass --classes N")
    return len(load_classes(raw, producer="download"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("-S", "--set-param", action="append", default=[], dest="overrides", help="key=value override")
    parser.add_argument("--depth", type=int, default=1, help="module nesting shown (1 = stages; 0 = every leaf)")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--classes", type=int, help="class count (default: data.dataset's)")
    args = parser.parse_args()
    if not args.params.is_file():
        raise UserError(f"{args.params}: no such file (run from the repository root or pass --params)")
    raw = yaml.safe_load(args.params.read_text()) or {}
    params = validate_params(apply_overrides(raw, args.overrides), origin=str(args.params))

    from cifar_resnet.models import build_model, format_table, layer_table, model_summary

    model = params.model
    classes = class_count(params.data.dataset, args.classes)
    net = build_model(model.arch, classes, width=model.width, stem=model.stem,
                      dropout=model.dropout, blocks=model.blocks, block_dropout=model.block_dropout)
    rows = layer_table(net, args.image_size, depth=args.depth or None)
    print(f"{model.arch}, width {model.width}, {model.stem} stem, blocks {model.blocks or 'standard'}, "
          f"{classes} classes ({params.data.dataset})")
    print(format_table(rows, model_summary(net, args.image_size)))


if __name__ == "__main__":
    run_stage(main)
