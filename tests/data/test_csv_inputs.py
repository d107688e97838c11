"""The user's CSV table (issue #18): encodings, oversized cells, numbers Python's float() reads
but a table should not, values too large to standardise, and a header of 30,000 columns — each
either loads or is refused with one line naming the file, the line or column, and the fix."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from ensemble_distill import cli
from ensemble_distill.data.regression import load_csv_splits, read_numeric_csv
from ensemble_distill.errors import DataError

ROWS = 30  # enough for the test, validation and shift sets


def table_text(cell: str | None = None, target: str = "y") -> str:
    """A numeric table a, b, target; ``cell`` replaces column a of data row 11 (line 12)."""
    lines = [f"a,b,{target}"]
    for i in range(ROWS):
        a = cell if (cell is not None and i == 10) else str(i)
        lines.append(f"{a},{(i * 7) % 11},{i % 5 + 0.5 * i}")
    return "\n".join(lines) + "\n"


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def refused(path: Path, capsys: pytest.CaptureFixture, target: str = "y") -> str:
    """Run the CLI on the table: exit 2, one stderr line, no OUT; the line."""
    out = path.parent / "out"
    code = cli.main(["run", "--out", str(out), "--quiet", "--data", str(path), "--target", target])
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("ensemble-distill: error: "), err
    assert not out.exists()
    return err


@pytest.mark.parametrize(
    ("encoding", "message"),
    [
        ("latin-1", r"line 12: byte 0xe9 is not UTF-8 text; save the table as UTF-8 CSV"),
        ("cp1252", r"line 12: byte 0xe9 is not UTF-8 text"),
    ],
)
def test_a_table_in_another_encoding_is_refused_naming_the_line(
    tmp_path, capsys, encoding, message
):
    path = write(tmp_path / "t.csv", table_text(cell="café"), encoding)
    with pytest.raises(DataError, match=message):
        read_numeric_csv(path)
    assert "not UTF-8 text" in refused(path, capsys)


def test_a_utf16_table_with_its_byte_order_mark_loads(tmp_path):
    header, rows = read_numeric_csv(write(tmp_path / "t.csv", table_text(), "utf-16"))
    assert header == ["a", "b", "y"] and rows.shape == (ROWS, 3) and rows[10, 0] == 10


def test_an_oversized_cell_is_refused_naming_the_line(tmp_path, capsys):
    path = write(tmp_path / "t.csv", table_text(cell="9" * 200_000))
    with pytest.raises(DataError, match=r"line 12: not readable as CSV \(field larger than"):
        read_numeric_csv(path)
    assert "line 12" in refused(path, capsys)


@pytest.mark.parametrize("cell", ["1_000_000", "1_0.5", "١٢٣", "१२"])
def test_cells_python_reads_as_numbers_are_not_numbers_here(tmp_path, capsys, cell):
    path = write(tmp_path / "t.csv", table_text(cell=cell))
    with pytest.raises(
        DataError, match=r"line 12, column 'a': .* is not a finite number in digits"
    ):
        read_numeric_csv(path)
    refused(path, capsys)


def test_plain_numbers_still_load(tmp_path):
    for cell in ["12", "-3.5", "+.5", "1e-3", "2E+2", " 7 ", "5."]:
        _, rows = read_numeric_csv(write(tmp_path / "t.csv", table_text(cell=cell)))
        assert rows[10, 0] == float(cell)


def test_values_too_large_to_standardise_are_refused_naming_the_column(tmp_path, capsys):
    lines = ["a,b,y"] + [f"{i},{i % 3},{(i % 5) * 1e300}" for i in range(ROWS)]
    path = write(tmp_path / "t.csv", "\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"column 'y' has values too large to standardise"):
        load_csv_splits(path, "y", split_seed=0, val_fraction=0.1)
    assert "rescale it" in refused(path, capsys)


def test_a_non_ascii_file_name_and_target_are_named_as_written(tmp_path, capsys):
    path = write(tmp_path / "tablé ü.csv", table_text(target="prix €"))
    splits = load_csv_splits(path, "prix €", split_seed=0, val_fraction=0.1)
    assert splits.train.x.shape[1] == 2
    err = refused(path, capsys, target="😀")
    assert "tablé ü.csv: no column named '😀'" in err  # not '\ud83d\ude00'


def test_the_duplicate_header_check_is_linear(tmp_path):
    columns = 30_000  # the quadratic check took ~10 s here (100,000 columns: 135 s)
    header = ",".join(f"c{i}" for i in range(columns))
    row = ",".join(["1"] * columns)
    path = write(tmp_path / "wide.csv", header + ",c7\n" + "\n".join([row + ",1"] * 12) + "\n")
    start = time.perf_counter()
    with pytest.raises(DataError, match=r"header names must be distinct .* fix \['c7'\]"):
        read_numeric_csv(path)
    assert time.perf_counter() - start < 3.0
    _, rows = read_numeric_csv(write(path, header + "\n" + "\n".join([row] * 12) + "\n"))
    assert rows.shape == (12, columns) and np.all(rows == 1)
