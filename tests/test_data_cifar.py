"""CIFAR archives in the real on-disk format: round trips, md5, unsafe or corrupt archives, download."""

from __future__ import annotations

import dataclasses
import functools
import http.server
import io
import pickle
import struct
import sys
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from cifar_resnet.data import (
    CIFAR_ARCHIVES,
    ImageSet,
    download,
    load_cifar,
    md5sum,
    read_cifar_folder,
    safe_extract,
    verify_md5,
    write_cifar_archive,
)
from cifar_resnet.errors import UserError

CIFAR10, CIFAR100 = CIFAR_ARCHIVES["cifar10"], CIFAR_ARCHIVES["cifar100"]


def make_data(spec, n_train=23, n_test=7, boxes=False, seed=0):
    """Random train/test sets and class names sized for `spec`."""
    n_classes = 100 if spec.name == "cifar100" else 10
    rng = np.random.default_rng(seed)

    def one(n):
        b = None
        if boxes:
            xy = rng.integers(0, 16, (n, 2))
            b = np.concatenate([xy, xy + rng.integers(1, 16, (n, 2))], 1).astype(np.int32)
        return ImageSet(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, n_classes, n), b)

    return one(n_train), one(n_test), [f"class_{i}" for i in range(n_classes)]


def assert_same(a: ImageSet, b: ImageSet):
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    if a.boxes is None:
        assert b.boxes is None
    else:
        np.testing.assert_array_equal(a.boxes, b.boxes)


