"""Stage `export`: TorchScript traced and scripted models, checked against eager, and timed.

Outputs: a folder with traced.pt and scripted.pt (load with torch.jit.load, no project
code needed) and the full CPU latency table (latency.json, latency.md); a metrics JSON
with milliseconds per image for each model and the parity check.
"""

import argparse
import platform
from pathlib import Path

from cifar_resnet.config import load_params
from cifar_resnet.data import load_imageset
from cifar_resnet.errors import run_stage
from cifar_resnet.fileio import atomic_dir, write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="output folder of the split stage")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="folder for traced.pt and scripted.pt")
    parser.add_argument("--metrics", type=Path, required=True, help="metrics JSON to write")
    args = parser.parse_args()
    cfg = load_params().export

    import torch

    from cifar_resnet.export import (
        check_parity, latency_markdown, latency_table, max_abs_diff, save_scripted, script_model, trace_model,
    )
    from cifar_resnet.models import load_model
    from cifar_resnet.training import make_eval_tensors

    # Exported models are CPU deployment artefacts, so they are built and timed on the CPU.
    model, config = load_model(args.model, args.config, device="cpu")
    test = load_imageset(args.data / "test.npz", num_classes=config["num_classes"])
    images, _ = make_eval_tensors(test.subset(list(range(min(cfg.parity_images, len(test))))), config["mean"], config["std"])
    traced = trace_model(model, images[:1])
    scripted = script_model(model)

    parity = {}
    for name, candidate in (("traced", traced), ("scripted", scripted)):
        parity[name] = max_abs_diff(model, candidate, images)
        check_parity(name, parity[name], cfg.tolerance)

    example = images[:1].repeat(cfg.latency_batch, 1, 1, 1)
    table = latency_table({"eager": model, "traced": traced, "scripted": scripted}, example, cfg.warmup, cfg.repeats)
    environment = {
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "processor": platform.processor() or platform.machine(),
        "batch": cfg.latency_batch,
    }
    markdown = latency_markdown(table, cfg.latency_batch)
    with atomic_dir(args.out) as out:
        save_scripted(traced, out / "traced.pt")
        save_scripted(scripted, out / "scripted.pt")
        # The full table (p50, p95, images/s, environment) stays beside the models;
        # the metrics file keeps one headline number per model so `dvc exp show` stays readable.
        write_json(out / "latency.json", {"latency": table, "environment": environment})
        (out / "latency.md").write_text(markdown)
    write_json(
        args.metrics,
        {
            "ms_per_image": {name: row["mean_ms"] / cfg.latency_batch for name, row in table.items()},
            "parity_max_abs_diff": parity,
        },
    )
    print(markdown)


if __name__ == "__main__":
    run_stage(main)
