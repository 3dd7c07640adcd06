import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def run_stage(tmp_path):
    """Run a stage script as DVC would, from a working folder holding its params.yaml."""

    def run(stage: str, *args: str, cwd: Path = tmp_path) -> subprocess.CompletedProcess:
        env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
        return subprocess.run(
            [sys.executable, str(REPO / "stages" / f"{stage}.py"), *args],
            cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
        )

    return run
