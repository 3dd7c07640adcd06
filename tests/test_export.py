"""TorchScript export: parity with eager, a fresh-process reload, latency tables."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from cifar_resnet.errors import UserError
from cifar_resnet.export import (
    check_parity,
    latency_markdown,
    latency_table,
    load_scripted,
    max_abs_diff,
    save_scripted,
    script_model,
    trace_model,
)
from cifar_resnet.models import build_model


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # On a small, busy CPU box, OpenMP threads spin against each other (100x slowdowns seen).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("resnet18", 10, width=8, dropout=0.3)


def test_trace_and_script_match_eager(model: torch.nn.Module) -> None:
    inputs = torch.randn(10, 3, 32, 32)
    traced = trace_model(model, inputs[:2])
    scripted = script_model(model)
    assert model.training  # the caller's model is left as it was
    reference = model.eval()
    for exported in (traced, scripted):
        diff = max_abs_diff(reference, exported, inputs, batch_size=4)
        assert diff < 1e-5
        check_parity("exported", diff, atol=1e-5)


def test_max_abs_diff_covers_every_batch(model: torch.nn.Module) -> None:
    model.eval()
    inputs = torch.randn(5, 3, 32, 32)

    def shifted_last(x: torch.Tensor) -> torch.Tensor:
        out = model(x)
        return out + 0.5 * (x[:, :1, 0, 0] > 1e3)  # never true: diff 0

    assert max_abs_diff(model, shifted_last, inputs, batch_size=2) == 0.0
    inputs[4, 0, 0, 0] = 1e4  # only the last, partial batch differs
    assert max_abs_diff(model, shifted_last, inputs, batch_size=2) == pytest.approx(0.5)


def test_check_parity_raises_on_large_or_nan_diff() -> None:
    check_parity("ok", 1e-6, atol=1e-5)
    with pytest.raises(RuntimeError, match="traced"):
        check_parity("traced", 0.3, atol=1e-5)
    with pytest.raises(RuntimeError):
        check_parity("scripted", float("nan"), atol=1e-5)


def test_saved_scripted_model_runs_in_a_fresh_process(model: torch.nn.Module, tmp_path: Path) -> None:
    model.eval()
    inputs = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = model(inputs)
    path = tmp_path / "model.ts"
    save_scripted(script_model(model), path)
    torch.save({"inputs": inputs, "expected": expected}, tmp_path / "io.pt")
    child = textwrap.dedent(
        """
        import sys, warnings
        import torch
        warnings.simplefilter("ignore")
        module = torch.jit.load(sys.argv[1])
        data = torch.load(sys.argv[2])
        with torch.no_grad():
            diff = (module(data["inputs"]) - data["expected"]).abs().max().item()
        assert "cifar_resnet" not in sys.modules
        print(diff)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", child, str(path), str(tmp_path / "io.pt")],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert float(result.stdout.strip()) < 1e-5
    assert torch.equal(load_scripted(path)(inputs), script_model(model)(inputs))


def test_load_scripted_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="export"):
        load_scripted(tmp_path / "absent.ts")
    bad = tmp_path / "bad.ts"
    bad.write_bytes(b"garbage")
    with pytest.raises(UserError, match="not a loadable"):
        load_scripted(bad)


def test_latency_table_and_markdown(model: torch.nn.Module) -> None:
    model.eval()
    example = torch.randn(2, 3, 32, 32)
    models = {"eager": model, "traced": trace_model(model, example), "scripted": script_model(model)}
    table = latency_table(models, example, warmup=1, repeats=3)
    assert list(table) == list(models)
    for row in table.values():
        assert set(row) == {"mean_ms", "p50_ms", "p95_ms", "images_per_s"}
        assert all(value > 0 for value in row.values())
        assert row["p50_ms"] <= row["p95_ms"]
    markdown = latency_markdown(table, batch_size=2)
    lines = markdown.strip().splitlines()
    assert lines[0] == "| model | batch | mean ms | p50 ms | p95 ms | ms/image | images/s |"
    assert len(lines) == 2 + len(models)
    assert all(line.startswith(f"| {name} | 2 |") for line, name in zip(lines[2:], models))
