"""Data-parallel training: two CPU processes with gloo, launched by the train stage through torchrun."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # torchrun launches real processes


def prepare(folder, nproc):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(dataset="digits", val_fraction=0.2)
    params["model"].update(arch="resnet18", width=8)
    params["train"].update(epochs=3, batch_size=64, max_lr=0.05, num_workers=0, device="cpu", nproc=nproc)
    (folder / "params.yaml").write_text(yaml.safe_dump(params))


def run(folder, *args):
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, *args], cwd=folder, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp")
    prepare(folder, 1)
    for stage, args in (("download", ["--out", "raw"]), ("split", ["--raw", "raw", "--out", "prepared"])):
        assert run(folder, str(REPO / "stages" / f"{stage}.py"), *args).returncode == 0
    return folder


def train(folder, name, nproc):
    prepare(folder, nproc)
    result = run(folder, str(REPO / "stages" / "train.py"), "--data", "prepared", "--model", f"{name}/model.pt",
                 "--config", f"{name}/model.json", "--baseline", f"{name}/baseline.pt", "--summary", f"{name}/summary.json",
                 "--checkpoints", f"{name}/checkpoints", "--resume", f"{name}/resume", "--live", f"{name}/live")
    assert result.returncode == 0, result.stdout + result.stderr
    return result, json.loads((folder / name / "live" / "metrics.json").read_text())


def test_two_gloo_processes_train_like_one(data):
    _, single = train(data, "single", 1)
    result, double = train(data, "double", 2)
    assert "launching 2 processes with torchrun" in result.stdout
    assert "x 2 processes" in result.stdout
    # Rank 0 alone logs: one line per epoch, not two.
    assert result.stdout.count("epoch 3/3") == 1
    assert sorted(p.name for p in (data / "double" / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    assert (data / "double" / "model.pt").exists() and double["step"] == 3
    # Same global batch, different sharding and BatchNorm statistics: close, not equal.
    assert single["val"]["acc"] > 0.3
    assert abs(double["val"]["acc"] - single["val"]["acc"]) < 0.15, (single, double)
