import os
import stat

import pytest

from cifar_resnet.fileio import atomic_dir, atomic_file, atomic_path, read_json, write_json


def test_atomic_path_leaves_nothing_when_the_block_fails(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError, match="crash mid-write"):  # the caller's own error, not a cleanup one
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash mid-write")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_replaces_the_old_file_with_normal_permissions(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"a": 1})
    write_json(target, {"a": 2})
    assert read_json(target) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_atomic_dir_keeps_the_old_folder_when_the_block_fails(tmp_path):
    target = tmp_path / "outs"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("first")
    with pytest.raises(RuntimeError, match="crash"):  # the caller's own error, not a cleanup one
        with atomic_dir(target) as tmp:
            (tmp / "a.txt").write_text("second")
            raise RuntimeError("crash")
    assert (target / "a.txt").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["outs"]


def test_json_never_holds_nan_or_infinity(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"loss": float("nan"), "rows": [1.5, float("inf"), {"x": float("-inf")}], "ok": 2.0})
    text = target.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert read_json(target) == {"loss": None, "rows": [1.5, None, {"x": None}], "ok": 2.0}


def test_a_killed_writers_temporaries_are_removed_by_the_next_write(tmp_path):
    # What kill -9 during atomic_path / atomic_dir leaves behind:
    (tmp_path / ".last.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    (tmp_path / ".export.xyz.tmp").mkdir()
    (tmp_path / ".export.xyz.tmp" / "traced.pt").write_bytes(b"half")
    (tmp_path / ".other.pt.keep.tmp").write_bytes(b"another file's temporary")
    with atomic_file(tmp_path / "last.pt") as file:
        file.write(b"whole")
    with atomic_dir(tmp_path / "export") as folder:
        (folder / "traced.pt").write_bytes(b"whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.pt.keep.tmp", "export", "last.pt"]


def test_torch_files_written_through_atomic_file_are_byte_identical(tmp_path):
    """torch.save records the name it is given inside the zip: a temporary name would differ every run."""
    import torch

    state = {"w": torch.arange(6.0).reshape(2, 3)}
    for name in ("a.pt", "b.pt"):
        with atomic_file(tmp_path / name) as file:
            torch.save(state, file)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()


def test_git_and_dvc_ignore_temporaries_and_the_resume_folder():
    import subprocess

    from conftest import REPO

    for path in ("models/.model.pt.x1y2.tmp", "models/.export.abc.tmp/traced.pt", ".resume/train/last.pt"):
        assert subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO).returncode == 0, path
    assert ".*.tmp" in (REPO / ".dvcignore").read_text().splitlines()


# A file-size limit makes every write past it fail (EFBIG, with SIGXFSZ ignored), as a full
# disk does: the exported program below is ~60 KB, so it cannot be written under 16 KB.
FULL_DISK_EXPORT = r"""
import resource, signal, sys, torch
from cifar_resnet.export import save_program
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
program = torch.export.export(torch.nn.Linear(120, 120).eval(), (torch.zeros(1, 120),))
resource.setrlimit(resource.RLIMIT_FSIZE, (16_000, 16_000))
try:
    save_program(program, sys.argv[1])
except OSError as err:
    print(f"OSError errno {err.errno}")
"""


@pytest.mark.slow  # torch.export in a subprocess (a failure here would abort the process): seconds
@pytest.mark.timeout(300)
def test_a_full_disk_under_a_torch_serialiser_is_an_oserror_not_an_abort(tmp_path):
    import errno
    import subprocess
    import sys

    target = tmp_path / "program.pt2"
    done = subprocess.run([sys.executable, "-c", FULL_DISK_EXPORT, str(target)], capture_output=True, text=True,
                          timeout=240)
    # torch's own writer, given the file, ended the process with std::terminate (exit 134).
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == f"OSError errno {errno.EFBIG}"
    assert list(tmp_path.iterdir()) == []  # no partial file, no temporary
