"""Beyond one run, through the real dvc CLI: a queued parameter sweep and a DVC remote round trip."""

import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from conftest import dvc, dvc_env, experiment_rows

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(3600)]  # the smoke run is set up inside the first test


def start_queue_workers(workdir, jobs: int, log) -> None:
    """`dvc queue start -j N`, its output to a file, not a pipe.

    The workers are daemons that inherit the command's output. With pipes, waiting for the
    command means waiting until every worker exits, and a dvc-task worker sometimes stays
    idle after its monitor has shut it down (seen here: both runs succeeded, one worker
    lingered, the test hung). The queue's own status says when the work is done.
    """
    subprocess.run(["dvc", "queue", "start", "-j", str(jobs)], cwd=workdir, env=dvc_env(workdir), stdout=log,
                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=120, check=True)


def stop_queue_workers(workdir) -> None:
    """Kill whatever worker is left, by the pid files dvc keeps for them."""
    for pid_file in (workdir / ".dvc" / "tmp" / "exps" / "celery").glob("*.pid"):
        try:
            os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)
        except (ValueError, ProcessLookupError, PermissionError):
            pass


def test_queued_sweep_runs_both_points_in_parallel_and_lists_them(smoke_copy, tmp_path):
    dvc(smoke_copy, "exp", "run", "--queue", "-S", "train.max_lr=0.02,0.08", "-S", "train.epochs=1")
    try:
        with open(tmp_path / "queue-start.log", "w") as log:
            start_queue_workers(smoke_copy, 2, log)
        deadline = time.monotonic() + 600
        while True:
            status = dvc(smoke_copy, "queue", "status").stdout
            if not any(word in status for word in ("Queued", "Running")) or time.monotonic() > deadline:
                break
            time.sleep(2)
    finally:
        stop_queue_workers(smoke_copy)
    assert status.count("Success") == 2 and "Failed" not in status, status
    rows = experiment_rows(json.loads(dvc(smoke_copy, "exp", "show", "--json").stdout))
    found = {(params["train"]["max_lr"], params["train"]["epochs"]): metrics["metrics.json"]
             for _, params, metrics in rows if "metrics.json" in metrics and "train" in params}
    assert (0.02, 1) in found and (0.08, 1) in found, sorted(found)
    # The workspace is untouched by queued runs: still the committed smoke baseline.
    assert "max_lr: 0.05" in (smoke_copy / "params.yaml").read_text()


def test_remote_round_trip_restores_outputs_without_retraining(smoke_copy, tmp_path):
    remote = tmp_path / "remote"
    dvc(smoke_copy, "remote", "add", "-d", "local", str(remote))
    dvc(smoke_copy, "push")
    model_bytes = (smoke_copy / "models" / "model.pt").read_bytes()
    for output in ("data", "models"):
        shutil.rmtree(smoke_copy / output)
    shutil.rmtree(smoke_copy / ".dvc" / "cache")
    dvc(smoke_copy, "pull")
    assert (smoke_copy / "models" / "model.pt").read_bytes() == model_bytes
    status = dvc(smoke_copy, "status")
    assert "up to date" in status.stdout, status.stdout
    assert "Running stage" not in dvc(smoke_copy, "repro").stdout
