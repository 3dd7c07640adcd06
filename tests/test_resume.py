"""Interrupting a real training process and resuming it gives the uninterrupted result."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, default_signals

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # real training processes, signalled

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
            "--checkpoints", f"{name}/checkpoints", "--resume", f"{name}/resume", "--live", f"{name}/live"]


def env():
    return dict(os.environ, PYTHONPATH=str(REPO / "src"))


def run_to_end(folder, name, command=None):
    result = subprocess.run(command or train_command(name), cwd=folder, env=env(), capture_output=True, text=True,
                            timeout=900, preexec_fn=default_signals)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    return result


def start_training(folder, name):
    return subprocess.Popen(train_command(name), cwd=folder, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=default_signals)


def wait_for_epoch(process, epoch) -> list[str]:
    """Read the child's output until it reports `epoch`; the lines read, for failure messages."""
    seen = []
    for line in process.stdout:
        seen.append(line)
        if line.startswith(f"epoch {epoch}/{EPOCHS}"):
            return seen
    raise AssertionError(f"training ended before epoch {epoch}:\n{''.join(seen)}\n{process.stderr.read()}")


def interrupt_after_epoch(folder, name, epoch, sig):
    """Start training, wait until `epoch` is logged, then send `sig`; returns the finished process."""
    process = start_training(folder, name)
    wait_for_epoch(process, epoch)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=600)
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
    leftovers = [p.name for p in (workdir / name / "resume").iterdir() if p.name != ".lock"]
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


def test_a_second_trainer_on_the_same_checkpoints_is_refused(workdir):
    first = start_training(workdir, "locked")
    try:
        wait_for_epoch(first, 1)
        second = subprocess.run(train_command("locked"), cwd=workdir, env=env(), capture_output=True, text=True,
                                timeout=600)
        assert second.returncode == 1, second.stderr
        assert second.stderr.strip().startswith("error: ") and "in use by another training run (pid" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        first.kill()
        first.communicate(timeout=600)


def test_the_trainer_stops_when_its_parent_dies(workdir, tmp_path):
    """kill -9 of the process that started training (dvc, in a pipeline) must not leave an orphan writing."""
    log, pid_file = tmp_path / "train.log", tmp_path / "train.pid"
    parent_code = (
        "import subprocess, sys, time\n"
        f"child = subprocess.Popen({train_command('orphan')!r}, stdout=open({str(log)!r}, 'w'), stderr=subprocess.STDOUT)\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(3600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code], cwd=workdir, env=env(), preexec_fn=default_signals)
    try:
        deadline = time.monotonic() + 600
        while f"epoch 1/{EPOCHS}" not in (log.read_text() if log.exists() else ""):
            assert time.monotonic() < deadline and parent.poll() is None, log.read_text() if log.exists() else ""
            time.sleep(0.2)
        trainer = int(pid_file.read_text())
        parent.kill()
        parent.wait(timeout=60)
        while pid_alive(trainer):
            assert time.monotonic() < deadline, f"the orphaned trainer {trainer} is still running:\n{log.read_text()}"
            time.sleep(0.2)
        assert "error: interrupted after epoch" in log.read_text()
    finally:
        parent.kill()


def pid_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie reaped by init counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "\nState:\tZ" in status.read_text())


def test_a_checkpoint_of_other_code_is_not_resumed_and_a_stage_runs_its_own_trees_library(workdir, tmp_path):
    """Stages import the src/ of their own tree (not the installed one), and that code is in the resume key."""
    tree = tmp_path / "tree"
    shutil.copytree(REPO / "stages", tree / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    init = tree / "src" / "cifar_resnet" / "__init__.py"
    init.write_text(init.read_text() + "\nprint('library of the copied tree')\n")
    command = [sys.executable, str(tree / "stages" / "train.py"), *train_command("copied")[2:]]
    process = subprocess.Popen(command, cwd=workdir, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, preexec_fn=default_signals)
    seen = wait_for_epoch(process, 1)
    process.kill()
    process.communicate(timeout=600)
    assert "library of the copied tree\n" in seen  # PYTHONPATH names the repo's src/, yet the copy's ran

    augment = tree / "src" / "cifar_resnet" / "training" / "augment.py"
    augment.write_text(augment.read_text() + "\n# an edit of the training code\n")
    result = run_to_end(workdir, "copied", command)
    assert "was made with other code (src/cifar_resnet/training/augment.py): starting fresh" in result.stdout
    assert curves(workdir, "copied")[1]["step"] == EPOCHS


def test_dvclive_gets_one_step_per_epoch_and_a_summary_of_results(workdir, uninterrupted):
    """What `dvc exp show`, `dvc plots` and DVC Studio read: steps 0..N once each, the best epoch, no LR end value."""
    tsvs, summary = uninterrupted
    for name in ("train/loss", "train/acc", "val/loss", "val/acc", "lr"):
        rows = tsvs[f"plots/metrics/{name}.tsv"].splitlines()
        steps = [row.split("\t")[0] for row in rows[1:]]
        # Epoch 0 is the untrained model: measured on validation only, no training loss yet.
        assert steps == [str(e) for e in range(0 if name.startswith("val") or name == "lr" else 1, EPOCHS + 1)], name
    val_acc = {int(row.split("\t")[0]): float(row.split("\t")[1]) for row in tsvs["plots/metrics/val/acc.tsv"].splitlines()[1:]}
    best_epoch = max(range(1, EPOCHS + 1), key=lambda e: (val_acc[e], -e))
    assert summary["step"] == EPOCHS and "lr" not in summary
    assert summary["best"] == {"val_acc": val_acc[best_epoch], "epoch": best_epoch}
    assert summary["val"]["acc"] == val_acc[EPOCHS]
