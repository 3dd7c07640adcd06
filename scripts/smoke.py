"""Run the whole pipeline offline on a tiny profile, in a throw-away copy of this repository.

    python scripts/smoke.py                      # copy to a new temp folder, run, report
    python scripts/smoke.py --workdir /tmp/smk   # choose the folder (must not exist)

The copy holds the files git lists (tracked and untracked, never git-ignored ones such as
.venv/), is made a git repository and committed, the profile is merged over its
params.yaml (comments kept), and `dvc repro` runs there with the real dvc CLI. Your own workspace, its
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
from collections.abc import Mapping, MutableMapping
from pathlib import Path

from ruamel.yaml import YAML

REPO = Path(__file__).resolve().parents[1]
# Results of real runs, even when committed: the copy starts from a clean pipeline.
EXCLUDE_TOP = {"data", "models", "dvclive", "plots", "metrics", "metrics.json", "dvc_plots", "dvc.lock"}


def repository_files(repo: Path = REPO) -> list[str]:
    """The files git would commit: tracked and untracked, never git-ignored ones (.venv/, caches, secrets).

    Paths are relative to `repo`; files deleted from the work tree and results of real runs
    (EXCLUDE_TOP) are left out.
    """
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=repo, check=True, capture_output=True, text=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        raise SystemExit(f"error: {repo} must be a git checkout: the smoke copy holds only the files git lists ({err})")
    names = sorted(set(filter(None, listed.split("\0"))))
    return [name for name in names if name.split("/")[0] not in EXCLUDE_TOP and (repo / name).is_file()]


def copy_repository(workdir: Path, repo: Path = REPO) -> None:
    """Copy repository_files() into the new folder `workdir`, keeping the layout."""
    for name in repository_files(repo):
        target = workdir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / name, target)


def merge_into(base: MutableMapping, override: Mapping) -> None:
    """`override` wins key by key, recursing into nested sections; `base` is changed in place.

    In place, so a ruamel.yaml round-trip mapping keeps its comments and key order.
    """
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), MutableMapping):
            merge_into(base[key], value)
        else:
            base[key] = value


def apply_profile(params_path: Path, profile: Path) -> None:
    """Merge the profile's values over params.yaml, keeping params.yaml's comments and layout."""
    yaml = YAML()  # round-trip mode: comments, order, quoting and [flow, lists] survive
    yaml.width = 4096  # never re-wrap long lines
    # ruamel writes None as an empty value; params.yaml spells it null.
    yaml.representer.add_representer(type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null"))
    params = yaml.load(params_path.read_text())
    merge_into(params, yaml.load(profile.read_text()) or {})
    with params_path.open("w") as f:
        yaml.dump(params, f)


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
    copy_repository(workdir)
    apply_profile(workdir / "params.yaml", profile)
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
