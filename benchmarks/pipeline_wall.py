"""Wall time of the offline smoke pipeline and of a no-op `dvc repro` (everything cached).

    python benchmarks/pipeline_wall.py

Runs scripts/smoke.py in a new temporary folder, then `dvc repro` there three times with
nothing changed, and prints the times. It prints figures; it asserts nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], cwd: Path | None = None, env: dict | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="cifar-bench-")) / "repo"
    smoke = timed([sys.executable, str(REPO / "scripts" / "smoke.py"), "--workdir", str(workdir)])
    env = dict(os.environ, PYTHONPATH=str(workdir / "src"), DVC_NO_ANALYTICS="1")
    noops = [timed(["dvc", "repro"], cwd=workdir, env=env) for _ in range(3)]
    print(f"smoke pipeline (copy, git, 7 stages):  {smoke:6.1f} s")
    print(f"no-op dvc repro (best of 3):           {min(noops):6.2f} s  (all: {', '.join(f'{t:.2f}' for t in noops)})")
    print(f"results kept in {workdir}")


if __name__ == "__main__":
    main()
