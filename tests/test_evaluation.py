import math

import pytest
import torch

from cifar_resnet.evaluation import (
    classification_summary, confusion_matrix, confusion_records, per_class_table, topk_accuracy,
)

# Four images, three classes; predictions (argmax) are 0, 1, 1, 2 for labels 0, 1, 2, 2.
LOGITS = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.0, 2.0, 1.5], [0.0, 0.0, 5.0]])
LABELS = torch.tensor([0, 1, 2, 2])


def test_confusion_matrix_counts_true_rows_predicted_columns():
    confusion = confusion_matrix(LOGITS.argmax(1), LABELS, 3)
    assert confusion.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]


def test_summary_matches_hand_computed_values():
    summary = classification_summary(LOGITS, LABELS)
    assert summary["acc"] == pytest.approx(0.75)
    expected_loss = -sum(
        math.log(math.exp(row[label]) / sum(math.exp(v) for v in row))
        for row, label in zip(LOGITS.tolist(), LABELS.tolist())
    ) / 4
    assert summary["loss"] == pytest.approx(expected_loss, rel=1e-6)
    assert summary["images"] == 4
    assert "top5_acc" not in summary  # only reported beyond 10 classes


def test_top5_is_reported_for_many_classes():
    logits = torch.zeros(2, 100)
    logits[0, 7] = 1.0  # label 7 ranks first
    logits[1, :6] = torch.arange(6, 0, -1).float()  # label 5 ranks sixth: outside the top 5
    summary = classification_summary(logits, torch.tensor([7, 5]))
    assert summary["top5_acc"] == pytest.approx(0.5)


def test_topk_accuracy_counts_label_within_k():
    assert topk_accuracy(LOGITS, LABELS, 1) == pytest.approx(0.75)
    assert topk_accuracy(LOGITS, LABELS, 2) == pytest.approx(1.0)


def test_per_class_table_gives_recall_and_support():
    table = per_class_table(confusion_matrix(LOGITS.argmax(1), LABELS, 3), ["a", "b", "c"])
    assert [row["accuracy"] for row in table] == [1.0, 1.0, 0.5]
    assert [row["support"] for row in table] == [1, 1, 2]


def test_confusion_records_name_classes():
    records = confusion_records(LOGITS.argmax(1), LABELS, ["a", "b", "c"])
    assert records[2] == {"actual": "c", "predicted": "b"}
    assert len(records) == 4
