"""benchmarks/member_start.py: its students, the member − random gaps and the vote read on
validation only, member 0's rank among the members, a misspelt ``--only``, and a run on digits
whose rows and training FLOPs it derives."""

import dataclasses
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import scipy.stats
import torch

from ensemble_distill.engine import prepare
from ensemble_distill.metrics import mutual_information

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import member_start as study  # noqa: E402
from hydra_tradeoff import read_outputs  # noqa: E402


def rows_of(values: dict[str, dict[str, tuple[float, float]]], seeds=(0, 1, 2)) -> dict:
    return {name: {**row, "seeds": list(seeds)} for name, row in values.items()}


def test_every_student_at_every_budget_from_both_starts():
    students = study.students()
    assert len(students) == len(study.METHODS) * len(study.BUDGETS) * len(study.INITS)
    method, overrides = students["hydra member 2x"]
    assert method == "hydra" and "student.init=member" in overrides
    assert "student.epochs_multiple=2" in overrides and "hydra.head_widths=[]" in overrides
    assert set(study.REUSED.values()) <= set(students)  # the copied rows are this study's


def test_the_gap_is_member_minus_random_with_the_larger_std():
    rows = rows_of({"a": {"k": (0.30, 0.01)}, "b": {"k": (0.32, 0.03)}})
    assert study.gap(rows, "a", "b", "k") == pytest.approx({"gap": -0.02, "std": 0.03})
    assert study.gap(rows, "a", "missing", "k") is None


@pytest.mark.parametrize(
    ("entry", "lower", "expected"),
    [
        ({"gap": -0.02, "std": 0.01}, True, "member"),
        ({"gap": -0.02, "std": 0.03}, True, "tie"),
        ({"gap": +0.02, "std": 0.01}, True, "random"),
        ({"gap": +0.05, "std": 0.01}, False, "member"),  # a higher ρ is better
    ],
)
def test_a_gap_within_the_std_is_a_tie(entry, lower, expected):
    assert study.signed(entry, ".3f", lower).endswith(expected)


def summary_with(cnll_gap: float, rho_gap: float) -> dict:
    rows = {}
    for name in study.students():
        member = name.split()[1] == "member"
        cnll = 0.05 + (cnll_gap if member else 0.0)
        rho = 0.8 + (rho_gap if member else 0.0)
        rows[name] = {"val_cnll": (cnll, 0.001), "val_noise_rho": (rho, 0.01)}
    return {"rows": rows, "verdicts": study.verdicts(rows_of(rows))}


@pytest.mark.parametrize(
    ("cnll_gap", "rho_gap", "vote"),
    [
        (-0.005, 0.0, "yes"),
        (-0.0005, 0.0, "no"),  # within the std: a tie is no reason to change a default
        (-0.005, -0.05, "no"),  # better means, worse disagreement
        (+0.005, 0.0, "no"),
    ],
)
def test_the_vote_needs_a_win_beyond_the_std_that_costs_no_disagreement(cnll_gap, rho_gap, vote):
    assert study.default_verdict(summary_with(cnll_gap, rho_gap)) == vote


def test_no_vote_while_a_student_lacks_a_seed():
    summary = summary_with(-0.005, 0.0)
    rows = rows_of({"kd random 4x": {"val_cnll": (0.05, 0.0)}}, seeds=(0,))
    summary["verdicts"] = study.verdicts(rows)
    assert study.default_verdict(summary).startswith("none yet")


def test_a_page_of_one_seed_has_no_gaps_and_no_vote():
    """A study's first seed alone: a std of one seed is 0, so every gap would read as a win."""
    summary = summary_with(-0.005, 0.0)
    summary["verdicts"] = study.verdicts(rows_of(summary["rows"], seeds=(0,)))
    assert all(v is None for entry in summary["verdicts"].values() for v in entry.values())
    assert study.default_verdict(summary).startswith("none yet")


def test_extra_seeds_for_a_few_students_keep_the_others_in_the_vote():
    """Seeds 3 and 4 trained for the 4x students only: the rows of 3 seeds still vote; a row
    on its first seeds does not."""
    summary = summary_with(-0.005, 0.0)
    rows = {name: {**entry, "seeds": [0, 1, 2]} for name, entry in summary["rows"].items()}
    rows["kd member 4x"]["seeds"] = [0, 1, 2, 3, 4]
    summary["verdicts"] = study.verdicts(rows)
    assert study.default_verdict(summary) == "yes"
    rows["kd random 4x"]["seeds"] = [3, 4]
    summary["verdicts"] = study.verdicts(rows)
    assert study.default_verdict(summary).startswith("none yet")


