"""Evaluation metrics against hand-computed values, and every evaluation figure and table written."""

import csv
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from cifar_resnet.evaluation import (
    CONFUSION_PLOT_CLASSES, TEMPERATURE_RANGE, calibrated_summary, class_labels, classification_summary,
    confusion_cells, confusion_matrix, confusion_records, expected_calibration_error, fit_temperature, flip_tta_logits,
    macro_precision_recall, most_confident_wrong, most_confused_classes,
    per_class_table, precision_recall, reflect_shift, reliability_bins, row_normalise, score_predictors, topk_accuracy,
)
from cifar_resnet.figures import PLOT_FILES, confusion_figure, write_evaluation_plots
from cifar_resnet.plotting import save_figure

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Four images, three classes; predictions (argmax) are 0, 1, 1, 2 for labels 0, 1, 2, 2.
LOGITS = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.0, 2.0, 1.5], [0.0, 0.0, 5.0]])
LABELS = torch.tensor([0, 1, 2, 2])

# A 4-class confusion (rows true, columns predicted). Class 2 is never predicted (precision
# undefined); class 3 never occurs in the labels (recall undefined) but is predicted once.
CONFUSION = torch.tensor([
    [4, 1, 0, 1],
    [2, 2, 0, 0],
    [1, 0, 0, 0],
    [0, 0, 0, 0],
])

# Five two-class predictions for calibration, with 5 bins (0, .2], (.2, .4], ... (.8, 1]:
#   probabilities  label  confidence  correct  bin
#   (0.90, 0.10)   0      0.90        yes      4
#   (0.70, 0.30)   1      0.70        no       3
#   (0.35, 0.65)   1      0.65        yes      3
#   (0.95, 0.05)   1      0.95        no       4
#   (0.55, 0.45)   0      0.55        yes      2
CAL_PROBS = torch.tensor([[0.90, 0.10], [0.70, 0.30], [0.35, 0.65], [0.95, 0.05], [0.55, 0.45]])
CAL_LABELS = torch.tensor([0, 1, 1, 1, 0])


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
    # Confusion [[1,0,0],[0,1,0],[0,1,1]]: precision 1, 1/2, 1; recall 1, 1, 1/2.
    assert summary["macro_precision"] == pytest.approx(2.5 / 3)
    assert summary["macro_recall"] == pytest.approx(2.5 / 3)
    # Confidences 0.84, 0.67, 0.57 (the wrong one), 0.99 fall in four different of the 15 bins,
    # so the ECE is the mean gap between each confidence and 1 (right) or 0 (wrong).
    confidences = [max(math.exp(v) for v in row) / sum(math.exp(v) for v in row) for row in LOGITS.tolist()]
    expected_ece = sum(abs(right - confidence) for right, confidence in zip([1, 1, 0, 1], confidences)) / 4
    assert summary["ece"] == pytest.approx(expected_ece, rel=1e-6)
    assert "top5_acc" not in summary  # only reported beyond 10 classes


def test_summary_ece_is_the_calibration_error_of_the_softmax():
    logits = CAL_PROBS.log()  # softmax of log-probabilities gives the probabilities back
    assert classification_summary(logits, CAL_LABELS, calibration_bins=5)["ece"] == pytest.approx(0.33, abs=1e-6)


def test_top5_is_reported_for_many_classes():
    logits = torch.zeros(2, 100)
    logits[0, 7] = 1.0  # label 7 ranks first
    logits[1, :6] = torch.arange(6, 0, -1).float()  # label 5 ranks sixth: outside the top 5
    summary = classification_summary(logits, torch.tensor([7, 5]))
    assert summary["top5_acc"] == pytest.approx(0.5)


def test_topk_accuracy_counts_label_within_k():
    assert topk_accuracy(LOGITS, LABELS, 1) == pytest.approx(0.75)
    assert topk_accuracy(LOGITS, LABELS, 2) == pytest.approx(1.0)


