"""download(): HTTPS only, MD5 verified, never leaves a partial or corrupt file behind."""

from __future__ import annotations

import hashlib
import io
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ensemble_distill.data.download import (
    default_data_dir,
    download,
    md5_of_bytes,
    md5_of_file,
    require,
    search_dirs,
)
from ensemble_distill.errors import ChecksumError, DataError

PAYLOAD = b"idx bytes " * 1000
URL = "https://example.org/data/file.gz"


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Serves PAYLOAD for every URL; returns the list of URLs requested."""
    requested: list[str] = []

    def fake_urlopen(url: str, timeout: float) -> io.BytesIO:
        requested.append(url)
        return io.BytesIO(PAYLOAD)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    return requested


def test_md5_helpers_agree_with_hashlib(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(PAYLOAD)
    expected = hashlib.md5(PAYLOAD).hexdigest()
    assert md5_of_bytes(PAYLOAD) == expected
    assert md5_of_file(path) == expected


def test_download_writes_verified_file(tmp_path: Path, served: list[str]) -> None:
    dest = tmp_path / "sub" / "file.gz"
    assert download(URL, dest, md5_of_bytes(PAYLOAD)) == dest
    assert dest.read_bytes() == PAYLOAD
    assert served == [URL]
    assert sorted(p.name for p in dest.parent.iterdir()) == ["file.gz"]  # no temporary file


@pytest.mark.parametrize("url", ["http://example.org/f.gz", "ftp://example.org/f.gz", "f.gz"])
def test_download_refuses_non_https(tmp_path: Path, served: list[str], url: str) -> None:
    with pytest.raises(DataError, match="only https"):
        download(url, tmp_path / "f.gz", md5_of_bytes(PAYLOAD))
    assert served == []
    assert list(tmp_path.iterdir()) == []


def test_checksum_mismatch_leaves_no_file(tmp_path: Path, served: list[str]) -> None:
    dest = tmp_path / "file.gz"
    with pytest.raises(ChecksumError, match=f"expected {'0' * 32}"):
        download(URL, dest, "0" * 32)
    assert list(tmp_path.iterdir()) == []


def test_checksum_mismatch_keeps_an_existing_file(tmp_path: Path, served: list[str]) -> None:
    dest = tmp_path / "file.gz"
    dest.write_bytes(b"old")
    with pytest.raises(ChecksumError):
        download(URL, dest, "0" * 32)
    assert dest.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [dest]


def test_network_error_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(url: str, timeout: float) -> io.BytesIO:
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(urllib.request, "urlopen", unreachable)
    with pytest.raises(DataError, match=r"no route to host\); check the network or place file.gz"):
        download(URL, tmp_path / "file.gz", md5_of_bytes(PAYLOAD))
    assert list(tmp_path.iterdir()) == []


def test_connection_lost_mid_stream_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Dropping(io.BytesIO):
        def read(self, size: int = -1) -> bytes:
            if self.tell() > 0:
                raise ConnectionResetError("connection reset")
            return super().read(10)

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: Dropping(PAYLOAD))
    with pytest.raises(DataError, match="connection reset"):
        download(URL, tmp_path / "file.gz", md5_of_bytes(PAYLOAD))
    assert list(tmp_path.iterdir()) == []


def test_default_data_dir_is_the_user_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_data_dir() == tmp_path / ".cache" / "ensemble-distill"
    assert search_dirs("mnist", None) == [default_data_dir(), default_data_dir() / "mnist"]


def test_require_downloads_missing_files_into_the_named_folder(
    tmp_path: Path, served: list[str]
) -> None:
    folder = require("toy", {"a.gz": md5_of_bytes(PAYLOAD)}, "https://h/", tmp_path, True)
    assert folder == tmp_path / "toy"
    assert (folder / "a.gz").read_bytes() == PAYLOAD
    assert served == ["https://h/a.gz"]


def test_require_missing_folder_message(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match=f"data folder {missing} does not exist; pass data_dir="):
        require("toy", {"a.gz": "0" * 32}, "https://h/", missing, False)


def test_require_missing_files_message(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        require("toy", {"a.gz": "0" * 32}, "https://h/", tmp_path, False)
    message = str(info.value)
    assert str(tmp_path / "toy") in message
    assert "a.gz" in message
    assert "download=true" in message
