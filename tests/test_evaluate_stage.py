"""The evaluate stage on a tiny model, a baseline, and a tiny shapes test set.

Its logic runs in-process (pipeline.evaluate.run, as the stage script calls it); the
script itself runs in a subprocess where its exit status and stderr are the point.
"""

import csv
import json

import numpy as np
import pytest
import torch
import yaml

from cifar_resnet.config import load_params
from cifar_resnet.data import generate_shapes, load_imageset, save_imageset
from cifar_resnet.evaluation import calibrated_summary, classification_summary, flip_tta_logits
from cifar_resnet.figures import PLOT_FILES
from cifar_resnet.models import build_model, load_model, model_summary, save_model
from cifar_resnet.inference import evaluate_logits, make_eval_tensors
from cifar_resnet.pipeline import evaluate

from conftest import REPO

ARGS = ["--data", "prepared", "--model", "m.pt", "--config", "m.json", "--metrics", "metrics/eval.json",
        "--plots", "plots/eval"]
EVALUATE = {"batch_size": 16, "tta": True, "tta_shift": 1, "calibration_bins": 10, "wrong_images": 6}
SUMMARY_KEYS = {"acc", "loss", "ece", "macro_precision", "macro_recall", "images"}  # no top5_acc: 10 classes
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # torch on one thread: see conftest

TEST_IMAGES = 40
VAL_IMAGES = 20