def test_precision_and_recall_per_class_with_undefined_cases_as_nan():
    precision, recall = precision_recall(CONFUSION)
    # Columns sum to 7, 3, 0, 1; rows to 6, 4, 1, 0.
    assert precision[:2] == pytest.approx([4 / 7, 2 / 3])
    assert math.isnan(precision[2]) and precision[3] == 0.0
    assert recall[:3] == pytest.approx([4 / 6, 2 / 4, 0.0])
    assert math.isnan(recall[3])


def test_macro_averages_run_over_classes_in_the_labels():
    macro = macro_precision_recall(CONFUSION)
    # Classes 0-2 are in the labels; class 2, never predicted, counts as precision 0.
    assert macro["macro_precision"] == pytest.approx((4 / 7 + 2 / 3 + 0.0) / 3)
    assert macro["macro_recall"] == pytest.approx((4 / 6 + 2 / 4 + 0.0) / 3)


def test_row_normalise_makes_rows_sum_to_one():
    normalised = row_normalise(CONFUSION)
    assert normalised[0].tolist() == pytest.approx([4 / 6, 1 / 6, 0.0, 1 / 6])
    assert normalised[:3].sum(dim=1).tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert torch.isnan(normalised[3]).all()  # no true images of class 3


def test_per_class_table_gives_precision_recall_and_support():
    table = per_class_table(confusion_matrix(LOGITS.argmax(1), LABELS, 3), ["a", "b", "c"])
    assert [row["precision"] for row in table] == [1.0, 0.5, 1.0]
    assert [row["recall"] for row in table] == [1.0, 1.0, 0.5]
    assert [row["accuracy"] for row in table] == [1.0, 1.0, 0.5]
    assert [row["support"] for row in table] == [1, 1, 2]
    assert list(table[0]) == ["class", "precision", "recall", "accuracy", "support"]


def test_class_labels_sort_as_text_in_the_dataset_order():
    assert class_labels(["zebra", "cat", "moose"]) == ["0 zebra", "1 cat", "2 moose"]
    hundred = class_labels([f"c{i % 7}" for i in range(100)])  # DVC's confusion template sorts by name
    assert hundred[:2] == ["00 c0", "01 c1"] and hundred[-1] == "99 c1" and sorted(hundred) == hundred
    assert class_labels(["only"]) == ["0 only"]


def test_confusion_records_are_one_per_image_with_labelled_classes():
    records = confusion_records(LOGITS.argmax(1), LABELS, ["a", "b", "c"])
    # Test-set order; LOGITS' one mistake: the third image, of class c, predicted as b.
    assert records == [{"actual": "0 a", "predicted": "0 a"}, {"actual": "1 b", "predicted": "1 b"},
                       {"actual": "2 c", "predicted": "1 b"}, {"actual": "2 c", "predicted": "2 c"}]


def test_most_confused_classes_rank_row_and_column_mistakes_ties_to_the_lower_index():
    # CONFUSION's mistakes (off the diagonal), row plus column: class 0: 2 + 3, class 1: 2 + 1,
    # class 2: 1 + 0, class 3: 0 + 1.
    assert most_confused_classes(CONFUSION, 2) == [0, 1]
    assert most_confused_classes(CONFUSION, 3) == [0, 1, 2]  # 2 and 3 tie: the lower index
    assert most_confused_classes(CONFUSION, 10) == [0, 1, 2, 3]


