"""The whole pipeline through the real dvc CLI, on the offline smoke profile."""

import json
import os
import re
import shutil
import signal
import subprocess

import pytest
import yaml

from conftest import default_signals, dvc, dvc_env, experiment_rows

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(3600)]  # the smoke run is set up inside the first test


def declared_outputs(workdir):
    """Every out and metric path that dvc.yaml declares."""
    stages = yaml.safe_load((workdir / "dvc.yaml").read_text())["stages"]
    for stage in stages.values():
        for entry in stage.get("outs", []) + stage.get("metrics", []):
            yield entry if isinstance(entry, str) else next(iter(entry))


@pytest.fixture
def smoke_repo(smoke_template):
    """The session's smoke run, read-only (tests that change it take `smoke_copy`)."""
    return smoke_template


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


def test_evaluation_compares_baseline_tta_and_calibration_and_draws_every_figure(smoke_repo):
    metrics = json.loads((smoke_repo / "metrics" / "eval.json").read_text())
    # The smoke profile turns TTA on; its validation split fits the temperature.
    assert list(metrics) == ["test", "baseline", "tta", "calibrated"]
    assert metrics["test"]["acc"] > metrics["baseline"]["acc"]  # training beats the untrained weights
    for name in ("test", "baseline", "tta"):
        assert 0.0 <= metrics[name]["ece"] <= 1.0 and 0.0 <= metrics[name]["macro_recall"] <= 1.0, metrics[name]
    # The fitted temperature can only lower the test loss where validation and test agree: a
    # loose check, as the smoke validation split is small (400 images).
    calibrated = metrics["calibrated"]
    assert calibrated["fitted_on"] == 400 and calibrated["temperature"] > 0, calibrated
    assert calibrated["loss"] < metrics["test"]["loss"] * 1.1, calibrated
    for name in ("confusion_normalised.png", "reliability.png", "wrong.png"):
        assert (smoke_repo / "plots" / "eval" / name).stat().st_size > 1000, name


def test_export_parity_and_latency_are_recorded(smoke_repo):
    export = json.loads((smoke_repo / "metrics" / "export.json").read_text())
    params = yaml.safe_load((smoke_repo / "params.yaml").read_text())["export"]
    batches = {f"b{b}" for b in params["latency_batches"]}
    # Timings are no metrics (they change between runs of one model): only the parity figure is.
    assert list(export) == ["parity_max_abs_diff_micro"]
    assert export["parity_max_abs_diff_micro"] <= params["tolerance"] * 1e6
    parity = json.loads((smoke_repo / "plots" / "export" / "parity.json").read_text())
    assert set(parity["max_abs_diff"]) == {"traced", "scripted", "exported", "onnxruntime"}
    out = smoke_repo / "models" / "export"
    assert {"traced.pt", "scripted.pt", "program.pt2", "model.onnx", "preprocess.json"} <= {p.name for p in out.iterdir()}
    table = json.loads((smoke_repo / "plots" / "export" / "latency.json").read_text())
    eager = [row for row in table["rows"] if row["model"] == "eager"]
    assert {f"b{row['batch']}" for row in eager} == batches
    assert {"mean_ms", "p50_ms", "p95_ms", "ms_per_image", "images_per_s"} <= set(eager[0])
    assert (smoke_repo / "plots" / "export" / "latency.md").read_text().count("\n") >= 5


def test_repro_again_runs_nothing(smoke_copy):
    again = dvc(smoke_copy, "repro")
    assert "Running stage" not in again.stdout, again.stdout


@pytest.fixture(scope="module")
def experimented(smoke_template, tmp_path_factory):
    """A copy of the smoke run after one experiment, `-S train.max_lr=0.1`: run once, read by the
    tests below (one that changes it works on its own copy)."""
    repo = tmp_path_factory.mktemp("experimented") / "repo"
    shutil.copytree(smoke_template, repo, symlinks=True)
    dvc(repo, "exp", "run", "-S", "train.max_lr=0.1", "-n", "max-lr-0.1")
    return repo


