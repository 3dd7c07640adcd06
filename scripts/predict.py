"""Classify image files with an exported model, using torch, PIL and numpy (and no project code but safeload).

    python scripts/predict.py --model models/export/scripted.pt cat.png dog.jpg
    python scripts/predict.py --model models/export/program.pt2 --top 3 images/*.png
    python scripts/predict.py --model models/export/model.onnx images/*.png   # needs onnxruntime
    python scripts/predict.py --model models/export/scripted.pt --temperature 0.53 cat.png   # calibrated

The model is a TorchScript file (traced.pt, scripted.pt), a torch.export program
(program.pt2) or an ONNX file (model.onnx) written by the export stage. A .pt2 is checked by
src/cifar_resnet/safeload.py before it is loaded (torch.export.load would run pickles stored
in it); used away from this project, copy that file beside this script. Class names and the
normalisation come from preprocess.json beside the model (or --preprocess); its image_size is
at most 512 (MAX_IMAGE_SIZE). Each image is converted to 8-bit RGB (16-bit images scaled,
not clipped) and resized. One line per image: the path, then the top classes with
probabilities. --temperature divides the logits before the softmax: the evaluate stage fits
one on the validation split (`calibrated.temperature` in metrics/eval.json, a plain output
beside the headline metrics.json: docs/metrics.md) so that the probabilities match how often the model is right. An
unreadable image is reported on stderr and the others are still classified; the exit status
is then 1. Only regular files are read as images: a FIFO or a device named as an image is
refused rather than waited on.

A model runs with no time limit: a model file whose graph never returns (a TorchScript
loop that never ends, say) makes this script hang; stop it with Ctrl-C, and run only
models you made or trust.
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

# Pixels per forward pass, as in a batch of 256 CIFAR images: bounds memory for long file lists
# and for large image sizes (the model's activations grow with the pixels: at image_size 4096,
# two images took 7.3 GB).
BATCH_PIXELS = 256 * 32 * 32
# The largest image_size: one image of it fills a forward pass (512 x 512 = BATCH_PIXELS). The
# export stage writes 32, the size the models were trained at.
MAX_IMAGE_SIZE = 512
SUPPORTED = "TorchScript .pt, torch.export .pt2 or ONNX .onnx"


class InputError(Exception):
    """A problem with the command's input (files, options): reported as one line, exit status 1."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", type=Path, help="image files (PNG, JPEG, anything PIL reads)")
    parser.add_argument("--model", type=Path, required=True, help="scripted.pt, traced.pt, program.pt2 or model.onnx")
    parser.add_argument("--preprocess", type=Path, help="preprocess.json (default: the one beside --model)")
    parser.add_argument("--top", type=int, default=3, help="classes shown per image (default 3)")
    parser.add_argument("--temperature", type=float, default=1.0,
                        help="divide the logits by this before the softmax (default 1: as the model says); "
                             "calibrated.temperature of metrics/eval.json calibrates the probabilities")
    return parser.parse_args(argv)


def read_preprocess(path: Path) -> dict:
    """Class names, mean/std and image size, as the export stage wrote them, checked."""
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: not found (the export stage writes it beside the models; or pass --preprocess)") from None
    except (OSError, ValueError) as err:  # ValueError covers bad JSON and bad UTF-8
        raise InputError(f"{path}: not a valid preprocess.json ({type(err).__name__}: {err})") from None
    except RecursionError:  # json nests one Python call per [ or {: thousands of them overflow the stack
        raise InputError(f"{path}: not a valid preprocess.json (nested too deeply)") from None
    problem = preprocess_problem(info)
    if problem:
        raise InputError(f"{path}: not a valid preprocess.json ({problem})")
    return {key: info[key] for key in ("classes", "mean", "std", "image_size")}


