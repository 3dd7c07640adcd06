"""The official CIFAR "python version" archives: download, verify, extract safely, parse, write."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import os
import pickle
import shutil
import tarfile
import zlib
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.error import HTTPError, URLError
from urllib.request import urlopen

import numpy as np

from ..errors import UserError
from ..fileio import atomic_dir, atomic_path
from .arrays import ImageSet

ROW_LENGTH = 3 * 32 * 32  # one image per row: 1024 red, then 1024 green, then 1024 blue values


@dataclass
class ArchiveSpec:
    """Where an archive comes from and how its members are laid out."""

    name: str
    url: str
    filename: str
    md5: str
    folder: str  # the top folder inside the tar
    train_members: list[str]
    test_member: str
    meta_member: str
    label_key: bytes  # key of the label list in each batch dict
    class_names_key: bytes  # key of the class-name list in the meta dict


CIFAR_ARCHIVES = {
    "cifar10": ArchiveSpec(
        name="cifar10",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        filename="cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        folder="cifar-10-batches-py",
        train_members=[f"data_batch_{i}" for i in range(1, 6)],
        test_member="test_batch",
        meta_member="batches.meta",
        label_key=b"labels",
        class_names_key=b"label_names",
    ),
    "cifar100": ArchiveSpec(
        name="cifar100",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        filename="cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        folder="cifar-100-python",
        train_members=["train"],
        test_member="test",
        meta_member="meta",
        label_key=b"fine_labels",
        class_names_key=b"fine_label_names",
    ),
}

_CHUNK = 1 << 20


def md5sum(path: str | os.PathLike) -> str:
    """The hex md5 of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _progress(dest_path: str | os.PathLike, length: str | None):
    """A bytes-and-rate bar for a download, on a terminal only (disable=None): silent in logs and tests."""
    from tqdm import tqdm

    total = int(length) if length is not None and length.isdigit() else None
    return tqdm(total=total, desc=f"downloading {Path(dest_path).name}", unit="B", unit_scale=True, disable=None)


def download(url: str, dest_path: str | os.PathLike, timeout: float = 60, expected_md5: str = "") -> None:
    """Fetch `url` to `dest_path`; only a complete download ever appears under that name."""
    hint = f" (expected md5 {expected_md5})" if expected_md5 else ""
    try:
        with urlopen(url, timeout=timeout) as response, atomic_path(dest_path) as tmp:
            length = response.headers.get("Content-Length")
            # The official archive is 170 MB: a terminal shows how far it is and how fast it goes.
            with open(tmp, "wb") as f, _progress(dest_path, length) as bar:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    f.write(chunk)
                    bar.update(len(chunk))
            # A dropped connection can end the stream early without an exception.
            if length is not None and tmp.stat().st_size != int(length):
                raise OSError(f"got {tmp.stat().st_size} of {length} bytes")
    except (URLError, OSError, ValueError, http.client.HTTPException) as err:
        if isinstance(err, HTTPError):
            reason = f"HTTP {err.code} {err.reason}"
        else:
            reason = getattr(err, "reason", None) or err
        # Offline users have three ways forward; name them all, so the message is the only help needed.
        raise UserError(
            f"could not download {url} ({reason}); download it elsewhere and set data.source "
            f"to the archive's path{hint}, or use your own images (data.dataset: folder, data.source: "
            f"a folder of images), or try the offline pipeline: python scripts/smoke.py"
        ) from None


def verify_md5(path: str | os.PathLike, expected: str) -> None:
    """Raise UserError unless the file's md5 is `expected`."""
    got = md5sum(path)
    if got != expected.lower():
        raise UserError(
            f"{path} has md5 {got}, expected {expected}: the file is corrupt or incomplete; "
            "delete it and download it again (or point data.source at a good copy)"
        )


def _open_tar(tar_path: Path) -> tuple[tarfile.TarFile, list[tarfile.TarInfo]]:
    """Open a (possibly gzipped) tar and list its members, or raise UserError if it is unreadable."""
    try:
        tar = tarfile.open(tar_path, "r:*")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise UserError(_unreadable(tar_path, err)) from None
    try:
        # Listing reads the whole archive, so truncation shows up here, before anything is written.
        return tar, tar.getmembers()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        tar.close()
        raise UserError(_unreadable(tar_path, err)) from None


def _unreadable(tar_path: Path, err: Exception) -> str:
    """The message for a file that is not a complete tar archive."""
    return (
        f"{tar_path} is not a readable tar archive ({str(err) or type(err).__name__}); it may be truncated "
        "or an error page saved in its place, delete it and download it again"
    )


