"""benchmarks/hydra_tradeoff.py on digits with three students: the rows it derives from the
saved outputs, and the choice of a new default on validation data only."""

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import hydra_tradeoff as study  # noqa: E402

STUDENTS = {name: study.STUDENTS[name] for name in ("kd", "hydra", "hydra split 1, independent")}


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hydra_tradeoff")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(study, "STUDENTS", STUDENTS)
        patch.setattr(study, "BASE", [*study.BASE, *study.QUICK])
        study.run_seed(None, 0, tmp / "teachers", tmp / "out")
        return study.score_seed(None, 0, tmp / "out"), tmp


def test_every_student_and_the_references_are_scored_against_the_ensemble(scored):
    record, _ = scored
    rows = record["rows"]
    assert set(rows) == {"ensemble", "member", *STUDENTS}
    ensemble = rows["ensemble"]
    assert ensemble["ood_mi_ratio"] == pytest.approx(1.0)
    assert ensemble["mi_spearman_test"] == pytest.approx(1.0)
    assert rows["kd"]["ood_mi_ratio"] == 0.0  # one network: no mutual information
    assert rows["member"]["params"] * 3 == ensemble["params"]
    # Split 1 on 64-32-32-10 members: the body keeps 64→32, each of 3 heads 32→32 and 32→10.
    assert rows["hydra split 1, independent"]["params"] == (64 + 1) * 32 + 3 * (33 * 32 + 33 * 10)


def test_a_finished_student_is_kept_on_a_rerun(scored, monkeypatch):
    _, tmp = scored
    path = tmp / "out" / "seed0" / "kd.safetensors"
    before = path.stat().st_mtime_ns
    monkeypatch.setattr(study, "STUDENTS", STUDENTS)
    monkeypatch.setattr(study, "BASE", [*study.BASE, *study.QUICK])
    monkeypatch.setattr(study, "distill_student", lambda *a, **k: pytest.fail("retrained"))
    study.run_seed(None, 0, tmp / "teachers", tmp / "out")
    assert path.stat().st_mtime_ns == before


def test_the_choice_reads_validation_scores_only():
    def row(val_cnll, val_rho, params, test_cnll):
        return {
            "val_cnll": (val_cnll, 0.0),
            "val_mi_spearman": (val_rho, 0.0),
            "params": (params, 0.0),
            "cnll": (test_cnll, 0.0),
        }

    rows = {
        "kd": row(0.01, None, 10, 0.01),  # not a Hydra: never chosen
        "hydra": row(0.100, 0.5, 100, 0.050),  # the old default: its parameters are the budget
        "hydra small": row(0.101, 0.9, 80, 0.200),  # within 2 %, most faithful: chosen
        "hydra big": row(0.099, 0.99, 300, 0.010),  # best everywhere, but over the budget
        "hydra far": row(0.200, 0.99, 50, 0.010),  # best test cNLL, but 2x the validation's
    }
    assert study.choose(rows) == "hydra small"
    rows["hydra equal"] = row(0.101, 0.9, 60, 0.3)
    assert study.choose(rows) == "hydra equal"  # a tie goes to fewer parameters


def test_the_page_marks_the_choice_and_the_old_default(scored):
    record, _ = scored
    summary = study.tabulate({0: record})
    page = study.markdown({"command": "c", "machine_line": "m", "summary": summary})
    assert "*(old default)*" in page and "**(chosen)**" in page
    assert all(torch.isfinite(torch.tensor(v[0])) for v in summary["rows"]["hydra"].values() if v)
