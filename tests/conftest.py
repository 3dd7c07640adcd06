import copy
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from cifar_resnet.config import TrainParams, validate_params
from cifar_resnet.data.arrays import ImageSet
from cifar_resnet.training import fit, seed_everything
from cifar_resnet.training.run import assemble_run

REPO = Path(__file__).resolve().parents[1]


def with_overrides(params: dict, overrides: dict) -> dict:
    """A copy of `params` with `section.key` overrides set, as `dvc exp run -S` does (a value may be a whole mapping)."""
    merged = copy.deepcopy(params)
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = merged
        for part in parents:
            node = node[part]
        assert leaf in node, f"{dotted} is not a key of params.yaml"  # a typo would silently test the default
        node[leaf] = value
    return merged


def write_params(folder: Path, overrides: dict | None = None, base: Path = REPO / "params.yaml") -> None:
    """folder/params.yaml: `base` (the repository's params unless named) with `section.key` overrides."""
    params = with_overrides(yaml.safe_load(base.read_text()), overrides or {})
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a test module (opt in with `pytest.mark.usefixtures("one_torch_thread")`).

    On a small, busy CPU box, OpenMP threads spin against each other (100x slowdowns seen).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def run_stage(tmp_path):
    """Run a stage script as DVC would, from a working folder holding its params.yaml."""

    def run(stage: str, *args: str, cwd: Path = tmp_path) -> subprocess.CompletedProcess:
        env = dict(os.environ, PYTHONPATH=str(REPO / "src"), PYTHONHASHSEED="0")  # as dvc.yaml's commands set it
        return subprocess.run(
            [sys.executable, str(REPO / "stages" / f"{stage}.py"), *args],
            cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
        )

    return run


def default_signals():
    """For the child: default SIGINT/SIGTERM handling, whatever the test runner inherited.

    A suite started from a background shell inherits SIGINT as ignored, and Python keeps
    an ignored SIGINT ignored, so Ctrl-C would never reach the stage under test.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def dvc_env(workdir: Path) -> dict[str, str]:
    """The environment for dvc in `workdir`: that copy's own library code, no analytics."""
    return dict(os.environ, PYTHONPATH=str(workdir / "src"), DVC_NO_ANALYTICS="1")


def dvc(workdir: Path, *args: str, check: bool = True, timeout: int = 1800) -> subprocess.CompletedProcess:
    """The real dvc CLI in `workdir`, running that copy's own library code."""
    result = run_showing_output(["dvc", *args], timeout, cwd=workdir, env=dvc_env(workdir))
    if check:
        assert result.returncode == 0, f"dvc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="session")
def smoke_template(tmp_path_factory) -> Path:
    """The smoke pipeline, run once per test session with scripts/smoke.py (results committed)."""
    workdir = tmp_path_factory.mktemp("smoke-template") / "repo"
    result = run_showing_output([sys.executable, str(REPO / "scripts" / "smoke.py"), "--workdir", str(workdir)],
                                timeout=1800)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    return workdir


def run_showing_output(command: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run that, when the command outlives `timeout`, fails with what it had printed."""
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)
    except subprocess.TimeoutExpired as err:
        output = (err.stdout or b"").decode(errors="replace") + (err.stderr or b"").decode(errors="replace")
        pytest.fail(f"{' '.join(command)} ran past {timeout:.0f} s; its output so far:\n{output}")


@pytest.fixture
def smoke_copy(smoke_template, tmp_path) -> Path:
    """A private copy of the smoke repository (git history, DVC cache and outputs included)."""
    import shutil

    copy = tmp_path / "repo"
    shutil.copytree(smoke_template, copy, symlinks=True)
    return copy


def experiment_rows(node):
    """Flatten `dvc exp show --json` into (params.yaml params, metrics) pairs, whatever the nesting."""
    if isinstance(node, dict):
        data = node.get("data")
        if isinstance(data, dict) and "params" in data:
            params = data["params"].get("params.yaml", {}).get("data", {})
            metrics = {path: value.get("data", {}) for path, value in (data.get("metrics") or {}).items()}
            yield node.get("name") or node.get("rev"), params, metrics
        for value in node.values():
            yield from experiment_rows(value)
    elif isinstance(node, list):
        for value in node:
            yield from experiment_rows(value)


# Small training runs shared by the training tests (tests import them: `from conftest import run_fit`).


def train_cfg(**overrides) -> TrainParams:
    """Validated train params: defaults with small-run overrides (nested dicts allowed)."""
    base = {"epochs": 3, "batch_size": 16, "max_lr": 0.5, "num_workers": 0, "device": "cpu"}
    return validate_params({"train": {**base, **overrides}}).train


def toy_images(n=64, seed=0):
    """Two classes that a tiny model separates at once: dark vs bright images."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    base = np.where(labels[:, None, None, None] == 1, 200, 50)
    images = np.clip(base + rng.integers(-30, 30, size=(n, 32, 32, 3)), 0, 255).astype(np.uint8)
    return ImageSet(images=images, labels=labels.astype(np.int64))


def tiny_model(num_classes=2):
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, num_classes))


def run_fit(tmp_path, cfg, train=None, val=None, seed=0, resume=None, model=None):
    train = train if train is not None else toy_images(64)
    val = val if val is not None else toy_images(32, seed=1)
    seed_everything(seed)
    model = model if model is not None else tiny_model()
    run = assemble_run(model, train, val, cfg, seed, torch.device("cpu"), num_classes=2)
    seen = []
    outcome = fit(run, tmp_path / "ckpt", run_info={"key": "abc"}, on_epoch_end=seen.append, resume=resume)
    return run.model, outcome, seen
