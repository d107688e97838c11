"""What the user's data files were: a content identity for the settings' fingerprint.

A finished teacher or student is kept on a rerun when the settings it was trained with are
unchanged (:mod:`ensemble_distill.settings`). For data read from the user's files the config
alone cannot tell: add images to a class folder and the split is re-drawn over the new file
list, so a kept teacher would be scored on test images it was trained on. So each run records
what its files were, in config.yaml and in every phase's fingerprint (config keys
``data_identity`` for the dataset, ``distill_data_identity`` for a ``distill_data`` file), as
one line such as ``93 files, 31250 bytes, sha256 4f2a…``; a changed identity refuses to reuse
a phase exactly as a changed config key does. Member files (``teacher.members``) have their own
record, ``teacher.members_sha256``.

The rules:

* an image folder: the SHA-256 over its training, validation and test images, sorted by their
  path relative to ``data_dir``, each given as that path, its size and the SHA-256 of its
  bytes. Adding, removing or renaming an image, moving it to another class or changing a byte
  changes the identity; moving or copying the whole folder does not (no modification times,
  which a copy changes). OOD images are left out: only evaluation reads them, and evaluation is
  redone on every run.
* one file (a CSV table, a ``.npy`` / ``.npz`` of ``distill_data``): the SHA-256 of its bytes,
  what ``sha256sum`` prints.

Every byte is read, once per command. Measured with ``python benchmarks/data_identity.py``
(100 000 files of 100–300 bytes in 10 class folders, page cache warm, 2 shared cores): 1.5 s,
against 1.1 s for paths and sizes alone, so the content costs little on small images; large
files cost what reading them once does (SHA-256 runs at about 1.3 GB/s there), well below the
decoding of one training epoch.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from pathlib import Path

from ensemble_distill.errors import DataError

# What a run records; a config value of another form is refused.
IDENTITY = re.compile(r"(\d+) files?, (\d+) bytes, sha256 [0-9a-f]{64}")
BLOCK = 1 << 20  # the most read at once: a small file is read whole, a large one in blocks


def digest_file(path: Path) -> tuple[int, str]:
    """The size and SHA-256 of the file at ``path``, read in blocks.

    Raises:
        DataError: it cannot be read.
    """
    digest, size = hashlib.sha256(), 0
    try:
        with path.open("rb", buffering=0) as handle:
            # no buffer larger than the file: allocating 1 MiB per small file doubles the time
            chunk = min(BLOCK, os.fstat(handle.fileno()).st_size + 1)
            while block := handle.read(chunk):
                digest.update(block)
                size += len(block)
    except OSError as exc:
        raise DataError(
            f"cannot read {path} to record the data's identity ({exc.strerror}); check that "
            "the file exists and is readable"
        ) from None
    return size, digest.hexdigest()


def describe(count: int, size: int, digest: str) -> str:
    """The identity line: ``N files, B bytes, sha256 HEX``."""
    return f"{count} file{'' if count == 1 else 's'}, {size} bytes, sha256 {digest}"


def file_identity(path: Path) -> str:
    """The identity of one file: its size and SHA-256."""
    size, digest = digest_file(path)
    return describe(1, size, digest)


def folder_identity(root: Path, paths: Iterable[Path]) -> str:
    """The identity of the files ``paths`` under ``root`` (see the module docstring): what
    each is called relative to ``root``, its size and bytes."""
    names = sorted({relative_name(root, path): path for path in paths}.items())
    digests = [digest_file(path) for _, path in names]  # threads: 4x slower here (the GIL)
    listing = hashlib.sha256()
    for (name, _), (size, digest) in zip(names, digests, strict=True):
        listing.update(f"{name}\0{size}\0{digest}\n".encode("utf-8", "surrogateescape"))
    total = sum(size for size, _ in digests)
    return describe(len(names), total, listing.hexdigest())


def relative_name(root: Path, path: Path) -> str:
    """``path`` relative to ``root``, with ``/`` between its parts (the same on every OS)."""
    return path.relative_to(root).as_posix()


def describe_change(saved: object, current: object) -> str:
    """How the data changed between two identity lines, for the one-line refusal: file counts
    and sizes then and now ('' when equal)."""
    if saved == current:
        return ""
    then, now = _counts(saved), _counts(current)
    if then is None or now is None:
        return "the data files are not those the checkpoint was trained on"
    if then == now:
        files = f"{now[0]} file{'' if now[0] == 1 else 's'}"
        return f"as many files ({files}) and bytes ({now[1]}), other names or contents"
    return f"{now[0]} files of {now[1]} bytes now, {then[0]} files of {then[1]} bytes when trained"


def _counts(identity: object) -> tuple[int, int] | None:
    match = IDENTITY.fullmatch(identity) if isinstance(identity, str) else None
    return (int(match[1]), int(match[2])) if match else None
