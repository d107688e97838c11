"""``distill_data`` arrays are judged by their header before a byte of data is loaded (issue 30,
item 4): a shape the training inputs rule out, or more bytes than the memory available, is one
line naming the size, never an allocation (or a decompression) of what the header claims."""

import tracemalloc

import numpy as np
import pytest
import torch

from ensemble_distill.data import ArrayDataset, DataSplits
from ensemble_distill.data.distill import load_distill_inputs
from ensemble_distill.errors import ConfigError
from ensemble_distill.resources import byte_text

EXAMPLE = (1, 4, 4)  # the training inputs' shape per example


def splits() -> DataSplits:
    split = ArrayDataset(torch.rand(6, *EXAMPLE), torch.zeros(6, dtype=torch.long))
    return DataSplits("tiny", split, split, split, 2)


def header_only(path, shape, descr="<f4", data=b"\0" * 256):
    """A .npy file whose header claims ``shape`` but which holds only ``data`` after it."""
    with path.open("wb") as handle:
        header = {"descr": descr, "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(handle, header)
        handle.write(data)
    return path


def test_a_tiny_npy_claiming_a_huge_array_is_refused_with_the_size_it_needs(tmp_path):
    path = header_only(tmp_path / "huge.npy", (10**12, *EXAMPLE))
    assert path.stat().st_size < 400
    with pytest.raises(ConfigError) as refused:
        load_distill_inputs(str(path), splits())
    message = str(refused.value)
    assert "(1000000000000, 1, 4, 4)" in message and "needs 64 TB" in message
    assert "of memory available" in message and len(message.splitlines()) == 1


def test_an_array_beyond_the_available_memory_is_refused_before_loading(tmp_path, monkeypatch):
    path = tmp_path / "aux.npy"
    np.save(path, np.zeros((1000, *EXAMPLE), np.uint8))  # 16 kB as uint8, + 64 kB as float32
    monkeypatch.setattr("ensemble_distill.data.distill.available_memory", lambda: 50_000)
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("loaded a refused array"))
    with pytest.raises(ConfigError, match=r"needs 80 kB, more than the 50 kB of memory"):
        load_distill_inputs(str(path), splits())


def test_an_array_within_the_available_memory_loads(tmp_path, monkeypatch):
    path = tmp_path / "aux.npy"
    np.save(path, np.zeros((1000, *EXAMPLE), np.uint8))
    monkeypatch.setattr("ensemble_distill.data.distill.available_memory", lambda: 80_000)
    assert load_distill_inputs(str(path), splits()).shape == (1000, *EXAMPLE)


def test_an_npz_of_another_shape_is_refused_without_decompressing_it(tmp_path):
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, x=np.zeros((400, 250, 250), np.uint8))  # 25 MB of zeros
    assert path.stat().st_size < 100_000
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError, match=r"shape \(400, 250, 250\).*\(N, 1, 4, 4\)"):
            load_distill_inputs(str(path), splits())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000  # the 25 MB array (and its float32 copy) never existed


def test_the_npz_member_read_is_the_one_the_header_was_checked_for(tmp_path):
    wrong = np.zeros((3, 9), np.float32)
    np.savez(tmp_path / "aux.npz", labels=wrong, x=np.full((3, *EXAMPLE), 0.5, np.float32))
    x = load_distill_inputs(str(tmp_path / "aux.npz"), splits())
    assert x.shape == (3, *EXAMPLE) and bool((x == 0.5).all())
    np.savez(tmp_path / "only.npz", inputs=np.zeros((2, 4, 4), np.uint8))  # channel omitted
    assert load_distill_inputs(str(tmp_path / "only.npz"), splits()).shape == (2, *EXAMPLE)


def test_a_damaged_header_is_not_a_numeric_array(tmp_path):
    path = tmp_path / "aux.npy"
    path.write_bytes(b"\x93NUMPY\x01\x00\x10\x00{'descr': bogus")
    with pytest.raises(ConfigError, match=r"not a numeric \.npy / \.npz array"):
        load_distill_inputs(str(path), splits())


@pytest.mark.parametrize(
    ("count", "text"),
    [(512, "512 B"), (80_000, "80 kB"), (1_536_000_000, "1.5 GB"), (256 * 10**12, "256 TB")],
)
def test_sizes_read_as_a_person_writes_them(count, text):
    assert byte_text(count) == text
