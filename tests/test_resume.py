"""Interrupting a real training process and resuming it gives the uninterrupted result."""

import json
import os
import signal
import subprocess
import sys

import pytest
import yaml

from conftest import REPO

EPOCHS = 4


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder with tiny shapes data already split, and params for a 4-epoch CPU run."""
    folder = tmp_path_factory.mktemp("resume")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(dataset="shapes", synthetic={"train_size": 400, "test_size": 40, "seed": 1})
    params["model"].update(arch="resnet18", width=4)
    params["train"].update(epochs=EPOCHS, batch_size=32, num_workers=0, device="cpu")
    # CutMix, dropout-like randomness and per-image augmentation all have to replay exactly.
    params["train"]["augment"]["cutmix"]["p"] = 0.5
    params["train"]["augment"]["erasing"]["p"] = 0.3
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    for stage, args in (("download", ["--out", "raw"]), ("split", ["--raw", "raw", "--out", "prepared"])):
        subprocess.run([sys.executable, str(REPO / "stages" / f"{stage}.py"), *args], cwd=folder, check=True,
                       env=dict(os.environ, PYTHONPATH=str(REPO / "src")), capture_output=True)
    return folder


def train_command(name):
    return [sys.executable, str(REPO / "stages" / "train.py"), "--data", "prepared", "--model", f"{name}/model.pt",
            "--config", f"{name}/model.json", "--baseline", f"{name}/baseline.pt", "--summary", f"{name}/summary.json",
            "--checkpoints", f"{name}/checkpoints", "--live", f"{name}/live"]


def env():
    return dict(os.environ, PYTHONPATH=str(REPO / "src"))


def run_to_end(folder, name):
    result = subprocess.run(train_command(name), cwd=folder, env=env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result


def interrupt_after_epoch(folder, name, epoch, sig):
    """Start training, wait until `epoch` is logged, then send `sig`; returns the finished process."""
    process = subprocess.Popen(train_command(name), cwd=folder, env=env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    for line in process.stdout:
        if line.startswith(f"epoch {epoch}/{EPOCHS}"):
            process.send_signal(sig)
            break
    _, stderr = process.communicate(timeout=120)
    return process.returncode, stderr


def curves(folder, name):
    """Every dvclive series as text, plus the summary: what `dvc plots` and `dvc exp show` read."""
    live = folder / name / "live"
    tsvs = {p.relative_to(live).as_posix(): p.read_text() for p in sorted(live.rglob("*.tsv"))}
    return tsvs, json.loads((live / "metrics.json").read_text())


@pytest.fixture(scope="module")
def uninterrupted(workdir):
    run_to_end(workdir, "straight")
    return curves(workdir, "straight")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=["kill-9", "sigterm", "ctrl-c"])
def test_interrupted_run_resumes_to_the_same_result(workdir, uninterrupted, sig):
    name = f"interrupted-{sig.name}"
    returncode, stderr = interrupt_after_epoch(workdir, name, 2, sig)
    assert returncode != 0
    if sig != signal.SIGKILL:
        # A clean stop: one line that says what to do, no traceback.
        assert stderr.strip().splitlines()[-1].startswith("error: interrupted after epoch")
        assert "Traceback" not in stderr
    assert not (workdir / name / "model.pt").exists()
    leftovers = [p.name for p in (workdir / name / "checkpoints").iterdir()]
    assert all(p.endswith(".pt") and not p.startswith(".") for p in leftovers), leftovers

    resumed = run_to_end(workdir, name)
    assert "resuming from" in resumed.stdout and "after epoch 2" in resumed.stdout
    tsvs, summary = curves(workdir, name)
    assert tsvs == uninterrupted[0]  # identical curves: no duplicated, missing or different epoch
    assert summary == uninterrupted[1]
    steps = [line.split("\t")[0] for line in tsvs["plots/metrics/val/acc.tsv"].splitlines()[1:]]
    assert steps == [str(e) for e in range(EPOCHS + 1)]


def test_checkpoint_of_other_parameters_is_not_resumed(workdir, uninterrupted):
    name = "changed"
    returncode, _ = interrupt_after_epoch(workdir, name, 1, signal.SIGKILL)
    assert returncode != 0
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["train"]["max_lr"] = 0.05
    changed = workdir / "changed-params"
    changed.mkdir()
    (changed / "params.yaml").write_text(yaml.safe_dump(params))
    (changed / "prepared").symlink_to(workdir / "prepared")
    (changed / name).symlink_to(workdir / name)
    result = run_to_end(changed, name)
    assert "was made with other parameters" in result.stdout and "starting fresh" in result.stdout
    assert curves(changed, name)[1]["step"] == EPOCHS