def test_beyond_the_cap_the_confusion_plot_keeps_the_most_confused_classes_and_the_csv_the_whole_matrix():
    # 2,000 classes used to give 4 million records: a 512 MB confusion.json, 83 s and 7.1 GB.
    n = 2000
    assert CONFUSION_PLOT_CLASSES == 100
    classes = [f"class {i}" for i in range(n)]
    labels = torch.arange(n).repeat(2)  # two test images per class, all predicted right...
    predictions = labels.clone()
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist()
    confused, sources, targets = order[:100], order[100:160], order[160:220]
    for k, c in enumerate(confused):  # ...but both images of these go to the next one: 4 mistakes each
        predictions[labels == c] = confused[(k + 1) % len(confused)]
    for s, t in zip(sources, targets):  # ...and one image of these to another class: 1 mistake each
        predictions[s] = t

    records = confusion_records(predictions, labels, classes)
    # Every image of a confused class (2 each, all predicted as the next confused class), and
    # no other: the sources' images are predicted as classes outside the plot or as themselves.
    assert len(records) == 200
    names = class_labels(classes)
    shown = {names[c] for c in confused}
    assert {r["actual"] for r in records} == shown == {r["predicted"] for r in records}
    assert all(r["actual"] != r["predicted"] for r in records)
    confusion = confusion_matrix(predictions, labels, n)
    # The cap is a parameter: LOGITS' mistakes are one image of class c predicted as b.
    assert confusion_records(LOGITS.argmax(1), LABELS, "abc", 2) == [
        {"actual": "1 b", "predicted": "1 b"}, {"actual": "2 c", "predicted": "1 b"}, {"actual": "2 c", "predicted": "2 c"}]

    cells = confusion_cells(confusion, classes)
    # The non-zero cells only: the diagonal of each class not confused, a confused class's one
    # cell, a source's mistake.
    assert len(cells) == (n - len(confused)) + len(confused) + len(sources)
    rebuilt = torch.zeros(n, n, dtype=torch.int64)
    for cell in cells:
        assert (cell["actual"], cell["predicted"]) == (classes[cell["actual_index"]], classes[cell["predicted_index"]])
        rebuilt[cell["actual_index"], cell["predicted_index"]] = cell["images"]
    assert torch.equal(rebuilt, confusion)  # nothing lost
    assert [(c["actual_index"], c["predicted_index"]) for c in cells] == sorted((c["actual_index"], c["predicted_index"]) for c in cells)


def test_reliability_bins_match_hand_computed_table():
    table = reliability_bins(CAL_PROBS, CAL_LABELS, bins=5)
    assert [row["count"] for row in table] == [0, 0, 1, 2, 2]
    assert [row["lower"] for row in table] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])
    assert [row["upper"] for row in table] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert [row["confidence"] for row in table[2:]] == pytest.approx([0.55, (0.70 + 0.65) / 2, (0.90 + 0.95) / 2])
    assert [row["accuracy"] for row in table[2:]] == pytest.approx([1.0, 0.5, 0.5])
    assert all(math.isnan(row["confidence"]) and math.isnan(row["accuracy"]) for row in table[:2])


def test_expected_calibration_error_matches_hand_computed_value():
    # Gaps |accuracy - confidence|: bin 2 |1 - 0.55| = 0.45; bin 3 |0.5 - 0.675| = 0.175;
    # bin 4 |0.5 - 0.925| = 0.425. Weighted by counts 1, 2, 2 of 5: (0.45 + 0.35 + 0.85) / 5 = 0.33.
    assert expected_calibration_error(CAL_PROBS, CAL_LABELS, bins=5) == pytest.approx(0.33)


def test_perfectly_calibrated_predictions_have_zero_ece():
    # Confidence 0.75 in every case and 3 of 4 right: accuracy equals confidence.
    probs = torch.tensor([[0.75, 0.25]] * 4)
    assert expected_calibration_error(probs, torch.tensor([0, 0, 0, 1]), bins=10) == pytest.approx(0.0, abs=1e-12)


def test_most_confident_wrong_orders_mistakes_by_confidence():
    # Wrong: image 1 (0.70), image 3 (0.95), and image 4 (0.70, a tie with image 1).
    probs = torch.tensor([[0.90, 0.10], [0.70, 0.30], [0.35, 0.65], [0.95, 0.05], [0.30, 0.70]])
    labels = torch.tensor([0, 1, 1, 1, 0])
    assert most_confident_wrong(probs, labels, 2).tolist() == [3, 1]
    assert most_confident_wrong(probs, labels, 10).tolist() == [3, 1, 4]  # ties keep test-set order
    assert most_confident_wrong(probs, labels, 0).tolist() == []
    assert most_confident_wrong(CAL_PROBS[:1], CAL_LABELS[:1], 5).tolist() == []  # no mistakes


