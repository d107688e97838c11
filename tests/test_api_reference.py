"""docs/api.md is generated from the docstrings and must be current."""

import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_committed_api_reference_is_current():
    script = runpy.run_path(str(ROOT / "scripts" / "api_reference.py"))
    assert (ROOT / "docs" / "api.md").read_text() == script["reference"](), (
        "docs/api.md is stale: run python scripts/api_reference.py"
    )
