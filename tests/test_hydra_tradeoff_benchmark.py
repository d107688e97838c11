"""benchmarks/hydra_tradeoff.py on digits with three students: the rows it derives from the
saved outputs, and the choice of a new default on validation data only."""

import dataclasses
import json
import sys
from pathlib import Path

import pytest
import torch
from scipy.special import rel_entr

from ensemble_distill.methods import DistillContext

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import hydra_tradeoff as study  # noqa: E402
from seeds import DEE_FOOTNOTE  # noqa: E402

pytestmark = pytest.mark.slow  # benchmark smoke run: `make test-all` only

STUDENTS = {name: study.STUDENTS[name] for name in ("kd", "hydra", "hydra split 1, independent")}


def quick(tmp: Path) -> study.Study:
    """The MNIST study on digits with three students, into ``tmp``."""
    mnist = study.STUDIES["mnist"]
    return dataclasses.replace(
        mnist, base=mnist.base + study.QUICK, students=STUDENTS, runs=tmp / "teachers", out=tmp
    )


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hydra_tradeoff")
    study.run_seed(quick(tmp), None, 0)
    return study.score_seed(quick(tmp), None, 0), tmp


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
    path = tmp / "seed0" / "kd.safetensors"
    before = path.stat().st_mtime_ns
    monkeypatch.setattr(study, "distill_student", lambda *a, **k: pytest.fail("retrained"))
    study.run_seed(quick(tmp), None, 0)
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
        "kd": row(0.01, None, 100, 0.01),  # not a Hydra: never chosen; 3x its size the budget
        "hydra": row(0.100, 0.5, 200, 0.050),
        "hydra small": row(0.101, 0.9, 150, 0.200),  # within 2 %, most faithful: chosen
        "hydra big": row(0.099, 0.99, 301, 0.010),  # best everywhere, but over the budget
        "hydra far": row(0.200, 0.99, 50, 0.010),  # best test cNLL, but 2x the validation's
    }
    assert study.choose(rows) == ("hydra small", [])
    rows["hydra equal"] = row(0.101, 0.9, 120, 0.3)
    assert study.choose(rows) == ("hydra equal", ["hydra small"])  # ties: fewer parameters
    rows["hydra equal"]["val_mi_spearman"] = (0.88, 0.01)  # 0.02 below, std 0.01: a loss
    assert study.choose(rows) == ("hydra small", [])
    rows["hydra equal"]["val_mi_spearman"] = (0.88, 0.03)  # within the noise: a tie
    assert study.choose(rows) == ("hydra equal", ["hydra small"])


def test_the_page_is_rewritten_from_its_json_alone(tmp_path, monkeypatch):
    """--from-json re-tabulates the per-seed scores a page's JSON holds: no outputs read,
    the run's command and machine kept, the DEE marks and footnote on the page."""
    doc = tmp_path / "page"
    per_seed = {}
    for seed in (0, 1):
        rows = {
            name: {key: 0.5 + 0.01 * seed for key in study.KEYS}
            for name in ("ensemble", "member", "kd", "hydra")
        }
        rows["hydra"] |= {"dee": 0.8, "dee_note": "extrapolated" if seed else None}
        bins = {"edges": [0.0, 1.0], "diversity": [0.1]}
        per_seed[str(seed)] = {
            "rows": rows,
            "curve": [0.3, 0.2],
            "diversity": {"hydra": {"test": bins, "ood": bins}},
        }
    record = {"command": "the run's", "machine_line": "its machine", "per_seed": per_seed}
    doc.with_suffix(".json").write_text(json.dumps(record))
    fake = dataclasses.replace(quick(tmp_path), doc=doc, plot=tmp_path / "p.png")
    monkeypatch.setitem(study.STUDIES, "mnist", fake)
    monkeypatch.setattr(study, "score_seed", None)  # never called
    monkeypatch.setattr(sys, "argv", ["hydra_tradeoff.py", "--from-json"])
    study.main()
    rewritten = json.loads(doc.with_suffix(".json").read_text())
    assert rewritten["command"] == "the run's"
    assert rewritten["summary"]["rows"]["hydra"]["dee_notes"] == ["extrapolated"]
    page = doc.with_suffix(".md").read_text()
    assert "| 0.80 ± 0.00† |" in page and DEE_FOOTNOTE in page


