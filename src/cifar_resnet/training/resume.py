"""The store an interrupted training run resumes from, keyed by what the run is made of.

DVC deletes a stage's outputs before it reruns the stage, and a `persist` output would
switch off DVC's run-cache (so returning to earlier params would retrain). So the
checkpoints of a run in progress live in a `ResumeStore`, a folder outside DVC's outputs,
keyed (`run_key`) by everything the run depends on: params, the code of the stage's import
closure and the prepared data. A run resumes only from a store with the same key, and the
store is emptied once the run's outputs are written, so a finished run is never "resumed"
again and only an interrupted one is. One training process holds the store at a time
(`ResumeStore.exclusive`).

Apart from assembling a run (training/run.py): the store knows nothing of models or
optimisers, only checkpoint files, their keys and the lock.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

from ..config import RESULT_NEUTRAL_TRAIN_KEYS, Params
from ..errors import UserError
from ..fileio import atomic_dir
from ..provenance import describe_change, digests, value_digest
from .checkpoint import load_checkpoint


def run_key(params: Params, code: list[Path], data: list[Path], code_root: Path) -> dict[str, Any]:
    """What a training run is made of: its params, the code it runs and the data it reads.

    The result-neutral train keys (config.RESULT_NEUTRAL_TRAIN_KEYS: num_workers) are left
    out of the params: how many processes feed the batches does not change what is learned
    (each image's augmentation is seeded by itself).
    """
    train = params.train.model_dump(exclude=set(RESULT_NEUTRAL_TRAIN_KEYS))
    shaping = {"seed": params.seed, "data": params.data.model_dump(), "model": params.model.model_dump(), "train": train}
    return {"params": value_digest(shaping), "code": digests(code, code_root), "data": digests(data)}


class ResumeStore:
    """The checkpoints of the run in progress, in a folder DVC does not manage (see the module doc)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    # How long a lock whose recorded holder is dead may stay busy before it is broken: the
    # holder's forked children (DataLoader workers) inherit the locked file and notice its
    # death only at their next check, up to 30 s later.
    stale_grace_s = 2.0

    @contextmanager
    def exclusive(self) -> Iterator["ResumeStore"]:
        """Hold the store for one training process; a second one is refused with a clear error.

        The lock is an flock, released by the kernel once every process holding the locked
        file has ended, so a live orphan trainer always blocks the next run. But a killed
        trainer's forked workers hold the same file: when the pid recorded in it is dead,
        the lock is waited for briefly, then broken by replacing the file (the orphans keep
        the old one).
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        with self._locked() as lock:
            lock.seek(0)
            lock.truncate()
            lock.write(f"pid {os.getpid()}")
            lock.flush()
            yield self

    @contextmanager
    def _locked(self) -> Iterator[Any]:
        """The lock file, flocked by this process (see `exclusive`)."""
        path = self.folder / ".lock"
        stale_since = None
        while True:
            lock = open(path, "a+")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _recorded_holder(lock)
                if holder is None or _alive(holder):
                    lock.close()
                    raise UserError(f"{self.folder} is in use by another training run "
                                    f"({f'pid {holder}' if holder else 'another process'}); "
                                    "wait for it to end or stop it") from None
                stale_since = stale_since or time.monotonic()
                if time.monotonic() - stale_since >= self.stale_grace_s:
                    _replace_if_same(path, lock)
                else:
                    time.sleep(0.1)
                lock.close()
                continue
            if _same_file(path, lock):  # not replaced by a breaker between our open and flock
                break
            lock.close()
        with lock:
            yield lock

    def checkpoints(self) -> list[Path]:
        return sorted(p for p in self.folder.glob("*.pt") if not p.name.startswith("."))

    def clear(self) -> None:
        for entry in self.folder.iterdir() if self.folder.is_dir() else ():
            if entry.name in (".lock", ".lock-break"):
                continue
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()

    def resumable(self, key: dict[str, Any]) -> tuple[Optional[dict[str, Any]], str]:
        """The interrupted run's last checkpoint if it has exactly this key, and one line saying what was decided.

        Read-only, so every data-parallel process can ask; the main one then clears a store
        it does not resume, so nothing in it can pass for this run's.
        """
        last = self.folder / "last.pt"
        if not last.exists():
            return None, "starting fresh"
        try:
            state = load_checkpoint(last)
        except UserError as err:
            return None, f"ignoring an unreadable interrupted run ({err}): starting fresh"
        change = describe_change(state.get("run_info", {}).get("key") or {}, key)
        if change is not None:
            return None, f"an interrupted run in {self.folder} was made with {change}: starting fresh"
        return state, f"resuming from {last} after epoch {state['epoch']}"

    def publish(self, out: str | Path) -> None:
        """Move the finished run's checkpoints into the output folder `out` (replaced atomically), emptying the store."""
        with atomic_dir(out) as tmp:
            for checkpoint in self.checkpoints():
                shutil.move(checkpoint, tmp / checkpoint.name)
        self.clear()


def _recorded_holder(lock) -> Optional[int]:
    """The pid `exclusive` wrote into the lock file, or None if there is none (yet)."""
    lock.seek(0)
    found = re.fullmatch(r"pid (\d+)", lock.read().strip())
    return int(found[1]) if found else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def _same_file(path: Path, lock) -> bool:
    """Whether `path` still names the file `lock` has open."""
    try:
        return os.stat(path).st_ino == os.fstat(lock.fileno()).st_ino
    except FileNotFoundError:
        return False


def _replace_if_same(path: Path, stale) -> None:
    """Unlink the stale lock file, unless another breaker has already replaced it.

    Breakers take turns through a second flock, held only for this check and unlink (no
    process forks while holding it), so two of them never both break and both lock.
    """
    with open(path.with_name(".lock-break"), "a") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        if _same_file(path, stale):
            path.unlink()
