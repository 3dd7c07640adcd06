"""Model summary: parameters, size and multiply-adds per image, overall and layer by layer.

Multiply-adds (MACs) count convolutions and linear layers, the work that dominates a
ResNet, for one image of `image_size` x `image_size` pixels; BatchNorm, ReLU, pooling and
the residual additions are not counted (the usual convention: FLOPs ~ 2 x MACs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

import torch
from torch import nn

MIB = 2**20


@dataclass(frozen=True)
class LayerRow:
    name: str
    kind: str
    output: tuple[int, ...]  # per image (batch dimension dropped)
    params: int
    macs: int


def _leaf_macs(module: nn.Module, output: torch.Tensor) -> int:
    """Multiply-adds of one call of a convolution or linear layer, per image."""
    per_image = output[0].numel()
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return per_image * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return per_image * module.in_features
    return 0


def forward_zeros(
    model: nn.Module, hooks: Iterable[tuple[nn.Module, Callable[..., None]]], image_size: tuple[int, int]
) -> None:
    """Run one all-zero image through `model` with forward `hooks` attached for that pass only.

    In eval mode (one image through BatchNorm in training mode would fail) and without
    gradients; the hooks are removed and the model's mode restored, whatever happens.
    """
    handles = [module.register_forward_hook(hook) for module, hook in hooks]
    was_training = model.training
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, *image_size, device=device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)


def _trace(model: nn.Module, image_size: int) -> tuple[dict[str, tuple[int, ...]], dict[str, int]]:
    """Run one image through `model` in eval mode: each module's output shape and each leaf's MACs."""
    shapes: dict[str, tuple[int, ...]] = {}
    macs: dict[str, int] = {}

    def hook(name: str):
        def record(module: nn.Module, inputs: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor):
                shapes[name] = tuple(output.shape[1:])
                if not any(True for _ in module.children()):
                    macs[name] = macs.get(name, 0) + _leaf_macs(module, output)

        return record

    forward_zeros(model, [(module, hook(name)) for name, module in model.named_modules() if name], (image_size, image_size))
    return shapes, macs


def size_mb(model: nn.Module) -> float:
    """Every parameter and buffer as stored, in MiB to 2 decimals: the model's `size_mb` (model_summary)."""
    tensors = list(model.parameters()) + list(model.buffers())
    return round(sum(t.numel() * t.element_size() for t in tensors) / MIB, 2)


def model_summary(model: nn.Module, image_size: int = 32) -> dict[str, Any]:
    """Parameter counts, size in MiB and MACs per image: the figures the train stage logs.

    `size_mb` is every parameter and buffer as stored (float32; BatchNorm's step counters
    are int64), the in-memory size of the state dict; `params_mb` counts the parameters
    alone at 4 bytes each, the convention of torchsummary's "Params size (MB)".
    """
    params = sum(p.numel() for p in model.parameters())
    _, macs = _trace(model, image_size)
    return {
        "params": params,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "size_mb": size_mb(model),
        "params_mb": round(params * 4 / MIB, 2),
        "macs": sum(macs.values()),
        "image_size": image_size,
    }


def layer_table(model: nn.Module, image_size: int = 32, depth: Optional[int] = None) -> list[LayerRow]:
    """One row per module down to `depth` levels of nesting (None: every leaf), in the order they run.

    Execution order, not registration order: the ImageNet stem registers `maxpool` before
    `bn1` (so both stems share module names) but runs it after `relu`. No two rows nest, so
    the order in which their forward hooks first fired is the order of the forward pass.
    """
    shapes, macs = _trace(model, image_size)
    ran = {name: i for i, name in enumerate(shapes)}  # dict order = first hook call
    rows = []
    for name, module in model.named_modules():
        if not name or name not in shapes:
            continue
        level = name.count(".") + 1
        is_leaf = not any(True for _ in module.children())
        if (depth is None and not is_leaf) or (depth is not None and (level > depth or (level < depth and not is_leaf))):
            continue
        prefix = name + "."
        rows.append(LayerRow(
            name=name,
            kind=type(module).__name__,
            output=shapes[name],
            params=sum(p.numel() for p in module.parameters()),
            macs=sum(v for k, v in macs.items() if k == name or k.startswith(prefix)),
        ))
    return sorted(rows, key=lambda row: ran[row.name])


def format_table(rows: list[LayerRow], summary: dict[str, Any]) -> str:
    """The rows as an aligned text table, with the totals of `summary` underneath."""
    header = ("layer", "type", "output", "params", "MACs")
    body = [(r.name, r.kind, "x".join(map(str, r.output)), f"{r.params:,}", f"{r.macs:,}") for r in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    align = ["<", "<", ">", ">", ">"]

    def fmt(line: tuple[str, ...]) -> str:
        return "  ".join(f"{cell:{a}{w}}" for cell, a, w in zip(line, align, widths)).rstrip()

    rule = "-" * len(fmt(header))
    totals = [
        f"parameters: {summary['params']:,} ({summary['trainable_params']:,} trainable)",
        # size_mb and params_mb are in MiB (2**20 bytes), whatever their key names say.
        f"size: {summary['size_mb']:.2f} MiB with buffers, {summary['params_mb']:.2f} MiB parameters alone (float32)",
        f"multiply-adds per {summary['image_size']}x{summary['image_size']} image: {summary['macs']:,} "
        f"({summary['macs'] / 1e9:.3f} G)",
    ]
    return "\n".join([fmt(header), rule, *map(fmt, body), rule, *totals])
