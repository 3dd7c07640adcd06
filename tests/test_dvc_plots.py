"""The plots page that `dvc plots show` / `dvc plots diff` draws from dvc.yaml's `plots:`.

Runs the real dvc CLI (`dvc plots show --json`) on a small git repository holding this
repository's dvc.yaml and .dvc/ (its config) and the
files the stages would write, then checks the filled Vega-Lite specs DVC hands the page.
"""

import base64
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from matplotlib.figure import Figure
from PIL import Image

from cifar_resnet.evaluation import confusion_matrix, confusion_records, per_class_table

from conftest import REPO, dvc

# Dataset order, deliberately not alphabetical: the plots must keep it.
CLASSES = ["zebra", "cat", "moose"]
# What the VS Code extension and DVC Studio restyle: DVC's built-in templates leave these to them.
BUILT_IN_TEMPLATES = {"linear", "simple", "confusion", "confusion_normalized", "scatter", "scatter_jitter", "smooth",
                      "bar_horizontal", "bar_horizontal_sorted"}


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
            Figure(figsize=(20, 1)).savefig(root / name, format="png", dpi=100)  # wider than the page
    (root / "plots" / "gradcam" / "images").mkdir(parents=True, exist_ok=True)
    Figure(figsize=(1, 1)).savefig(root / "plots" / "gradcam" / "images" / "00_zebra.png", format="png")


@pytest.fixture(scope="module")
def plots_repo(tmp_path_factory) -> Path:
    """A git repository with this repository's dvc.yaml, params.yaml, .dvc/ and the stages' outputs in miniature."""
    root = tmp_path_factory.mktemp("plots")
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    shutil.copy(REPO / "params.yaml", root / "params.yaml")  # dvc.yaml's artifact labels are ${model.arch}, ...
    shutil.copytree(REPO / ".dvc", root / ".dvc", ignore=shutil.ignore_patterns("cache", "tmp", "config.local"))
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    write_stage_outputs(root)
    return root


@pytest.fixture(scope="module")
def page(plots_repo) -> dict:
    """`dvc plots show --json`'s plots, by name."""
    return json.loads(dvc(plots_repo, "plots", "show", "--json", timeout=300).stdout)["data"]


def vega(page: dict, name: str) -> dict:
    (plot,) = page[name]
    assert plot["type"] == "vega", plot
    return plot["content"]


def test_data_plots_use_built_in_templates(plots_repo):
    """Custom templates lack the placeholders the VS Code extension and Studio fill, and DVC
    does not promise to keep them working: every chart names a built-in, .dvc/ holds none."""
    templates = {name: (props or {}).get("template", "linear") for name, props in plot_definitions().items()
                 if props is not None}
    assert set(templates.values()) <= BUILT_IN_TEMPLATES, templates
    assert not (plots_repo / ".dvc" / "plots").exists()


def test_confusion_matrix_has_true_class_on_y_in_dataset_order(page):
    """DVC's confusion template sorts both axes by name: the records' names, index first, sort in the dataset's order."""
    name = next(n for n in page if n.startswith("Confusion matrix"))
    spec = vega(page, name)
    encoding = spec["spec"]["encoding"]
    assert (encoding["x"]["field"], encoding["y"]["field"]) == ("predicted", "actual")
    assert (encoding["x"]["title"], encoding["y"]["title"]) == ("predicted class", "true class")
    assert encoding["x"]["sort"] == encoding["y"]["sort"] == "ascending"
    records = spec["data"]["values"]
    assert len(records) == 5  # one per test image, which the template counts
    assert sorted({r["actual"] for r in records}) == [f"{i} {c}" for i, c in enumerate(CLASSES)]
    assert {(r["actual"], r["predicted"]) for r in records} == {
        ("0 zebra", "0 zebra"), ("0 zebra", "1 cat"), ("1 cat", "1 cat"), ("2 moose", "2 moose"), ("2 moose", "0 zebra")}


def test_per_class_bars_are_sorted_by_accuracy(page):
    spec = vega(page, next(n for n in page if n.startswith("Per-class accuracy")))
    assert spec["encoding"]["y"]["sort"] == "-x"  # the best class on top
    assert (spec["encoding"]["x"]["field"], spec["encoding"]["y"]["field"]) == ("accuracy", "class")
    assert sorted(row["class"] for row in spec["data"]["values"]) == sorted(CLASSES)


@pytest.mark.parametrize("name", ["Loss", "Accuracy"])
def test_curves_overlay_train_and_val_by_file_name(page, name):
    spec = vega(page, name)
    files = {row["filename"] for row in spec["data"]["values"]}
    metric = {"Loss": "loss", "Accuracy": "acc"}[name]
    # DVC names each curve by the part of its path that tells the files apart: the split.
    assert files == {f"{split}/{metric}.tsv" for split in ("train", "val")}
    assert spec["encoding"]["x"]["title"] == "epoch"


