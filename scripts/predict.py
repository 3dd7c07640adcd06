"""Classify image files with an exported model, using torch, PIL and numpy only (no project code).

    python scripts/predict.py --model models/export/scripted.pt cat.png dog.jpg
    python scripts/predict.py --model models/export/program.pt2 --top 3 images/*.png

The model is a TorchScript file (traced.pt, scripted.pt) or a torch.export program
(program.pt2) written by the export stage. Class names and the normalisation come from
preprocess.json beside the model (or --preprocess). Each image is converted to RGB and
resized to 32x32. One line per image: the path, then the top classes with probabilities.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

BATCH_SIZE = 256  # images per forward pass: bounds memory for long file lists


class InputError(Exception):
    """A problem with the command's input (files, options): reported as one line, exit status 1."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", type=Path, help="image files (PNG, JPEG, anything PIL reads)")
    parser.add_argument("--model", type=Path, required=True, help="scripted.pt, traced.pt or program.pt2")
    parser.add_argument("--preprocess", type=Path, help="preprocess.json (default: the one beside --model)")
    parser.add_argument("--top", type=int, default=3, help="classes shown per image (default 3)")
    return parser.parse_args(argv)


def read_preprocess(path: Path) -> dict:
    """Class names, mean/std and image size, as the export stage wrote them."""
    try:
        info = json.loads(path.read_text())
        return {"classes": list(info["classes"]), "mean": info["mean"], "std": info["std"], "image_size": int(info["image_size"])}
    except FileNotFoundError:
        raise InputError(f"{path}: not found (the export stage writes it beside the models; or pass --preprocess)") from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InputError(f"{path}: not a valid preprocess.json ({type(err).__name__}: {err})") from None


def load_model(path: Path) -> torch.nn.Module:
    """A TorchScript file, or a torch.export program (.pt2), on the CPU."""
    if not path.is_file():
        raise InputError(f"{path}: model file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript's deprecation notice is not the user's concern
            if path.suffix == ".pt2":
                return torch.export.load(str(path)).module()
            return torch.jit.load(str(path), map_location="cpu")
    except Exception as err:  # torch raises several types for files it cannot read
        raise InputError(f"{path}: not a loadable model ({type(err).__name__})") from None


def read_image(path: Path, size: int) -> np.ndarray:
    """The image as uint8 RGB (size, size, 3), resized when it is not already that size."""
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError) as err:
        reason = "not an image PIL can read" if isinstance(err, UnidentifiedImageError) else (err.strerror or str(err))
        raise InputError(f"{path}: {reason}") from None
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def normalise(images: np.ndarray, mean: list[float], std: list[float]) -> torch.Tensor:
    """uint8 NHWC -> float32 NCHW, (x / 255 - mean) / std: the training stage's formula."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    return (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)


def predict(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Class probabilities for a batch of normalised images, computed BATCH_SIZE at a time."""
    with torch.inference_mode():
        logits = torch.cat([model(images[i : i + BATCH_SIZE]) for i in range(0, len(images), BATCH_SIZE)])
    return logits.float().softmax(dim=1)


def format_line(path: Path, probabilities: torch.Tensor, classes: list[str], top: int) -> str:
    """'path: class 91.2%, class 5.0%, ...' with the `top` most likely classes."""
    values, indices = probabilities.topk(min(top, len(classes)))
    ranked = ", ".join(f"{classes[i]} {100 * p:.1f}%" for p, i in zip(values.tolist(), indices.tolist()))
    return f"{path}: {ranked}"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.top < 1:
        raise InputError(f"--top must be at least 1, got {args.top}")
    info = read_preprocess(args.preprocess or args.model.parent / "preprocess.json")
    # Every image is read before the model runs: a bad file fails fast, before any output.
    pixels = np.stack([read_image(path, info["image_size"]) for path in args.images])
    model = load_model(args.model)
    probabilities = predict(model, normalise(pixels, info["mean"], info["std"]))
    if probabilities.shape[1] != len(info["classes"]):
        raise InputError(f"the model has {probabilities.shape[1]} outputs but preprocess.json names {len(info['classes'])} classes")
    for path, row in zip(args.images, probabilities):
        print(format_line(path, row, info["classes"], args.top))


if __name__ == "__main__":
    try:
        main()
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
