"""The whole pipeline through the real dvc CLI, on the offline smoke profile."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from conftest import REPO

pytestmark = pytest.mark.e2e


def dvc(workdir, *args, check=True):
    env = dict(os.environ, PYTHONPATH=str(workdir / "src"), DVC_NO_ANALYTICS="1")
    result = subprocess.run(["dvc", *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=900)
    if check:
        assert result.returncode == 0, f"dvc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def declared_outputs(workdir):
    """Every out and metric path that dvc.yaml declares."""
    stages = yaml.safe_load((workdir / "dvc.yaml").read_text())["stages"]
    for stage in stages.values():
        for entry in stage.get("outs", []) + stage.get("metrics", []):
            yield entry if isinstance(entry, str) else next(iter(entry))


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


@pytest.fixture(scope="module")
def smoke_repo(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("smoke") / "repo"
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "smoke.py"), "--workdir", str(workdir)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert "smoke pipeline done" in result.stdout
    return workdir


def test_smoke_pipeline_writes_every_declared_output(smoke_repo):
    missing = [path for path in declared_outputs(smoke_repo) if not (smoke_repo / path).exists()]
    assert missing == []
    for png in ("plots/training/overview.png", "plots/gradcam/grid.png"):
        assert (smoke_repo / png).stat().st_size > 1000


def test_smoke_model_learns_well_above_chance(smoke_repo):
    test = json.loads((smoke_repo / "metrics" / "eval.json").read_text())["test"]
    classes = json.loads((smoke_repo / "models" / "model.json").read_text())["classes"]
    chance = 1 / len(classes)
    assert test["acc"] > 3 * chance, test


def test_export_parity_and_latency_are_recorded(smoke_repo):
    export = json.loads((smoke_repo / "metrics" / "export.json").read_text())
    assert set(export["ms_per_image"]) == {"eager", "traced", "scripted"}
    assert all(ms > 0 for ms in export["ms_per_image"].values())
    tolerance = yaml.safe_load((smoke_repo / "params.yaml").read_text())["export"]["tolerance"]
    assert max(export["parity_max_abs_diff"].values()) <= tolerance
    table = json.loads((smoke_repo / "models" / "export" / "latency.json").read_text())
    assert set(table["latency"]["eager"]) == {"mean_ms", "p50_ms", "p95_ms", "images_per_s"}
    assert (smoke_repo / "models" / "export" / "latency.md").read_text().count("\n") >= 5


def test_repro_again_runs_nothing_and_an_experiment_is_compared(smoke_repo):
    again = dvc(smoke_repo, "repro")
    assert "Running stage" not in again.stdout, again.stdout

    dvc(smoke_repo, "exp", "run", "-S", "train.max_lr=0.02", "-n", "lower-lr")
    rows = list(experiment_rows(json.loads(dvc(smoke_repo, "exp", "show", "--json").stdout)))
    by_lr = {params["train"]["max_lr"]: metrics for _, params, metrics in rows if params}
    assert {0.05, 0.02} <= set(by_lr), rows
    for metrics in (by_lr[0.05], by_lr[0.02]):
        assert 0.0 <= metrics["metrics/eval.json"]["test"]["acc"] <= 1.0

    plots = dvc(smoke_repo, "plots", "diff", "-o", "compare")
    index = smoke_repo / "compare" / "index.html"
    assert index.exists() and index.stat().st_size > 0, plots.stdout
    html = index.read_text()
    assert "Accuracy" in html and "Confusion matrix" in html
