"""TorchScript export (trace and script), output parity checks, and latency measurement."""

from __future__ import annotations

import copy
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Union

import numpy as np
import torch
from torch import nn

from .errors import UserError
from .fileio import atomic_path

Forward = Union[nn.Module, Callable[[torch.Tensor], torch.Tensor]]

# Which stage writes the scripted models, for "not found" messages.
PRODUCER = "export"


@contextmanager
def _quiet_jit() -> Iterator[None]:
    """Silence TorchScript's deprecation notices (torch >= 2.11): exporting to it is deliberate here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is (deprecated|not supported)")
        yield


def _cpu_eval_copy(model: nn.Module) -> nn.Module:
    """An eval-mode CPU copy, so exporting never moves or re-modes the caller's model."""
    return copy.deepcopy(model).cpu().eval()


def trace_model(model: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """Trace `model` (eval mode, CPU) on `example`."""
    with _quiet_jit(), torch.no_grad():
        return torch.jit.trace(_cpu_eval_copy(model), example.detach().cpu())


def script_model(model: nn.Module) -> torch.jit.ScriptModule:
    """Compile `model` (eval mode, CPU) with torch.jit.script."""
    with _quiet_jit():
        return torch.jit.script(_cpu_eval_copy(model))


def max_abs_diff(reference: Forward, candidate: Forward, inputs: torch.Tensor, batch_size: int = 64) -> float:
    """Largest |reference(x) - candidate(x)| over all `inputs`, evaluated in batches."""
    if len(inputs) == 0 or batch_size < 1:
        raise ValueError(f"max_abs_diff needs inputs and batch_size >= 1 (got {len(inputs)} inputs, batch_size {batch_size})")
    worst = 0.0
    with torch.no_grad():
        for start in range(0, len(inputs), batch_size):
            batch = inputs[start : start + batch_size]
            expected, actual = reference(batch), candidate(batch)
            if expected.shape != actual.shape:
                raise RuntimeError(f"output shapes differ: {tuple(expected.shape)} vs {tuple(actual.shape)}")
            diff = (expected.double() - actual.double()).abs().max().item()
            if np.isnan(diff):
                return float("nan")  # max() would silently drop it; check_parity must see it
            worst = max(worst, diff)
    return worst


def check_parity(name: str, diff: float, atol: float) -> None:
    """Raise RuntimeError when an exported model strays from eager by more than `atol` (a bug, not a user error)."""
    if not diff <= atol:  # written this way so NaN fails too
        raise RuntimeError(f"{name}: max |output difference| vs eager is {diff:.3g}, above the tolerance {atol:.3g}")


def _sync(example: torch.Tensor) -> None:
    """Wait for queued GPU work, otherwise the timer only sees the kernel launch."""
    if example.is_cuda:
        torch.cuda.synchronize(example.device)


def measure_latency(fn: Forward, example: torch.Tensor, warmup: int = 5, repeats: int = 30) -> dict[str, float]:
    """Time `fn(example)` per batch: mean/p50/p95 in ms and images per second (warm-up excluded)."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    timings = []
    with torch.inference_mode():
        # Warm-up absorbs one-off costs: TorchScript's profiling runs, allocator growth, cuDNN autotuning.
        for _ in range(warmup):
            fn(example)
        _sync(example)
        for _ in range(repeats):
            start = time.perf_counter()
            fn(example)
            _sync(example)
            timings.append(time.perf_counter() - start)
    ms = np.asarray(timings) * 1000.0
    mean_ms = float(ms.mean())
    return {
        "mean_ms": mean_ms,
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "images_per_s": float(len(example) * 1000.0 / mean_ms) if mean_ms > 0 else float("inf"),
    }


def latency_table(models: dict[str, Forward], example: torch.Tensor, warmup: int, repeats: int) -> dict[str, dict[str, float]]:
    """measure_latency for each named model, in the given order."""
    return {name: measure_latency(fn, example, warmup, repeats) for name, fn in models.items()}


def latency_markdown(table: dict[str, dict[str, float]], batch_size: int) -> str:
    """A Markdown table of latency_table's rows."""
    lines = [
        "| model | batch | mean ms | p50 ms | p95 ms | ms/image | images/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in table.items():
        lines.append(
            f"| {name} | {batch_size} | {row['mean_ms']:.3f} | {row['p50_ms']:.3f} | {row['p95_ms']:.3f} "
            f"| {row['mean_ms'] / batch_size:.3f} | {row['images_per_s']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def save_scripted(module: torch.jit.ScriptModule, path: str | Path) -> None:
    """torch.jit.save to a temporary name, then rename (never a half-written file)."""
    with _quiet_jit(), atomic_path(path) as tmp:
        torch.jit.save(module, str(tmp))


def load_scripted(path: str | Path, map_location: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """torch.jit.load a saved TorchScript model; absence or corruption is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: TorchScript model not found (produced by the {PRODUCER} stage; run `dvc repro {PRODUCER}`)")
    try:
        with _quiet_jit():
            return torch.jit.load(str(path), map_location=map_location)
    except Exception as err:  # torch raises several types for corrupt files
        message = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise UserError(f"{path}: not a loadable TorchScript model ({type(err).__name__}: {message})") from None