def tiny_model(seed: int):
    torch.manual_seed(seed)
    return build_model("resnet18", 10, width=8, blocks=[1, 1, 1, 1])


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A folder holding a tiny model, a differently initialised baseline, shapes validation and test sets, and params.yaml."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # one thread per stage process: the CPU is small and shared
    _, test, classes = generate_shapes(2, TEST_IMAGES, seed=0)
    save_imageset(tmp_path / "prepared" / "test.npz", test)
    save_imageset(tmp_path / "prepared" / "val.npz", generate_shapes(2, VAL_IMAGES, seed=1)[1])
    config = {"arch": "resnet18", "num_classes": len(classes), "width": 8, "blocks": [1, 1, 1, 1],
              "classes": classes, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    save_model(tmp_path / "m.pt", tmp_path / "m.json", tiny_model(0), config)
    # The train stage writes the baseline beside the model, with the same config.
    save_model(tmp_path / "b.pt", tmp_path / "m.json", tiny_model(1), config)
    write_evaluate_params(tmp_path)
    return tmp_path


def write_evaluate_params(folder, **overrides):
    """params.yaml with an evaluate section and a CPU device: every other section takes its defaults."""
    params = {"evaluate": {**EVALUATE, **overrides}, "train": {"device": "cpu"}}
    (folder / "params.yaml").write_text(yaml.safe_dump(params))


def run_evaluate(folder, baseline: bool = True, headline=None, train_summary=None) -> None:
    """The stage's work in this process, on `folder`'s params.yaml and files (ARGS' paths)."""
    paths = evaluate.EvaluatePaths(folder / "prepared", folder / "m.pt", folder / "m.json",
                                   folder / "b.pt" if baseline else None, folder / "metrics" / "eval.json",
                                   folder / "plots" / "eval", headline, train_summary)
    evaluate.run(load_params(folder / "params.yaml"), paths)


def expected_metrics(folder) -> dict:
    """The summaries computed in-process by the library on the same weights and images."""
    test = load_imageset(folder / "prepared" / "test.npz")
    val = load_imageset(folder / "prepared" / "val.npz")
    bins = EVALUATE["calibration_bins"]
    expected = {}
    for name, weights in (("test", "m.pt"), ("baseline", "b.pt")):
        model, config = load_model(folder / weights, folder / "m.json")
        images, labels = make_eval_tensors(test, config["mean"], config["std"])

        def predict(x, model=model):
            return evaluate_logits(model, x, EVALUATE["batch_size"], torch.device("cpu"))

        expected[name] = classification_summary(predict(images), labels, bins)
        if name == "test":
            expected["tta"] = classification_summary(flip_tta_logits(predict, images, shift=1), labels, bins)
            val_images, val_labels = make_eval_tensors(val, config["mean"], config["std"])
            expected["calibrated"] = calibrated_summary(predict(images), labels, predict(val_images), val_labels, bins)
    return expected


def read_csv(path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_metrics_baseline_tta_and_every_plot(workdir, capsys):
    run_evaluate(workdir)
    stdout = capsys.readouterr().out

    metrics = json.loads((workdir / "metrics" / "eval.json").read_text())
    assert list(metrics) == ["test", "baseline", "tta", "calibrated"]
    assert all(set(metrics[name]) == SUMMARY_KEYS for name in ("test", "baseline", "tta")), metrics
    assert metrics["calibrated"]["fitted_on"] == VAL_IMAGES  # fitted on the validation images, not on test
    expected = expected_metrics(workdir)
    for name in metrics:
        assert metrics[name] == pytest.approx(expected[name], rel=1e-5, abs=1e-6), name
    assert metrics["baseline"]["loss"] != metrics["test"]["loss"]  # the baseline file, not the model again
    assert metrics["test"]["images"] == TEST_IMAGES
    assert all(f"{name}: accuracy" in stdout for name in ("test", "baseline", "tta"))
    assert "the temperature fitted on 20 validation images" in stdout

    out = workdir / "plots" / "eval"
    assert sorted(p.name for p in out.iterdir()) == sorted(PLOT_FILES)
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000, png.name
    classes = json.loads((workdir / "m.json").read_text())["classes"]
    per_class = read_csv(out / "per_class.csv")
    assert [row["class"] for row in per_class] == classes
    assert list(per_class[0]) == ["class", "precision", "recall", "accuracy", "support"]
    reliability = read_csv(out / "reliability.csv")
    assert list(reliability[0]) == ["bin", "lower", "upper", "confidence", "accuracy", "count"]
    assert sum(int(row["count"]) for row in reliability) == TEST_IMAGES
    records = json.loads((out / "confusion.json").read_text())  # one per image, classes named "<index> <name>"
    assert len(records) == TEST_IMAGES and {r["actual"] for r in records} == {f"{i} {c}" for i, c in enumerate(classes)}
    # Nothing but the declared outputs: no temporary folders or files beside them.
    assert sorted(p.name for p in (workdir / "plots").iterdir()) == ["eval"]
    assert sorted(p.name for p in (workdir / "metrics").iterdir()) == ["eval.json"]


def test_the_headline_holds_a_few_keys_none_named_like_a_params_section(workdir):
    """metrics.json, the one DVC metrics file: test and TTA accuracy, test loss, the train
    summary's best validation accuracy, the model's size; the details stay in eval.json."""
    (workdir / "live").mkdir()
    summary = {"train": {"loss": 0.5, "acc": 0.8}, "val": {"loss": 0.6, "acc": 0.7}, "step": 3,
               "best": {"val_acc": 0.75, "epoch": 2}}  # as dvclive writes it (training.session.log_to_live)
    (workdir / "live" / "metrics.json").write_text(json.dumps(summary))
    run_evaluate(workdir, headline=workdir / "metrics.json", train_summary=workdir / "live" / "metrics.json")
    headline = json.loads((workdir / "metrics.json").read_text())
    details = json.loads((workdir / "metrics" / "eval.json").read_text())
    assert headline == {"test": {"acc": details["test"]["acc"], "loss": details["test"]["loss"]},
                        "tta": {"acc": details["tta"]["acc"]}, "best": {"val_acc": 0.75},
                        "size_mb": model_summary(tiny_model(0))["size_mb"]}
    params = set(yaml.safe_load((REPO / "params.yaml").read_text()))
    assert {"seed", "data", "model", "train", "evaluate"} <= params and not params & set(headline)

    # Without TTA, or a validation split in training (no "best" in the summary), those keys are left out.
    write_evaluate_params(workdir, tta=False, tta_shift=0)
    (workdir / "live" / "metrics.json").write_text(json.dumps({"train": {"loss": 0.5, "acc": 0.8}, "step": 3}))
    run_evaluate(workdir, headline=workdir / "metrics.json", train_summary=workdir / "live" / "metrics.json")
    assert list(json.loads((workdir / "metrics.json").read_text())) == ["test", "size_mb"]


@pytest.mark.slow  # a subprocess run of the stage script
def test_an_unreadable_train_summary_is_one_line_before_any_output(workdir, run_stage):
    (workdir / "summary.json").write_text("{not json")
    result = run_stage("evaluate", *ARGS, "--headline", "metrics.json", "--train-summary", "summary.json")
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: train summary summary.json unreadable (") and "run the train stage first" in line
    assert not (workdir / "plots").exists() and not (workdir / "metrics").exists()
    assert not (workdir / "metrics.json").exists()


def test_without_baseline_tta_or_calibration_only_the_test_metrics(workdir):
    write_evaluate_params(workdir, tta=False, tta_shift=0, calibrate=False, wrong_images=0)
    run_evaluate(workdir, baseline=False)
    assert list(json.loads((workdir / "metrics" / "eval.json").read_text())) == ["test"]
    # wrong_images 0 still writes wrong.png (saying the grid is disabled): the folder's contents never vary.
    assert sorted(p.name for p in (workdir / "plots" / "eval").iterdir()) == sorted(PLOT_FILES)


@pytest.mark.slow  # another subprocess run of a stage script; the quick loop runs test_stages' ones
@pytest.mark.parametrize("missing", ["m.pt", "b.pt"])
def test_a_missing_model_or_baseline_fails_cleanly_before_any_output(workdir, run_stage, missing):
    (workdir / missing).unlink()
    result = run_stage("evaluate", *ARGS, "--baseline", "b.pt")
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and missing in lines[0], result.stderr
    assert "model weights not found" in lines[0] and "Traceback" not in result.stderr
    assert not (workdir / "plots").exists() and not (workdir / "metrics").exists()


def test_without_validation_images_no_temperature_is_fitted(workdir, capsys):
    empty = load_imageset(workdir / "prepared" / "val.npz").subset(np.arange(0))
    save_imageset(workdir / "prepared" / "val.npz", empty)
    run_evaluate(workdir, baseline=False)
    assert list(json.loads((workdir / "metrics" / "eval.json").read_text())) == ["test", "tta"]
    assert "no validation images (data.val_fraction is 0): no temperature is fitted" in capsys.readouterr().out
