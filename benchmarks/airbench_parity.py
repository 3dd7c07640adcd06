"""The measuring stick: a recipe trained by the pipeline's own `fit`, and the airbench94 reference, side by side.

    python benchmarks/airbench_parity.py --source ../shared/data/cifar10-jpeg-train.tar.gz --seeds 0 1 --out parity.json
    python benchmarks/airbench_parity.py --source DIR --holdout 5000 --set train.epochs=12   # choose on held-out images
    python benchmarks/airbench_parity.py --source DIR --seeds 0 --max-train 2048 --epochs 1  # a quick check

For each seed it trains `benchmarks/reference_airbench.py` (Jordan's airbench94, written
from the paper) and then the recipe (`recipes/<--recipe>.yaml` over params.yaml, with
`seed` set to the seed and --set overrides on top) through the train stage's own code:
`build_run` (the run `start_run` builds: seed, model, whitening, assembly) and `fit`
(which `prepare`s it), with its checkpoints written every epoch as the stage writes
them. Both train on the same images in one process, with the same threads, one after
the other, so a drifting machine speed hits both alike. Both times run from images in memory to a trained model;
scoring is not timed. The recipe is given no validation split here (the stage's 2%
would cost both accuracy and time that the reference does not pay); the stage's
per-epoch validation is extra.

Scoring: without --holdout, on the source's test/ split (the figures to report). With
--holdout N, N images of train/ (shuffled once, seed 0) are held out and score, the
rest train, and test/ is never read: use that to choose settings.

Each model is scored plain, with flip TTA, with the recipe's own TTA
(`evaluate.tta_shift`, 10 views) and with Jordan's 6-view TTA (the reference's), so
every pair compares like with like. It prints one JSON row per run, then the means and
the time ratio (recipe / reference), and writes them all to --out. It asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from statistics import mean

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "benchmarks"), str(REPO / "scripts"), str(REPO / "src")]
import reference_airbench as reference  # noqa: E402 - sibling scripts, not a package
from recipe import load_recipe, override  # noqa: E402

from cifar_resnet.config import Params, apply_overrides, parse_yaml, validate_params  # noqa: E402
from cifar_resnet.data.arrays import ImageSet  # noqa: E402
from cifar_resnet.data.folder import load_image_folder  # noqa: E402
from cifar_resnet.evaluation import flip_tta_logits  # noqa: E402
from cifar_resnet.inference import evaluate_logits, make_eval_tensors  # noqa: E402
from cifar_resnet.training import Precision, fit  # noqa: E402
from cifar_resnet.training.run import build_run  # noqa: E402


def recipe_params(recipe: str, seed: int, device: str, extra: list[str]) -> Params:
    """params.yaml with the recipe applied, the seed set and early stopping off, then `extra`."""
    changes = [override(key, value) for key, value in load_recipe(recipe)["set"].items()]
    changes += [f"seed={seed}", f"train.device={device}", "train.early_stopping.patience=null",
                "train.target_val_acc=null", *extra]
    return validate_params(apply_overrides(parse_yaml((REPO / "params.yaml").read_text()), changes))


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return round((logits.argmax(1) == labels).float().mean().item(), 4)


def train_recipe(params: Params, train: ImageSet, score: ImageSet) -> dict:
    """The train stage's steps on `train` (no validation split); its accuracies on `score`."""
    started = time.perf_counter()
    classes = [str(label) for label in range(int(train.labels.max()) + 1)]
    device = torch.device(params.train.device)
    # The stage's run (start_run's build_run: seed, model, whitening, assembly); fit prepares it.
    run = build_run(params, train, train.subset(np.arange(0)), classes, device).run
    with tempfile.TemporaryDirectory() as checkpoints:
        outcome = fit(run, checkpoints)
    seconds = time.perf_counter() - started

    precision = Precision.for_run(params.train, device)
    images, labels = make_eval_tensors(score, run.mean, run.std)

    def predict(x: torch.Tensor) -> torch.Tensor:
        return evaluate_logits(run.model, x, 1000, device, precision.channels_last, precision.amp_dtype)

    plain = predict(images)
    jordan = reference.accuracies(run.model, images, labels, device)
    return {"train_seconds": round(seconds, 1), "epochs": outcome.history[-1].epoch, "plain": accuracy(plain, labels),
            "flip": accuracy(flip_tta_logits(predict, images, plain), labels),
            "tta": accuracy(flip_tta_logits(predict, images, plain, shift=params.evaluate.tta_shift), labels),
            "tta6": jordan["tta"]}