def test_every_curve_leaves_colour_and_smoothing_to_dvc(page):
    """Loss, accuracy and learning rate: DVC's linear template, its smoothing slider included."""
    for name in ("Loss", "Accuracy", "Learning rate"):
        spec = vega(page, name)
        assert spec["params"][0]["name"] == "smooth", name
        assert "<DVC_METRIC" not in json.dumps(spec), name  # every placeholder filled


def test_each_picture_appears_once(page):
    images = [name for name, plots in page.items() if plots[0]["type"] == "image"]
    assert images == [name for name, props in plot_definitions().items() if props is None]
    assert not any(name.startswith("plots/gradcam/images") for name in images)  # the grid shows them already


# The offline page (scripts/plots_page.py): DVC's page loads Vega from a CDN; the script's
# template inlines local copies. Rendering it needs a browser and the real libraries, which
# CI lacks: set CIFAR_RESNET_VEGA_JS to a folder holding them (docs/plots.md, "Plots offline").
def plots_page():
    spec = importlib.util.spec_from_file_location("plots_page", REPO / "scripts" / "plots_page.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_offline_template_inlines_the_libraries_from_npm_archives(plots_repo, tmp_path):
    """No browser needed: the page dvc writes with the template carries the libraries, no CDN link."""
    module = plots_page()
    js = tmp_path / "js"
    js.mkdir()
    for name in module.LIBRARIES:  # what `npm pack` writes, with stand-in sources
        source = tmp_path / f"{name}.min.js"
        source.write_text(f"window['{name}-stand-in'] = '</script>';")
        with tarfile.open(js / f"{name}-9.9.9.tgz", "w:gz") as tar:
            tar.add(source, arcname=f"package/build/{name}.min.js")
    template = tmp_path / "template.html"
    template.write_text(module.build_template(js))
    html = module.render(plots_repo, template, tmp_path / "page", None).read_text()
    assert "cdn.jsdelivr.net" not in html and "{plot_divs}" not in html
    positions = [html.index(f"window['{name}-stand-in'] = '<\\/script>';") for name in module.LIBRARIES]
    assert positions == sorted(positions)  # vega, then vega-lite, then vega-embed
    assert html.count("vegaEmbed(") == sum(props is not None for props in plot_definitions().values())


def test_an_unknown_revision_is_one_line_not_a_traceback(plots_repo, tmp_path, capsys):
    module = plots_page()
    js = tmp_path / "js"
    js.mkdir()
    for name in module.LIBRARIES:
        (js / f"{name}.min.js").write_text(f"window['{name}-stand-in'] = 1;")
    repo = tmp_path / "repo"  # with a commit: in a repository without one, dvc ignores the revisions
    shutil.copytree(plots_repo, repo)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "x"],
                   cwd=repo, check=True)
    script = REPO / "scripts" / "plots_page.py"
    result = subprocess.run(
        [sys.executable, str(script), "--js", str(js), "--repo", str(repo), "--out", str(tmp_path / "page"),
         "--diff", "no-such-revision"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "DVC_NO_ANALYTICS": "1"},
    )
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: dvc plots diff no-such-revision failed in "), result.stderr
    assert "no-such-revision" in lines[0].split(" failed in ", 1)[1] and "Traceback" not in result.stderr


def stand_in_libraries(folder: Path, module) -> Path:
    """A --js folder whose three "libraries" only mark where they landed in the page."""
    folder.mkdir()
    for name in module.LIBRARIES:
        (folder / f"{name}.min.js").write_text(f"window['{name}-stand-in'] = 1;")
    return folder


def test_offline_page_is_one_file_with_its_pictures_inside(plots_repo, tmp_path):
    """No browser needed: after inlining, the page loads nothing but itself (no static/ files,
    no CDN script), and each picture in it is the very PNG the stage wrote."""
    module = plots_page()
    template = tmp_path / "template.html"
    template.write_text(module.build_template(stand_in_libraries(tmp_path / "js", module)))
    page = module.render(plots_repo, template, tmp_path / "page", None)
    assert (tmp_path / "page" / "static").is_dir()  # what dvc writes: the page needs these files

    pictures = [name for name, props in plot_definitions().items() if props is None]
    assert module.inline_images(page) == len(pictures)
    html = page.read_text()
    body = html.split("<body>", 1)[1]
    references = re.findall(r'\b(?:src|href)\s*=\s*"([^"]*)"', body) + re.findall(r"<script\b[^>]*\bsrc\b[^>]*>|<link\b[^>]*>", html)
    assert [ref for ref in references if not ref.startswith(("data:", "#"))] == []
    assert not (tmp_path / "page" / "static").exists()
    inlined = [base64.b64decode(uri) for uri in re.findall(r'<img src="data:image/png;base64,([^"]*)"', body)]
    assert sorted(inlined) == sorted((plots_repo / name).read_bytes() for name in pictures)


