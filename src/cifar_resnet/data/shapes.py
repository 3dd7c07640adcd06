"""An offline synthetic dataset of 10 shape classes, written in the real CIFAR archive format.

It lets the whole pipeline (extraction and parsing included) run with no network, and it
records each object's bounding box so explanations (e.g. Grad-CAM) can be checked against it.
"""

from __future__ import annotations

import os

import numpy as np

from .arrays import ImageSet
from .cifar import ArchiveSpec, write_cifar_archive

SHAPES_SPEC = ArchiveSpec(
    name="shapes",
    url="",
    filename="shapes-python.tar.gz",
    md5="",
    folder="shapes-batches-py",
    train_members=["data_batch_1", "data_batch_2"],
    test_member="test_batch",
    meta_member="batches.meta",
    label_key=b"labels",
    class_names_key=b"label_names",
)

SHAPE_CLASSES = [
    "circle", "square", "triangle", "diamond", "cross",
    "ring", "star", "hexagon", "half-disc", "ellipse",
]

SIZE = 32
MAX_TILT_DEG = 20.0
SUPERSAMPLE = 4  # each pixel averages 4x4 sub-samples, which anti-aliases the edges
_CHUNK = 512  # images rendered at once; bounds memory at ~50 MB of float32 per array


def _regular_polygon(u: np.ndarray, v: np.ndarray, sides: int) -> np.ndarray:
    """Inside a regular polygon with circumradius 1 and a vertex on the +v axis."""
    inside = np.ones(u.shape, dtype=bool)
    apothem = np.cos(np.pi / sides)
    for k in range(sides):
        # Edge normals sit halfway between vertices (which are at pi/2 + 2*pi*k/sides).
        a = np.pi / 2 + np.pi / sides + 2 * np.pi * k / sides
        inside &= u * np.float32(np.cos(a)) + v * np.float32(np.sin(a)) < apothem
    return inside


def _star(u: np.ndarray, v: np.ndarray, points: int = 5, inner: float = 0.42) -> np.ndarray:
    """Inside a star polygon with outer radius 1 and inner radius `inner`."""
    sector = 2 * np.pi / points
    r = np.hypot(u, v)
    # Fold every angle into half a sector: tip on the x axis, inner vertex at angle sector/2.
    psi = np.abs(np.mod(np.arctan2(v, u), sector) - sector / 2)
    psi = sector / 2 - psi
    px, py = r * np.cos(psi), r * np.sin(psi)
    bx, by = inner * np.cos(sector / 2), inner * np.sin(sector / 2)
    # Inside when the point lies on the centre's side of the tip->inner-vertex edge.
    return (bx - 1) * py - by * (px - 1) > 0


