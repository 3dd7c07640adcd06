import subprocess
import sys

import pytest
import yaml

from cifar_resnet.config import validate_params
from conftest import REPO, with_overrides

RECIPES = sorted((REPO / "recipes").glob("*.yaml"))


def test_every_seed_has_a_recipe():
    names = {p.stem for p in RECIPES}
    assert {"seed000", "seed001", "seed003"} <= names and any(n.startswith("seed002") for n in names)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_is_valid_params(recipe):
    spec = yaml.safe_load(recipe.read_text())
    assert spec["description"] and spec["reported"]
    params = with_overrides(yaml.safe_load((REPO / "params.yaml").read_text()), spec["set"])
    validate_params(params)


def test_dry_run_prints_the_dvc_command_with_extra_overrides_last():
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "recipe.py"), "seed001", "--dry-run",
                             "-S", "train.epochs=1"], capture_output=True, text=True, check=True)
    command = result.stdout.strip()
    assert command.startswith("dvc exp run -n seed001 -S data.dataset=cifar100")
    assert "-S 'model.blocks=[5, 5, 5, 5]'" in command
    assert command.endswith("-S train.epochs=1")


def test_unknown_recipe_lists_the_known_ones():
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "recipe.py"), "seed999"], capture_output=True, text=True)
    assert result.returncode != 0 and "known: cpu, seed000, seed001" in result.stderr


@pytest.mark.parametrize("name", ["../params", "../recipes/seed001", "/etc/passwd", "seed001.yaml"])
def test_a_recipe_name_that_is_a_path_is_refused_listing_the_recipes(name):
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "recipe.py"), name, "--dry-run"],
                            capture_output=True, text=True)
    assert result.returncode == 1
    known = ", ".join(sorted(p.stem for p in (REPO / "recipes").glob("*.yaml")))
    assert result.stderr == f"error: no recipe {name!r} (known: {known})\n"
    assert result.stdout == ""
