"""Classification metrics from logits and labels (plain tensors in, plain Python out)."""

from __future__ import annotations

from typing import Sequence

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


def per_class_accuracy(confusion: torch.Tensor) -> list[float]:
    """Recall of each class (its diagonal over its row); NaN for a class absent from the labels."""
    totals = confusion.sum(dim=1).double()
    return (confusion.diag().double() / totals).tolist()


def classification_summary(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """Accuracy, mean cross-entropy and, beyond 10 classes, top-5 accuracy."""
    summary = {
        "acc": (logits.argmax(dim=1) == labels).float().mean().item(),
        "loss": F.cross_entropy(logits, labels).item(),
        "images": int(labels.numel()),
    }
    if logits.size(1) > 10:
        summary["top5_acc"] = topk_accuracy(logits, labels, 5)
    return summary


def per_class_table(confusion: torch.Tensor, classes: Sequence[str]) -> list[dict]:
    """One row per class: its accuracy (recall) and how many test images it has."""
    support = confusion.sum(dim=1).tolist()
    return [
        {"class": name, "accuracy": acc, "support": n}
        for name, acc, n in zip(classes, per_class_accuracy(confusion), support)
    ]


def confusion_records(predictions: torch.Tensor, labels: torch.Tensor, classes: Sequence[str]) -> list[dict[str, str]]:
    """One {actual, predicted} record per image: the input DVC's confusion template expects."""
    return [{"actual": classes[t], "predicted": classes[p]} for t, p in zip(labels.tolist(), predictions.tolist())]
