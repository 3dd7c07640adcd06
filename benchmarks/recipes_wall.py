"""Wall time of a short CPU run of every seed recipe, through `dvc exp run` as a user runs it.

    python benchmarks/recipes_wall.py                   # every recipe in recipes/
    python benchmarks/recipes_wall.py seed001 seed003   # some of them
    python benchmarks/recipes_wall.py --source DIR_OR_TAR --epochs 8 seed000 seed001 seed003
                                                        # real images (train/<class>/, test/<class>/)

Runs the smoke pipeline once in a new temporary folder (so the `shapes` data is prepared
and cached), then each recipe there with `python scripts/recipe.py NAME` plus overrides
that shrink it to a CPU-sized run (shapes data, width 16, 3 epochs, 2000 training
images) while keeping everything else of the recipe: its optimiser, schedule,
augmentation, block layout, stem, mixing, regularisation and stopping rules. The
seed002 recipes need ImageNet weights; offline, they get a torchvision ResNet34 state
dict with random weights saved to a local file, which exercises the same loading,
head replacement and freezing code. Prints one line per recipe: wall time of the whole
`dvc exp run` (train, evaluate, export, plots, gradcam) and its test accuracy. It prints
figures; it asserts nothing.

With --source, each recipe trains on that image folder or archive instead (`data.dataset:
folder`, every training image, 2% held out for validation as in the CPU recipe), at width
16 (64 for seed002) for --epochs epochs with no early stop: the recipes at one equal CPU
budget on real images, with flip TTA reported beside the plain test accuracy. Accuracy at a fixed number of epochs does
not depend on the machine's load; the wall times do.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHORT_RUN = [
    "data.dataset=shapes", "data.max_train=2000", "model.width=16", "train.epochs=3",
    "train.batch_size=64", "train.device=cpu", "train.num_workers=0",
]
# Transfer learning needs torchvision's layout: the standard width 64.
PRETRAINED_RUN = [item for item in SHORT_RUN if not item.startswith("model.width")] + ["model.width=64"]


def random_torchvision_weights(folder: Path) -> Path:
    """A torchvision ResNet34 state dict with random weights: stands in for the ImageNet file offline."""
    import torch
    import torchvision

    path = folder / "resnet34-random.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), path)
    return path


def overrides(name: str, weights: Path, source: Path | None = None, epochs: int = 3) -> list[str]:
    """The recipe's size overrides: the shapes miniature, or `source`'s images for `epochs` epochs."""
    run = PRETRAINED_RUN + [f"model.pretrained={weights}"] if name.startswith("seed002") else list(SHORT_RUN)
    if source is None:
        return run
    drop = ("data.", "train.epochs", "train.batch_size")  # the recipe's own batch size stays
    return [item for item in run if not item.startswith(drop)] + [
        "data.dataset=folder", f"data.source={source}", "data.val_fraction=0.02", f"train.epochs={epochs}",
        # An equal budget: every recipe trains all its epochs (no target or patience stop).
        "train.target_val_acc=null", "train.early_stopping.patience=null", "evaluate.tta=true"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="recipes to run (default: all)")
    parser.add_argument("--source", type=Path, help="an image folder or archive (train/, test/) instead of shapes")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per recipe with --source")
    args = parser.parse_args()
    names = args.names or sorted(p.stem for p in (REPO / "recipes").glob("*.yaml"))

    workdir = Path(tempfile.mkdtemp(prefix="cifar-recipes-")) / "repo"
    subprocess.run([sys.executable, str(REPO / "scripts" / "smoke.py"), "--workdir", str(workdir)],
                   check=True, stdout=subprocess.DEVNULL)
    weights = random_torchvision_weights(workdir.parent)
    env = dict(os.environ, PYTHONPATH=str(workdir / "src"), DVC_NO_ANALYTICS="1")
    source = args.source.resolve() if args.source else None
    print(f"{'recipe':18} {'wall s':>7} {'test acc':>9} {'flip TTA':>9}")
    for name in names:
        cmd = [sys.executable, "scripts/recipe.py", name, "-n", name]  # named after the recipe alone, as before
        for item in overrides(name, weights, source, args.epochs):
            cmd += ["-S", item]
        # dvc exp run leaves the experiment's params in the workspace: start each from the smoke profile.
        subprocess.run(["git", "checkout", "--", "params.yaml"], cwd=workdir, check=True)
        start = time.perf_counter()
        result = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if result.returncode != 0:
            print(f"{name:18} {wall:7.1f}   failed: {result.stderr.strip().splitlines()[-1:]}")
            continue
        metrics = json.loads((workdir / "metrics" / "eval.json").read_text())
        tta = metrics["tta"]["acc"] if "tta" in metrics else float("nan")
        print(f"{name:18} {wall:7.1f} {metrics['test']['acc']:9.4f} {tta:9.4f}", flush=True)
    print(f"experiments kept in {workdir} (dvc exp show there)")


if __name__ == "__main__":
    main()
