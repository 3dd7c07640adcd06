"""Run the whole pipeline offline on a tiny profile, in a throw-away copy of this repository.

    python scripts/smoke.py                      # copy to a new temp folder, run, report
    python scripts/smoke.py --workdir /tmp/smk   # choose the folder (must not exist)

The copy is made a git repository and committed, the profile is merged over its
params.yaml, and `dvc repro` runs there with the real dvc CLI. Your own workspace, its
dvc.lock and its results are never touched. The copy is kept so you can look inside
(`dvc exp show`, `dvc plots show`) and then delete it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
# Workspace state that must not leak into the copy: outputs, caches, the lock of real runs.
EXCLUDE_TOP = {".git", "data", "models", "dvclive", "plots", "metrics", "dvc_plots", "dvc.lock", ".pytest_cache", ".resume"}
EXCLUDE_DVC = {"cache", "tmp", "config.local"}
EXCLUDE_ANYWHERE = shutil.ignore_patterns("__pycache__", "*.egg-info")


def _ignore(folder: str, names: list[str]) -> set[str]:
    path = Path(folder)
    ignored = set(EXCLUDE_ANYWHERE(folder, names))
    if path == REPO:
        ignored |= EXCLUDE_TOP & set(names)
    elif path == REPO / ".dvc":
        ignored |= EXCLUDE_DVC & set(names)
    return ignored


def deep_merge(base: dict, override: dict) -> dict:
    """`override` wins key by key, recursing into nested sections."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def smoke_env(workdir: Path) -> dict[str, str]:
    """Run the copy's own library code, and keep dvc offline and quiet."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(workdir / "src"), env.get("PYTHONPATH")]))
    env["DVC_NO_ANALYTICS"] = "1"
    return env


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=cwd, env=env, check=True)


def git(workdir: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=smoke", "-c", "user.email=smoke@localhost", *args],
        cwd=workdir, check=True, stdout=subprocess.DEVNULL,
    )


def prepare_copy(workdir: Path, profile: Path) -> None:
    """Copy the repository, apply the profile to params.yaml, and commit it all."""
    shutil.copytree(REPO, workdir, ignore=_ignore)
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    overrides = yaml.safe_load(profile.read_text()) or {}
    (workdir / "params.yaml").write_text(yaml.safe_dump(deep_merge(params, overrides), sort_keys=False))
    git(workdir, "init", "-q", "-b", "main")
    git(workdir, "add", "-A")
    git(workdir, "commit", "-q", "-m", f"smoke profile {profile.name}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, help="folder for the copy (must not exist); default: a new temp folder")
    parser.add_argument("--profile", type=Path, default=REPO / "profiles" / "smoke.yaml")
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="cifar-smoke-")) / "repo"
    if workdir.exists():
        print(f"error: {workdir} already exists; pass a new --workdir", file=sys.stderr)
        return 2
    started = time.perf_counter()
    prepare_copy(workdir, args.profile.resolve())
    env = smoke_env(workdir)
    try:
        run(["dvc", "repro"], workdir, env)
    except subprocess.CalledProcessError as err:
        print(f"error: the smoke pipeline failed (exit {err.returncode}); see the output above. Copy kept in {workdir}", file=sys.stderr)
        return 1
    # Commit the results so `dvc exp show` in the copy has a baseline row to compare with.
    git(workdir, "add", "-A")
    git(workdir, "commit", "-q", "-m", "smoke results")
    test = json.loads((workdir / "metrics" / "eval.json").read_text())["test"]
    print(f"smoke pipeline done in {time.perf_counter() - started:.1f}s: test accuracy {test['acc']:.3f} "
          f"on {test['images']} images; results in {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
