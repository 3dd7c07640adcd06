"""Beyond one run, through the real dvc CLI: a queued parameter sweep and a DVC remote round trip."""

import json
import shutil
import time

import pytest

from conftest import dvc

pytestmark = pytest.mark.e2e


def test_queued_sweep_runs_both_points_in_parallel_and_lists_them(smoke_copy):
    dvc(smoke_copy, "exp", "run", "--queue", "-S", "train.max_lr=0.02,0.08", "-S", "train.epochs=1")
    dvc(smoke_copy, "queue", "start", "-j", "2")
    deadline = time.monotonic() + 600
    while True:  # `queue start` may return before the workers finish
        status = dvc(smoke_copy, "queue", "status").stdout
        if not any(word in status for word in ("Queued", "Running")) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert status.count("Success") == 2 and "Failed" not in status, status
    rows = json.loads(dvc(smoke_copy, "exp", "show", "--json").stdout)
    found = {}

    def walk(node):
        if isinstance(node, dict):
            data = node.get("data")
            if isinstance(data, dict) and data.get("params"):
                train = data["params"]["params.yaml"]["data"]["train"]
                metrics = data.get("metrics") or {}
                if "metrics/eval.json" in metrics:
                    found[(train["max_lr"], train["epochs"])] = metrics["metrics/eval.json"]["data"]
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(rows)
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
