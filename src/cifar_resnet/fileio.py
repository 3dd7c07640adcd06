"""Writing outputs atomically, so a crash never leaves a file that looks complete."""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator


def _default_mode(directory: bool = False) -> int:
    """The permissions a plain open()/mkdir() would give under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def _temporary_prefix(path: Path) -> str:
    return f".{path.name}."


def remove_stale_temporaries(path: Path) -> None:
    """Delete what a killed writer of `path` left behind (`.NAME.*.tmp` siblings).

    Called before each atomic write, so a half-written file or folder never outlives
    the next run of its stage; .gitignore and .dvcignore also ignore the pattern, so
    neither git nor DVC's cache ever picks one up meanwhile.
    """
    if not path.parent.is_dir():
        return
    for stale in path.parent.glob(f"{_temporary_prefix(path)}*.tmp"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=_temporary_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files; give the output the permissions a plain write would.
        os.chmod(tmp_path, _default_mode())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling folder; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp_path = Path(tempfile.mkdtemp(prefix=_temporary_prefix(path), suffix=".tmp", dir=path.parent))
    try:
        yield tmp_path
        os.chmod(tmp_path, _default_mode(directory=True))  # mkdtemp creates 0700 folders
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp_path, path)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """A binary file object whose bytes become `path` only if the block succeeds.

    Serialisers get a file object, never the temporary name: torch.save and
    torch.jit.save record the name they are given inside the archive, so a
    temporary name would make every run's file differ (and DVC see a change).
    They write into memory, and Python writes the file: torch's C++ writers abort the
    whole process (std::terminate, exit 134) when the disk fills under them, where
    Python's write raises an OSError that a stage reports in one line.
    """
    buffer = io.BytesIO()
    yield buffer
    with atomic_path(path) as tmp:
        write_bytes(tmp, buffer.getbuffer())


def write_bytes(path: Path, data: memoryview | bytes) -> None:
    with open(path, "wb") as file:
        file.write(data)


def json_safe(data: Any) -> Any:
    """`data` with every NaN or infinity replaced by None: JSON has no such numbers."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: json_safe(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [json_safe(value) for value in data]
    return data


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write `data` as indented, strictly valid JSON (NaN and infinity become null), atomically."""
    text = json.dumps(json_safe(data), indent=2, allow_nan=False)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())
