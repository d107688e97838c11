"""benchmarks/recipes.py --quick: runs end to end on digits, and chooses on validation only."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def record(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("recipes")
    doc = tmp / "docs" / "results" / "recipes"
    command = [sys.executable, str(ROOT / "benchmarks" / "recipes.py"), "--quick", "--seeds", "0"]
    command += ["--data-dir", str(tmp), "--runs", str(tmp / "runs"), "--doc", str(doc)]
    subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
    assert "## Floors" in doc.with_suffix(".md").read_text()
    assert (tmp / "docs" / "img" / "recipes.png").is_file()
    return json.loads(doc.with_suffix(".json").read_text())


def test_each_method_is_chosen_by_validation_cnll(record):
    rows = record["summary"]["rows"]
    for method, label in record["summary"]["chosen"].items():
        candidates = [r["val_cnll"][0] for r in rows.values() if r["method"] == method]
        assert rows[label]["val_cnll"][0] == min(candidates)
    assert set(record["summary"]["chosen"]) == {"kd", "hydra", "endd"}


def test_live_inputs_cost_the_teachers_forward_on_top(record):
    recipes = record["per_seed"]["0"]["recipes"]
    clean, mixup = recipes["fm-clean-3x"]["kd"], recipes["fm-mixup-3x"]["kd+mixup"]
    # The same epochs plus the teachers' forward on every mixed batch.
    assert mixup["train_flops"] > clean["train_flops"]
    assert len(record["summary"]["curve"]) == 3  # DE-1 … DE-3 of the quick teacher