def _refuse(tar_path: Path, m: tarfile.TarInfo, why: str) -> UserError:
    """The error for an unsafe member: genuine archives never contain one."""
    return UserError(
        f"{tar_path}: refusing member {m.name!r} ({why}); this is not a genuine archive, "
        "delete it and download a fresh copy"
    )


def _check_member(tar_path: Path, m: tarfile.TarInfo) -> PurePosixPath | None:
    """The member's safe relative path (None for the root entry), or UserError if it is unsafe."""
    path = PurePosixPath(m.name)
    # A leading slash/backslash or a drive letter ("C:") would escape dest_dir on some platform.
    if m.name.startswith(("/", "\\")) or (path.parts and ":" in path.parts[0]):
        raise _refuse(tar_path, m, "absolute path")
    if ".." in path.parts:
        raise _refuse(tar_path, m, "'..' leads outside the folder")
    if m.issym() or m.islnk():
        raise _refuse(tar_path, m, "symlink or hardlink")
    if not (m.isfile() or m.isdir()):
        raise _refuse(tar_path, m, "device or fifo")
    parts = [p for p in path.parts if p != "."]
    return PurePosixPath(*parts) if parts else None


def _check_layout(tar_path: Path, checked: list[tuple[tarfile.TarInfo, PurePosixPath | None]]) -> None:
    """Refuse members that cannot all exist: a file that is also a folder, or inside a file.

    Extracting them would fail half-way with an OS error (file exists, not a directory).
    """
    files = {rel: m for m, rel in checked if rel is not None and m.isfile()}
    folders = {rel for m, rel in checked if rel is not None and m.isdir()}
    folders |= {parent for rel in files for parent in rel.parents if parent != PurePosixPath(".")}
    for rel, m in files.items():
        if rel in folders:
            raise _refuse(tar_path, m, "it is both a file and a folder in the archive")


def _in_place(target: Path) -> nullcontext:
    """Write straight to `target`: a context like atomic_path's, without the temporary file."""
    target.parent.mkdir(parents=True, exist_ok=True)  # archives need not list a folder before its files
    return nullcontext(target)


def safe_extract(tar_path: str | os.PathLike, dest_dir: str | os.PathLike, atomic_members: bool = True) -> None:
    """Extract regular files and folders of a tar(.gz) into dest_dir, refusing anything unsafe.

    atomic_members=False writes each member in place instead of through a temporary file,
    a chmod and a rename (about 0.2 ms less per member: seconds for tens of thousands of
    small images); use it only when dest_dir is a scratch folder that a failure discards
    whole, as `atomic_dir` does.
    """
    tar_path, dest_dir = Path(tar_path), Path(dest_dir)
    tar, members = _open_tar(tar_path)
    with tar:
        # Check every member before writing any, so a bad archive leaves nothing behind.
        checked = [(m, _check_member(tar_path, m)) for m in members]
        _check_layout(tar_path, checked)
        dest_dir.mkdir(parents=True, exist_ok=True)
        root = dest_dir.resolve()
        for m, rel in checked:
            if rel is None:
                continue
            target = dest_dir.joinpath(*rel.parts)
            # Guards against a pre-existing symlink in dest_dir redirecting the write.
            if not target.resolve().is_relative_to(root):
                raise UserError(f"{tar_path}: member {m.name!r} would land outside {dest_dir}; remove links there")
            if m.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            try:
                writing = atomic_path(target) if atomic_members else _in_place(target)
                with tar.extractfile(m) as src, writing as tmp, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst, _CHUNK)
            except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as err:
                raise UserError(_unreadable(tar_path, err)) from None


