"""Inference latency of every export format, for any architecture, without running the pipeline.

    python benchmarks/inference_latency.py                                 # ResNet18 width 64, CIFAR stem
    python benchmarks/inference_latency.py --arch resnet34 --batches 1 128 --threads 8

Builds the model with random weights (latency does not depend on their values), writes
and reloads every format as the export stage does (TorchScript traced and scripted,
torch.export, ONNX Runtime), and prints the stage's Markdown latency table: eager,
each export, eager channels_last and bf16 autocast, at each batch size, on the CPU. It
prints figures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from cifar_resnet.export import load_exports, write_exports
from cifar_resnet.latency import bf16_skip_reason, environment_info, latency_markdown, latency_models, latency_rows
from cifar_resnet.models import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--stem", default="cifar")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = build_model(args.arch, args.classes, width=args.width, stem=args.stem).eval()
    images = torch.randn(max(args.batches), 3, 32, 32)
    with tempfile.TemporaryDirectory() as folder:
        exports = load_exports(write_exports(model, images[:8], folder))
        rows = latency_rows(latency_models(model, exports, bf16_skip_reason()), images, args.batches,
                            args.warmup, args.repeats)
    print(f"{args.arch}, width {args.width}, {args.stem} stem, {args.classes} classes")
    print(latency_markdown(rows, environment_info()))


if __name__ == "__main__":
    main()