def train_reference(train: ImageSet, score: ImageSet, seed: int, device: str, hyper: reference.Hyper) -> dict:
    result = reference.run(train, score, seed, torch.device(device), hyper)
    return {"train_seconds": round(result.train_seconds, 1), "steps": result.steps, "plain": result.accuracy["plain"],
            "flip": result.accuracy["flip"], "tta6": result.accuracy["tta"]}


def side_by_side(train: ImageSet, score: ImageSet, seeds: list[int], device: str, recipe: str = "cpu",
                 extra: tuple[str, ...] = (), hyper: reference.Hyper = reference.Hyper(), only: str | None = None,
                 report=None) -> list[dict]:
    """For each seed, the reference then the recipe (`extra`: overrides on top of it): one row each.

    `report(row)` sees each row as it is made (a run stopped from outside keeps what it measured).
    """
    rows = []
    for seed in seeds:
        if only != "recipe":
            rows.append({"side": "reference", "seed": seed, **train_reference(train, score, seed, device, hyper)})
            if report:
                report(rows)
        if only != "reference":
            params = recipe_params(recipe, seed, device, list(extra))
            rows.append({"side": "recipe", "seed": seed, **train_recipe(params, train, score)})
            if report:
                report(rows)
    return rows


def summary(rows: list[dict]) -> dict:
    """Means over seeds of each side, and the ratio of their training times."""
    sides = {}
    for side in ("reference", "recipe"):
        runs = [r for r in rows if r["side"] == side]
        if runs:
            keys = [k for k in ("train_seconds", "plain", "flip", "tta", "tta6") if k in runs[0]]
            sides[side] = {k: round(mean(r[k] for r in runs), 4 if k != "train_seconds" else 1) for k in keys}
            sides[side]["seeds"] = [r["seed"] for r in runs]
    if len(sides) == 2:
        sides["time_ratio"] = round(sides["recipe"]["train_seconds"] / sides["reference"]["train_seconds"], 3)
    return sides


def read_split(source: Path, holdout: int = 0, max_train: int | None = None) -> tuple[ImageSet, ImageSet, str]:
    """(train, score, what the score split is) from the image folder or archive `source`.

    holdout N: score on N images of train/ (shuffled once, seed 0), train on the rest, and
    never read test/'s labels into a figure; else score on test/.
    """
    with tempfile.TemporaryDirectory() as work:
        train, test, _ = load_image_folder(source, work)
    if holdout:
        order = np.random.default_rng(0).permutation(len(train))
        train, test = train.subset(order[holdout:]), train.subset(order[:holdout])
        scored = f"{holdout} held-out training images"
    else:
        scored = f"the test split ({len(test)} images)"
    if max_train:
        train = train.subset(np.arange(min(max_train, len(train))))
    return train, test, scored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, required=True, help="folder or archive with train/<class>/ and test/<class>/")
    parser.add_argument("--out", type=Path, help="JSON file of every run and the summary")
    parser.add_argument("--recipe", default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides on top of the recipe")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--holdout", type=int, default=0, help="score on this many held-out training images, not test/")
    parser.add_argument("--only", choices=["recipe", "reference"], help="train one side only")
    parser.add_argument("--max-train", type=int, help="train on at most this many images (a quick check)")
    parser.add_argument("--epochs", type=float, help="both sides' epochs (a quick check)")
    parser.add_argument("--batch-size", type=int, help="both sides' batch size (a quick check)")
    args = parser.parse_args()

    train, score, scored = read_split(args.source, args.holdout, args.max_train)
    header = {"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "recipe": args.recipe, "set": args.set, "train_images": len(train),
              "scored_on": scored}
    print(json.dumps(header), flush=True)
    extra = list(args.set)
    hyper = reference.Hyper()
    if args.epochs:
        extra.append(f"train.epochs={args.epochs}")
        hyper = replace(hyper, epochs=args.epochs)
    if args.batch_size:
        extra.append(f"train.batch_size={args.batch_size}")
        hyper = replace(hyper, batch_size=args.batch_size)

    def report(rows: list[dict]) -> None:
        print(json.dumps(rows[-1]), flush=True)
        if args.out:
            args.out.write_text(json.dumps({**header, "runs": rows, "summary": summary(rows)}, indent=1) + "\n")

    rows = side_by_side(train, score, args.seeds, args.device, args.recipe, tuple(extra), hyper, args.only, report)
    print(json.dumps(summary(rows)), flush=True)


if __name__ == "__main__":
    main()
