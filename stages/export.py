"""Stage `export`: the model as TorchScript, torch.export and ONNX files, checked against eager, and timed.

Outputs: a folder with traced.pt and scripted.pt (torch.jit.load), program.pt2
(torch.export.load(path).module()), model.onnx (onnxruntime; when export.onnx is true),
preprocess.json (class names, mean/std: all that scripts/predict.py needs besides the
model); and, in their own folder, the CPU latency table (latency.json with its
environment, latency.md) and parity.json (each export's max |logit difference| from
eager): timings and parity figures may differ between runs, while the cached model files
must repeat byte for byte. The metrics JSON holds only the worst parity figure
(export.parity_metrics): timings vary from run to run, so they stay out of `dvc metrics diff`.
"""

import argparse
import os
import sys
from pathlib import Path

import _local_src  # noqa: F401  (first: this tree's src/, whatever is installed)

from cifar_resnet.config import load_params
from cifar_resnet.data import load_imageset
from cifar_resnet.errors import run_stage
from cifar_resnet.fileio import atomic_dir, write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="output folder of the split stage")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="folder for the exported models")
    parser.add_argument("--latency", type=Path, required=True, help="folder for the latency and parity tables")
    parser.add_argument("--metrics", type=Path, required=True, help="metrics JSON to write")
    args = parser.parse_args()
    cfg = load_params().export
    if os.environ.get("PYTHONHASHSEED") != "0":  # dvc.yaml's command sets it; a run by hand may not
        print("note: PYTHONHASHSEED is not 0, so scripted.pt's bytes (not its behaviour) differ from a `dvc repro` "
              "run's; run it as PYTHONHASHSEED=0 python stages/export.py ...", file=sys.stderr)

    from cifar_resnet.export import (
        bf16_skip_reason, check_exports, environment_info, latency_markdown, latency_models,
        latency_rows, load_exports, parity_metrics, preprocess_info, write_exports,
    )
    from cifar_resnet.models import load_model
    from cifar_resnet.inference import make_eval_tensors

    # Exported models are CPU deployment artefacts, so they are built and timed on the CPU.
    model, config = load_model(args.model, args.config, device="cpu")
    preprocess = preprocess_info(config)
    test = load_imageset(args.data / "test.npz", num_classes=config["num_classes"])
    images, _ = make_eval_tensors(test.subset(list(range(min(cfg.parity_images, len(test))))), config["mean"], config["std"])

    with atomic_dir(args.out) as out:
        # Checked and timed as loaded back from the files, so a bad file never becomes the output.
        exports = load_exports(write_exports(model, images, out, onnx=cfg.onnx))
        parity = check_exports(model, exports, images, cfg.tolerance)
        write_json(out / "preprocess.json", preprocess)
        models = latency_models(model, exports, bf16_skip_reason())
        rows = latency_rows(models, images, cfg.latency_batches, cfg.warmup, cfg.repeats)
    environment = environment_info()
    markdown = latency_markdown(rows, environment)
    with atomic_dir(args.latency) as out:
        write_json(out / "latency.json", {"environment": environment, "warmup": cfg.warmup, "repeats": cfg.repeats, "rows": rows})
        (out / "latency.md").write_text(markdown)
        write_json(out / "parity.json", {"tolerance": cfg.tolerance, "images": len(images), "max_abs_diff": parity})
    write_json(args.metrics, parity_metrics(parity))
    print(markdown)


if __name__ == "__main__":
    run_stage(main)