def preprocess_problem(info: object) -> str | None:
    """What is wrong with a parsed preprocess.json, or None."""
    if not isinstance(info, dict):
        return "expected a JSON object"
    missing = [key for key in ("classes", "mean", "std", "image_size") if key not in info]
    if missing:
        return f"missing {', '.join(missing)}"
    size = info["image_size"]
    if type(size) is not int or not 1 <= size <= MAX_IMAGE_SIZE:  # type(), not isinstance: true is not a size
        return f"image_size = {size!r}: expected a whole number from 1 to {MAX_IMAGE_SIZE} (the export stage writes 32)"
    classes = info["classes"]
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        return "classes: expected a non-empty list of names"
    for key in ("mean", "std"):
        values = info[key]
        numbers = isinstance(values, list) and all(type(v) in (int, float) and np.isfinite(v) for v in values)
        if not numbers or len(values) != 3 or (key == "std" and min(values) <= 0):
            return f"{key} = {values!r}: expected 3 finite numbers{' above 0' if key == 'std' else ''}"
    return None


def load_model(path: Path):
    """A callable from float32 NCHW tensors to logits (TorchScript, torch.export or ONNX), on the CPU."""
    if not path.is_file():
        raise InputError(f"{path}: model file not found")
    if path.suffix == ".onnx":
        return OnnxModel(path)
    if path.suffix == ".pt2":
        return load_program(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript's deprecation notice is not the user's concern
            # No safety check needed, unlike .pt2: TorchScript's unpickler rebuilds only tensors,
            # containers and TorchScript classes, never Python callables.
            return torch.jit.load(str(path), map_location="cpu")
    except Exception as err:  # torch raises several types for files it cannot read
        raise InputError(f"{path}: not a loadable model ({type(err).__name__}); supported: {SUPPORTED}") from None


def load_program(path: Path) -> torch.nn.Module:
    """A torch.export program, loaded only after safeload found nothing in it that could run code."""
    try:
        from cifar_resnet.safeload import UnsafeModelFile, load_program_module
    except ImportError:
        try:  # the script copied away from the project, with safeload.py beside it
            from safeload import UnsafeModelFile, load_program_module
        except ImportError:
            raise InputError(f"{path}: loading a .pt2 safely needs safeload.py (from src/cifar_resnet) beside this script") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return load_program_module(path)
    except UnsafeModelFile as err:
        raise InputError(str(err)) from None
    except Exception as err:  # torch raises several types for files it cannot read
        raise InputError(f"{path}: not a loadable model ({type(err).__name__}); supported: {SUPPORTED}") from None


class OnnxModel:
    """An onnxruntime CPU session called like a module (ONNX is protobuf: nothing is unpickled)."""

    def __init__(self, path: Path) -> None:
        try:
            import onnxruntime
        except ImportError:
            raise InputError(f"{path}: running ONNX needs onnxruntime (pip install onnxruntime); or use .pt or .pt2") from None
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: its notices are not the user's concern
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own types for files it cannot read
            raise InputError(f"{path}: not a loadable ONNX model ({type(err).__name__})") from None
        self.input = self.session.get_inputs()[0].name

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.session.run(None, {self.input: images.contiguous().numpy()})[0]
        return torch.from_numpy(logits)


def read_image(path: Path, size: int) -> np.ndarray:
    """The image as uint8 RGB (size, size, 3), resized when it is not already that size."""
    if path.exists() and not path.is_file():
        # Opening a FIFO blocks until something writes to it (and a device may never end):
        # only regular files are images, as in the folder dataset.
        raise InputError(f"{path}: not a regular file")
    try:
        with warnings.catch_warnings():
            # PIL only warns between MAX_IMAGE_PIXELS and twice that: a bomb all the same.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                rgb = to_rgb8(image)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(f"{path}: too many pixels to decode safely (more than {Image.MAX_IMAGE_PIXELS})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:  # PIL: SyntaxError for some bad headers
        reason = "not an image PIL can read" if isinstance(err, UnidentifiedImageError) else (getattr(err, "strerror", None) or str(err))
        raise InputError(f"{path}: {reason}") from None
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def to_rgb8(image: Image.Image) -> Image.Image:
    """8-bit RGB; 16-bit greyscale is scaled by 255/65535 (PIL's convert clips it, so mid-grey becomes white)."""
    if image.mode.startswith("I;16") or image.mode == "I":  # PIL opens 16-bit PNGs as I;16 (older: I)
        wide = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.rint(np.clip(wide, 0, 65535) * (255 / 65535)).astype(np.uint8), mode="L")
    return image.convert("RGB")