def test_the_page_marks_the_choice_and_the_old_default(scored):
    record, tmp = scored
    summary = study.tabulate(quick(tmp), {0: record})
    page = study.markdown(quick(tmp), {"command": "c", "machine_line": "m", "summary": summary})
    assert "*(old default)*" in page and "**(chosen)**" in page
    hydra = summary["rows"]["hydra"]
    assert all(torch.isfinite(torch.tensor(hydra[key][0])) for key in study.KEYS if hydra[key])


@pytest.mark.parametrize("name", sorted(study.STUDIES))
def test_every_student_of_every_study_is_a_valid_config(name):
    """A typo in a study's overrides fails here, not an hour into the study."""
    chosen = study.STUDIES[name]
    for method, overrides in chosen.students.values():
        config = chosen.config_for(None, 0, method, overrides)
        assert config.methods == [method]
        assert config.student.epochs_multiple == 2
        if method.startswith("hydra"):  # pinned: a change of the defaults changes no row
            keys = {item.split("=")[0] for item in overrides}
            assert {"hydra.head_widths", "hydra.head_init"} <= keys


def test_diversity_per_bin_is_the_members_pairwise_kl(scored):
    """Oracle: scipy's relative entropy over every ordered pair of members, averaged per bin of
    the model's own confidence; single networks have no members to compare."""
    record, tmp = scored
    assert set(record["diversity"]) == {"ensemble", "hydra", "hydra split 1, independent"}
    outputs, _, _ = study.read_outputs(tmp / "seed0" / "hydra.safetensors")
    probs = torch.softmax(outputs["ood"].double(), dim=-1).numpy()  # (N, M, C)
    members = probs.shape[1]
    kl = sum(
        rel_entr(probs[:, i], probs[:, j]).sum(-1)
        for i in range(members)
        for j in range(members)
        if i != j
    ) / (members * (members - 1))
    bins = record["diversity"]["hydra"]["ood"]
    confidence = probs.mean(1).max(-1)
    for lo, hi, value in zip(bins["edges"][:-1], bins["edges"][1:], bins["diversity"], strict=True):
        inside = (confidence > lo) & (confidence <= hi) | (
            (lo == bins["edges"][0]) & (confidence <= hi)
        )
        assert (value is None) == (not inside.any())
        if inside.any():
            assert value == pytest.approx(kl[inside].mean(), rel=1e-6)


class Interrupted(Exception):
    """Stands in for a kill during a student's training."""


def test_a_student_killed_mid_training_resumes_to_the_same_outputs(tmp_path, monkeypatch):
    kd_only = dataclasses.replace(quick(tmp_path), students={"kd": STUDENTS["kd"]})
    fit, steps = DistillContext.fit, []

    def counted_fit(self, student, params, loss_fn, stop_at=None, **kwargs):
        def step(index):
            steps.append(1)
            if stop_at is not None and len(steps) > stop_at:
                raise Interrupted
            return loss_fn(index)

        return fit(self, student, params, step, **kwargs)

    monkeypatch.setattr(DistillContext, "fit", counted_fit)
    study.run_seed(dataclasses.replace(kd_only, out=tmp_path / "whole"), None, 0)
    whole_steps = len(steps)
    steps.clear()
    # Killed in the middle of the second of its epochs (progress is saved as each one ends).
    epochs = kd_only.config_for(None, 0, "kd", []).student_epochs()
    stop_at = whole_steps * 3 // (2 * epochs)

    def stopped_fit(self, student, params, loss_fn, **kwargs):  # a method: binds ``self``
        return counted_fit(self, student, params, loss_fn, stop_at=stop_at, **kwargs)

    monkeypatch.setattr(DistillContext, "fit", stopped_fit)
    with pytest.raises(Interrupted):
        study.run_seed(kd_only, None, 0)
    assert any((tmp_path / "seed0" / "progress" / "kd").iterdir())
    steps.clear()
    monkeypatch.setattr(DistillContext, "fit", counted_fit)
    study.run_seed(kd_only, None, 0)
    assert 0 < len(steps) < whole_steps  # it went on from the saved epoch
    resumed, _, info = study.read_outputs(tmp_path / "seed0" / "kd.safetensors")
    expected, _, _ = study.read_outputs(tmp_path / "whole" / "seed0" / "kd.safetensors")
    for split, values in expected.items():
        torch.testing.assert_close(resumed[split], values, rtol=0, atol=0)
    assert info["train_seconds"] is None  # the seconds before the kill are unknown
    assert not (tmp_path / "seed0" / "progress" / "kd").exists()
