"""A pull request's report, as DVC projects post with CML: metrics, params and pictures against the base.

    python scripts/smoke.py --workdir /tmp/smk             # or any checkout whose pipeline has run
    python scripts/ci_report.py --repo /tmp/smk --base main --out report.md
    cml comment create report.md                           # on GitHub (the workflow does this)

It runs the real dvc CLI in --repo: `dvc metrics diff BASE --md`, `dvc params diff BASE --md`
(the workspace against BASE), and `dvc plots diff BASE -o ...` for the interactive page. The
PNG pictures that dvc.yaml lists under `plots:` are copied into a folder beside the report
(`report_files/` for `report.md`) and embedded, so `cml comment create` uploads them. The
Vega plots (curves, confusion matrix, per-class accuracy) are not turned into pictures: that
needs a headless browser and the Vega libraries (scripts/plots_page.py --screenshot), which
CI does not have; the report links their page (`report_files/plots/index.html`, which loads
Vega from a CDN), and the workflow uploads the folder as an artifact.

BASE defaults to `origin/$GITHUB_BASE_REF` in a GitHub pull request, else `main`. A base
without metrics (the first run) is said in one line, and this revision's metrics follow. A
bad input (no DVC project, an unknown base) ends with one `error:` line and exit status 1,
and nothing is written.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from cifar_resnet.fileio import atomic_dir, atomic_path

PICTURES = (".png", ".jpg", ".jpeg", ".svg", ".gif")


class ReportError(Exception):
    """A mistake in the input (not a DVC project, an unknown base): one line, exit status 1."""


def default_base() -> str:
    """On a GitHub pull request, the branch it merges into (as actions/checkout fetches it), else main."""
    base_ref = os.environ.get("GITHUB_BASE_REF")
    return f"origin/{base_ref}" if base_ref else "main"


def run(command: list[str], repo: Path) -> str:
    """Run a command in repo and return its stdout; a failure is a ReportError with its last stderr line."""
    env = dict(os.environ, DVC_NO_ANALYTICS="1")
    try:
        result = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, errors="replace")
    except FileNotFoundError:
        raise ReportError(f"{command[0]} is not on PATH")
    if result.returncode != 0:
        lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
        raise ReportError(f"{' '.join(command)} failed in {repo}: {lines[-1] if lines else result.returncode}")
    return result.stdout


def check_inputs(repo: Path, base: str) -> None:
    """The repo is a git checkout of a DVC project and the base a commit in it: else a ReportError."""
    if not (repo / "dvc.yaml").is_file():
        raise ReportError(f"{repo} holds no dvc.yaml: pass the DVC project with --repo")
    probe = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}"], cwd=repo,
                           capture_output=True, text=True)
    if probe.returncode != 0:
        raise ReportError(f"unknown base revision '{base}' in {repo} (on GitHub, check out with fetch-depth: 0 "
                          "so the base branch is there)")


def base_has_metrics(diff: dict) -> bool:
    """Whether `dvc metrics diff --json` saw any metric at the base (every old value is null on a first run)."""
    return any(entry.get("old") is not None for metrics in diff.values() for entry in metrics.values())


def metrics_section(repo: Path, base: str) -> str:
    """dvc's table of the metrics that changed; on a first run (no metrics at the base) every metric,
    in the same one-row-per-metric table (`dvc metrics show --md` would be one row of ~50 columns)."""
    diff = json.loads(run(["dvc", "metrics", "diff", base, "--json"], repo) or "{}")
    if not diff:
        return f"No metric changed against `{base}`."
    table = run(["dvc", "metrics", "diff", base, "--md"], repo).strip()
    if not base_has_metrics(diff):
        return f"`{base}` has no metrics yet (first run); this revision's metrics:\n\n{table}"
    return table


def params_section(repo: Path, base: str) -> str:
    # With nothing changed, --md still prints an empty table's header: ask --json first.
    if not json.loads(run(["dvc", "params", "diff", base, "--json"], repo) or "{}"):
        return f"No parameter changed against `{base}`."
    return run(["dvc", "params", "diff", base, "--md"], repo).strip()


def picture_plots(repo: Path) -> list[str]:
    """The picture files that dvc.yaml's top-level `plots:` lists, in its order."""
    plots = yaml.safe_load((repo / "dvc.yaml").read_text()).get("plots") or []
    names = [entry if isinstance(entry, str) else next(iter(entry)) for entry in plots]
    return [name for name in names if name.lower().endswith(PICTURES)]


def picture_name(path: str) -> str:
    """A flat, unique file name for a plot's path (plots/eval/wrong.png -> plots__eval__wrong.png)."""
    return path.replace("/", "__")


def pictures_section(repo: Path, pictures: list[str], folder: str) -> str:
    """Markdown embedding each picture from `folder` (relative to the report), or saying it is missing."""
    lines = []
    for path in pictures:
        if (repo / path).is_file():
            lines.append(f"### {path}\n\n![{path}]({folder}/images/{picture_name(path)})")
        else:
            lines.append(f"### {path}\n\nnot found in the workspace (has the pipeline run?)")
    return "\n\n".join(lines) if lines else "dvc.yaml lists no pictures."


def write_assets(repo: Path, base: str, pictures: list[str], assets: Path) -> None:
    """Fill the report's folder: images/ (the pictures) and plots/ (`dvc plots diff BASE` page)."""
    (assets / "images").mkdir()
    for path in pictures:
        if (repo / path).is_file():
            shutil.copyfile(repo / path, assets / "images" / picture_name(path))
    run(["dvc", "plots", "diff", base, "-o", str((assets / "plots").resolve())], repo)


def build_report(repo: Path, base: str, folder: str, pictures: list[str]) -> str:
    return "\n\n".join([
        f"# Pipeline report against `{base}`",
        "## Metrics", metrics_section(repo, base),
        "## Params", params_section(repo, base),
        "## Plots",
        f"The curves, confusion matrix and per-class accuracy, `{base}` beside this revision, are on an "
        f"interactive page (not rendered to pictures here): [{folder}/plots/index.html]({folder}/plots/index.html), "
        "in the workflow's `ci-report` artifact.",
        pictures_section(repo, pictures, folder),
    ]) + "\n"


def write_report(repo: Path, base: str, out: Path) -> None:
    """report.md and its folder; either both are new or neither changed (the dvc calls run first)."""
    check_inputs(repo, base)
    folder = f"{out.stem}_files"
    pictures = picture_plots(repo)
    text = build_report(repo, base, folder, pictures)
    with atomic_dir(out.parent / folder) as assets:
        write_assets(repo, base, pictures, assets)
    with atomic_path(out) as tmp:
        tmp.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=Path("."), help="the DVC project, its pipeline run (default: here)")
    parser.add_argument("--base", default=default_base(),
                        help="the revision to compare with (default: origin/$GITHUB_BASE_REF on a pull request, else main)")
    parser.add_argument("--out", type=Path, default=Path("report.md"),
                        help="the report (default report.md); pictures go to REPORT_files/ beside it")
    args = parser.parse_args(argv)
    try:
        write_report(args.repo.resolve(), args.base, args.out.resolve())
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"error: cannot write the report: {err}", file=sys.stderr)
        return 1
    print(f"report: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
