"""Running a trained model: device and precision choice, input tensors, batched logits.

Evaluate, export, GradCAM and the training loop's validation pass all use these; the
training package imports this module, never the other way round.
"""

from __future__ import annotations

import contextlib
import math
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .data.arrays import ImageSet
from .errors import UserError


def select_device(requested: str) -> torch.device:
    """`auto` picks CUDA when present; asking for CUDA without one is a user mistake."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device = 'cuda' but no CUDA device is available (use 'auto' or 'cpu')")
    return torch.device(requested)


def cpu_has_native_bf16() -> bool:
    """True when oneDNN runs bf16 in hardware (AVX512-BF16 or AMX-BF16) rather than emulating it."""
    get = getattr(torch.cpu, "get_capabilities", None)
    if get is None or not torch.backends.mkldnn.is_available():
        return False
    capabilities = get()
    return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))


# train.precision's fixed settings and their autocast dtype (None: full fp32); "auto", the
# remaining setting, picks one of them per device. The params schema allows exactly these.
AUTOCAST_DTYPES: dict[str, Optional[torch.dtype]] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_dtype(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype, or None for full fp32.

    `auto` is bf16 wherever the hardware runs it natively: CUDA with bf16 support (fp16
    on older GPUs), and CPUs with AVX512-BF16/AMX, where it trains a small ResNet about
    3x faster than fp32 (docs/performance.md); fp32 on other CPUs, where bf16 is emulated.
    """
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else None
    if precision not in AUTOCAST_DTYPES:
        raise UserError(f"unknown precision {precision!r} (valid: auto, {', '.join(AUTOCAST_DTYPES)})")
    return AUTOCAST_DTYPES[precision]


def wants_channels_last(setting, device: torch.device, amp_dtype: Optional[torch.dtype] = None) -> bool:
    """channels_last (NHWC) pays off on CUDA and for bf16 on the CPU (oneDNN's native layout)."""
    if setting != "auto":
        return bool(setting)
    return device.type == "cuda" or amp_dtype == torch.bfloat16


def autocast(device: torch.device, dtype: Optional[torch.dtype]):
    """torch.autocast for `dtype`, or a no-op context for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def normalise(images_uint8_nchw: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 NCHW -> float NCHW normalised with per-channel mean/std (0..1 scale)."""
    device = images_uint8_nchw.device
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return (images_uint8_nchw.float() / 255.0 - mean_t) / std_t


def make_eval_tensors(images: ImageSet, mean: Sequence[float], std: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised NCHW float tensors and int64 labels for a whole split (no augmentation)."""
    x = torch.from_numpy(images.images).permute(0, 3, 1, 2)
    return normalise(x, mean, std), torch.from_numpy(images.labels.astype(np.int64))


@torch.no_grad()
def evaluate_logits(
    model: torch.nn.Module, images: torch.Tensor, batch_size: int, device: torch.device, channels_last: bool = False,
    amp_dtype: Optional[torch.dtype] = None,
) -> torch.Tensor:
    """Logits for a whole normalised NCHW tensor, in eval mode, batched; returned in fp32 on the CPU."""
    model.eval()
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].to(device)
        if channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp_dtype):
            outputs.append(model(batch).float().cpu())
    return torch.cat(outputs) if outputs else torch.empty(0)


def loss_and_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy; NaN for an empty split (nothing was measured)."""
    if len(labels) == 0:
        return math.nan, math.nan
    return F.cross_entropy(logits, labels).item(), (logits.argmax(1) == labels).float().mean().item()