def test_overflow_warning_only_when_something_is_wider_than_the_window():
    module = plots_page()
    fits = {"window_width": 1400, "scroll_width": 1400, "widest_image": 1388.0, "widest_chart": 1080.5,
            "page_height": 4573}
    assert module.overflow_warning(fits) is None
    assert module.page_size(fits) == (1400, 4573)
    wide = fits | {"widest_chart": 2030.2}
    assert module.page_size(wide) == (2031, 4573)
    assert module.overflow_warning(wide).startswith("warning: the page is 2031 px wide, wider than the 1400 px window")


def test_a_screenshot_without_chromium_is_one_line_and_writes_nothing(tmp_path):
    module = plots_page()
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "plots_page.py"), "--js", str(stand_in_libraries(tmp_path / "js", module)),
         "--out", str(tmp_path / "page"), "--screenshot", str(tmp_path / "p.png")],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PATH": str(tmp_path / "js")},
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: no chromium or google-chrome on PATH: --screenshot needs one (Debian: apt-get install chromium)"]
    assert not (tmp_path / "page").exists() and not (tmp_path / "p.png").exists()


def test_missing_libraries_are_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "plots_page.py"), "--js", str(tmp_path / "nothing"),
         "--out", str(tmp_path / "page")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: --js {tmp_path / 'nothing'}: ") and "vega.min.js" in line, line


def browser_template(module) -> str:
    """The real template with the probe, or a skip naming what is missing."""
    if module.chromium() is None:
        pytest.skip("no chromium on PATH: the rendered page is checked by hand (docs/plots.md, 'Plots offline')")
    js = Path(os.environ.get("CIFAR_RESNET_VEGA_JS", "/nonexistent"))
    try:
        return module.build_template(js, probe=True)
    except FileNotFoundError as missing:
        pytest.skip(f"set CIFAR_RESNET_VEGA_JS to a folder with vega, vega-lite, vega-embed ({missing})")


def test_offline_page_renders_in_headless_chromium(plots_repo, tmp_path):
    """The real page in a real browser: every chart drawn without error, every picture loaded
    from the page itself and no wider than the window, and the screenshot is the whole page."""
    module = plots_page()
    (tmp_path / "template.html").write_text(browser_template(module))
    page = module.render(plots_repo, tmp_path / "template.html", tmp_path / "page", None)
    module.inline_images(page)

    measured = module.measure(page)
    charts = sum(props is not None for props in plot_definitions().values())
    pictures = sum(props is None for props in plot_definitions().values())
    assert measured["chart_errors"] == [] and measured["charts"] == charts, measured
    assert measured["images"] == measured["images_loaded"] == pictures, measured
    assert measured["window_width"] == module.WIDTH
    assert max(measured["scroll_width"], measured["widest_chart"], measured["widest_image"]) <= module.WIDTH, measured
    assert module.overflow_warning(measured) is None

    width, height = module.page_size(measured)
    assert height > 1500  # charts and five pictures: taller than a screen
    png = module.screenshot(page, tmp_path / "page.png", width, height)
    pixels = np.asarray(Image.open(png).convert("L"))
    assert pixels.shape == (height, module.WIDTH)
    assert (pixels < 128).mean() > 0.005  # axes, labels, marks: not a blank white page
    # The last picture's frame is in the PNG: its bottom rows hold the frame's black line.
    assert (pixels[-40:] < 128).any()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_diff_of_five_runs_warns_and_the_screenshot_is_the_whole_page(plots_repo, tmp_path):
    """Five revisions: each picture's five copies wrap onto rows inside the window (DVC's
    one clipped row hid all but the first), the confusion matrix's five facets do not fit:
    one warning line, and the PNG is as wide and tall as the page."""
    module = plots_page()
    js = tmp_path / "js"
    js.mkdir()
    template = browser_template(module)  # skips first where there is no browser
    repo = tmp_path / "repo"
    shutil.copytree(plots_repo, repo)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    for n in range(4):
        subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", str(n)], cwd=repo, check=True)
    for library in module.LIBRARIES:  # the real libraries, as a --js folder
        start = template.index(f"<script>/* {library} */\n") + len(f"<script>/* {library} */\n")
        (js / f"{library}.min.js").write_text(template[start:template.index("\n</script>", start)].replace("<\\/script", "</script"))
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "plots_page.py"), "--js", str(js), "--repo", str(repo),
         "--out", str(tmp_path / "page"), "--screenshot", str(tmp_path / "diff.png"),
         "--diff", "HEAD~3", "HEAD~2", "HEAD~1", "HEAD", "workspace"],
        capture_output=True, text=True, timeout=500, env={**os.environ, "DVC_NO_ANALYTICS": "1"},
    )
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout.split("measured:", 1)[1])
    assert measured["images"] == measured["images_loaded"] == 5 * sum(p is None for p in plot_definitions().values())
    assert measured["widest_image"] <= module.WIDTH < measured["widest_chart"], measured
    (warning,) = result.stderr.strip().splitlines()
    width, height = module.page_size(measured)
    assert warning.startswith(f"warning: the page is {width} px wide, wider than the 1400 px window"), warning
    assert Image.open(tmp_path / "diff.png").size == (width, height)