def read_images(paths: list[Path], size: int) -> tuple[list[Path], list[np.ndarray]]:
    """The readable images and their paths; each unreadable one is reported as one line on stderr."""
    good, pixels = [], []
    for path in paths:
        try:
            pixels.append(read_image(path, size))
            good.append(path)
        except InputError as err:
            print(f"error: {err}", file=sys.stderr)
    return good, pixels


def normalise(images: np.ndarray, mean: list[float], std: list[float]) -> torch.Tensor:
    """uint8 NHWC -> float32 NCHW, (x / 255 - mean) / std: the training stage's formula."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    return (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)


def batch_size(pixels_per_image: int) -> int:
    """Images per forward pass: as many as BATCH_PIXELS holds (256 at 32x32), at least one."""
    return max(1, BATCH_PIXELS // pixels_per_image)


def predict(model, images: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Class probabilities (softmax of logits / temperature) for normalised images, BATCH_PIXELS at a time.

    In float64, where a tiny temperature (1e-40) still leaves logits / temperature finite, and
    the softmax of finite numbers is never nan; a temperature too small even for that is refused.
    """
    batch = batch_size(images.shape[-2] * images.shape[-1])
    with torch.inference_mode():
        logits = torch.cat([model(images[i : i + batch]) for i in range(0, len(images), batch)])
    scaled = logits.double() / temperature
    if not torch.isfinite(scaled).all():
        if not torch.isfinite(logits).all():
            raise InputError("the model's outputs are not finite numbers (inf or nan)")
        raise InputError(f"--temperature {temperature} is too small: the logits divided by it overflow")
    return scaled.softmax(dim=1)


def one_line(text: object) -> str:
    """`text` with every unprintable character (newline, tab, other control and separator
    characters) written as Python escapes it (\\n, \\t, \\x85, \\u2028)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def format_line(path: Path, probabilities: torch.Tensor, classes: list[str], top: int) -> str:
    """'path: class 91.2%, class 5.0%, ...' with the `top` most likely classes.

    One line per image, whatever the names: a class name from preprocess.json or a file name
    may hold a newline, which would split the line and forge another image's result.
    """
    values, indices = probabilities.topk(min(top, len(classes)))
    ranked = ", ".join(f"{one_line(classes[i])} {100 * p:.1f}%" for p, i in zip(values.tolist(), indices.tolist()))
    return f"{one_line(path)}: {ranked}"


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 when every image was classified, 1 when some could not be read."""
    args = parse_args(argv)
    if args.top < 1:
        raise InputError(f"--top must be at least 1, got {args.top}")
    if not 0 < args.temperature < float("inf"):
        raise InputError(f"--temperature must be a positive number, got {args.temperature}")
    info = read_preprocess(args.preprocess or args.model.parent / "preprocess.json")
    model = load_model(args.model)  # a bad model or preprocess.json fails before any output
    paths, pixels = read_images(args.images, info["image_size"])
    if paths:
        try:
            probabilities = predict(model, normalise(np.stack(pixels), info["mean"], info["std"]), args.temperature)
        except InputError:
            raise
        except Exception as err:  # e.g. an image_size the model was not made for; torch and onnxruntime differ in types
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise InputError(f"{args.model}: the model could not run on the images ({first[:200]})") from None
        if probabilities.shape[1] != len(info["classes"]):
            raise InputError(f"the model has {probabilities.shape[1]} outputs but preprocess.json names {len(info['classes'])} classes")
        for path, row in zip(paths, probabilities):
            print(format_line(path, row, info["classes"], args.top))
    return 0 if len(paths) == len(args.images) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
