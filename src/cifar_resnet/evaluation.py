"""Classification metrics from logits and labels (plain tensors in, plain Python out).

Accuracy, loss and top-5; per-class precision and recall; calibration (expected calibration
error over equal-width confidence bins) and temperature scaling; the most confidently wrong
images; and horizontal-flip test-time augmentation, which returns log-probabilities so every
metric here applies to it too.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Fraction of samples whose true label is among the k highest logits."""
    k = min(k, logits.size(1))
    topk = logits.topk(k, dim=1).indices
    return (topk == labels.unsqueeze(1)).any(dim=1).float().mean().item()


def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """counts[true, predicted] as an int64 (C, C) tensor."""
    flat = labels.long() * num_classes + predictions.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


def row_normalise(confusion: torch.Tensor) -> torch.Tensor:
    """Each true-class row divided by its count (rows sum to 1); NaN rows for classes absent from the labels."""
    return confusion.double() / confusion.sum(dim=1, keepdim=True).double()


def precision_recall(confusion: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-class precision (diagonal over column) and recall (diagonal over row).

    Undefined values are NaN: precision of a class never predicted, recall of a class
    absent from the labels.
    """
    correct = confusion.diag().double()
    precision = correct / confusion.sum(dim=0).double()
    recall = correct / confusion.sum(dim=1).double()
    return precision.tolist(), recall.tolist()


def macro_precision_recall(confusion: torch.Tensor) -> dict[str, float]:
    """Unweighted means of precision and recall over the classes present in the labels.

    A present class the model never predicts counts as precision 0, as in scikit-learn:
    skipping it would reward a model that ignores classes. Classes absent from the labels
    (possible with a capped test set) are left out: their recall is undefined.
    """
    precision, recall = precision_recall(confusion)
    present = [i for i, n in enumerate(confusion.sum(dim=1).tolist()) if n > 0]
    if not present:
        return {"macro_precision": math.nan, "macro_recall": math.nan}
    return {
        "macro_precision": sum(0.0 if math.isnan(precision[i]) else precision[i] for i in present) / len(present),
        "macro_recall": sum(recall[i] for i in present) / len(present),
    }


def reliability_bins(probabilities: torch.Tensor, labels: torch.Tensor, bins: int) -> list[dict]:
    """The reliability-diagram table: per equal-width bin of confidence (max probability), its images.

    Bin b holds confidences in (b/bins, (b+1)/bins] (the first also holds 0). Each row has
    bin, lower, upper, confidence (mean max probability), accuracy and count; empty bins
    have count 0 and NaN confidence and accuracy.
    """
    confidence, predicted = probabilities.double().max(dim=1)
    correct = (predicted == labels).double()
    edges = torch.linspace(0.0, 1.0, bins + 1, dtype=torch.float64)
    # bucketize with right=False puts x in bin i when edges[i] < x <= edges[i + 1].
    index = torch.bucketize(confidence, edges[1:-1], right=False)
    count = torch.bincount(index, minlength=bins).double()
    mean_confidence = torch.bincount(index, weights=confidence, minlength=bins) / count
    accuracy = torch.bincount(index, weights=correct, minlength=bins) / count
    return [
        {"bin": b, "lower": edges[b].item(), "upper": edges[b + 1].item(),
         "confidence": mean_confidence[b].item(), "accuracy": accuracy[b].item(), "count": int(count[b].item())}
        for b in range(bins)
    ]


def calibration_error(table: Sequence[dict]) -> float:
    """ECE of a reliability_bins table: the count-weighted mean |accuracy - confidence| over bins."""
    total = sum(row["count"] for row in table)
    if total == 0:
        return math.nan
    return sum(row["count"] * abs(row["accuracy"] - row["confidence"]) for row in table if row["count"]) / total


def expected_calibration_error(probabilities: torch.Tensor, labels: torch.Tensor, bins: int) -> float:
    """How far confidence is from accuracy, on average over images (0 = perfectly calibrated)."""
    return calibration_error(reliability_bins(probabilities, labels, bins))


def most_confident_wrong(probabilities: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of up to k wrongly predicted images, highest confidence first (ties: lowest index first)."""
    confidence, predicted = probabilities.max(dim=1)
    wrong = (predicted != labels).nonzero().flatten()
    order = torch.sort(confidence[wrong], descending=True, stable=True).indices
    return wrong[order[:k]]


# The temperatures fit_temperature searches: far wider than any measured here (0.53 to 0.73
# for the CPU recipes' models, docs/performance.md), so for a trained network the bounds do not bind.
TEMPERATURE_RANGE = (0.01, 100.0)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, steps: int = 100) -> float:
    """The temperature T that minimises the mean cross-entropy of softmax(logits / T) on these labels.

    Temperature scaling (Guo et al., "On calibration of modern neural networks", 2017): one
    number, fitted on held-out images, that makes confidences match accuracy without changing
    any prediction. The loss of logits * s is convex in s = 1/T, so it has one minimum along
    log T, which a golden-section search over TEMPERATURE_RANGE finds to float precision in
    `steps` steps, deterministically (no learning rate, no random start).
    """
    logits, labels = logits.double(), labels.long()

    def loss(log_t: float) -> float:
        return F.cross_entropy(logits / math.exp(log_t), labels).item()

    low, high = (math.log(t) for t in TEMPERATURE_RANGE)
    ratio = (math.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    loss_a, loss_b = loss(a), loss(b)
    for _ in range(steps):
        if loss_a <= loss_b:
            high, b, loss_b = b, a, loss_a
            a = high - ratio * (high - low)
            loss_a = loss(a)
        else:
            low, a, loss_a = a, b, loss_b
            b = low + ratio * (high - low)
            loss_b = loss(b)
    return math.exp((low + high) / 2)


def reflect_shift(images: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """NCHW images whose content moves |dx| pixels left (dx > 0) or right, |dy| up (dy > 0) or
    down, the uncovered border filled by reflection, as the training crops pad."""
    pad = max(abs(dx), abs(dy))
    height, width = images.shape[2:]
    padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    return padded[:, :, pad + dy : pad + dy + height, pad + dx : pad + dx + width]


def flip_tta_logits(
    predict: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, logits: Optional[torch.Tensor] = None,
    shift: int = 0,
) -> torch.Tensor:
    """Log of the mean softmax over each NCHW image and its horizontal mirror and, with `shift`
    n > 0, both moved n pixels left, right, up and down as well (10 views, equally weighted).

    Log-probabilities are valid logits (softmax gives the averaged probabilities back), so
    classification_summary and the other metrics apply unchanged. Flipping the normalised
    tensor equals normalising the flipped image: the normalisation is per channel (and the
    shifts' reflected borders are pixels of the image too). Pass `logits` (predict(images),
    already computed) to spare a pass over the images.
    """
    mirrored = images.flip(dims=[3])
    views = [mirrored]
    if shift:
        moves = ((shift, 0), (-shift, 0), (0, shift), (0, -shift))
        views += [reflect_shift(view, dx, dy) for view in (images, mirrored) for dx, dy in moves]
    log_probabilities = [F.log_softmax(predict(images) if logits is None else logits, dim=1)]
    log_probabilities += [F.log_softmax(predict(view), dim=1) for view in views]
    # log(mean of p) computed in log space, so tiny probabilities do not round to log(0).
    return torch.logsumexp(torch.stack(log_probabilities), dim=0) - math.log(len(log_probabilities))


def classification_summary(logits: torch.Tensor, labels: torch.Tensor, calibration_bins: int = 15) -> dict:
    """Accuracy, mean cross-entropy, ECE, macro precision and recall and, beyond 10 classes, top-5 accuracy."""
    probabilities = logits.softmax(dim=1)
    summary = {
        "acc": (logits.argmax(dim=1) == labels).float().mean().item(),
        "loss": F.cross_entropy(logits, labels).item(),
        "ece": expected_calibration_error(probabilities, labels, calibration_bins),
        **macro_precision_recall(confusion_matrix(logits.argmax(dim=1), labels, logits.size(1))),
        "images": int(labels.numel()),
    }
    if logits.size(1) > 10:
        summary["top5_acc"] = topk_accuracy(logits, labels, 5)
    return summary


def per_class_table(confusion: torch.Tensor, classes: Sequence[str]) -> list[dict]:
    """One row per class: precision, recall, accuracy (the same as recall) and support (test images).

    `accuracy` repeats recall under the name the per-class accuracy plot reads.
    """
    precision, recall = precision_recall(confusion)
    support = confusion.sum(dim=1).tolist()
    return [
        {"class": name, "precision": p, "recall": r, "accuracy": r, "support": n}
        for name, p, r, n in zip(classes, precision, recall, support)
    ]


def calibrated_summary(
    logits: torch.Tensor, labels: torch.Tensor, held_out_logits: torch.Tensor, held_out_labels: torch.Tensor,
    calibration_bins: int = 15,
) -> dict:
    """Loss and ECE of `logits` divided by the temperature fitted on the held-out ones.

    {"temperature", "loss", "ece", "fitted_on"}: accuracy and the other summary figures are
    left out, as dividing by a temperature changes no prediction.
    """
    temperature = fit_temperature(held_out_logits, held_out_labels)
    scaled = logits.double() / temperature
    return {
        "temperature": temperature,
        "loss": F.cross_entropy(scaled, labels).item(),
        "ece": expected_calibration_error(scaled.softmax(dim=1), labels, calibration_bins),
        "fitted_on": int(held_out_labels.numel()),
    }


def score_predictors(
    predict: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, labels: torch.Tensor, calibration_bins: int,
    baseline: Optional[Callable[[torch.Tensor], torch.Tensor]] = None, tta: bool = False,
    held_out: Optional[tuple[torch.Tensor, torch.Tensor]] = None, tta_shift: int = 0,
) -> tuple[dict, torch.Tensor]:
    """The evaluate stage's metrics and the model's test logits.

    Metrics: {"test": summary} plus "baseline" (the `baseline` predictor's summary, when given)
    and "tta" (horizontal-flip test-time augmentation, with `tta_shift`-pixel shifts of both
    views when it is not 0: flip_tta_logits; when `tta`), each a
    classification_summary, and "calibrated" (calibrated_summary of the test logits, the
    temperature fitted on the `held_out` (images, labels), when given and not empty).
    `predict` maps normalised images to logits.
    """
    logits = predict(images)
    metrics = {"test": classification_summary(logits, labels, calibration_bins)}
    if baseline is not None:
        metrics["baseline"] = classification_summary(baseline(images), labels, calibration_bins)
    if tta:
        tta_logits = flip_tta_logits(predict, images, logits=logits, shift=tta_shift)
        metrics["tta"] = classification_summary(tta_logits, labels, calibration_bins)
    if held_out is not None and held_out[1].numel():
        metrics["calibrated"] = calibrated_summary(logits, labels, predict(held_out[0]), held_out[1], calibration_bins)
    return metrics, logits


def summary_line(name: str, summary: dict) -> str:
    """One printed line for a classification_summary or a calibrated_summary."""
    if "temperature" in summary:
        return (f"{name}: loss {summary['loss']:.4f}, ECE {summary['ece']:.4f} with the logits divided by "
                f"{summary['temperature']:.4f}, the temperature fitted on {summary['fitted_on']} validation images")
    top5 = f", top-5 {summary['top5_acc']:.4f}" if "top5_acc" in summary else ""
    return (f"{name}: accuracy {summary['acc']:.4f}, loss {summary['loss']:.4f}{top5}, ECE {summary['ece']:.4f}, "
            f"macro precision {summary['macro_precision']:.4f}, macro recall {summary['macro_recall']:.4f} "
            f"on {summary['images']} images")


# The most classes the confusion plot shows (CIFAR-100 fits): a matrix of 2,000 classes is a
# plot no one could read (and, drawn from one record per cell, made a 512 MB confusion.json,
# an evaluate stage of 83 s and 7.1 GB).
CONFUSION_PLOT_CLASSES = 100


def most_confused_classes(confusion: torch.Tensor, k: int) -> list[int]:
    """The indices of the k classes with the most mistakes, in class order.

    A class's mistakes: its images predicted as another class, plus other classes' images
    predicted as it (its row and column off the diagonal). Ties go to the lower index.
    """
    mistakes = confusion.sum(dim=0) + confusion.sum(dim=1) - 2 * confusion.diag()
    ranked = torch.sort(mistakes, descending=True, stable=True).indices
    return sorted(ranked[:k].tolist())


def class_labels(classes: Sequence[str]) -> list[str]:
    """Class names behind their zero-padded dataset index: "0 airplane" .. "9 truck", "00 apple" .. "99 worm".

    DVC's built-in confusion template sorts both axes by name; names that sort as text in the
    dataset's order keep that order on the plot, and still read as names.
    """
    width = len(str(len(classes) - 1))
    return [f"{index:0{width}d} {name}" for index, name in enumerate(classes)]


def confusion_records(
    predictions: torch.Tensor, labels: torch.Tensor, classes: Sequence[str], max_classes: int = CONFUSION_PLOT_CLASSES,
) -> list[dict]:
    """One {actual, predicted} record per test image, in test-set order, classes named by
    class_labels: the data of DVC's built-in confusion plot, which counts the records of each cell.

    A class the model never predicts has no column on that plot (the template fills empty
    cells only between classes that occur); confusion_normalised.png always shows them all.
    Beyond `max_classes` classes, only the images whose true and predicted classes are both
    among the `max_classes` most confused ones (most_confused_classes) are listed:
    confusion_cells keeps the whole matrix.
    """
    names = class_labels(classes)
    if len(classes) > max_classes:
        shown = torch.zeros(len(classes), dtype=torch.bool)
        shown[most_confused_classes(confusion_matrix(predictions, labels, len(classes)), max_classes)] = True
        kept = shown[labels] & shown[predictions]
        predictions, labels = predictions[kept], labels[kept]
    return [{"actual": names[t], "predicted": names[p]} for t, p in zip(labels.tolist(), predictions.tolist())]


def confusion_cells(confusion: torch.Tensor, classes: Sequence[str]) -> list[dict]:
    """The whole confusion matrix, compactly: one {actual, predicted, actual_index, predicted_index,
    images} row per non-zero cell, row by row (true class, then predicted class); every cell
    not listed is 0.

    At most one row per test image, however many classes: 2,000 classes make 4 million cells.
    """
    true, predicted = confusion.nonzero(as_tuple=True)
    counts = confusion[true, predicted].tolist()
    return [
        {"actual": classes[t], "predicted": classes[p], "actual_index": t, "predicted_index": p, "images": n}
        for t, p, n in zip(true.tolist(), predicted.tolist(), counts)
    ]