class _BatchUnpickler(pickle.Unpickler):
    """An unpickler that only rebuilds what a CIFAR batch holds (numpy arrays), never arbitrary code."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),  # how protocol 2 stores bytes when written by Python 3
    }

    def find_class(self, module: str, name: str):
        """Resolve only allow-listed globals."""
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"it references {module}.{name}, which a CIFAR batch never does")
        if module.startswith("numpy.core."):
            # Files pickled by numpy 1.x name numpy.core, which numpy 2 renamed to numpy._core.
            module = "numpy._core." + module.split(".", 2)[2] if hasattr(np, "_core") else module
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    """Load one batch/meta pickle (as the official files need: encoding="bytes")."""
    if not path.is_file():
        raise UserError(
            f"{path} is missing: the extracted CIFAR folder is incomplete; "
            "delete it and point data.source at the .tar.gz archive instead"
        )
    try:
        with open(path, "rb") as f:
            obj = _BatchUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError) as e:
        raise UserError(f"{path} is not a readable CIFAR batch ({e}); delete it and extract the archive again") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path} holds a {type(obj).__name__}, not a CIFAR batch dict; delete it and extract again")
    return obj


def _get(d: dict, key: bytes, path: Path):
    """d[key], or UserError naming the missing key and file."""
    if key not in d:
        raise UserError(f"{path} has no {key!r} entry; is it from the right dataset? extract the right archive")
    return d[key]


def _read_batch(path: Path, spec: ArchiveSpec, num_classes: int) -> ImageSet:
    """Parse one batch file into an ImageSet (CHW rows -> NHWC images)."""
    d = _unpickle(path)
    data = np.asarray(_get(d, b"data", path))
    if data.ndim != 2 or data.shape[1] != ROW_LENGTH:
        raise UserError(
            f"{path}: data has shape {data.shape}, expected rows of {ROW_LENGTH} values (3x32x32); "
            "the file is not a CIFAR batch, extract the right archive"
        )
    if data.dtype != np.uint8:
        if not np.issubdtype(data.dtype, np.integer) or (data.size and (data.min() < 0 or data.max() > 255)):
            raise UserError(f"{path}: data is {data.dtype}, expected bytes 0..255; extract the right archive")
        data = data.astype(np.uint8)
    n = data.shape[0]
    labels = np.asarray(_get(d, spec.label_key, path))
    if labels.shape != (n,) or (n and not np.issubdtype(labels.dtype, np.integer)):
        raise UserError(f"{path}: labels have shape {labels.shape} for {n} images; the file is damaged, extract again")
    labels = labels.astype(np.int64)
    if n and (labels.min() < 0 or labels.max() >= num_classes):
        raise UserError(
            f"{path}: labels range over {labels.min()}..{labels.max()} but the meta file names "
            f"{num_classes} classes; the batch and meta files come from different archives"
        )
    images = data.reshape(n, 3, 32, 32).transpose(0, 2, 3, 1).copy()
    boxes = None
    if b"boxes" in d:
        boxes = np.asarray(d[b"boxes"])
        if boxes.shape != (n, 4) or (n and not np.issubdtype(boxes.dtype, np.integer)):
            raise UserError(f"{path}: boxes have shape {boxes.shape}, expected ({n}, 4) integers; extract again")
        boxes = boxes.astype(np.int32)
    return ImageSet(images, labels, boxes)


def _concat(parts: list[ImageSet]) -> ImageSet:
    """Join batches; boxes are kept only when every batch has them."""
    boxes = None
    if all(p.boxes is not None for p in parts):
        boxes = np.concatenate([p.boxes for p in parts])
    return ImageSet(
        np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]), boxes
    )


def read_cifar_folder(folder: str | os.PathLike, spec: ArchiveSpec) -> tuple[ImageSet, ImageSet, list[str]]:
    """Parse an extracted archive folder into (train, test, class names)."""
    folder = Path(folder)
    meta_path = folder / spec.meta_member
    names = _get(_unpickle(meta_path), spec.class_names_key, meta_path)
    if not isinstance(names, (list, tuple)) or not names:
        raise UserError(f"{meta_path}: {spec.class_names_key!r} should list the class names; extract again")
    classes = _class_names(names, meta_path)
    train = _concat([_read_batch(folder / m, spec, len(classes)) for m in spec.train_members])
    test = _read_batch(folder / spec.test_member, spec, len(classes))
    for split, images, member in (("training", train, spec.train_members[0]), ("test", test, spec.test_member)):
        if len(images) == 0:  # later stages would divide by the image count or fail to batch
            raise UserError(f"{folder / member}: the {split} split holds no images; the archive is damaged, extract the right one")
    return train, test, classes


def _class_names(names: list | tuple, meta_path: Path) -> list[str]:
    """The class names as text (the official files hold UTF-8, in fact ASCII, bytes)."""
    try:
        return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]
    except UnicodeDecodeError as err:
        raise UserError(
            f"{meta_path}: class name {err.object[:40]!r} is not UTF-8 text; the meta file is damaged, extract again"
        ) from None


def _batch_dict(spec: ArchiveSpec, s: ImageSet, batch_label: str, offset: int) -> dict:
    """The pickled dict for one batch, in the official layout (CHW rows, list labels)."""
    n = len(s)
    d = {
        b"batch_label": batch_label.encode(),
        spec.label_key: [int(x) for x in s.labels],
        b"data": np.ascontiguousarray(s.images.transpose(0, 3, 1, 2).reshape(n, ROW_LENGTH), dtype=np.uint8),
        b"filenames": [f"{spec.name}_{offset + i:06d}.png".encode() for i in range(n)],
    }
    if s.boxes is not None:
        d[b"boxes"] = np.asarray(s.boxes, dtype=np.int32)
    return d


def _add_member(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    """Add one regular file with fixed metadata, so the same data gives the same archive bytes."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(payload), 0, 0o644
    tar.addfile(info, io.BytesIO(payload))