def test_a_run_on_digits_scores_every_student_and_its_training_flops(tmp_path):
    names = ["kd member 1x", "hydra random 1x"]
    quick = dataclasses.replace(
        study.STUDIES["mnist"],
        base=study.MNIST.base + study.QUICK,
        students={name: study.students()[name] for name in names},
        runs=tmp_path,
        out=tmp_path,
    )
    study.run_seed(quick, None, 0, inputs=study.inputs)
    scores = study.score_seed(quick, None, 0)
    rows = scores["rows"]
    assert set(scores["start_rank"]) == {"val", "test"}
    assert all(
        1 <= rank <= quick.config_for(None, 0, "kd", []).members
        for rank in scores["start_rank"].values()
    )
    assert set(rows) == {"ensemble", "member", *names}
    setup = prepare(quick.config_for(None, 0, "kd", []))
    _, _, info = read_outputs(tmp_path / "seed0" / "kd member 1x.safetensors")
    epochs = setup.config.epochs  # 1x the teacher's
    assert rows["kd member 1x"]["train_flops"] == 3 * info["flops"] * len(setup.data.train) * epochs
    # Oracle: scipy's Spearman ρ of the saved outputs' MI on the noisy validation copy.
    hydra, _, _ = read_outputs(tmp_path / "seed0" / "hydra random 1x.safetensors")
    ensemble, _, _ = read_outputs(tmp_path / "seed0" / "ensemble.safetensors")
    mi = [mutual_information(torch.softmax(o["val_noise"].double(), -1)) for o in (hydra, ensemble)]
    expected = scipy.stats.spearmanr(mi[0].numpy(), mi[1].numpy()).statistic
    assert rows["hydra random 1x"]["val_noise_rho"] == pytest.approx(expected, abs=1e-6)


def members_right(right: list[float], labels: torch.Tensor, classes: int = 4) -> torch.Tensor:
    """(batch, members, classes) probabilities: member m puts 0.7 on the label for the first
    ``right[m]`` of the examples and on the next class for the rest."""
    batch, columns = len(labels), []
    for fraction in right:
        predicted = labels.clone()
        predicted[int(fraction * batch) :] = (labels[int(fraction * batch) :] + 1) % classes
        probs = torch.full((batch, classes), 0.1)
        probs[torch.arange(batch), predicted] = 0.7
        columns.append(probs)
    return torch.stack(columns, dim=1)


def test_member_0s_rank_by_cnll_on_validation_and_on_test():
    """Member 0 right most often on validation and least often on test: ranked 1 and M."""
    labels = torch.arange(400) % 4
    ensemble = {
        "val": SimpleNamespace(probs=members_right([0.9, 0.7, 0.8], labels)),
        "test": SimpleNamespace(probs=members_right([0.5, 0.7, 0.8], labels)),
    }
    data = SimpleNamespace(val=SimpleNamespace(y=labels), test=SimpleNamespace(y=labels))
    assert study.start_rank(ensemble, data) == {"val": 1, "test": 3}


def test_the_page_names_member_0s_rank_for_the_seeds_that_recorded_it():
    per_seed = {
        0: {"start_rank": {"val": 1, "test": 3}},
        1: {},
        2: {"start_rank": {"val": 2, "test": 2}},
    }
    (line, _) = study.start_lines(per_seed)
    assert "1, 2 on validation and 3, 2 on test (seeds 0, 2)" in line
    assert study.start_lines({1: {}}) == []


def test_a_misspelt_only_name_is_refused_before_the_teacher_trains(tmp_path):
    quick = dataclasses.replace(study.STUDIES["mnist"], runs=tmp_path, out=tmp_path)
    with pytest.raises(SystemExit, match=r"no student named \['kd member 3x'\].*'kd random 1x'"):
        study.run_seed(quick, None, 0, only=["kd member 1x", "kd member 3x"])
    assert not any(tmp_path.iterdir())  # no teacher, no folder
