"""Stage `export`: the model as TorchScript, torch.export and ONNX files, checked against eager, and timed.

Outputs: a folder with traced.pt and scripted.pt (torch.jit.load), program.pt2
(torch.export.load(path).module()), model.onnx (onnxruntime; when export.onnx is true),
preprocess.json (class names, mean/std, the resize and the temperature fitted by the evaluate
stage, read from its metrics JSON: all that scripts/predict.py, or torch and PIL alone, need
besides the model); and, in their own folder, the CPU latency table (latency.json with its
environment, latency.md) and parity.json (each export's max |logit difference| from
eager): timings and parity figures may differ between runs, while the cached model files
must repeat byte for byte. The metrics JSON holds only the worst parity figure
(export.parity_metrics): timings vary from run to run, so they stay out of `dvc metrics diff`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..config import ExportParams
from ..data import load_imageset
from ..errors import UserError
from ..fileio import atomic_dir, read_json, write_json


@dataclass(frozen=True)
class ExportPaths:
    data: Path  # output folder of the split stage
    model: Path
    config: Path
    out: Path  # folder for the exported models
    latency: Path  # folder for the latency and parity tables
    metrics: Path  # metrics JSON to write
    # The evaluate stage's metrics JSON, for its "calibrated.temperature" (None: no temperature).
    calibration: Optional[Path] = None


def run(cfg: ExportParams, paths: ExportPaths) -> None:
    # Imported here, after the params are validated: a bad params.yaml fails fast, without torch.
    from ..export import check_exports, load_exports, parity_metrics, preprocess_info, write_exports
    from ..inference import make_eval_tensors
    from ..latency import bf16_skip_reason, environment_info, latency_markdown, latency_models, latency_rows
    from ..models import load_model

    # Exported models are CPU deployment artefacts, so they are built and timed on the CPU.
    model, config = load_model(paths.model, paths.config, device="cpu")
    preprocess = preprocess_info(config, fitted_temperature(paths.calibration))
    test = load_imageset(paths.data / "test.npz", num_classes=config["num_classes"])
    images, _ = make_eval_tensors(test.subset(list(range(min(cfg.parity_images, len(test))))), config["mean"], config["std"])

    with atomic_dir(paths.out) as out:
        # Checked and timed as loaded back from the files, so a bad file never becomes the output.
        exports = load_exports(write_exports(model, images, out, onnx=cfg.onnx))
        parity = check_exports(model, exports, images, cfg.tolerance)
        write_json(out / "preprocess.json", preprocess)
        models = latency_models(model, exports, bf16_skip_reason())
        rows = latency_rows(models, images, cfg.latency_batches, cfg.warmup, cfg.repeats)
    environment = environment_info()
    markdown = latency_markdown(rows, environment)
    with atomic_dir(paths.latency) as out:
        write_json(out / "latency.json", {"environment": environment, "warmup": cfg.warmup, "repeats": cfg.repeats, "rows": rows})
        (out / "latency.md").write_text(markdown)
        write_json(out / "parity.json", {"tolerance": cfg.tolerance, "images": len(images), "max_abs_diff": parity})
    write_json(paths.metrics, parity_metrics(parity))
    print(markdown)


def fitted_temperature(metrics: Optional[Path]) -> Optional[float]:
    """The evaluate stage's "calibrated.temperature" from its metrics JSON; None when it fitted none
    (evaluate.calibrate false, or no validation split) or when no metrics file is given."""
    if metrics is None:
        return None
    try:
        data: Any = read_json(metrics)
    except FileNotFoundError:
        raise UserError(f"{metrics}: not found (written by the evaluate stage; run `dvc repro evaluate`)") from None
    except (OSError, ValueError) as err:
        raise UserError(f"{metrics}: not a readable metrics JSON ({type(err).__name__}); run `dvc repro evaluate`") from None
    calibrated = data.get("calibrated") if isinstance(data, dict) else None
    temperature = calibrated.get("temperature") if isinstance(calibrated, dict) else None
    if temperature is not None and (type(temperature) not in (int, float) or not 0 < temperature < float("inf")):
        raise UserError(f"{metrics}: calibrated.temperature = {temperature!r} is not a positive number; run `dvc repro evaluate`")
    return temperature
