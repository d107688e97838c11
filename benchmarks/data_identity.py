"""What recording a data folder's identity costs (``data/identity.py``): 100 000 small files.

    python benchmarks/data_identity.py [--files 100000] [--folder DIR]

Writes ``--files`` files of 100–300 random bytes into 10 class folders (in a temporary folder
unless ``--folder`` names one to keep between runs), then times, with the page cache warm:

* paths and sizes alone (``stat`` of each file, the hash of the sorted listing);
* the identity a run records (:func:`folder_identity`: every file read and hashed as well).

Reading with a pool of threads was tried and dropped: on 2 cores it took 4x as long (the GIL).

Prints one line per measurement and the machine.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ensemble_distill.data import identity
from ensemble_distill.report.machine import machine_info, machine_line

CLASSES = 10


def write_tree(root: Path, files: int) -> list[Path]:
    """``files`` files of 100–300 random bytes under ``root/c<k>/`` (kept if already there)."""
    paths = [root / f"c{k % CLASSES}" / f"{k:07d}.png" for k in range(files)]
    for path in paths:
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(os.urandom(100 + len(path.name) * 7 % 200))
    return paths


def paths_and_sizes(root: Path, paths: list[Path]) -> str:
    """The cheaper identity that reads no file: sorted relative paths and their sizes."""
    listing = hashlib.sha256()
    for path in sorted(paths):
        listing.update(f"{identity.relative_name(root, path)}\0{path.stat().st_size}\n".encode())
    return listing.hexdigest()


def timed(action: Callable[[], object], repeats: int = 3) -> float:
    """The fastest of ``repeats`` runs of ``action`` (seconds); one run first warms the cache."""
    action()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--folder", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = args.folder or Path(scratch)
        paths = write_tree(root, args.files)
        cheap = timed(lambda: paths_and_sizes(root, paths))
        full = timed(lambda: identity.folder_identity(root, paths))
    print(f"{args.files} files, {CLASSES} folders, page cache warm (fastest of 3):")
    print(f"  paths and sizes only:                   {cheap:.2f} s")
    print(f"  data identity (paths, sizes and bytes): {full:.2f} s")
    print(f"machine: {machine_line(machine_info())}")


if __name__ == "__main__":
    main()