def sampled_labels(logits: torch.Tensor, temperature: float, seed: int = 0) -> torch.Tensor:
    """Labels drawn from softmax(logits / temperature): for these, that temperature is the calibrated one."""
    return torch.multinomial((logits / temperature).softmax(dim=1), 1, generator=torch.Generator().manual_seed(seed))[:, 0]


@pytest.mark.parametrize("true_temperature", [0.5, 1.0, 3.0])
def test_fit_temperature_recovers_the_temperature_the_labels_were_drawn_with(true_temperature):
    logits = 4 * torch.randn(20000, 10, generator=torch.Generator().manual_seed(1))
    labels = sampled_labels(logits, true_temperature)
    assert fit_temperature(logits, labels) == pytest.approx(true_temperature, rel=0.05)


def test_fit_temperature_finds_the_minimum_of_the_loss():
    logits = 3 * torch.randn(500, 5, generator=torch.Generator().manual_seed(2))
    labels = sampled_labels(logits, 1.7, seed=3)
    fitted = fit_temperature(logits, labels)

    def loss(t):
        return torch.nn.functional.cross_entropy(logits.double() / t, labels).item()

    assert loss(fitted) <= min(loss(fitted * 1.001), loss(fitted / 1.001))
    # Labels the logits always get right want the sharpest softmax on offer: the bound.
    assert fit_temperature(logits, logits.argmax(dim=1)) == pytest.approx(TEMPERATURE_RANGE[0], rel=1e-3)


def test_calibrated_summary_fits_on_held_out_images_and_repairs_an_underconfident_model():
    generator = torch.Generator().manual_seed(4)
    sharp = 5 * torch.randn(8000, 10, generator=generator)
    labels = sampled_labels(sharp, 1.0, seed=5)
    timid = sharp / 3  # what label smoothing does to a network: right as often, far less sure
    held_out, test = slice(0, 2000), slice(2000, None)
    summary = calibrated_summary(timid[test], labels[test], timid[held_out], labels[held_out], calibration_bins=15)
    assert set(summary) == {"temperature", "loss", "ece", "fitted_on"} and summary["fitted_on"] == 2000
    assert summary["temperature"] == pytest.approx(1 / 3, rel=0.1)
    before = classification_summary(timid[test], labels[test], 15)
    assert before["ece"] > 0.1 and summary["ece"] < 0.03
    assert summary["loss"] < before["loss"]


def test_score_predictors_calibrates_only_with_held_out_images():
    images = torch.randn(40, 3, 8, 8, generator=torch.Generator().manual_seed(6))
    labels = torch.arange(40) % 2

    def predict(x):
        return LeftVersusRight()(x) * 2

    metrics, _ = score_predictors(predict, images[:30], labels[:30], 10, held_out=(images[30:], labels[30:]))
    assert list(metrics) == ["test", "calibrated"] and metrics["calibrated"]["fitted_on"] == 10
    expected = calibrated_summary(predict(images[:30]), labels[:30], predict(images[30:]), labels[30:], 10)
    assert metrics["calibrated"] == expected
    assert list(score_predictors(predict, images, labels, 10)[0]) == ["test"]
    assert list(score_predictors(predict, images, labels, 10, held_out=(images[:0], labels[:0]))[0]) == ["test"]


class LeftVersusRight(nn.Module):
    """Logits (mean of the left half, mean of the right half): a mirror swaps them."""

    def forward(self, x):
        half = x.shape[3] // 2
        return torch.stack([x[..., :half].mean(dim=(1, 2, 3)), x[..., half:].mean(dim=(1, 2, 3))], dim=1)


