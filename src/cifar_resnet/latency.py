"""CPU latency of the eager model and of each export, as a table (rows, Markdown) with its environment.

The table times eager and each export at several batch sizes; rows that cannot run on
this machine stay in the table as skipped, with a reason.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from .export import EXPORT_FILES, Forward, cpu_eval_copy

# The rows of the latency table, in order.
LATENCY_ROWS = ("eager", *EXPORT_FILES, "eager_channels_last", "eager_bf16")


@dataclass(frozen=True)
class Skipped:
    """A latency row that was not timed, and why (kept in the table rather than dropped)."""

    reason: str


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


def cpu_capabilities() -> dict[str, Any]:
    """torch's view of the CPU's instruction sets (empty on torch builds without torch.cpu.get_capabilities)."""
    get = getattr(torch.cpu, "get_capabilities", None)
    return dict(get()) if get is not None else {}


def bf16_skip_reason() -> Optional[str]:
    """Why eager bf16 autocast is not worth timing here, or None when the CPU runs bf16 natively.

    Without AVX512-BF16 or AMX-BF16, oneDNN emulates bf16 and it is slower than float32,
    so a row would only measure the emulation.
    """
    if not torch.backends.mkldnn.is_available():
        return "this torch build has no oneDNN (mkldnn), which CPU bf16 kernels need"
    capabilities = cpu_capabilities()
    if not capabilities:
        return "this torch version cannot report CPU capabilities (torch.cpu.get_capabilities)"
    if not (capabilities.get("avx512_bf16") or capabilities.get("amx_bf16")):
        cpu = capabilities.get("cpu_name") or platform.processor() or platform.machine()
        return f"CPU ({cpu}) has no native bf16 (AVX512-BF16 or AMX-BF16): autocast would time an emulation"
    return None


def _channels_last(model: nn.Module) -> Forward:
    """Eager in channels_last (NHWC) memory format; the input conversion is timed too, as a caller pays it."""
    nhwc = cpu_eval_copy(model).to(memory_format=torch.channels_last)

    def forward(images: torch.Tensor) -> torch.Tensor:
        return nhwc(images.contiguous(memory_format=torch.channels_last))

    return forward


def _bf16_autocast(model: nn.Module) -> Forward:
    """Eager under CPU bf16 autocast (convolutions and matmuls in bf16, reductions in float32)."""
    eager = cpu_eval_copy(model)

    def forward(images: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return eager(images)

    return forward


def latency_models(model: nn.Module, exports: dict[str, Forward], bf16_skip: Optional[str]) -> dict[str, Union[Forward, Skipped]]:
    """Every latency row in LATENCY_ROWS order: eager, each export, channels_last, bf16 autocast.

    `bf16_skip` is bf16_skip_reason() in the stage; a row not exported is Skipped, never dropped.
    """
    eager = cpu_eval_copy(model)
    rows: dict[str, Union[Forward, Skipped]] = {"eager": eager}
    for name in EXPORT_FILES:
        rows[name] = exports[name] if name in exports else Skipped("not exported (ONNX export switched off)")
    rows["eager_channels_last"] = _channels_last(model)
    rows["eager_bf16"] = Skipped(bf16_skip) if bf16_skip else _bf16_autocast(model)
    return rows


def batch_of(images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """`batch_size` images, cycling through `images` when there are fewer."""
    return images[torch.arange(batch_size) % len(images)].contiguous()


def latency_rows(
    models: dict[str, Union[Forward, Skipped]],
    images: torch.Tensor,
    batch_sizes: Sequence[int],
    warmup: int,
    repeats: int,
) -> list[dict[str, Any]]:
    """One row per (model, batch size): measure_latency's figures plus ms_per_image, or the skip reason."""
    rows = []
    for name, fn in models.items():
        for batch_size in batch_sizes:
            row: dict[str, Any] = {"model": name, "batch": batch_size}
            if isinstance(fn, Skipped):
                row["skipped"] = fn.reason
            else:
                row.update(measure_latency(fn, batch_of(images, batch_size), warmup, repeats))
                row["ms_per_image"] = row["mean_ms"] / batch_size
            rows.append(row)
    return rows


def _version(package: str) -> Optional[str]:
    """The installed version of `package`, or None."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment_info() -> dict[str, Any]:
    """What the latency figures depend on: device, threads, library versions, processor."""
    capabilities = cpu_capabilities()
    return {
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "onnxruntime": _version("onnxruntime"),
        "onnx": _version("onnx"),
        "python": platform.python_version(),
        "processor": capabilities.get("cpu_name") or platform.processor() or platform.machine(),
        "machine": platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the SIMD level torch's kernels use
    }


def latency_markdown(rows: list[dict[str, Any]], environment: Optional[dict[str, Any]] = None) -> str:
    """latency_rows as a Markdown table; skipped rows say so, with their reasons listed below."""
    lines = []
    if environment:
        lines += [
            f"CPU latency: {environment['processor']}, {environment['threads']} threads, torch {environment['torch']}, "
            f"onnxruntime {environment['onnxruntime']}.",
            "",
        ]
    lines += [
        "| model | batch | mean ms | p50 ms | p95 ms | ms/image | images/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    reasons = {}
    for row in rows:
        if "skipped" in row:
            reasons[row["model"]] = row["skipped"]
            lines.append(f"| {row['model']} | {row['batch']} | skipped | | | | |")
        else:
            lines.append(
                f"| {row['model']} | {row['batch']} | {row['mean_ms']:.3f} | {row['p50_ms']:.3f} | {row['p95_ms']:.3f} "
                f"| {row['ms_per_image']:.3f} | {row['images_per_s']:.1f} |"
            )
    if reasons:
        lines += ["", *(f"- {name} skipped: {reason}" for name, reason in reasons.items())]
    return "\n".join(lines) + "\n"
