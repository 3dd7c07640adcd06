"""In-memory image sets and their on-disk form (uncompressed .npz, class names as JSON)."""

from __future__ import annotations

import json
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..fileio import atomic_path

IMAGE_SHAPE = (32, 32, 3)


@dataclass
class ImageSet:
    """Images with their labels and, optionally, one object box per image."""

    images: np.ndarray  # uint8 (N, 32, 32, 3), NHWC
    labels: np.ndarray  # int64 (N,)
    boxes: np.ndarray | None = None  # int32 (N, 4): x0, y0, x1, y1 in pixels, x1/y1 exclusive

    def __len__(self) -> int:
        """Number of images."""
        return int(self.labels.shape[0])

    def subset(self, idx) -> "ImageSet":
        """The images at `idx` (an index array or boolean mask), as a new ImageSet."""
        idx = np.asarray(idx)
        boxes = None if self.boxes is None else self.boxes[idx]
        return ImageSet(self.images[idx], self.labels[idx], boxes)


def validate_imageset(s: ImageSet, where: str, num_classes: int | None = None) -> ImageSet:
    """Check dtypes, shapes and ranges; return the set with canonical dtypes or raise UserError."""
    images, labels, boxes = np.asarray(s.images), np.asarray(s.labels), s.boxes
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != IMAGE_SHAPE:
        raise UserError(
            f"{where}: images are {images.dtype} {images.shape}, expected uint8 (N, 32, 32, 3); "
            "the file is not from this pipeline, delete it and rerun the stage that makes it"
        )
    n = images.shape[0]
    if labels.ndim != 1 or labels.shape[0] != n or not np.issubdtype(labels.dtype, np.integer):
        raise UserError(
            f"{where}: labels are {labels.dtype} {labels.shape}, expected {n} integers "
            "(one per image); delete the file and rerun the stage that makes it"
        )
    labels = labels.astype(np.int64, copy=False)
    if num_classes is not None and n and (labels.min() < 0 or labels.max() >= num_classes):
        raise UserError(
            f"{where}: labels range over {labels.min()}..{labels.max()} but there are "
            f"{num_classes} classes; the data and class list come from different runs, rerun the stage"
        )
    if boxes is not None:
        boxes = np.asarray(boxes)
        if boxes.shape != (n, 4) or not np.issubdtype(boxes.dtype, np.integer):
            raise UserError(
                f"{where}: boxes are {boxes.dtype} {boxes.shape}, expected integers ({n}, 4); "
                "delete the file and rerun the stage that makes it"
            )
        boxes = boxes.astype(np.int32, copy=False)
        x0, y0, x1, y1 = boxes.T
        if n and not ((0 <= x0) & (x0 < x1) & (x1 <= 32) & (0 <= y0) & (y0 < y1) & (y1 <= 32)).all():
            raise UserError(
                f"{where}: some boxes are empty or outside the 32x32 image; "
                "delete the file and rerun the stage that makes it"
            )
    return ImageSet(images, labels, boxes)


def save_imageset(path: str | os.PathLike, s: ImageSet) -> None:
    """Write `s` as an uncompressed .npz, atomically."""
    s = validate_imageset(s, f"refusing to save {path}")
    arrays = {"images": s.images, "labels": s.labels}
    if s.boxes is not None:
        arrays["boxes"] = s.boxes
    with atomic_path(path) as tmp:
        # Write through a file object: np.savez given a name would append ".npz" to the temp name.
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def _missing(path: Path, producer: str) -> UserError:
    """The error for an input file that an earlier stage should have produced."""
    return UserError(f"{path} not found; run `dvc repro {producer}` to produce it")


# Deflate packs at most about 1032 bytes into one: a compressed member claiming more is lying.
_MAX_DEFLATE_RATIO = 1032


def _check_declared_sizes(z: np.lib.npyio.NpzFile, path: Path, producer: str) -> None:
    """Refuse an array whose .npy header declares more bytes than its zip member holds.

    numpy allocates the declared shape before reading: a forged header of a few bytes would
    ask for tens of GiB (a MemoryError, or the machine swapping) instead of a clear error.
    """
    for info in z.zip.infolist():
        with z.zip.open(info) as member:
            version = np.lib.format.read_magic(member)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(member)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(member)
            else:
                raise ValueError(f"member {info.filename!r} has .npy format version {version}, not 1.0 or 2.0")
            header = member.tell()
        held = info.file_size - header
        if info.compress_type != zipfile.ZIP_STORED:
            held = min(held, info.compress_size * _MAX_DEFLATE_RATIO)
        declared = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
        if declared > held:
            raise UserError(
                f"{path}: array {info.filename!r} declares shape {shape} of {dtype} ({declared} bytes) but holds "
                f"{max(held, 0)} bytes; the file is damaged, delete it and run `dvc repro {producer}`"
            )


def load_imageset(
    path: str | os.PathLike, num_classes: int | None = None, producer: str = "split"
) -> ImageSet:
    """Read and validate an ImageSet .npz; `producer` is the stage named when the file is missing."""
    path = Path(path)
    if not path.is_file():
        raise _missing(path, producer)
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = {"images", "labels"} - set(z.files)
            if missing:
                raise UserError(
                    f"{path}: no {', '.join(sorted(missing))} array; the file is not from this "
                    f"pipeline, delete it and run `dvc repro {producer}`"
                )
            _check_declared_sizes(z, path, producer)
            s = ImageSet(z["images"], z["labels"], z["boxes"] if "boxes" in z.files else None)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise UserError(
            f"{path} is not a readable .npz file ({err}); delete it and run `dvc repro {producer}`"
        ) from None
    return validate_imageset(s, str(path), num_classes)


def save_classes(path: str | os.PathLike, classes: list[str]) -> None:
    """Write the class names as a JSON list, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps([str(c) for c in classes], indent=2) + "\n")


def load_classes(path: str | os.PathLike, producer: str = "split") -> list[str]:
    """Read the JSON list of class names written by save_classes."""
    path = Path(path)
    if not path.is_file():
        raise _missing(path, producer)
    try:
        classes = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path} is not valid JSON ({err}); delete it and run `dvc repro {producer}`") from None
    except RecursionError:  # json nests one Python call per [ or {: thousands of them overflow the stack
        raise UserError(f"{path} is not valid JSON (nested too deeply); delete it and run `dvc repro {producer}`") from None
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise UserError(
            f"{path} should hold a non-empty JSON list of class names; "
            f"delete it and run `dvc repro {producer}`"
        )
    return classes