def test_flip_tta_averages_the_mirror_of_a_flip_sensitive_model():
    images = torch.zeros(1, 3, 4, 4)
    images[..., :2] = 2.0  # left half bright: logits (2, 0), and (0, 2) for the mirror
    plain = torch.softmax(torch.tensor([2.0, 0.0]), dim=0)
    tta = flip_tta_logits(LeftVersusRight(), images)
    # The mean of softmax(2, 0) and softmax(0, 2) is (1/2, 1/2) by symmetry.
    assert plain[0] > 0.85
    assert tta.exp().tolist() == [pytest.approx([0.5, 0.5])]


def test_flip_tta_leaves_a_flip_invariant_model_unchanged():
    torch.manual_seed(0)
    # Global average pooling before the classifier makes the output blind to mirroring.
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    images = torch.randn(5, 3, 8, 8)
    with torch.no_grad():
        tta = flip_tta_logits(model, images)
        plain = model(images)
    torch.testing.assert_close(tta.softmax(dim=1), plain.softmax(dim=1))
    torch.testing.assert_close(tta.exp().sum(dim=1), torch.ones(5))  # they are log-probabilities


class CentrePixel(nn.Module):
    """Two logits from the first channel's pixel at (row 16, column 16): (value, -value)."""

    def forward(self, x):
        centre = x[:, 0, 16, 16]
        return torch.stack([centre, -centre], dim=1)


def test_reflect_shift_moves_the_content_and_reflects_the_border():
    image = torch.arange(16.0).view(1, 1, 4, 4)
    left = reflect_shift(image, 1, 0)
    assert left[0, 0, :, :3].tolist() == image[0, 0, :, 1:].tolist()  # moved one pixel left
    assert left[0, 0, :, 3].tolist() == image[0, 0, :, 2].tolist()  # the new column mirrors the old border's neighbour
    assert reflect_shift(image, 0, -2)[0, 0, 2:].tolist() == image[0, 0, :2].tolist()  # two pixels down


def test_shifted_tta_averages_ten_views_of_the_image_and_its_mirror():
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    tta = flip_tta_logits(CentrePixel(), images, shift=1)
    # The centre pixel of each view, read off the original: the image's centre and its four
    # neighbours, and the mirror's centre (column 31 - 16 = 15) and its four neighbours.
    pixels = [(16, 16), (16, 17), (16, 15), (17, 16), (15, 16), (16, 15), (16, 14), (16, 16), (17, 15), (15, 15)]
    values = torch.stack([images[:, 0, r, c] for r, c in pixels])
    expected = torch.stack([values, -values], dim=2).softmax(dim=2).mean(dim=0)
    torch.testing.assert_close(tta.exp(), expected)
    # Without shifts it is the flip TTA of two views; with shifts the views differ from it.
    two = torch.stack([values[0], values[5]])
    torch.testing.assert_close(flip_tta_logits(CentrePixel(), images).exp(), torch.stack([two, -two], dim=2).softmax(dim=2).mean(dim=0))
    assert not torch.allclose(tta, flip_tta_logits(CentrePixel(), images))


