"""Stage `evaluate`: accuracy, loss, calibration, per-class precision and recall, confusion matrix, worst mistakes.

Writes --headline, the pipeline's one DVC metrics file (what `dvc exp show` and `dvc metrics
diff` compare), a few keys, none named like a params.yaml section: {"test": {"acc", "loss"},
"tta": {"acc"} (when evaluate.tta), "best": {"val_acc"} (the best epoch's validation
accuracy, from the train stage's dvclive summary --train-summary, when it has one),
"size_mb"} (the model's parameters and buffers in MiB).

Writes --metrics, the details (a plain output, not a DVC metric): {"test": SUMMARY} plus
"baseline": SUMMARY of the --baseline weights (when given) and "tta": SUMMARY of
horizontal-flip test-time augmentation (when evaluate.tta; with evaluate.tta_shift n, the
image and its mirror also moved n pixels each way: 10 views),
where SUMMARY is {"acc", "loss", "ece", "macro_precision", "macro_recall", "images"} and, beyond
10 classes, "top5_acc". ECE uses evaluate.calibration_bins equal-width confidence bins. With
evaluate.calibrate and a validation split, also "calibrated": {"temperature", "loss", "ece",
"fitted_on"}, the test loss and ECE after temperature scaling, the temperature fitted on the
validation images (never on test).

Writes under --plots:
  confusion.json            one {actual, predicted} record per test image, classes named "3 cat"
                            (index first, so that sorted names keep the dataset's order): the
                            data of DVC's confusion plot; beyond 100 classes only the images
                            between the 100 most confused classes
  confusion.csv             the whole confusion matrix: actual, predicted, actual_index,
                            predicted_index, images, one row per non-zero cell
  confusion_normalised.png  the confusion matrix with each true-class row summing to 1
  per_class.csv             class, precision, recall, accuracy (= recall), support
  reliability.csv           bin, lower, upper, confidence, accuracy, count (non-empty bins only)
  reliability.png           accuracy per confidence bin against the diagonal, and bin counts
  wrong.png                 the evaluate.wrong_images most confidently wrong test images; always
                            written: with no mistakes, or wrong_images 0, it says so instead
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..config import EvaluateParams, Params
from ..data import load_imageset
from ..errors import UserError
from ..fileio import atomic_dir, read_json, write_json


@dataclass(frozen=True)
class EvaluatePaths:
    data: Path  # output folder of the split stage
    model: Path
    config: Path
    baseline: Optional[Path]  # weights of the untrained (or pretrained) model; its metrics go under "baseline"
    metrics: Path  # detail metrics JSON to write
    plots: Path  # folder for the tables and figures listed above
    headline: Optional[Path] = None  # headline metrics JSON to write
    train_summary: Optional[Path] = None  # the train stage's dvclive summary (metrics.json), for best.val_acc


def run(params: Params, paths: EvaluatePaths) -> None:
    # Imported here, after the params are validated: a bad params.yaml fails fast, without torch.
    from ..evaluation import CONFUSION_PLOT_CLASSES, score_predictors, summary_line
    from ..figures import write_evaluation_plots
    from ..inference import make_eval_tensors, select_device
    from ..models import load_model, size_mb

    cfg = params.evaluate
    # Everything that can fail on bad input (models, data) happens before anything is written.
    device = select_device(params.train.device)
    model, config = load_model(paths.model, paths.config, device=device)
    baseline = load_model(paths.baseline, paths.config, device=device)[0] if paths.baseline else None
    classes = config["classes"]
    train_summary = read_train_summary(paths.train_summary) if paths.train_summary else {}
    test = load_imageset(paths.data / "test.npz", num_classes=len(classes))
    test_x, test_y = make_eval_tensors(test, config["mean"], config["std"])
    held_out = None
    if cfg.calibrate:
        held_out = make_eval_tensors(load_imageset(paths.data / "val.npz", num_classes=len(classes)),
                                     config["mean"], config["std"])
        if not len(held_out[1]):
            print("no validation images (data.val_fraction is 0): no temperature is fitted")

    predictor = _predictors(cfg, device)
    metrics, logits = score_predictors(predictor(model), test_x, test_y, cfg.calibration_bins, predictor(baseline), cfg.tta,
                                       held_out, cfg.tta_shift)
    with atomic_dir(paths.plots) as out:
        write_evaluation_plots(out, logits, test_y, test.images, classes, cfg.calibration_bins, cfg.wrong_images)
    write_json(paths.metrics, metrics)
    if paths.headline:
        write_json(paths.headline, headline_metrics(metrics, train_summary, size_mb(model)))
    for name, summary in metrics.items():  # test, then baseline, tta and calibrated when present
        print(summary_line(name, summary))
    if len(classes) > CONFUSION_PLOT_CLASSES:
        print(f"confusion plot: the {CONFUSION_PLOT_CLASSES} most confused of {len(classes)} classes "
              f"(every non-zero cell of the matrix: {paths.plots / 'confusion.csv'})")


def read_train_summary(path: Path) -> dict:
    """The train stage's dvclive summary (its last epoch's figures and "best").

    Read before anything is written: a missing or broken file is a UserError, and no output.
    """
    try:
        return read_json(path)
    except (OSError, ValueError) as err:
        raise UserError(f"train summary {path} unreadable ({err}): run the train stage first") from None


def headline_metrics(metrics: dict, train_summary: dict, model_size_mb: float) -> dict:
    """The headline metrics: test accuracy and loss, TTA accuracy (when measured), the best
    epoch's validation accuracy (when the run had a validation split), the model's size in MiB.

    Few keys, so that `dvc exp show --only-changed` fits a terminal; none starts with a
    params.yaml section's name (train, model, ...), so metric and parameter columns never mix.
    """
    headline = {"test": {"acc": metrics["test"]["acc"], "loss": metrics["test"]["loss"]}}
    if "tta" in metrics:
        headline["tta"] = {"acc": metrics["tta"]["acc"]}
    best = train_summary.get("best", {}).get("val_acc")
    if best is not None:
        headline["best"] = {"val_acc": best}
    headline["size_mb"] = model_size_mb
    return headline


def _predictors(cfg: EvaluateParams, device):
    """net -> (images -> logits, batched on the device, in evaluate.precision); None stays None."""
    import torch

    from ..inference import autocast_dtype, evaluate_logits, wants_channels_last

    amp_dtype = autocast_dtype(cfg.precision, device)
    channels_last = amp_dtype is not None and wants_channels_last("auto", device, amp_dtype)

    def predictor(net):
        if net is None:
            return None
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
        return lambda images: evaluate_logits(net, images, cfg.batch_size, device, channels_last, amp_dtype)

    return predictor
