"""Stage `evaluate`: test accuracy, loss, top-5 (100 classes), per-class accuracy, confusion matrix.

Outputs: a metrics JSON, and a plots folder with confusion.json (DVC's confusion
template input) and per_class.csv.
"""

import argparse
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
    parser.add_argument("--metrics", type=Path, required=True, help="metrics JSON to write")
    parser.add_argument("--plots", type=Path, required=True, help="folder for confusion.json and per_class.csv")
    args = parser.parse_args()
    params = load_params()

    import pandas as pd

    from cifar_resnet.evaluation import classification_summary, confusion_matrix, confusion_records, per_class_table
    from cifar_resnet.models import load_model
    from cifar_resnet.training import evaluate_logits, make_eval_tensors, select_device

    device = select_device(params.train.device)
    model, config = load_model(args.model, args.config, device=device)
    classes = config["classes"]
    test_x, test_y = make_eval_tensors(load_imageset(args.data / "test.npz", num_classes=len(classes)), config["mean"], config["std"])
    logits = evaluate_logits(model, test_x, params.evaluate.batch_size, device)
    predictions = logits.argmax(dim=1)

    summary = classification_summary(logits, test_y)
    with atomic_dir(args.plots) as out:
        write_json(out / "confusion.json", confusion_records(predictions, test_y, classes))
        table = per_class_table(confusion_matrix(predictions, test_y, len(classes)), classes)
        pd.DataFrame(table).to_csv(out / "per_class.csv", index=False)
    write_json(args.metrics, {"test": summary})
    top5 = f", top-5 {summary['top5_acc']:.4f}" if "top5_acc" in summary else ""
    print(f"test accuracy {summary['acc']:.4f}, loss {summary['loss']:.4f}{top5} on {summary['images']} images")


if __name__ == "__main__":
    run_stage(main)
