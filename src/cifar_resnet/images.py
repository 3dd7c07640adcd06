"""The one image decoder: a file to uint8 RGB (size, size, 3), as training and serving both see it.

The folder dataset (data/folder.py), scripts/predict.py and every other reader of image files
call `decode_image`, so a model trained on your own images is served with the resize it was
trained with. The resize is a `Resize` record: the export stage writes it into preprocess.json
(RESIZE.as_json()), and predict.py reads it back from there.

numpy and PIL only, no other project code: scripts/predict.py imports it from the package,
or, copied away from the project, from a copy of this file beside it (as with safeload.py).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
from PIL import Image, UnidentifiedImageError

# PIL's resampling filters by the lower-case name preprocess.json gives them.
FILTERS = {name.lower(): member for name, member in Image.Resampling.__members__.items()}


class ImageReadError(ValueError):
    """A file that is not a readable image; the message is the reason, without the file's name."""


@dataclass(frozen=True)
class Resize:
    """How an image that is not size x size becomes one.

    filter: a PIL resampling filter by name (FILTERS). reducing_gap: PIL's two-step resize (a
    box reduction to within that factor of the target, then the filter), or None for the
    filter alone. jpeg_draft: let libjpeg decode large JPEGs at 1/2 to 1/8 scale first (never
    below the target size); a no-op for other formats.
    """

    filter: str = "bicubic"
    reducing_gap: Optional[float] = 2.0
    jpeg_draft: bool = True

    def as_json(self) -> dict[str, Any]:
        return {"filter": self.filter, "reducing_gap": self.reducing_gap, "jpeg_draft": self.jpeg_draft}


# The resize every model here was trained with (data/folder.py decodes the dataset with it).
RESIZE = Resize()


def resize_from_json(value: object) -> Resize:
    """preprocess.json's "resize" as a Resize, or ImageReadError saying what is wrong with it."""
    if not isinstance(value, dict) or set(value) != {"filter", "reducing_gap", "jpeg_draft"}:
        raise ImageReadError("resize: expected an object with filter, reducing_gap and jpeg_draft")
    name, gap, draft = value["filter"], value["reducing_gap"], value["jpeg_draft"]
    if name not in FILTERS:
        raise ImageReadError(f"resize.filter = {name!r}: expected one of {', '.join(FILTERS)}")
    if gap is not None and (type(gap) not in (int, float) or not 1.0 <= gap < float("inf")):
        raise ImageReadError(f"resize.reducing_gap = {gap!r}: expected null or a number from 1")
    if type(draft) is not bool:
        raise ImageReadError(f"resize.jpeg_draft = {draft!r}: expected true or false")
    return Resize(name, None if gap is None else float(gap), draft)


def to_rgb8(image: Image.Image) -> Image.Image:
    """8-bit RGB of any PIL mode; 16-bit greyscale is scaled by 255/65535 (PIL's convert clips it,
    so mid-grey would become white). Alpha is dropped, as torchvision's loader does."""
    if image.mode.startswith("I;16") or image.mode == "I":  # PIL opens 16-bit PNGs as I;16 (older: I)
        wide = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.rint(np.clip(wide, 0, 65535) * (255 / 65535)).astype(np.uint8), mode="L")
    return image.convert("RGB")


def decode_image(path: str | Path, size: int, resize: Resize = RESIZE) -> np.ndarray:
    """The image file as uint8 RGB (size, size, 3); images already size x size are not resampled.

    Only regular files are read: opening a FIFO blocks until something writes to it, and a
    device may never end. PIL's decompression-bomb warning (between MAX_IMAGE_PIXELS and twice
    that) is refused like its error: a bomb all the same.
    """
    path = Path(path)
    if path.exists() and not path.is_file():
        raise ImageReadError("not a regular file")
    target = (size, size)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if resize.jpeg_draft:
                    image.draft("RGB", target)
                rgb = to_rgb8(image)
    except FileNotFoundError:
        raise ImageReadError("no such file") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageReadError(f"too many pixels to decode safely (more than {Image.MAX_IMAGE_PIXELS})") from None
    except UnidentifiedImageError:
        raise ImageReadError("not an image PIL can read") from None
    except (OSError, ValueError, SyntaxError, EOFError) as err:  # PIL: SyntaxError for some bad headers
        raise ImageReadError(getattr(err, "strerror", None) or str(err) or type(err).__name__) from None
    if rgb.size != target:
        rgb = rgb.resize(target, FILTERS[resize.filter], reducing_gap=resize.reducing_gap)
    return np.asarray(rgb, dtype=np.uint8)
