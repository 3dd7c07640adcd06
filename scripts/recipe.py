"""Run one of the seed recipes in recipes/ as a DVC experiment.

    python scripts/recipe.py --list
    python scripts/recipe.py seed001                       # dvc exp run -n seed001 -S ... (all its settings)
    python scripts/recipe.py seed001 --queue               # queue it instead (then: dvc queue start)
    python scripts/recipe.py seed003 -S train.epochs=2     # extra overrides win over the recipe's
    python scripts/recipe.py seed000 --dry-run             # print the command only

A recipe is a named set of `-S key=value` overrides: params.yaml stays the baseline and
`dvc exp show` lists each recipe's run by its name.
"""

from __future__ import annotations

import argparse
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


def command(name: str, recipe: dict, extra: list[str], queue: bool) -> list[str]:
    cmd = ["dvc", "exp", "run", "-n", name]
    if queue:
        cmd.append("--queue")
    for key, value in recipe["set"].items():
        cmd += ["-S", override(key, value)]
    for item in extra:
        cmd += ["-S", item]
    return cmd


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", help="recipe name (a file in recipes/ without .yaml)")
    parser.add_argument("-S", "--set-param", action="append", default=[], dest="extra", help="extra override, key=value")
    parser.add_argument("--queue", action="store_true", help="queue the experiment instead of running it")
    parser.add_argument("--dry-run", action="store_true", help="print the dvc command without running it")
    parser.add_argument("--list", action="store_true", help="list the recipes")
    args = parser.parse_args()
    if args.list or not args.name:
        for path in sorted(RECIPES.glob("*.yaml")):
            print(f"{path.stem:18} {' '.join(yaml.safe_load(path.read_text())['description'].split())}")
        return 0
    cmd = command(args.name, load_recipe(args.name), args.extra, args.queue)
    print(shlex.join(cmd), flush=True)
    return 0 if args.dry_run else subprocess.run(cmd).returncode


if __name__ == "__main__":
    sys.exit(main())
