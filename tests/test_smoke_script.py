"""scripts/smoke.py's copy: only the files git lists, and params.yaml merged with its comments kept."""

import importlib.util
import subprocess

import yaml

from conftest import REPO


def load_smoke():
    """scripts/smoke.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("smoke", REPO / "scripts" / "smoke.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def git(repo, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@localhost", *args], cwd=repo, check=True,
                   capture_output=True)


def test_the_copy_holds_what_git_lists_never_ignored_files_or_results(tmp_path):
    smoke = load_smoke()
    repo = tmp_path / "repo"
    for name, text in {
        ".gitignore": ".venv/\n*.secret\n", "dvc.yaml": "stages: {}\n", "src/lib.py": "x = 1\n",
        "gone.txt": "deleted later\n", "metrics/eval.json": "{}\n", "metrics.json": "{}\n", "dvc.lock": "schema: '2.0'\n",
    }.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "start")
    (repo / "gone.txt").unlink()  # tracked, deleted from the work tree
    (repo / "new.py").write_text("y = 2\n")  # untracked, not ignored: part of your work, copied
    (repo / ".venv" / "bin").mkdir(parents=True)
    (repo / ".venv" / "bin" / "python").write_text("not a python")
    (repo / "token.secret").write_text("hunter2")

    assert smoke.repository_files(repo) == [".gitignore", "dvc.yaml", "new.py", "src/lib.py"]
    copy = tmp_path / "copy"
    smoke.copy_repository(copy, repo)
    assert sorted(str(p.relative_to(copy)) for p in copy.rglob("*") if p.is_file()) == [
        ".gitignore", "dvc.yaml", "new.py", "src/lib.py"]


def test_the_profile_is_merged_over_params_keeping_its_comments(tmp_path):
    smoke = load_smoke()
    params = tmp_path / "params.yaml"
    params.write_text(
        "# top comment\n"
        "seed: 42            # randomness\n"
        "data:\n"
        "  dataset: cifar10  # which data\n"
        "  source: null      # offline: a path\n"
        "  synthetic:\n"
        "    train_size: 5000\n"
        "    seed: 0\n"
        "export:\n"
        "  latency_batches: [1, 64]  # timed batch sizes\n"
    )
    profile = tmp_path / "profile.yaml"
    profile.write_text("data:\n  dataset: shapes\n  synthetic:\n    train_size: 400\nexport:\n  latency_batches: [1, 8]\n")
    smoke.apply_profile(params, profile)
    text = params.read_text()
    assert yaml.safe_load(text) == {
        "seed": 42,
        "data": {"dataset": "shapes", "source": None, "synthetic": {"train_size": 400, "seed": 0}},
        "export": {"latency_batches": [1, 8]},
    }
    assert text.splitlines() == [
        "# top comment",
        "seed: 42            # randomness",
        "data:",
        "  dataset: shapes   # which data",
        "  source: null      # offline: a path",
        "  synthetic:",
        "    train_size: 400",
        "    seed: 0",
        "export:",
        "  latency_batches: [1, 8]   # timed batch sizes",
    ]
