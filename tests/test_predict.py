"""scripts/predict.py: classifies image files with an exported model, without this project's code."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cifar_resnet.data import ImageSet
from cifar_resnet.export import export_program, preprocess_info, save_program, save_scripted, script_model
from cifar_resnet.fileio import write_json
from cifar_resnet.models import build_model
from cifar_resnet.inference import make_eval_tensors
from conftest import REPO

SCRIPT = REPO / "scripts" / "predict.py"
CONFIG = {"classes": ["circle", "square", "star", "moon"], "mean": [0.5, 0.45, 0.4], "std": [0.25, 0.24, 0.26]}
LINE = re.compile(r"^(?P<path>.+): (?P<ranked>[^:]+)$")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # On a small, busy CPU box, OpenMP threads spin against each other (100x slowdowns seen).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> tuple[torch.nn.Module, Path]:
    """A tiny model exported as scripted.pt and program.pt2, with the stage's preprocess.json beside them."""
    torch.manual_seed(0)
    model = build_model("resnet18", len(CONFIG["classes"]), width=8)
    with torch.no_grad():
        model(torch.randn(8, 3, 32, 32))  # training mode: moves the BatchNorm statistics off their defaults
    model.eval()
    folder = tmp_path_factory.mktemp("export")
    save_scripted(script_model(model), folder / "scripted.pt")
    save_program(export_program(model, torch.randn(2, 3, 32, 32)), folder / "program.pt2")
    write_json(folder / "preprocess.json", preprocess_info(CONFIG))
    return model, folder


@pytest.fixture(scope="module")
def pngs(tmp_path_factory) -> tuple[np.ndarray, list[Path]]:
    """Four random 32x32 RGB images written as PNG (lossless: the script sees these exact pixels)."""
    pixels = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    folder = tmp_path_factory.mktemp("images")
    paths = [folder / f"image {i}.png" for i in range(len(pixels))]  # a space in the name on purpose
    for image, path in zip(pixels, paths):
        Image.fromarray(image).save(path)
    return pixels, paths


def run_predict(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def parse_line(line: str) -> tuple[str, list[tuple[str, float]]]:
    """'path: cls 91.2%, cls 5.0%' -> (path, [(cls, 0.912), (cls, 0.05)])."""
    match = LINE.match(line)
    assert match, line
    ranked = [item.rsplit(" ", 1) for item in match["ranked"].split(", ")]
    return match["path"], [(name, float(percent.rstrip("%")) / 100) for name, percent in ranked]


def eager_probabilities(model: torch.nn.Module, pixels: np.ndarray) -> torch.Tensor:
    """The pipeline's own normalisation and the eager model: what the script must reproduce."""
    images, _ = make_eval_tensors(ImageSet(pixels, np.zeros(len(pixels), dtype=np.int64)), CONFIG["mean"], CONFIG["std"])
    with torch.no_grad():
        return model(images).softmax(dim=1)


@pytest.mark.parametrize("model_file", ["scripted.pt", "program.pt2"])
def test_predictions_match_the_eager_model(model_file, export_dir, pngs, tmp_path) -> None:
    model, folder = export_dir
    pixels, paths = pngs
    result = run_predict("--model", folder / model_file, "--top", "2", *paths, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == len(paths)
    expected = eager_probabilities(model, pixels)
    for line, path, probabilities in zip(lines, paths, expected):
        printed_path, ranked = parse_line(line)
        assert printed_path == str(path)
        assert len(ranked) == 2
        assert ranked[0][0] == CONFIG["classes"][int(probabilities.argmax())]
        for name, probability in ranked:
            assert probability == pytest.approx(float(probabilities[CONFIG["classes"].index(name)]), abs=0.0006)
        assert ranked[0][1] >= ranked[1][1]


def test_other_sizes_and_modes_are_converted_and_top_is_capped(export_dir, tmp_path) -> None:
    model, folder = export_dir
    grey = tmp_path / "grey.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (50, 40), dtype=np.uint8)).save(grey)
    result = run_predict("--model", folder / "scripted.pt", "--top", "10", grey, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    _, ranked = parse_line(result.stdout.strip())
    assert sorted(name for name, _ in ranked) == sorted(CONFIG["classes"])  # all four, not ten
    assert sum(p for _, p in ranked) == pytest.approx(1.0, abs=0.003)


@pytest.mark.parametrize(
    "case, expected",
    [("missing image", "no such file"), ("text file named .png", "not an image"), ("missing preprocess", "preprocess.json")],
)
def test_bad_input_is_one_line_on_stderr_and_exit_1(case, expected, export_dir, pngs, tmp_path) -> None:
    _, folder = export_dir
    _, paths = pngs
    model_path = folder / "scripted.pt"
    if case == "missing image":
        args = [model_path, paths[0], tmp_path / "absent.png"]
    elif case == "text file named .png":
        (tmp_path / "notes.png").write_text("not pixels")
        args = [model_path, tmp_path / "notes.png"]
    else:
        (tmp_path / "lonely.pt").write_bytes(model_path.read_bytes())  # no preprocess.json beside it
        args = [tmp_path / "lonely.pt", paths[0]]
    result = run_predict("--model", *args, cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and expected in lines[0]
    assert result.stdout == ""  # no predictions for the good images either: inputs are checked first


def test_the_script_imports_only_torch_pil_numpy_and_the_standard_library() -> None:
    tree = ast.parse(SCRIPT.read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    third_party = imported - set(sys.stdlib_module_names)
    assert third_party == {"torch", "PIL", "numpy"}
