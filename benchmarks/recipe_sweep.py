"""One-knob variants of a recipe, trained one after another and scored on a validation split.

    python benchmarks/recipe_sweep.py --source cifar10-jpeg-train.tar.gz --out sweep.json   # on a GPU
    python benchmarks/recipe_sweep.py --source DIR --out s.json --device cpu --epochs 1 --max-train 1000 --only base

Trains the recipe (`recipes/<--recipe>.yaml` over params.yaml, default `cpu`) and each
variant in VARIANTS with the train stage's own loop (`fit`, through gpu_report's
`fit_run`: the recipe's whole model section, on-device feeding, no dvc), on the --source
image folder or archive (train/<class>/, test/<class>/). The images of its train/ split are shuffled once
(seed 0); --val of them are held out and score every variant, the rest train it. The
test/ split is never used: a sweep selects, so it must not see the images a result is
reported on. Writes one JSON row per variant (final and best validation accuracy, wall
time) to --out after each, so a run stopped from outside keeps what it measured; stops
starting variants once --budget seconds have passed. One seed per variant: differences
of a few tenths of a point are noise. It prints figures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "benchmarks"), str(REPO / "scripts")]
from airbench_parity import read_split  # noqa: E402 - sibling scripts, not a package
from gpu_report import fit_run  # noqa: E402
from recipe import load_recipe, override  # noqa: E402

from cifar_resnet.config import apply_overrides, parse_yaml, validate_params  # noqa: E402

# Each variant changes one knob of the recipe (the base: airbench94's published settings)
# at a time, except "resnet9" (the CPU recipe before airbench: ResNet-9 width 32, 20 epochs,
# OneCycle to 0.4, whole) and "batch512" and "w96_ep15", which change two that belong together.
VARIANTS = {
    "base": [],
    "ep12": ["train.epochs=12"],
    "ep20": ["train.epochs=20"],
    "crop4": ["train.augment.crop_padding=4"],
    "randflip": ["train.augment.hflip=true"],
    "no_lookahead": ["train.lookahead=false"],
    "onecycle": ["train.scheduler=onecycle", "train.div_factor=25.0", "train.final_div_factor=10000.0"],
    "batch512": ["train.batch_size=512", "train.max_lr=0.75"],
    "w96_ep15": ["model.width=96", "train.epochs=15"],
    "resnet9": ["model.arch=resnet9", "model.width=32", "model.norm_momentum=0.1", "model.norm_eps=1.0e-05",
                "train.epochs=20", "train.max_lr=0.4", "train.momentum=0.9", "train.weight_decay=0.0005",
                "train.norm_lr_scale=1.0", "train.label_smoothing=0.1", "train.scheduler=onecycle", "train.pct_start=0.25",
                "train.div_factor=25.0", "train.final_div_factor=10000.0", "train.lookahead=false",
                "train.freeze_whitening_bias_after=null", "train.batch_size=512"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, required=True, help="image folder or archive: train/<class>/, test/<class>/")
    parser.add_argument("--out", type=Path, required=True, help="JSON file of results")
    parser.add_argument("--recipe", default="cpu")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--val", type=int, default=5000, help="training images held out to score the variants")
    parser.add_argument("--max-train", type=int, help="train on at most this many images (a quick check)")
    parser.add_argument("--epochs", type=int, help="override every variant's epochs (a quick check)")
    parser.add_argument("--only", nargs="+", choices=sorted(VARIANTS), help="run only these variants")
    parser.add_argument("--budget", type=float, default=400.0, help="start no variant after this many seconds")
    args = parser.parse_args()
    if args.val < 1:
        parser.error("--val must hold out at least one image: a sweep never scores on test/")

    started = time.perf_counter()
    train, val, _ = read_split(args.source, holdout=args.val, max_train=args.max_train)  # test/ is left alone
    print(f"{len(train.labels)} train / {len(val.labels)} validation images, decoded in {time.perf_counter() - started:.0f} s",
          flush=True)
    fixed = [override(key, value) for key, value in load_recipe(args.recipe)["set"].items()] + [
        f"train.device={args.device}", "train.early_stopping.patience=null", "train.target_val_acc=null"]
    fixed += [f"train.epochs={args.epochs}"] if args.epochs else []
    raw = parse_yaml((REPO / "params.yaml").read_text())
    rows = []
    for name in args.only or VARIANTS:
        if time.perf_counter() - started > args.budget:
            rows.append({"name": name, "skipped": "time budget"})
            continue
        params = validate_params(apply_overrides(raw, fixed + VARIANTS[name]))
        variant_started = time.perf_counter()
        result = fit_run(train, val, params.train, params.model, torch.device(args.device))
        accuracies = [epoch["test_acc"] for epoch in result["epochs"]]  # fit_run's "test" is this validation split
        rows.append({"name": name, "overrides": VARIANTS[name], "parameters": result["parameters"],
                     "epochs": result["epochs"][-1]["epoch"],
                     "final_val_acc": accuracies[-1], "best_val_acc": max(accuracies),
                     "final_val_acc_flip_tta": result["final_flip_tta_acc"],
                     "wall_s": round(time.perf_counter() - variant_started, 1)})
        print(json.dumps(rows[-1]), flush=True)
        args.out.write_text(json.dumps(rows, indent=1) + "\n")
    args.out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
