"""benchmarks/train_throughput.py at toy size: it builds and prepares the stage's run and prints its figures."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("extra", [
    pytest.param([], id="resnet-loader"),
    # The script once more in a subprocess: the quick loop runs it once, above.
    pytest.param(["--arch", "airbench", "--on-device", "--augment", "default", "--precision", "bf16", "--channels-last", "true"],
                 id="airbench-on-device-bf16", marks=pytest.mark.slow),
])
def test_train_throughput_prints_every_rate(extra):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}  # this checkout's library, not another install
    arch = [] if extra else ["--blocks", "1", "1", "1", "1"]
    command = [sys.executable, str(ROOT / "benchmarks" / "train_throughput.py"), "--images", "64", "--batch", "16",
               "--width", "4", "--repeats", "1", "--workers", "0", *arch, *extra]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    rates = dict(re.findall(r"^(loader alone|bare model step|full training step).*?([\d.]+) images/s$", finished.stdout, re.M))
    assert set(rates) == {"loader alone", "bare model step", "full training step"} and all(float(r) > 0 for r in rates.values())
    assert "64 images" in finished.stdout and ("channels_last True" in finished.stdout) == bool(extra)
