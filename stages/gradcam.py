"""Stage `gradcam`: class-activation overlays for the first test images, as one grid PNG."""

import argparse
from pathlib import Path

from cifar_resnet.config import load_params
from cifar_resnet.data import load_imageset
from cifar_resnet.errors import run_stage
from cifar_resnet.fileio import atomic_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="output folder of the split stage")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="folder for grid.png")
    args = parser.parse_args()
    cfg = load_params().gradcam

    import torch

    from cifar_resnet.gradcam import compute_cams, plot_cam_grid, resolve_layer
    from cifar_resnet.models import load_model
    from cifar_resnet.training import make_eval_tensors

    model, config = load_model(args.model, args.config, device="cpu")
    resolve_layer(model, cfg.target_layer)  # a bad layer name fails before any work
    classes = config["classes"]
    test = load_imageset(args.data / "test.npz", num_classes=len(classes))
    chosen = test.subset(list(range(min(cfg.images, len(test)))))
    inputs, labels = make_eval_tensors(chosen, config["mean"], config["std"])
    with torch.no_grad():
        probabilities = model(inputs).softmax(dim=1)
    confidence, predicted = probabilities.max(dim=1)
    cams = compute_cams(model, inputs, target_layer=cfg.target_layer, method=cfg.method)
    titles = [
        f"pred: {classes[p]} ({c:.2f})\ntrue: {classes[t]}"
        for p, c, t in zip(predicted.tolist(), confidence.tolist(), labels.tolist())
    ]
    with atomic_dir(args.out) as out:
        plot_cam_grid(chosen.images, cams, titles, out / "grid.png", ncols=3)
    print(f"{cfg.method} on {cfg.target_layer} for {len(chosen)} test images -> {args.out / 'grid.png'}")


if __name__ == "__main__":
    run_stage(main)