def files_under(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


# --- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [CIFAR10, CIFAR100], ids=["cifar10", "cifar100"])
@pytest.mark.parametrize("layout", ["archive_file", "folder_with_archive", "extracted_folder", "extracted_parent"])
def test_round_trip(tmp_path, spec, layout):
    train, test, classes = make_data(spec)
    if layout == "archive_file":
        # Any name other than the official one skips the md5 check (e.g. a re-packed archive).
        source = tmp_path / "mine.tar.gz"
        write_cifar_archive(source, spec, train, test, classes)
    else:
        source = tmp_path / "src"
        archive = source / spec.filename
        write_cifar_archive(archive, spec, train, test, classes)
        # Named like the official file, so its md5 is checked: pretend ours is the published one.
        spec = dataclasses.replace(spec, md5=md5sum(archive))
        if layout != "folder_with_archive":
            safe_extract(archive, source)
            archive.unlink()
            if layout == "extracted_folder":
                source = source / spec.folder
    got_train, got_test, got_classes = load_cifar(spec, source, tmp_path / "work")
    assert got_classes == classes
    assert_same(got_train, train)
    assert_same(got_test, test)
    assert got_train.labels.dtype == np.int64


def test_archive_layout_matches_official(tmp_path):
    train, test, classes = make_data(CIFAR10, n_train=10, n_test=3)
    archive = tmp_path / "a.tar.gz"
    write_cifar_archive(archive, CIFAR10, train, test, classes)
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        batch = pickle.load(tar.extractfile("cifar-10-batches-py/data_batch_1"), encoding="bytes")
        meta = pickle.load(tar.extractfile("cifar-10-batches-py/batches.meta"), encoding="bytes")
    assert set(names) == {"cifar-10-batches-py"} | {f"cifar-10-batches-py/{m}" for m in
                                                    CIFAR10.train_members + ["test_batch", "batches.meta"]}
    assert set(batch) == {b"data", b"labels", b"filenames", b"batch_label"}
    # 10 images over 5 batches, 2 each; rows are CHW: red plane first, then green, then blue.
    assert batch[b"data"].shape == (2, 3072) and batch[b"data"].dtype == np.uint8
    np.testing.assert_array_equal(batch[b"data"][1, :1024], train.images[1, :, :, 0].ravel())
    np.testing.assert_array_equal(batch[b"data"][1, 2048:], train.images[1, :, :, 2].ravel())
    assert batch[b"labels"] == train.labels[:2].tolist()
    assert meta[b"label_names"] == [c.encode() for c in classes]
    # Same data, same bytes: DVC sees an unchanged archive on re-runs.
    again = tmp_path / "b.tar.gz"
    write_cifar_archive(again, CIFAR10, train, test, classes)
    assert md5sum(again) == md5sum(archive)


def test_boxes_survive_the_archive(tmp_path):
    train, test, classes = make_data(CIFAR10, boxes=True)
    write_cifar_archive(tmp_path / "a.tgz", CIFAR10, train, test, classes)
    got_train, got_test, _ = load_cifar(CIFAR10, tmp_path / "a.tgz", tmp_path / "work")
    assert_same(got_train, train)
    assert_same(got_test, test)


# --- Python 2 pickles, as the published archives hold them ------------------------------------


def _py2_str(b: bytes) -> bytes:
    """A Python 2 str in pickle protocol 2 (loads as bytes with encoding="bytes")."""
    return (b"U" + bytes([len(b)]) + b) if len(b) < 256 else (b"T" + struct.pack("<i", len(b)) + b)


def _py2_int(i: int) -> bytes:
    return b"K" + bytes([i]) if i < 256 else b"J" + struct.pack("<i", i)


def _py2_array(a: np.ndarray) -> bytes:
    """A uint8 ndarray exactly as numpy 1.x on Python 2 pickled it (numpy.core.multiarray globals)."""
    shape = b"(" + b"".join(_py2_int(d) for d in a.shape) + b"t"
    dtype = (b"cnumpy\ndtype\n" + _py2_str(b"u1") + b"K\x00K\x01\x87R"
             + b"(K\x03" + _py2_str(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")
    return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + _py2_str(b"b") + b"\x87R"
            + b"(K\x01" + shape + dtype + b"\x89" + _py2_str(a.tobytes()) + b"tb")


def _py2_pickle(d: dict) -> bytes:
    """Pickle a CIFAR batch dict the way Python 2's cPickle (protocol 2) wrote the published files."""
    out = b"\x80\x02}("
    for key, value in d.items():
        out += _py2_str(key)
        if isinstance(value, np.ndarray):
            out += _py2_array(value)
        elif isinstance(value, bytes):
            out += _py2_str(value)
        else:  # a list of ints or of byte strings
            out += b"](" + b"".join(_py2_int(v) if isinstance(v, int) else _py2_str(v) for v in value) + b"e"
    return out + b"u."


def write_py2_folder(folder: Path, spec, train: ImageSet, test: ImageSet, classes, data_override=None):
    """An extracted folder of Python 2 pickles, one image per training member."""
    folder.mkdir(parents=True)
    chunks = np.array_split(np.arange(len(train)), len(spec.train_members))
    for member, idx in [*zip(spec.train_members, chunks), (spec.test_member, None)]:
        s = test if idx is None else train.subset(idx)
        rows = s.images.transpose(0, 3, 1, 2).reshape(len(s), -1)
        d = {b"batch_label": b"x", spec.label_key: [int(x) for x in s.labels],
             b"data": rows if data_override is None else data_override,
             b"filenames": [b"f%d.png" % i for i in range(len(s))]}
        (folder / member).write_bytes(_py2_pickle(d))
    (folder / spec.meta_member).write_bytes(_py2_pickle({spec.class_names_key: [c.encode() for c in classes]}))


def test_reads_python2_pickles(tmp_path):
    train, test, classes = make_data(CIFAR10, n_train=10, n_test=4)
    # The hand-made stream really is what pickle expects (plain pickle, numpy's own globals).
    plain = pickle.loads(_py2_pickle({b"data": train.images[:2].reshape(2, -1)}), encoding="bytes")
    np.testing.assert_array_equal(plain[b"data"], train.images[:2].reshape(2, -1))
    write_py2_folder(tmp_path / CIFAR10.folder, CIFAR10, train, test, classes)
    got_train, got_test, got_classes = load_cifar(CIFAR10, tmp_path, tmp_path / "work")
    assert got_classes == classes
    assert_same(got_train, train)
    assert_same(got_test, test)


# --- bad contents ------------------------------------------------------------------------------


def test_wrong_row_length(tmp_path):
    train, test, classes = make_data(CIFAR10, n_train=5, n_test=1)
    write_py2_folder(tmp_path / "f", CIFAR10, train, test, classes, data_override=np.zeros((1, 3000), np.uint8))
    with pytest.raises(UserError, match=r"data_batch_1: data has shape \(1, 3000\), expected rows of 3072"):
        read_cifar_folder(tmp_path / "f", CIFAR10)


def test_label_out_of_range(tmp_path):
    train, test, classes = make_data(CIFAR10)
    test.labels[2] = 10
    write_cifar_archive(tmp_path / "a.tgz", CIFAR10, train, test, classes)
    with pytest.raises(UserError, match=r"test_batch: labels range over 0\.\.10 but the meta file names 10 classes"):
        load_cifar(CIFAR10, tmp_path / "a.tgz", tmp_path / "work")


def test_missing_member(tmp_path):
    train, test, classes = make_data(CIFAR10)
    write_cifar_archive(tmp_path / "a.tgz", CIFAR10, train, test, classes)
    safe_extract(tmp_path / "a.tgz", tmp_path / "x")
    (tmp_path / "x" / CIFAR10.folder / "data_batch_3").unlink()
    with pytest.raises(UserError, match="data_batch_3 is missing"):
        load_cifar(CIFAR10, tmp_path / "x", tmp_path / "work")


def test_pickle_with_foreign_code_is_refused(tmp_path):
    train, test, classes = make_data(CIFAR10)
    write_cifar_archive(tmp_path / "a.tgz", CIFAR10, train, test, classes)
    safe_extract(tmp_path / "a.tgz", tmp_path)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (tmp_path / CIFAR10.folder / "test_batch").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(UserError, match="pathlib"):
        read_cifar_folder(tmp_path / CIFAR10.folder, CIFAR10)
    assert not marker.exists()


def test_wrong_dataset_archive(tmp_path):
    train, test, classes = make_data(CIFAR10)
    write_cifar_archive(tmp_path / "a.tgz", CIFAR10, train, test, classes)
    with pytest.raises(UserError, match="no cifar-100-python folder"):
        load_cifar(CIFAR100, tmp_path / "a.tgz", tmp_path / "work")


def test_missing_or_empty_source(tmp_path):
    with pytest.raises(UserError, match=r"does not exist.*set it to null to download"):
        load_cifar(CIFAR10, tmp_path / "nope", tmp_path / "work")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds neither cifar-10-python.tar.gz nor an extracted"):
        load_cifar(CIFAR10, tmp_path / "empty", tmp_path / "work")


# --- md5 ---------------------------------------------------------------------------------------


def test_md5_mismatch_on_official_name(tmp_path):
    train, test, classes = make_data(CIFAR10)
    archive = tmp_path / CIFAR10.filename
    write_cifar_archive(archive, CIFAR10, train, test, classes)
    with pytest.raises(UserError, match=rf"md5 {md5sum(archive)}, expected {CIFAR10.md5}.*download it again"):
        load_cifar(CIFAR10, archive, tmp_path / "work")
    with pytest.raises(UserError, match="md5"):
        load_cifar(CIFAR10, tmp_path, tmp_path / "work")
    assert not (tmp_path / "work" / "extracted").exists()


def test_md5sum_and_verify(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"abc" * 1_000_000)
    import hashlib

    assert md5sum(path) == hashlib.md5(path.read_bytes()).hexdigest()
    verify_md5(path, md5sum(path).upper())
    with pytest.raises(UserError, match="expected 0+"):
        verify_md5(path, "0" * 32)


# --- unsafe or broken archives -----------------------------------------------------------------


def _tar_with(path: Path, *members: tarfile.TarInfo, good_first=True):
    """A tar.gz holding a harmless file and then the given (hostile) members."""
    with tarfile.open(path, "w:gz") as tar:
        if good_first:
            info = tarfile.TarInfo("ok/readme.txt")
            info.size = 2
            tar.addfile(info, io.BytesIO(b"hi"))
        for m in members:
            tar.addfile(m, io.BytesIO(b"x" * m.size) if m.isfile() else None)


def _member(name, kind=tarfile.REGTYPE, linkname=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    info.size = 1 if kind == tarfile.REGTYPE else 0
    return info


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda root: _member("../evil"), "leads outside the folder"),
        (lambda root: _member("ok/../../evil"), "leads outside the folder"),
        (lambda root: _member(str(root / "evil")), "absolute path"),
        (lambda root: _member("ok/link", tarfile.SYMTYPE, str(root / "evil")), "symlink or hardlink"),
        (lambda root: _member("ok/hard", tarfile.LNKTYPE, "../evil"), "symlink or hardlink"),
        (lambda root: _member("ok/fifo", tarfile.FIFOTYPE), "device or fifo"),
        (lambda root: _member("ok/dev", tarfile.CHRTYPE), "device or fifo"),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink", "hardlink", "fifo", "chardev"],
)
def test_hostile_members_are_refused(tmp_path, make, message):
    archive, dest = tmp_path / "bad.tar.gz", tmp_path / "dest"
    _tar_with(archive, make(tmp_path))
    with pytest.raises(UserError, match=message) as info:
        safe_extract(archive, dest)
    assert str(archive) in str(info.value)
    # Nothing at all was written: not the hostile member, and not the harmless one before it.
    assert files_under(tmp_path) == {"bad.tar.gz"}


def test_truncated_archive(tmp_path):
    train, test, classes = make_data(CIFAR10, n_train=200)
    archive = tmp_path / "a.tgz"
    write_cifar_archive(archive, CIFAR10, train, test, classes)
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(UserError, match="not a readable tar archive.*truncated"):
        safe_extract(archive, tmp_path / "dest")
    with pytest.raises(UserError, match="not a readable tar archive"):
        load_cifar(CIFAR10, archive, tmp_path / "work")
    # load_cifar may leave its (empty) work folder, but no file, complete or partial.
    assert [p for p in tmp_path.rglob("*") if not p.is_dir()] == [archive]


def test_html_page_saved_as_archive(tmp_path):
    archive = tmp_path / CIFAR10.filename
    archive.write_text("<!DOCTYPE html><html><body>503 Service Unavailable</body></html>")
    with pytest.raises(UserError, match="not a readable tar archive"):
        safe_extract(archive, tmp_path / "dest")
    # Through load_cifar the md5 check catches it first, with the same advice.
    with pytest.raises(UserError, match="md5.*download it again"):
        load_cifar(CIFAR10, archive, tmp_path / "work")
    assert files_under(tmp_path) == {CIFAR10.filename}


def test_plain_tar_without_gzip_is_accepted(tmp_path):
    archive = tmp_path / "a.tar"
    _tar_with_plain = tarfile.open(archive, "w")
    info = tarfile.TarInfo("d/f.txt")
    info.size = 3
    _tar_with_plain.addfile(info, io.BytesIO(b"abc"))
    _tar_with_plain.close()
    safe_extract(archive, tmp_path / "dest")
    assert (tmp_path / "dest" / "d" / "f.txt").read_bytes() == b"abc"


# --- download ----------------------------------------------------------------------------------


def test_download_file_url(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(bytes(range(256)) * 5000)
    dest = tmp_path / "out" / "dl.bin"
    download(src.as_uri(), dest)
    assert dest.read_bytes() == src.read_bytes()
    assert files_under(tmp_path / "out") == {"dl.bin"}


def test_download_unreachable(tmp_path):
    dest = tmp_path / "dl.bin"
    with pytest.raises(UserError, match=r"could not download http://127\.0\.0\.1:9/x \(.*\); .*set data\.source.*expected md5 abc"):
        download("http://127.0.0.1:9/x", dest, timeout=5, expected_md5="abc")
    assert not dest.exists() and list(tmp_path.iterdir()) == []


def test_download_error_names_every_offline_way_forward(tmp_path):
    with pytest.raises(UserError) as caught:
        download("http://127.0.0.1:9/x", tmp_path / "dl.bin", timeout=5)
    message = str(caught.value)
    assert "data.source" in message and "data.dataset: folder" in message
    assert "python scripts/smoke.py" in message and "\n" not in message  # still one line


@pytest.fixture
def http_root(tmp_path):
    """A local HTTP server on 127.0.0.1 serving tmp_path/"www"."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_over_http_and_404(tmp_path, http_root):
    root, base = http_root
    (root / "a.bin").write_bytes(b"payload" * 1000)
    download(f"{base}/a.bin", tmp_path / "a.bin")
    assert (tmp_path / "a.bin").read_bytes() == b"payload" * 1000
    with pytest.raises(UserError, match=r"could not download .*missing.bin \(HTTP 404 .*data.source"):
        download(f"{base}/missing.bin", tmp_path / "m.bin")
    assert not (tmp_path / "m.bin").exists()


def test_download_prints_nothing_off_a_terminal(tmp_path, capsys):
    """The progress bar is for terminals: with stderr not a TTY (logs, CI, tests) the same bytes arrive silently."""
    # A file: URL, as the local test server logs each request to stderr itself.
    src = tmp_path / "src.bin"
    src.write_bytes(bytes(range(256)) * 20_000)  # 5 MB: several chunks
    download(src.as_uri(), tmp_path / "out" / "big.bin")
    assert (tmp_path / "out" / "big.bin").read_bytes() == src.read_bytes()
    assert capsys.readouterr() == ("", "")


def test_download_shows_bytes_and_rate_on_a_terminal(tmp_path, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 3_000_000)
    download(src.as_uri(), tmp_path / "out.bin")
    assert (tmp_path / "out.bin").read_bytes() == src.read_bytes()
    shown = terminal.getvalue()
    assert "downloading out.bin" in shown and "100%" in shown, shown
    assert "3.00M/3.00M" in shown and "B/s" in shown, shown  # bytes so far of the total, and the rate


def test_load_cifar_downloads_when_no_source(tmp_path, http_root):
    root, base = http_root
    train, test, classes = make_data(CIFAR10)
    write_cifar_archive(root / CIFAR10.filename, CIFAR10, train, test, classes)
    spec = dataclasses.replace(CIFAR10, url=f"{base}/{CIFAR10.filename}", md5=md5sum(root / CIFAR10.filename))
    work = tmp_path / "work"
    got_train, _, got_classes = load_cifar(spec, None, work)
    assert_same(got_train, train)
    assert got_classes == classes and (work / CIFAR10.filename).is_file()
    # A complete earlier download is reused: it works with the server's copy gone.
    (root / CIFAR10.filename).unlink()
    assert_same(load_cifar(spec, None, work)[1], test)
    # Nothing to reuse and nothing to fetch: the one-line download error.
    (work / CIFAR10.filename).unlink()
    with pytest.raises(UserError, match="could not download .*set data.source"):
        load_cifar(spec, None, work)
    # A download whose md5 is wrong (e.g. a proxy's error page) is caught before extraction.
    (root / CIFAR10.filename).write_text("<html>proxy says no</html>")
    with pytest.raises(UserError, match="has md5 .* expected"):
        load_cifar(spec, None, work)


# --- archives whose members conflict, or whose content is unusable (issue 11) -------------------


@pytest.mark.parametrize(
    "members",
    [
        [_member("ok/a"), _member("ok/a/b")],  # a file, then a path inside it
        [_member("ok/d", tarfile.DIRTYPE), _member("ok/d")],  # a folder, then a file of the same name
        [_member("ok/d"), _member("ok/d", tarfile.DIRTYPE)],  # a file, then a folder of the same name
    ],
    ids=["file-then-child", "dir-then-file", "file-then-dir"],
)
def test_conflicting_members_are_refused_before_anything_is_written(tmp_path, members):
    archive, dest = tmp_path / "bad.tar.gz", tmp_path / "dest"
    _tar_with(archive, *members)
    with pytest.raises(UserError, match=r"refusing member 'ok/(a|d)' \(it is both a file and a folder"):
        safe_extract(archive, dest)
    assert files_under(tmp_path) == {"bad.tar.gz"}


def test_class_names_that_are_not_utf8_are_a_user_error(tmp_path):
    train, test, classes = make_data(CIFAR10)
    archive = tmp_path / "c.tar.gz"
    write_cifar_archive(archive, CIFAR10, train, test, classes)
    folder = tmp_path / "x"
    safe_extract(archive, folder)
    meta = folder / CIFAR10.folder / CIFAR10.meta_member
    names = [b"caf\xe9"] + [c.encode() for c in classes[1:]]
    meta.write_bytes(pickle.dumps({CIFAR10.class_names_key: names}, protocol=4))
    with pytest.raises(UserError, match=r"batches\.meta: class name b'caf\\xe9' is not UTF-8 text"):
        read_cifar_folder(folder / CIFAR10.folder, CIFAR10)


def test_an_empty_test_split_is_a_user_error(tmp_path):
    train, test, classes = make_data(CIFAR10, n_test=0)
    archive = tmp_path / "c.tar.gz"
    write_cifar_archive(archive, CIFAR10, train, test, classes)
    with pytest.raises(UserError, match=r"test_batch: the test split holds no images"):
        load_cifar(CIFAR10, archive, tmp_path / "work")
