"""benchmarks/teacher_stacking.py (slow): a quick run writes its page and JSON, and names what
``teacher.vectorize=auto`` picks."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import teacher_stacking  # noqa: E402


@pytest.mark.slow
def test_quick_run_writes_its_page(tmp_path):
    doc = tmp_path / "teacher_stacking"
    command = [sys.executable, "benchmarks/teacher_stacking.py", "--quick", "--doc", str(doc)]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, timeout=300)
    record = json.loads(doc.with_suffix(".json").read_text())
    rows = list(record["rows"].values())
    assert [row["setting"] for row in rows] == list(teacher_stacking.SETTINGS)
    assert all(row["auto"] == "stacked" for row in rows)  # 4 channels: narrow
    assert all(ms > 0 for row in rows for ms in row["ms"].values())
    inference = list(record["inference"].values())
    assert [row["setting"] for row in inference] == list(teacher_stacking.SETTINGS)
    assert all(row["auto"] == "looped" for row in inference)  # convolutions, on the CPU
    assert doc.with_suffix(".md").read_text() == teacher_stacking.markdown(record)
