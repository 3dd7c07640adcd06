"""The resume store's lock: a killed trainer's orphaned workers do not block the next run, a live trainer does."""

import fcntl
import os
import subprocess
import sys

import pytest

from cifar_resnet.errors import UserError
from cifar_resnet.training.resume import ResumeStore


def dead_pid() -> int:
    """The pid of a process that has ended and been reaped."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture
def holder(tmp_path):
    """Lock tmp_path/.lock as `exclusive` would, record `pid`, and leave only a sleeping child holding it.

    The child inherits the locked file as a forked DataLoader worker does; the test's own
    copy is closed, so the child is the only holder, whatever pid the file names.
    """
    children = []

    def hold(pid: int | None) -> subprocess.Popen:
        lock = open(tmp_path / ".lock", "a+")
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], pass_fds=[lock.fileno()])
        children.append(child)
        lock.write(f"pid {pid if pid is not None else child.pid}")
        lock.close()
        return child

    yield hold
    for child in children:
        child.kill()
        child.wait()


def test_a_dead_trainers_orphaned_workers_do_not_block_the_next_run(tmp_path, holder):
    holder(dead_pid())
    store = ResumeStore(tmp_path)
    store.stale_grace_s = 0.3
    with store.exclusive():
        assert (tmp_path / ".lock").read_text() == f"pid {os.getpid()}"
        # Held for real: a second trainer is refused, naming this process.
        with pytest.raises(UserError, match=f"in use by another training run \\(pid {os.getpid()}\\)"):
            with ResumeStore(tmp_path).exclusive():
                pass


def test_a_live_holder_is_refused_however_long_it_is_waited_for(tmp_path, holder):
    child = holder(None)  # the recorded holder is the live child itself
    store = ResumeStore(tmp_path)
    store.stale_grace_s = 0.0
    with pytest.raises(UserError, match=f"in use by another training run \\(pid {child.pid}\\)"):
        with store.exclusive():
            pass
    assert (tmp_path / ".lock").read_text() == f"pid {child.pid}"


def test_a_lock_without_a_recorded_holder_is_refused(tmp_path, holder):
    holder(None)
    (tmp_path / ".lock").write_text("")  # locked, but its holder has not written its pid yet
    with pytest.raises(UserError, match="in use by another training run \\(another process\\)"):
        with ResumeStore(tmp_path).exclusive():
            pass


def test_the_lock_is_free_again_once_released(tmp_path):
    with ResumeStore(tmp_path).exclusive():
        pass
    with ResumeStore(tmp_path).exclusive():
        assert (tmp_path / ".lock").read_text() == f"pid {os.getpid()}"
