"""Run one of the seed recipes in recipes/ as a DVC experiment.

    python scripts/recipe.py --list
    python scripts/recipe.py seed001                       # dvc exp run -n seed001 -S ... (all its settings)
    python scripts/recipe.py seed001 --queue               # queue it instead (then: dvc queue start)
    python scripts/recipe.py seed003 -S train.epochs=2     # extra overrides win; named seed003-train.epochs=2
    python scripts/recipe.py cpu -n mine -f                # your own name; -f overwrites an experiment of that name
    python scripts/recipe.py seed000 --dry-run             # print the command only

A recipe is a named set of `-S key=value` overrides: params.yaml stays the baseline and
`dvc exp show` lists each recipe's run by its name (with the extra overrides, if any, so
that a rerun with other ones is a new experiment; DVC refuses a name already taken unless -f).
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def known_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES.glob("*.yaml"))


def load_recipe(name: str) -> dict:
    """recipes/<name>.yaml; the name must be one of the files there (so '../params' cannot read params.yaml)."""
    known = known_recipes()
    if name not in known:
        raise SystemExit(f"error: no recipe {name!r} (known: {', '.join(known)})")
    path = RECIPES / f"{name}.yaml"
    try:
        recipe = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError) as err:  # ValueError: not UTF-8
        raise SystemExit(f"error: {path}: not readable YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(recipe, dict) or not isinstance(recipe.get("set"), dict):
        raise SystemExit(f"error: {path}: a recipe needs a 'set' mapping of params keys to values")
    return recipe


def override(key: str, value) -> str:
    """`key=value` with the value in YAML flow style, as `dvc exp run -S` parses it."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return f"{key}={text.removesuffix('...').strip()}"


# `dvc exp run -n` takes a name that git-check-ref-format accepts in refs/exps/.../<name>, and
# no "/" (dvc/repo/experiments/utils.py check_ref_format). Anything but these characters becomes
# "-", which rules out "/", spaces, "~^:?*[\", "@{" and control characters; the rules on dots
# (no "..", no leading or trailing ".", no ".lock" at the end) are applied after.
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+-]+")
# The name is a file under .git/refs: kept well within a file name's 255 bytes.
MAX_NAME = 80


def experiment_name(recipe: str, extra: list[str]) -> str:
    """The default experiment name: the recipe's, then its extra overrides, safe for `dvc exp run -n`.

    `cpu` with `-S train.epochs=2` is named cpu-train.epochs=2, so a run with other
    overrides is another experiment, not a clash with the first.
    """
    name = re.sub(r"\.{2,}", ".", _NAME_UNSAFE.sub("-", "-".join([recipe, *extra])))
    name = re.sub(r"(\.lock)+$", "", name.strip("-.")).rstrip("-.")
    if len(name) > MAX_NAME:  # cut, ending in a digest of the whole, so that two long names still differ
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        name = f"{name[:MAX_NAME - 9].rstrip('-.')}-{digest}"
    return name


def command(recipe_name: str, recipe: dict, extra: list[str], queue: bool, name: str | None = None,
            force: bool = False) -> list[str]:
    cmd = ["dvc", "exp", "run", "-n", name or experiment_name(recipe_name, extra)]
    if force:
        cmd.append("-f")
    if queue:
        cmd.append("--queue")
    for key, value in recipe["set"].items():
        cmd += ["-S", override(key, value)]
    for item in extra:
        cmd += ["-S", item]
    return cmd


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", nargs="?", help="recipe name (a file in recipes/ without .yaml)")
    parser.add_argument("-S", "--set-param", action="append", default=[], dest="extra", help="extra override, key=value")
    parser.add_argument("-n", "--name", help="experiment name (default: the recipe's, then the -S overrides, e.g. "
                        "cpu-train.epochs=2)")
    parser.add_argument("-f", "--force", action="store_true",
                        help="passed to `dvc exp run -f`: overwrite an experiment of the same name (DVC also reruns "
                        "every stage, cached or not)")
    parser.add_argument("--queue", action="store_true", help="queue the experiment instead of running it")
    parser.add_argument("--dry-run", action="store_true", help="print the dvc command without running it")
    parser.add_argument("--list", action="store_true", help="list the recipes")
    args = parser.parse_args()
    if args.list or not args.recipe:
        for path in sorted(RECIPES.glob("*.yaml")):
            print(f"{path.stem:18} {' '.join(yaml.safe_load(path.read_text())['description'].split())}")
        return 0
    for item in args.extra:  # dvc would only say so after printing the command
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise SystemExit(f"error: -S {item!r}: an override is key=value, e.g. -S train.epochs=2")
    cmd = command(args.recipe, load_recipe(args.recipe), args.extra, args.queue, args.name, args.force)
    print(shlex.join(cmd), flush=True)
    if args.dry_run:
        return 0
    try:
        return subprocess.run(cmd).returncode
    except FileNotFoundError:
        raise SystemExit("error: the dvc CLI is not on PATH (pip install -e . installs it)") from None


if __name__ == "__main__":
    sys.exit(main())
