import importlib.util
import subprocess
import sys

import pytest
import yaml

from cifar_resnet.config import apply_overrides, validate_params
from conftest import REPO

RECIPES = sorted((REPO / "recipes").glob("*.yaml"))


def recipe_script():
    spec = importlib.util.spec_from_file_location("recipe_script", REPO / "scripts" / "recipe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def lookup(tree: dict, dotted: str):
    for part in dotted.split("."):
        tree = tree[part]
    return tree


def test_every_seed_has_a_recipe():
    names = {p.stem for p in RECIPES}
    assert {"seed000", "seed001", "seed003"} <= names and any(n.startswith("seed002") for n in names)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_is_valid_params(recipe):
    spec = yaml.safe_load(recipe.read_text())
    assert spec["description"] and spec["reported"]
    baseline = yaml.safe_load((REPO / "params.yaml").read_text())
    for key in spec["set"]:
        lookup(baseline, key)  # a KeyError: the recipe sets a key params.yaml lacks
    # Applied as the -S texts the script hands to `dvc exp run`, which must parse back to the recipe's values.
    items = [recipe_script().override(key, value) for key, value in spec["set"].items()]
    params = apply_overrides(baseline, items)
    assert {key: lookup(params, key) for key in spec["set"]} == spec["set"]
    validate_params(params)


def test_dry_run_prints_the_dvc_command_with_extra_overrides_last():
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "recipe.py"), "seed001", "--dry-run",
                             "-S", "train.epochs=1"], capture_output=True, text=True, check=True)
    command = result.stdout.strip()
    assert command.startswith("dvc exp run -n seed001-train.epochs=1 -S data.dataset=cifar100")
    assert "-S 'model.blocks=[5, 5, 5, 5]'" in command
    assert command.endswith("-S train.epochs=1")


def test_unknown_recipe_lists_the_known_ones():
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "recipe.py"), "seed999"], capture_output=True, text=True)
    known = ", ".join(sorted(p.stem for p in RECIPES))  # every recipe, by name
    assert result.returncode != 0 and f"known: {known}" in result.stderr, result.stderr


@pytest.mark.parametrize("name", ["../params", "../recipes/seed001", "/etc/passwd", "seed001.yaml"])
def test_a_recipe_name_that_is_a_path_is_refused_listing_the_recipes(name):
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "recipe.py"), name, "--dry-run"],
                            capture_output=True, text=True)
    assert result.returncode == 1
    known = ", ".join(sorted(p.stem for p in (REPO / "recipes").glob("*.yaml")))
    assert result.stderr == f"error: no recipe {name!r} (known: {known})\n"
    assert result.stdout == ""


@pytest.mark.parametrize("item", ["train.epochs", "=2"])
def test_an_override_without_key_and_value_is_one_line(item):
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "recipe.py"), "cpu", "-S", item, "--dry-run"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == f"error: -S {item!r}: an override is key=value, e.g. -S train.epochs=2\n"


def test_no_dvc_on_the_path_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "recipe.py"), "cpu"], capture_output=True,
                            text=True, timeout=60, env={"PATH": str(tmp_path)})
    assert result.returncode == 1
    assert result.stderr == "error: the dvc CLI is not on PATH (pip install -e . installs it)\n"


def dry_run(*args: str) -> str:
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "recipe.py"), *args, "--dry-run"],
                            capture_output=True, text=True, check=True)
    return result.stdout.strip()


def test_a_run_with_extra_overrides_is_named_after_them_so_a_second_one_does_not_clash():
    assert dry_run("cpu").startswith("dvc exp run -n cpu -S ")
    assert dry_run("cpu", "-S", "train.epochs=2").startswith("dvc exp run -n cpu-train.epochs=2 -S ")
    two = dry_run("cpu", "-S", "train.epochs=2", "-S", "seed=3")
    assert two.startswith("dvc exp run -n cpu-train.epochs=2-seed=3 -S ")


def test_name_and_force_are_passed_to_dvc_exp_run():
    command = dry_run("cpu", "-n", "mine", "-f", "-S", "train.epochs=2", "--queue")
    assert command.startswith("dvc exp run -n mine -f --queue -S ") and command.endswith("-S train.epochs=2")
    assert " -f " not in dry_run("cpu")


@pytest.mark.parametrize("extra, name", [
    (["data.source=/data/pets.tar.gz"], "cpu-data.source=-data-pets.tar.gz"),  # "/" is refused by dvc
    (["model.blocks=[5, 5, 5, 5]"], "cpu-model.blocks=-5,-5,-5,-5"),  # "[" and spaces, by git
    (["data.source=../x..y"], "cpu-data.source=.-x.y"),  # ".."
    (["x=a~b^c:d?e*f\\g@{h}"], "cpu-x=a-b-c-d-e-f-g-h"),
    (["data.source=a.lock"], "cpu-data.source=a"),  # a ref may not end in .lock
    (["data.source=x."], "cpu-data.source=x"),  # nor in a dot
])
def test_default_names_are_ones_dvc_accepts(extra, name):
    got = recipe_script().experiment_name("cpu", extra)
    assert got == name
    assert_dvc_accepts(got)


def test_a_long_default_name_is_cut_and_stays_distinct():
    script = recipe_script()
    one = script.experiment_name("cpu", ["data.source=" + "a" * 200 + "/one.tar"])
    two = script.experiment_name("cpu", ["data.source=" + "a" * 200 + "/two.tar"])
    assert len(one) == len(two) == script.MAX_NAME and one != two
    assert_dvc_accepts(one)


def assert_dvc_accepts(name: str) -> None:
    """The name passes the check `dvc exp run -n` makes (git's ref rules on refs/exps/..., and no "/")."""
    from dulwich.refs import check_ref_format

    assert "/" not in name and check_ref_format(f"refs/exps/ab/cdef0123/{name}".encode()), name
