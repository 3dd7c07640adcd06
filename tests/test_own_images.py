"""docs/own-images.md's CPU-sized first run, as written there, on a small generated folder.

The command is read from the page itself, so the documented example and the tested one
cannot drift apart; only data.source is pointed at the folder the test writes.
"""

import importlib.util
import json
import re
import shlex
import subprocess

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, dvc

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1800)]

CLASSES = {"blue": (0, 0, 200), "green": (0, 170, 0), "red": (210, 0, 0)}  # sorted, as the folder reader sorts


def documented_command() -> list[str]:
    """The `dvc exp run` of docs/own-images.md's first bash block, as argv."""
    page = (REPO / "docs" / "own-images.md").read_text()
    block = re.search(r"```bash\n(dvc exp run .*?)\n(?!  )", page, re.S).group(1)
    return shlex.split(block.replace("\\\n", " "))


def write_folder(root, train: int, test: int) -> None:
    """ImageFolder layout, JPEGs and PNGs of assorted sizes: one colour per class, under noise."""
    rng = np.random.default_rng(0)
    for part, count in (("train", train), ("test", test)):
        for name, colour in CLASSES.items():
            folder = root / part / name
            folder.mkdir(parents=True)
            for i in range(count):
                size = (int(rng.integers(24, 80)), int(rng.integers(24, 80)))
                pixels = np.clip(np.array(colour) + rng.normal(0, 40, (size[1], size[0], 3)), 0, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i:03d}.{'png' if i % 3 else 'jpg'}")


def test_the_documented_cpu_run_trains_on_a_folder(tmp_path):
    command = documented_command()
    assert command[:3] == ["dvc", "exp", "run"] and "data.dataset=folder" in command
    source = command.index(next(arg for arg in command if arg.startswith("data.source=")))
    images = tmp_path / "pets"
    write_folder(images, train=40, test=10)
    command[source] = f"data.source={images}"

    spec = importlib.util.spec_from_file_location("smoke", REPO / "scripts" / "smoke.py")
    smoke = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(smoke)
    workdir = tmp_path / "repo"
    smoke.copy_repository(workdir)  # the files a fresh clone has
    smoke.git(workdir, "init", "-q", "-b", "main")
    smoke.git(workdir, "add", "-A")
    smoke.git(workdir, "commit", "-q", "-m", "clone")

    dvc(workdir, *command[1:])
    assert json.loads((workdir / "data" / "raw" / "classes.json").read_text()) == sorted(CLASSES)
    test = json.loads((workdir / "metrics" / "eval.json").read_text())["test"]
    assert test["acc"] > 0.9, test  # colour is all there is to learn: far above the 1/3 of chance
    for png in ("plots/eval/confusion_normalised.png", "plots/gradcam/grid.png"):
        assert (workdir / png).stat().st_size > 1000, png
    rows = dvc(workdir, "exp", "show", "--csv").stdout
    assert "my-images" in rows
