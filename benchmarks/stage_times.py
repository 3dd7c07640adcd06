"""Wall time of each stage of a recipe's pipeline on real images: where the time outside training goes.

    python benchmarks/stage_times.py --source ../shared/data/cifar10-jpeg-train.tar.gz
    python benchmarks/stage_times.py --source DIR --set train.epochs=1   # the other stages' cost, quickly

Copies the repository to a new temporary folder (as scripts/smoke.py does), applies the
recipe (`recipes/<--recipe>.yaml`, default `cpu`) with the data read from --source as a
folder dataset (train/<class>/, test/<class>/), then --set overrides, commits, and runs
`dvc repro --single-item` stage by stage in the pipeline's order, timing each with the
real dvc CLI (its hashing and caching included). Prints one line per stage, then the
evaluate, export, plots and gradcam stages' time as a share of the train stage's (which
includes its own start: imports, reading the data, whitening), and the train stage's
last epoch lines. The copy is kept. It prints figures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from recipe import load_recipe  # noqa: E402 - sibling scripts, not a package
from smoke import prepare_copy, smoke_env  # noqa: E402

STAGES = ["download", "split", "train", "evaluate", "export", "plots", "gradcam"]


def nested(pairs: dict[str, object]) -> dict:
    """{"a.b": 1} -> {"a": {"b": 1}}: a profile for smoke.apply_profile."""
    tree: dict = {}
    for key, value in pairs.items():
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def profile(recipe: str, source: Path, extra: list[str]) -> dict:
    settings = dict(load_recipe(recipe)["set"])
    settings.update({"data.dataset": "folder", "data.source": str(source.resolve())})
    for item in extra:
        key, _, text = item.partition("=")
        settings[key] = yaml.safe_load(text)
    return nested(settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, required=True, help="folder or archive with train/<class>/ and test/<class>/")
    parser.add_argument("--recipe", default="cpu")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides on top of the recipe")
    parser.add_argument("--workdir", type=Path, help="folder for the copy (must not exist); default: a new temp folder")
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="cifar-stages-")) / "repo"
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as file:
        yaml.safe_dump(profile(args.recipe, args.source, args.set), file)
    prepare_copy(workdir, Path(file.name))
    env = smoke_env(workdir)
    times: dict[str, float] = {}
    train_output = ""
    for stage in STAGES:
        started = time.perf_counter()
        done = subprocess.run(["dvc", "repro", "--single-item", stage], cwd=workdir, env=env, text=True,
                              capture_output=True)
        times[stage] = time.perf_counter() - started
        if done.returncode:
            raise SystemExit(f"error: stage {stage} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
        if stage == "train":
            train_output = done.stdout
        print(f"{stage:<10} {times[stage]:7.1f} s", flush=True)
    outside = sum(t for stage, t in times.items() if stage not in ("download", "split", "train"))
    print(f"evaluate + export + plots + gradcam: {outside:.1f} s = {100 * outside / times['train']:.1f}% of the train stage's "
          f"{times['train']:.1f} s; download + split: {times['download'] + times['split']:.1f} s")
    epochs = re.findall(r"^epoch \d+/\S+ .*$", train_output, flags=re.M)
    print("\n".join(epochs[-2:]))
    print(f"results kept in {workdir}")


if __name__ == "__main__":
    main()
