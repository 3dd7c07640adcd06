"""scripts/ci_report.py (the pull request's report) on the smoke pipeline, and the workflow that posts it."""

import importlib.util
import re
import subprocess
import sys

import pytest
import yaml

from conftest import REPO, dvc, dvc_env

SCRIPT = REPO / "scripts" / "ci_report.py"
WORKFLOW = REPO / ".github" / "workflows" / "ci.yml"
PICTURES = ["plots/training/overview.png", "plots/eval/confusion_normalised.png", "plots/eval/reliability.png",
            "plots/eval/wrong.png", "plots/gradcam/grid.png"]


def load_script():
    """scripts/ci_report.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("ci_report", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def report(workdir, *args, cwd=None):
    """Run the script as CI does, with the copy's own library on the path."""
    return subprocess.run([sys.executable, str(SCRIPT), "--repo", str(workdir), *args], cwd=cwd or workdir,
                          env=dvc_env(workdir), capture_output=True, text=True, timeout=600)


def embedded_images(report_path):
    """The local pictures report.md embeds, as paths relative to its folder."""
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report_path.read_text())


def git(repo, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@localhost", *args], cwd=repo, check=True,
                   capture_output=True)


# Quick checks: the pieces, and bad input.


def test_the_pictures_are_those_dvc_yaml_lists_under_plots():
    assert load_script().picture_plots(REPO) == PICTURES


def test_a_base_without_metrics_is_told_from_one_whose_metrics_changed():
    first_run = {"metrics.json": {"test.acc": {"old": None, "new": 0.9}}}
    changed = {"metrics.json": {"test.acc": {"old": 0.8, "new": 0.9, "diff": 0.1}, "tta.acc": {"old": None, "new": 1}}}
    script = load_script()
    assert not script.base_has_metrics(first_run)
    assert script.base_has_metrics(changed)


def test_the_base_defaults_to_the_pull_requests_target_on_github(monkeypatch):
    script = load_script()
    monkeypatch.delenv("GITHUB_BASE_REF", raising=False)
    assert script.default_base() == "main"
    monkeypatch.setenv("GITHUB_BASE_REF", "develop")
    assert script.default_base() == "origin/develop"


def test_bad_input_is_one_line_and_writes_nothing(tmp_path):
    not_dvc = tmp_path / "plain"
    not_dvc.mkdir()
    result = report(not_dvc, "--out", str(tmp_path / "report.md"))
    assert result.returncode == 1 and result.stderr.strip().count("\n") == 0, result.stderr
    assert result.stderr.startswith("error: ") and "no dvc.yaml" in result.stderr

    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "dvc.yaml").write_text("stages: {}\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "start")
    result = report(repo, "--base", "no-such-branch", "--out", str(tmp_path / "report.md"))
    assert result.returncode == 1 and result.stderr.strip().count("\n") == 0, result.stderr
    assert "unknown base revision 'no-such-branch'" in result.stderr
    assert not (tmp_path / "report.md").exists() and not (tmp_path / "report_files").exists()


# The workflow: a test cannot run GitHub, but it checks the steps that matter.


def workflow():
    return yaml.safe_load(WORKFLOW.read_text())


def run_lines(job):
    return [step["run"] for step in job["steps"] if "run" in step]


def test_ci_tests_the_lowest_and_highest_python_with_the_cpu_build_then_the_readme_commands():
    job = workflow()["jobs"]["test"]
    versions = job["strategy"]["matrix"]["python-version"]
    # A regex, not tomllib: the workflow runs this test on Python 3.10 too, which has no tomllib.
    lowest = re.search(r'^requires-python = ">=([0-9.]+)"$', (REPO / "pyproject.toml").read_text(), re.M).group(1)
    assert versions[0] == lowest and len(versions) == 2
    assert tuple(map(int, versions[1].split("."))) > tuple(map(int, lowest.split(".")))
    readme_commands = (REPO / ".ci" / "run").read_text().splitlines()[-2:]
    assert readme_commands == ["pip install -e '.[dev]'", "pytest"]
    cpu = "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu"
    assert run_lines(job) == [cpu, *readme_commands]


def test_a_pull_request_gets_the_report_posted_with_cml():
    job = workflow()["jobs"]["report"]
    assert job["if"] == "github.event_name == 'pull_request'"
    assert any(step.get("uses", "").startswith("iterative/setup-cml@") for step in job["steps"])
    lines = "\n".join(run_lines(job))
    assert "scripts/smoke.py" in lines and "scripts/ci_report.py" in lines
    assert lines.index("scripts/ci_report.py") < lines.index("cml comment create --publish report.md")


# On the smoke pipeline, with the real dvc CLI.


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_a_first_run_says_the_base_has_no_metrics_and_shows_them(smoke_copy, tmp_path):
    # The smoke copy's first commit holds the code and params, its second the results.
    out = tmp_path / "out" / "report.md"
    result = report(smoke_copy, "--base", "HEAD~1", "--out", str(out))
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert "`HEAD~1` has no metrics yet (first run); this revision's metrics:" in text
    assert "| metrics.json" in text and "Traceback" not in text + result.stderr
    assert "No parameter changed against `HEAD~1`." in text
    images = embedded_images(out)
    assert len(images) == len(PICTURES) and all((out.parent / image).stat().st_size > 1000 for image in images)


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_a_branch_gets_its_metrics_and_params_diff_against_main_and_the_pictures(smoke_copy):
    git(smoke_copy, "checkout", "-q", "-b", "feature")
    params = yaml.safe_load((smoke_copy / "params.yaml").read_text())
    # Only evaluate reruns, and the headline metrics.json loses its TTA accuracy.
    params["evaluate"]["tta"] = False
    (smoke_copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc(smoke_copy, "repro")

    result = report(smoke_copy, "--base", "main", "--out", "report.md")
    assert result.returncode == 0, result.stderr
    out = smoke_copy / "report.md"
    text = out.read_text()
    metrics = text[text.index("## Metrics"):text.index("## Params")]
    params_part = text[text.index("## Params"):text.index("## Plots")]
    # dvc's own Markdown tables: a header, and one row per changed metric / param.
    assert re.search(r"\|\s*Path\s*\|\s*Metric\s*\|\s*main\s*\|\s*workspace\s*\|\s*Change\s*\|", metrics), metrics
    assert re.search(r"\|\s*metrics\.json\s*\|\s*tta\.acc\s*\|\s*[0-9.]+\s*\|\s*-\s*\|", metrics), metrics
    assert "test.acc" not in metrics, metrics  # the predictions did not change, so neither did accuracy
    assert re.search(r"\|\s*params\.yaml\s*\|\s*evaluate\.tta\s*\|\s*True\s*\|\s*False\s*\|", params_part), \
        params_part
    images = embedded_images(out)
    assert images == [f"report_files/images/{path.replace('/', '__')}" for path in PICTURES]
    for image, path in zip(images, PICTURES):
        assert (out.parent / image).read_bytes() == (smoke_copy / path).read_bytes()
    assert (smoke_copy / "report_files" / "plots" / "index.html").stat().st_size > 0
