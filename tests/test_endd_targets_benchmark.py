"""benchmarks/endd_targets.py --quick: runs end to end on digits, and chooses on validation."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # benchmark smoke run: `make test-all` only

ROOT = Path(__file__).resolve().parents[1]


def test_quick_study_writes_its_page_and_chooses_on_validation(tmp_path):
    doc = tmp_path / "docs" / "results" / "endd_targets"
    command = [sys.executable, str(ROOT / "benchmarks" / "endd_targets.py"), "--quick"]
    command += ["--seeds", "0", "--data-dir", str(tmp_path), "--runs", str(tmp_path / "runs")]
    subprocess.run([*command, "--doc", str(doc)], check=True, capture_output=True, cwd=ROOT)
    record = json.loads(doc.with_suffix(".json").read_text())
    summary = record["summary"]
    variants = {"members", "proxy", "members-eps0.01"}
    assert variants | {"ensemble", "member"} == set(summary["rows"])
    scores = {name: summary["rows"][name]["val_cnll"][0] for name in variants}
    assert summary["chosen"] == min(scores, key=scores.get)
    assert len(summary["curve"]) == 3  # DE-1 … DE-3 of the quick teacher
    # Every variant distilled from the one teacher: the same ensemble in each run folder.
    teacher = (
        tmp_path / "runs" / "seed0" / "teacher" / "teacher" / "model.safetensors"
    ).read_bytes()
    for name in variants:
        copied = tmp_path / "runs" / "seed0" / name / "teacher" / "model.safetensors"
        assert copied.read_bytes() == teacher
    page = doc.with_suffix(".md").read_text()
    assert "| endd [proxy]" in page and "**(chosen)**" in page
    # --tabulate-only rewrites the page from the finished runs without training.
    subprocess.run([*command, "--doc", str(doc), "--tabulate-only"], check=True, cwd=ROOT)
    assert json.loads(doc.with_suffix(".json").read_text())["summary"] == summary