def write_cifar_archive(
    path: str | os.PathLike, spec: ArchiveSpec, train: ImageSet, test: ImageSet, classes: list[str]
) -> None:
    """Write train/test/classes as a tar.gz in the official CIFAR python layout, atomically."""
    batches = []
    k = len(spec.train_members)
    for i, (member, idx) in enumerate(zip(spec.train_members, np.array_split(np.arange(len(train)), k))):
        label = f"training batch {i + 1} of {k}"
        batches.append((member, _batch_dict(spec, train.subset(idx), label, int(idx[0]) if len(idx) else 0)))
    batches.append((spec.test_member, _batch_dict(spec, test, "testing batch 1 of 1", 0)))
    meta = {spec.class_names_key: [c.encode() for c in classes], b"num_vis": ROW_LENGTH}
    batches.append((spec.meta_member, meta))
    with atomic_path(path) as tmp, open(tmp, "wb") as raw:
        # mtime=0 in the gzip header keeps the archive's md5 stable across runs.
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz:
            with tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
                folder = tarfile.TarInfo(spec.folder)
                folder.type, folder.mode, folder.mtime = tarfile.DIRTYPE, 0o755, 0
                tar.addfile(folder)
                for member, d in batches:
                    # The official files are Python 2 protocol-2 pickles; Python 3 can only write
                    # bytes in protocol 2 via a latin-1 detour (50% larger, slower), so use 4, which
                    # still rebuilds arrays through numpy's _reconstruct as the official ones do.
                    _add_member(tar, f"{spec.folder}/{member}", pickle.dumps(d, protocol=4))


def _has_members(folder: Path, spec: ArchiveSpec) -> bool:
    """Whether `folder` looks like an extracted archive folder."""
    return (folder / spec.meta_member).is_file() or (folder / spec.test_member).is_file()


def _find_archive_or_folder(spec: ArchiveSpec, source: Path) -> tuple[Path | None, Path | None]:
    """Interpret data.source as (archive file, None) or (None, extracted folder)."""
    if not source.exists():
        raise UserError(
            f"data.source {source} does not exist; point it at {spec.filename} or its extracted "
            f"{spec.folder} folder, or set it to null to download"
        )
    if source.is_file():
        return source, None
    if (source / spec.filename).is_file():
        return source / spec.filename, None
    if _has_members(source / spec.folder, spec):
        return None, source / spec.folder
    if _has_members(source, spec):
        return None, source
    raise UserError(
        f"data.source {source} holds neither {spec.filename} nor an extracted {spec.folder} folder; "
        "point it at one of them"
    )


def load_cifar(
    spec: ArchiveSpec, source: str | os.PathLike | None, work_dir: str | os.PathLike
) -> tuple[ImageSet, ImageSet, list[str]]:
    """Get (train, test, classes) from a download, an archive file, or an extracted folder."""
    work_dir = Path(work_dir)
    if source is None:
        if not spec.url:
            raise UserError(f"{spec.name} has no download URL; set data.source to its archive")
        archive: Path | None = work_dir / spec.filename
        # Reuse a complete earlier download instead of fetching 170 MB again.
        if not (archive.is_file() and spec.md5 and md5sum(archive) == spec.md5):
            download(spec.url, archive, expected_md5=spec.md5)
        folder = None
    else:
        archive, folder = _find_archive_or_folder(spec, Path(source).expanduser())
    if archive is not None:
        if archive.name == spec.filename and spec.md5:
            verify_md5(archive, spec.md5)
        extracted = work_dir / "extracted"
        with atomic_dir(extracted) as tmp:
            safe_extract(archive, tmp)
        folder = extracted / spec.folder
        if not folder.is_dir():
            raise UserError(
                f"{archive} has no {spec.folder} folder inside; it is not the {spec.name} archive"
            )
    return read_cifar_folder(folder, spec)