def _mask(label: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-test for shape class `label` in object coordinates (radius ~1)."""
    au, av = np.abs(u), np.abs(v)
    if label == 0:  # circle
        return u * u + v * v < 0.85**2
    if label == 1:  # square
        return np.maximum(au, av) < 0.66
    if label == 2:  # triangle
        return _regular_polygon(u, v, 3)
    if label == 3:  # diamond: a rhombus twice as tall as wide, so rotation can't make it a square
        return au / 0.5 + av < 1.0
    if label == 4:  # cross
        return ((au < 0.27) & (av < 0.95)) | ((av < 0.27) & (au < 0.95))
    if label == 5:  # ring
        r2 = u * u + v * v
        return (r2 > 0.5**2) & (r2 < 0.95**2)
    if label == 6:  # star
        return _star(u, v)
    if label == 7:  # hexagon
        return _regular_polygon(u / np.float32(0.92), v / np.float32(0.92), 6)
    if label == 8:  # half-disc, shifted so its area is centred
        w = v + np.float32(0.42)
        return (u * u + w * w < 1.05**2) & (w > 0)
    if label == 9:  # ellipse
        return u * u + (v / 0.42) ** 2 < 1.0
    raise ValueError(f"no shape class {label}")


def _draw_params(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """All per-image random choices, drawn up front so rendering order doesn't matter."""
    f = np.float32
    p = {"label": rng.permutation(np.arange(n) % len(SHAPE_CLASSES)).astype(np.int64)}
    p["radius"] = rng.uniform(5.0, 11.0, n).astype(f)  # object diameter ~10-22 px
    margin = 0.6 * p["radius"]  # may poke out of the frame a little, like real photos
    p["cx"] = rng.uniform(margin, SIZE - margin).astype(f)
    p["cy"] = rng.uniform(margin, SIZE - margin).astype(f)
    # Tilt within +-20 degrees: with any angle, a small CNN on ~1000 images stayed near 25% after
    # 8 epochs; +-20 degrees still varies the pose but lets it pass 60% in that budget.
    p["theta"] = np.deg2rad(rng.uniform(-MAX_TILT_DEG, MAX_TILT_DEG, n)).astype(f)
    p["stretch"] = rng.uniform(0.93, 1.07, n).astype(f)  # mild aspect jitter
    p["bg0"] = rng.uniform(0, 1, (n, 3)).astype(f)
    # The gradient's far end drifts from bg0 rather than being independent, so it stays subtle.
    p["bg1"] = np.clip(p["bg0"] + rng.uniform(-0.35, 0.35, (n, 3)), 0, 1).astype(f)
    p["grad_dir"] = rng.uniform(0, 2 * np.pi, n).astype(f)
    p["tex_amp"] = rng.uniform(0.0, 0.08, n).astype(f)
    # Slow waves: stripes as fine as the shapes' edges made the task far too hard for small sets.
    p["tex_freq"] = rng.uniform(0.15, 0.6, n).astype(f)  # radians per pixel
    p["tex_dir"] = rng.uniform(0, 2 * np.pi, n).astype(f)
    p["tex_phase"] = rng.uniform(0, 2 * np.pi, n).astype(f)
    p["fg"] = rng.uniform(0, 1, (n, 3)).astype(f)
    p["fg_alt"] = rng.uniform(0, 0.3, (n, 3)).astype(f)
    p["noise"] = rng.uniform(0.01, 0.05, n).astype(f)
    return p


def _background(p: dict[str, np.ndarray], sl: slice) -> np.ndarray:
    """Per-image colour gradient plus a sinusoidal texture, float32 (b, 32, 32, 3), about 0..1."""
    xs = np.arange(SIZE, dtype=np.float32) + 0.5
    x, y = xs[None, None, :], xs[None, :, None]
    d = p["grad_dir"][sl, None, None]
    t = ((x - 16) * np.cos(d) + (y - 16) * np.sin(d)) / 45 + 0.5  # stays within [0, 1]
    bg = p["bg0"][sl, None, None, :] * (1 - t[..., None]) + p["bg1"][sl, None, None, :] * t[..., None]
    td = p["tex_dir"][sl, None, None]
    wave = np.sin(p["tex_freq"][sl, None, None] * (x * np.cos(td) + y * np.sin(td)) + p["tex_phase"][sl, None, None])
    return bg + (p["tex_amp"][sl, None, None] * wave)[..., None]


def _coverage(p: dict[str, np.ndarray], idx: np.ndarray, label: int) -> np.ndarray:
    """Fraction of each pixel covered by the object, (b, 32, 32), for images `idx` of one class."""
    sub = (np.arange(SIZE * SUPERSAMPLE, dtype=np.float32) + 0.5) / SUPERSAMPLE
    cos, sin = np.cos(p["theta"][idx]), np.sin(p["theta"][idx])
    r, k = p["radius"][idx], p["stretch"][idx]
    dx = (sub[None, None, :] - p["cx"][idx, None, None]) / r[:, None, None]
    dy = (sub[None, :, None] - p["cy"][idx, None, None]) / r[:, None, None]
    u = (dx * cos[:, None, None] + dy * sin[:, None, None]) * k[:, None, None]
    v = (dy * cos[:, None, None] - dx * sin[:, None, None]) / k[:, None, None]
    inside = _mask(label, u, v).view(np.uint8).reshape(len(idx), SIZE, SUPERSAMPLE, SIZE, SUPERSAMPLE)
    # Counting in uint8 (at most 16 hits per pixel) is several times faster than a float mean.
    hits = inside.sum(axis=4, dtype=np.uint8).sum(axis=2, dtype=np.uint8)
    return hits.astype(np.float32) / SUPERSAMPLE**2


def _boxes(alpha: np.ndarray) -> np.ndarray:
    """Tight x0, y0, x1, y1 (exclusive) boxes around the pixels the object touches."""
    cols, rows = (alpha > 0).any(axis=1), (alpha > 0).any(axis=2)
    x0, x1 = cols.argmax(axis=1), SIZE - cols[:, ::-1].argmax(axis=1)
    y0, y1 = rows.argmax(axis=1), SIZE - rows[:, ::-1].argmax(axis=1)
    return np.stack([x0, y0, x1, y1], axis=1).astype(np.int32)


def _render(p: dict[str, np.ndarray], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw every image: uint8 (n, 32, 32, 3) and the object coverage float32 (n, 32, 32)."""
    n = len(p["label"])
    images = np.empty((n, SIZE, SIZE, 3), dtype=np.uint8)
    alpha = np.empty((n, SIZE, SIZE), dtype=np.float32)
    for start in range(0, n, _CHUNK):
        sl = slice(start, min(start + _CHUNK, n))
        labels = p["label"][sl]
        a = np.empty((len(labels), SIZE, SIZE), dtype=np.float32)
        # One vectorised pass per class present in the chunk.
        for c in np.unique(labels):
            local = np.flatnonzero(labels == c)
            a[local] = _coverage(p, start + local, int(c))
        bg = _background(p, sl)
        fg = _foreground(p, sl, bg)
        img = bg * (1 - a[..., None]) + fg[:, None, None, :] * a[..., None]
        img += p["noise"][sl, None, None, None] * rng.standard_normal(img.shape, dtype=np.float32)
        images[sl] = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
        alpha[sl] = a
    return images, alpha


def _foreground(p: dict[str, np.ndarray], sl: slice, bg: np.ndarray) -> np.ndarray:
    """The object's colour, pushed away from the background around it so it stays visible."""
    fg = p["fg"][sl]
    around = bg.mean(axis=(1, 2))
    lum = lambda c: c @ np.array([0.3, 0.59, 0.11], dtype=np.float32)  # noqa: E731
    weak = np.abs(lum(fg) - lum(around)) < 0.3
    # Low contrast: use a dark colour on a bright background, a bright one on a dark background.
    swap = np.where((lum(around) > 0.5)[:, None], p["fg_alt"][sl], 1 - p["fg_alt"][sl])
    return np.where(weak[:, None], swap, fg)


def _generate(rng: np.random.Generator, n: int) -> tuple[ImageSet, np.ndarray]:
    """One split of n images from `rng`, plus its coverage maps."""
    p = _draw_params(rng, n)
    images, alpha = _render(p, rng)
    return ImageSet(images, p["label"], _boxes(alpha)), alpha


def generate_shapes(n_train: int, n_test: int, seed: int) -> tuple[ImageSet, ImageSet, list[str]]:
    """Deterministic synthetic (train, test, classes); train and test use independent streams."""
    train_seq, test_seq = np.random.SeedSequence(seed).spawn(2)
    train, _ = _generate(np.random.default_rng(train_seq), n_train)
    test, _ = _generate(np.random.default_rng(test_seq), n_test)
    return train, test, list(SHAPE_CLASSES)


def build_shapes_archive(path: str | os.PathLike, n_train: int, n_test: int, seed: int) -> None:
    """Generate the shapes dataset and write it as a CIFAR-format tar.gz at `path`."""
    train, test, classes = generate_shapes(n_train, n_test, seed)
    write_cifar_archive(path, SHAPES_SPEC, train, test, classes)
