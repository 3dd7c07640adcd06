"""Wall time of a short CPU run of every seed recipe, through `dvc exp run` as a user runs it.

    python benchmarks/recipes_wall.py                   # every recipe in recipes/
    python benchmarks/recipes_wall.py seed001 seed003   # some of them

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


def overrides(name: str, weights: Path) -> list[str]:
    if name.startswith("seed002"):
        return PRETRAINED_RUN + [f"model.pretrained={weights}"]
    return SHORT_RUN


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="recipes to run (default: all)")
    args = parser.parse_args()
    names = args.names or sorted(p.stem for p in (REPO / "recipes").glob("*.yaml"))

    workdir = Path(tempfile.mkdtemp(prefix="cifar-recipes-")) / "repo"
    subprocess.run([sys.executable, str(REPO / "scripts" / "smoke.py"), "--workdir", str(workdir)],
                   check=True, stdout=subprocess.DEVNULL)
    weights = random_torchvision_weights(workdir.parent)
    env = dict(os.environ, PYTHONPATH=str(workdir / "src"), DVC_NO_ANALYTICS="1")
    print(f"{'recipe':18} {'wall s':>7} {'test acc':>9}")
    for name in names:
        cmd = [sys.executable, "scripts/recipe.py", name]
        for item in overrides(name, weights):
            cmd += ["-S", item]
        # dvc exp run leaves the experiment's params in the workspace: start each from the smoke profile.
        subprocess.run(["git", "checkout", "--", "params.yaml"], cwd=workdir, check=True)
        start = time.perf_counter()
        result = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if result.returncode != 0:
            print(f"{name:18} {wall:7.1f}   failed: {result.stderr.strip().splitlines()[-1:]}")
            continue
        acc = json.loads((workdir / "metrics" / "eval.json").read_text())["test"]["acc"]
        print(f"{name:18} {wall:7.1f} {acc:9.3f}", flush=True)
    print(f"experiments kept in {workdir} (dvc exp show there)")


if __name__ == "__main__":
    main()
