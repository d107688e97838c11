"""Data files on disk: checksums, safe HTTPS downloads, and finding a dataset's folder.

Every loader looks for its files in ``data_dir`` itself and in ``data_dir/<name>/`` (``data_dir``
defaults to ``~/.cache/ensemble-distill``); with ``download=True`` missing files are fetched into
``data_dir/<name>/``. A download lands under its final name only once its MD5 is verified.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

from ensemble_distill.errors import ChecksumError, DataError

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_TIMEOUT_S = 60.0


def md5_of_bytes(data: bytes) -> str:
    """Hex MD5 of ``data``."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def md5_of_file(path: Path) -> str:
    """Hex MD5 of a file, read in chunks so large archives never sit in memory twice."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_md5(path: Path, expected: str) -> None:
    """Raise :class:`ChecksumError` unless the file's MD5 is ``expected``."""
    actual = md5_of_file(path)
    if actual != expected:
        raise checksum_error(str(path), expected, actual)


def checksum_error(what: str, expected: str, actual: str) -> ChecksumError:
    """The one-line error for a digest mismatch of ``what`` (a path, maybe with a qualifier)."""
    return ChecksumError(
        f"{what} has md5 {actual}, expected {expected}; the file is corrupt or not the "
        "official one: delete it and download it again (download=true)"
    )


def download(url: str, dest: Path, md5: str) -> Path:
    """Fetch ``url`` over HTTPS into ``dest`` if its MD5 is ``md5``.

    The bytes go to a temporary file next to ``dest`` and are renamed onto it only after the
    digest matches and the data is fsync'ed, so an interrupted or corrupt download never leaves a
    file that looks complete (the temporary file is removed on any failure).

    Returns:
        ``dest``.
    """
    if urllib.parse.urlsplit(url).scheme != "https":
        raise DataError(
            f"refusing to download {url}: only https:// URLs are allowed; use an https URL "
            f"or place {dest.name} in {dest.parent} by hand"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    logger.info("downloading %s to %s", url, dest)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            actual = _stream(url, out, dest)
            if actual != md5:
                raise ChecksumError(
                    f"download of {url} has md5 {actual}, expected {md5}; retry later, or "
                    f"place the official {dest.name} in {dest.parent} by hand"
                )
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        # BaseException: a Ctrl-C mid-download must not leave the partial file behind either.
        tmp.unlink(missing_ok=True)
        raise
    return dest


def _stream(url: str, out: BinaryIO, dest: Path) -> str:
    """Copy the response body of ``url`` into the open file ``out``; returns its hex MD5."""
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:
            while chunk := response.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DataError(
            f"download of {url} failed ({reason}); check the network or place {dest.name} "
            f"in {dest.parent} by hand"
        ) from e
    return digest.hexdigest()


def default_data_dir() -> Path:
    """Where datasets live when no ``data_dir`` is given: ``~/.cache/ensemble-distill``."""
    return Path.home() / ".cache" / "ensemble-distill"


def search_dirs(
    name: str, data_dir: Path | None, *, root: bool = True, extra: Sequence[Path] = ()
) -> list[Path]:
    """Folders that may hold dataset ``name``, in search order.

    ``data_dir`` itself (if ``root``), then ``data_dir/name``, then ``extra`` (system folders such
    as a distribution package's). ``root=False`` serves secondary (OOD) datasets whose files share
    names with the primary dataset's files in ``data_dir`` itself.
    """
    base = data_dir if data_dir is not None else default_data_dir()
    return [*([base] if root else []), base / name, *extra]


def locate(
    name: str,
    files: Mapping[str, str],
    base_url: str,
    data_dir: Path | None,
    download_missing: bool,
    *,
    root: bool = True,
    extra: Sequence[Path] = (),
) -> Path | None:
    """The first folder from :func:`search_dirs` holding every file, or None.

    Args:
        files: file name -> MD5 of the official download.
        base_url: HTTPS folder the files are downloaded from (``base_url + file name``).
        download_missing: when no folder holds them all, download the files missing from
            ``data_dir/name`` into it.
    """
    for folder in search_dirs(name, data_dir, root=root, extra=extra):
        if all((folder / f).is_file() for f in files):
            return folder
    if not download_missing:
        return None
    target = (data_dir if data_dir is not None else default_data_dir()) / name
    for filename, md5 in files.items():
        if not (target / filename).is_file():
            download(base_url + filename, target / filename, md5)
    return target


def require(
    name: str,
    files: Mapping[str, str],
    base_url: str,
    data_dir: Path | None,
    download_missing: bool,
    *,
    extra: Sequence[Path] = (),
) -> Path:
    """Like :func:`locate` for the primary dataset, but missing files raise a :class:`DataError`."""
    folder = locate(name, files, base_url, data_dir, download_missing, extra=extra)
    if folder is not None:
        return folder
    if data_dir is not None and not data_dir.is_dir():
        raise DataError(
            f"data folder {data_dir} does not exist; pass data_dir=DIR holding the {name} files "
            "or download=true"
        )
    searched = ", ".join(str(d) for d in search_dirs(name, data_dir, extra=extra))
    raise DataError(
        f"{name} files ({', '.join(files)}) not found in {searched}; pass data_dir=DIR holding "
        f"them (directly or in DIR/{name}/) or download=true"
    )


def locate_ood(
    name: str,
    files: Mapping[str, str],
    base_url: str,
    data_dir: Path | None,
    download_missing: bool,
    *,
    extra: Sequence[Path] = (),
) -> Path | None:
    """Folder of an optional OOD dataset (only ``data_dir/name`` and ``extra`` are searched).

    A missing OOD set is not worth failing a run for: it logs a warning and returns None.
    """
    folder = locate(name, files, base_url, data_dir, download_missing, root=False, extra=extra)
    if folder is None:
        searched = ", ".join(str(d) for d in search_dirs(name, data_dir, root=False, extra=extra))
        logger.warning(
            "OOD set %s omitted: %s not found in %s; place them in DATA_DIR/%s/ or pass "
            "download=true",
            name,
            ", ".join(files),
            searched,
            name,
        )
    return folder