def test_write_evaluation_plots_writes_every_file(tmp_path):
    torch.manual_seed(0)
    classes = ["cat", "dog", "ship"]
    logits, labels = torch.randn(30, 3) * 2, torch.randint(0, 3, (30,))
    images = np.random.default_rng(0).integers(0, 256, (30, 32, 32, 3), dtype=np.uint8)
    written = write_evaluation_plots(tmp_path, logits, labels, images, classes, calibration_bins=10, wrong_images=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(PLOT_FILES) == sorted(p.name for p in written)
    for path in written:
        assert path.stat().st_size > 0
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 1000

    with open(tmp_path / "per_class.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["class"] for row in rows] == classes
    assert list(rows[0]) == ["class", "precision", "recall", "accuracy", "support"]
    assert sum(int(row["support"]) for row in rows) == 30

    with open(tmp_path / "reliability.csv") as f:
        bins = list(csv.DictReader(f))
    assert list(bins[0]) == ["bin", "lower", "upper", "confidence", "accuracy", "count"]
    assert sum(int(row["count"]) for row in bins) == 30 and all(int(row["count"]) > 0 for row in bins)
    assert len(json.loads((tmp_path / "confusion.json").read_text())) == 30  # one record per image

    with open(tmp_path / "confusion.csv") as f:
        cells = list(csv.DictReader(f))
    assert list(cells[0]) == ["actual", "predicted", "actual_index", "predicted_index", "images"]
    rebuilt = torch.zeros(3, 3, dtype=torch.int64)
    for cell in cells:
        assert int(cell["images"]) > 0 and cell["actual"] == classes[int(cell["actual_index"])]
        rebuilt[int(cell["actual_index"]), int(cell["predicted_index"])] = int(cell["images"])
    assert torch.equal(rebuilt, confusion_matrix(logits.argmax(1), labels, 3))


@pytest.mark.parametrize("wrong_images", [0, 5])
def test_wrong_png_exists_when_disabled_or_without_mistakes(tmp_path, wrong_images):
    labels = torch.tensor([0, 1, 2])
    logits = torch.eye(3) * 4  # every prediction right: nothing to show
    images = np.zeros((3, 32, 32, 3), dtype=np.uint8)
    write_evaluation_plots(tmp_path, logits, labels, images, ["a", "b", "c"], 15, wrong_images)
    assert (tmp_path / "wrong.png").read_bytes()[:8] == PNG_MAGIC


def test_confusion_figure_for_a_hundred_classes(tmp_path):
    # CIFAR-100 size: no per-cell numbers, small tick labels, still one readable PNG.
    labels = torch.arange(200) % 100
    confusion = confusion_matrix((labels + 1) % 100, labels, 100)
    save_figure(confusion_figure(row_normalise(confusion), [f"class{i}" for i in range(100)]), tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:8] == PNG_MAGIC


def test_class_names_with_dollars_are_drawn_literally(tmp_path):
    # "$...$" is mathtext to matplotlib: "a$b$c" would lose its dollars, "x$\nosuch$" would fail to draw.
    from matplotlib.cbook import is_math_text

    classes = ["a$b$c", r"x$\nosuch$", "plain"]
    logits = torch.tensor([[3.0, 0.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    labels = torch.tensor([0, 1, 2])
    images = np.zeros((3, 32, 32, 3), dtype=np.uint8)
    paths = write_evaluation_plots(tmp_path, logits, labels, images, classes, calibration_bins=5, wrong_images=4)
    assert all(path.stat().st_size > 0 for path in paths)
    # Two runs side by side fit a 1400-pixel `dvc plots diff` page.
    widths = {path.name: int.from_bytes(path.read_bytes()[16:20], "big") for path in paths if path.suffix == ".png"}
    assert max(widths.values()) <= 680, widths
    figure = confusion_figure(row_normalise(confusion_matrix(logits.argmax(1), labels, 3)), classes)
    figure.savefig(tmp_path / "check.png", format="png")  # tick labels exist once drawn
    ticks = [label.get_text() for label in figure.axes[0].get_yticklabels()]
    assert [t.replace(r"\$", "$") for t in ticks] == classes and not any(is_math_text(t) for t in ticks)


def test_confusion_figure_beyond_200_classes_numbers_them_instead_of_naming_them(tmp_path):
    # 2,000 overlapping names at 5 pt took 30 s to draw, and no one could read them.
    labels = torch.arange(2000)
    figure = confusion_figure(row_normalise(confusion_matrix((labels + 1) % 2000, labels, 2000)),
                              [f"class{i}" for i in range(2000)])
    figure.savefig(tmp_path / "c.png", format="png")  # tick labels exist once drawn
    ticks = [label.get_text() for label in figure.axes[0].get_xticklabels()]
    assert 0 < len(ticks) <= 20 and not any(t.startswith("class") for t in ticks), ticks
    assert figure.axes[0].get_xlabel() == "predicted class (index in the dataset's class order)"
