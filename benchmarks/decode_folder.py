"""Folder-dataset decoding speed: extracting and decoding a real archive of images.

    python benchmarks/decode_folder.py path/to/images.tar.gz              # 1 and all-core workers
    python benchmarks/decode_folder.py path/to/images.tar.gz --workers 2

Times (1) the safe extraction of the archive (the download stage's code path) and (2)
decoding every image to 32x32 RGB with each --workers count, and prints seconds and
images/s with the load average before each step, and the CPU seconds spent (this
process and its workers): wall times are only as quiet as the machine was, so quote
the load with them; CPU seconds depend much less on the other users of the machine. It prints figures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from cifar_resnet.data import read_image_folder, safe_extract
from cifar_resnet.data.folder import default_workers


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the decoding workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("archive", type=Path, help="a .tar/.tar.gz/.tgz holding train/<class>/* and test/<class>/*")
    parser.add_argument("--workers", default=f"1,{default_workers()}", help="comma-separated process counts to time")
    args = parser.parse_args()
    workers = [int(w) for w in args.workers.split(",")]

    print(f"{args.archive.name} ({args.archive.stat().st_size / 1e6:.1f} MB), {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="decode-folder-") as scratch:
        before = load()
        start, cpu = time.perf_counter(), cpu_seconds()
        safe_extract(args.archive, scratch, atomic_members=False)  # as the folder dataset does
        extract_s = time.perf_counter() - start
        print(f"{'extract:':22}{extract_s:7.1f} s {'':19}CPU {cpu_seconds() - cpu:5.1f} s  ({before})")
        for w in workers:
            before = load()
            start, cpu = time.perf_counter(), cpu_seconds()
            train, test, classes = read_image_folder(scratch, str(args.archive), workers=w)
            seconds = time.perf_counter() - start
            n = len(train) + len(test)
            print(f"decode, {w} worker{'s' if w > 1 else ' '}:    {seconds:7.1f} s {n / seconds:9.0f} images/s   "
                  f"CPU {cpu_seconds() - cpu:5.1f} s  ({before}); {n} images, {len(classes)} classes")
            print(f"{'extract + decode:':22}{extract_s + seconds:7.1f} s {n / (extract_s + seconds):9.0f} images/s")


if __name__ == "__main__":
    main()