def test_an_experiment_is_compared_with_the_committed_run(experimented, smoke_template):
    rows = list(experiment_rows(json.loads(dvc(experimented, "exp", "show", "--json").stdout)))
    by_lr = {params["train"]["max_lr"]: metrics for _, params, metrics in rows if params}
    assert {0.05, 0.1} <= set(by_lr), rows
    # Each row shows the metrics its own run wrote: the committed baseline's, and the experiment's,
    # which `dvc exp run` left in the workspace. metrics.json is the one metrics file DVC compares.
    committed = json.loads((smoke_template / "metrics.json").read_text())
    experiment = json.loads((experimented / "metrics.json").read_text())
    assert by_lr[0.05] == {"metrics.json": committed} and by_lr[0.1] == {"metrics.json": experiment}
    assert list(experiment) == ["test", "tta", "best", "size_mb"], experiment  # the smoke profile turns TTA on


def test_back_to_the_committed_params_nothing_retrains_and_plots_compare(experimented, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(experimented, repo, symlinks=True)
    # The workspace holds the experiment's results; DVC's run-cache restores the committed ones.
    back = dvc(repo, "exp", "run", "-S", "train.max_lr=0.05", "-n", "back")
    assert "Stage 'train' is cached - skipping run" in back.stdout and "epoch 1/" not in back.stdout, back.stdout

    plots = dvc(repo, "plots", "diff", "-o", "compare")
    index = repo / "compare" / "index.html"
    assert index.exists() and index.stat().st_size > 0, plots.stdout
    html = index.read_text()
    assert "Accuracy" in html and "Confusion matrix" in html


HEADLINE_COLUMNS = ("test.acc", "test.loss", "tta.acc", "best.val_acc")  # size_mb: the same in both runs
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[=>]|\r")


def terminal_screen(workdir, command: str, columns: int = 200) -> list[str]:
    """The first screen of `command` in a real terminal `columns` wide: the lines, cut at its edge.

    util-linux `script` gives dvc a pseudo-terminal of that width, so it lays out and pages its
    table as for a person. Its default pager, `less -FRSX`, would show each line's first
    `columns` characters and wait for a key when a line is longer; `cat` as the pager receives
    the same table, and cutting its lines gives that screen.
    """
    env = {**dvc_env(workdir), "TERM": "xterm", "DVC_PAGER": "cat"}
    env.pop("LESS", None), env.pop("PAGER", None), env.pop("COLUMNS", None)
    shown = subprocess.run(["script", "-qec", f"stty cols {columns} rows 50; {command}", "/dev/null"], cwd=workdir,
                           env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600, check=True)
    return [line[:columns] for line in ANSI.sub("", shown.stdout).splitlines()]


def test_exp_show_only_changed_fits_a_200_column_terminal(experimented):
    """After one changed knob, plain `dvc exp show --only-changed` shows the headline metrics and
    that knob within 200 columns, none of them hidden behind DVC's `…` column."""
    screen = terminal_screen(experimented, "dvc exp show --only-changed")
    header = next(line for line in screen if "Experiment" in line)
    for column in (*HEADLINE_COLUMNS, "train.max_lr"):
        assert re.search(rf"(^|\s){re.escape(column)}(\s|$)", header), "\n".join(screen)
    cut = header.find("…")
    assert cut == -1 or cut > header.index("train.max_lr"), "\n".join(screen)
    (row,) = [line for line in screen if "[max-lr-0.1]" in line]
    assert row[header.index("train.max_lr"):].split()[0] == "0.1", "\n".join(screen)
    # The dvclive summary's train.loss/train.acc are no DVC metrics: no column mixes with the train params.
    assert not re.search(r"(^|\s)train\.(loss|acc)(\s|$)", header), header


def set_params(workdir, section, **values):
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params[section].update(values)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_only_knobs_that_change_the_model_make_train_stale(smoke_copy):
    """train.num_workers is no dep of the train stage (config.RESULT_NEUTRAL_TRAIN_KEYS); train.max_lr is."""
    set_params(smoke_copy, "train", num_workers=1)
    assert json.loads(dvc(smoke_copy, "status", "--json").stdout) == {}
    set_params(smoke_copy, "train", max_lr=0.03)
    stale = dvc(smoke_copy, "status", "--json").stdout
    assert list(json.loads(stale)) == ["train"], stale
    assert "train.max_lr" in stale and "num_workers" not in stale, stale


def test_a_failed_stage_records_nothing_and_loses_nothing(smoke_copy):
    lock = (smoke_copy / "dvc.lock").read_bytes()
    model = (smoke_copy / "models" / "model.pt").read_bytes()
    set_params(smoke_copy, "train", batch_size=100_000)
    failed = dvc(smoke_copy, "repro", check=False)
    assert failed.returncode != 0
    assert "train.batch_size = 100000 is larger than the" in failed.stdout + failed.stderr
    assert (smoke_copy / "dvc.lock").read_bytes() == lock
    # DVC clears a stage's outputs before running it. Nothing is lost all the same: the
    # committed params, metrics and curves come back from git, the cached models from the cache.
    subprocess.run(["git", "checkout", "--", "."], cwd=smoke_copy, check=True)
    dvc(smoke_copy, "checkout")
    assert (smoke_copy / "models" / "model.pt").read_bytes() == model
    assert "up to date" in dvc(smoke_copy, "status").stdout


def test_an_interrupted_repro_records_nothing_and_resumes(smoke_copy):
    lock = (smoke_copy / "dvc.lock").read_bytes()
    set_params(smoke_copy, "train", max_lr=0.03)
    # Only the train stage: it is the one that checkpoints and resumes; the stages after it
    # would only add their run time (the byte-identity test below reruns them all).
    process = subprocess.Popen(["dvc", "repro", "train"], cwd=smoke_copy, env=dvc_env(smoke_copy), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True, preexec_fn=default_signals)
    seen = []
    for line in process.stdout:  # stop the run as Ctrl-C would, once it has finished an epoch
        seen.append(line)
        if line.startswith("epoch 2/"):
            os.killpg(process.pid, signal.SIGINT)
            break
    output = "".join(seen) + process.stdout.read()
    assert process.wait(timeout=300) != 0, output
    assert "interrupted after epoch" in output, output
    assert (smoke_copy / "dvc.lock").read_bytes() == lock
    resumed = dvc(smoke_copy, "repro", "train")
    assert "resuming" in resumed.stdout.lower(), resumed.stdout
    assert (smoke_copy / "dvc.lock").read_bytes() != lock


def cached_output_hashes(workdir):
    """{path: md5} of every cached output in dvc.lock (uncached metrics and plots hold timings)."""
    lock = yaml.safe_load((workdir / "dvc.lock").read_text())["stages"]
    stages = yaml.safe_load((workdir / "dvc.yaml").read_text())["stages"]
    uncached = {next(iter(entry)) for stage in stages.values() for entry in stage.get("outs", []) + stage.get("metrics", [])
                if isinstance(entry, dict) and next(iter(entry.values())).get("cache") is False}
    return {out["path"]: out["md5"] for stage in lock.values() for out in stage.get("outs", []) if out["path"] not in uncached}


def test_the_same_code_data_and_params_give_the_same_bytes(smoke_template, smoke_copy):
    """A forced rerun of every stage reproduces every cached output byte for byte (so dvc.lock is unchanged).

    The rerun happens in a copy in another folder: no output depends on where the checkout
    lives, the exported models included (their files leave out torch's debug information,
    which names the model's source files by absolute path).
    """
    before = cached_output_hashes(smoke_template)
    assert {"models/model.pt", "models/baseline.pt", "models/checkpoints", "dvclive/plots", "data/prepared",
            "models/export"} <= set(before)
    dvc(smoke_copy, "repro", "--force")
    assert cached_output_hashes(smoke_copy) == before


def test_the_exported_model_is_a_registry_artifact_labelled_with_what_was_trained(smoke_repo):
    """DVC itself reads dvc.yaml's `artifacts:` entry: models/export, of type model, an export output,
    its labels templated from params.yaml (the smoke profile trains resnet18 on shapes)."""
    from dvc.repo import Repo

    artifact = Repo(str(smoke_repo)).artifacts.read()["dvc.yaml"]["cifar-resnet"]
    assert artifact.type == "model" and artifact.path == "models/export"
    assert artifact.labels == ["resnet18", "shapes"] and artifact.desc.startswith("resnet18 classifier trained on shapes")
    export_outs = yaml.safe_load((smoke_repo / "dvc.yaml").read_text())["stages"]["export"]["outs"]
    assert artifact.path in export_outs and (smoke_repo / artifact.path / "preprocess.json").stat().st_size > 0
