"""The plots page that `dvc plots show` / `dvc plots diff` draws from dvc.yaml's `plots:`.

Runs the real dvc CLI (`dvc plots show --json`) on a small git repository holding this
repository's dvc.yaml and .dvc/ (config and the custom templates in .dvc/plots) and the
files the stages would write, then checks the filled Vega-Lite specs DVC hands the page.
"""

import json
import re
import shutil
import subprocess

import pandas as pd
import pytest
import torch
import yaml
from matplotlib.figure import Figure

from cifar_resnet.evaluation import confusion_matrix, confusion_records, per_class_table

from conftest import REPO, dvc

# Dataset order, deliberately not alphabetical: the plots must keep it.
CLASSES = ["zebra", "cat", "moose"]
SPLIT = re.compile(r"(^|/)val/")  # the JavaScript regex of .dvc/plots/train_val.json, as Python reads it


def plot_definitions() -> dict:
    """dvc.yaml's plots: as {name or path: properties (None for an image)}."""
    entries = yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
    return {k: v for entry in entries for k, v in (entry.items() if isinstance(entry, dict) else [(entry, None)])}


def write_stage_outputs(root) -> None:
    """What the train, evaluate, plots and gradcam stages write, in miniature."""
    for split, name in [("train", "loss"), ("val", "loss"), ("train", "acc"), ("val", "acc"), (None, "lr")]:
        path = root / "dvclive" / "plots" / "metrics" / (f"{split}/{name}.tsv" if split else f"{name}.tsv")
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"step": [1, 2, 3], name: [0.5, 0.4, 0.3]}).to_csv(path, sep="\t", index=False)
    labels, predictions = torch.tensor([0, 0, 1, 2, 2]), torch.tensor([0, 1, 1, 2, 0])
    (root / "plots" / "eval").mkdir(parents=True)
    (root / "plots" / "eval" / "confusion.json").write_text(json.dumps(confusion_records(predictions, labels, CLASSES)))
    pd.DataFrame(per_class_table(confusion_matrix(predictions, labels, 3), CLASSES)).to_csv(
        root / "plots" / "eval" / "per_class.csv", index=False)
    for name, props in plot_definitions().items():
        if props is None:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            Figure(figsize=(1, 1)).savefig(root / name, format="png")
    (root / "plots" / "gradcam" / "images").mkdir(parents=True, exist_ok=True)
    Figure(figsize=(1, 1)).savefig(root / "plots" / "gradcam" / "images" / "00_zebra.png", format="png")


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> dict:
    """`dvc plots show --json`'s plots, by name."""
    root = tmp_path_factory.mktemp("plots")
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    shutil.copytree(REPO / ".dvc", root / ".dvc", ignore=shutil.ignore_patterns("cache", "tmp", "config.local"))
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    write_stage_outputs(root)
    return json.loads(dvc(root, "plots", "show", "--json", timeout=300).stdout)["data"]


def vega(page: dict, name: str) -> dict:
    (plot,) = page[name]
    assert plot["type"] == "vega", plot
    return plot["content"]


def test_confusion_matrix_has_true_class_on_y_in_dataset_order_with_counts(page):
    name = next(n for n in page if n.startswith("Confusion matrix"))
    spec = vega(page, name)
    encoding = spec["spec"]["encoding"]
    assert (encoding["x"]["field"], encoding["y"]["field"]) == ("predicted", "actual")
    assert (encoding["x"]["title"], encoding["y"]["title"]) == ("predicted class", "true class")
    # Sorted by the class indices the records carry, not by name (DVC's own template sorts by name).
    assert encoding["x"]["sort"] == {"field": "predicted_index", "op": "min"}
    assert encoding["y"]["sort"] == {"field": "actual_index", "op": "min"}
    record = spec["data"]["values"][0]
    assert CLASSES.index(record["actual"]) == int(record["actual_index"])
    assert CLASSES.index(record["predicted"]) == int(record["predicted_index"])
    assert any(layer["mark"]["type"] == "text" for layer in spec["spec"]["layer"])  # counts in the cells


def test_per_class_bars_keep_the_dataset_order(page):
    spec = vega(page, next(n for n in page if n.startswith("Per-class accuracy")))
    assert spec["encoding"]["y"]["sort"] is None  # the CSV's row order
    assert [row["class"] for row in spec["data"]["values"]] == CLASSES


@pytest.mark.parametrize("name", ["Loss", "Accuracy"])
def test_curves_are_labelled_train_and_val_not_by_file(page, name):
    spec = vega(page, name)
    # The template derives the split from the file name DVC passes; check that name has the form it expects.
    splits = {("val" if SPLIT.search(row["filename"]) else "train") for row in spec["data"]["values"]}
    assert splits == {"train", "val"}
    assert spec["transform"][0]["as"] == "split"
    (line,) = [layer for layer in spec["layer"] if layer["mark"] == "line"]
    assert line["encoding"]["strokeDash"]["field"] == "split"
    assert spec["encoding"]["x"]["title"] == "epoch"


def test_each_picture_appears_once(page):
    images = [name for name, plots in page.items() if plots[0]["type"] == "image"]
    assert images == [name for name, props in plot_definitions().items() if props is None]
    assert not any(name.startswith("plots/gradcam/images") for name in images)  # the grid shows them already
