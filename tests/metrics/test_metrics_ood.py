"""OOD AUROC / AUPR / FPR at 95 % TPR: OOD is the positive class, higher score means more OOD."""

import numpy as np
import pytest
import torch
from scipy.stats import mannwhitneyu
from sklearn.metrics import roc_curve

from ensemble_distill.errors import EnsembleDistillError
from ensemble_distill.metrics import ood_aupr, ood_auroc, ood_fpr_at_tpr


def _mann_whitney_auroc(score_in: np.ndarray, score_out: np.ndarray) -> float:
    # U of the OOD sample counts pairs with s_out > s_in, ties as ½.
    u = mannwhitneyu(score_out, score_in, alternative="two-sided").statistic
    return u / (score_in.size * score_out.size)


def _roc_fpr_at_tpr(score_in: np.ndarray, score_out: np.ndarray, level: float = 0.95) -> float:
    # The smallest FPR among the ROC points (one per distinct score) with TPR >= level.
    targets = np.concatenate([np.zeros(score_in.size), np.ones(score_out.size)])
    fpr, tpr, _ = roc_curve(targets, np.concatenate([score_in, score_out]), drop_intermediate=False)
    return float(fpr[tpr >= level].min())


def test_auroc_matches_mann_whitney(rng):
    score_in = rng.normal(0.0, 1.0, size=300)
    score_out = rng.normal(0.8, 1.0, size=200)
    expected = _mann_whitney_auroc(score_in, score_out)
    got = ood_auroc(torch.from_numpy(score_in), torch.from_numpy(score_out))
    assert got == pytest.approx(expected, rel=1e-12)


def test_auroc_matches_mann_whitney_with_ties(rng):
    score_in = rng.integers(0, 4, size=150).astype(np.float64)
    score_out = rng.integers(1, 6, size=100).astype(np.float64)
    expected = _mann_whitney_auroc(score_in, score_out)
    got = ood_auroc(torch.from_numpy(score_in), torch.from_numpy(score_out))
    assert got == pytest.approx(expected, rel=1e-12)


def test_perfect_separation():
    score_in, score_out = torch.tensor([0.1, 0.2, 0.3]), torch.tensor([0.5, 0.9])
    assert ood_auroc(score_in, score_out) == 1.0
    assert ood_aupr(score_in, score_out) == 1.0


def test_ood_is_the_positive_class():
    score_in, score_out = torch.tensor([0.1, 0.4, 0.5]), torch.tensor([0.35, 0.8])
    auroc = ood_auroc(score_in, score_out)
    # In/OOD pairs (out > in): 0.35 beats 0.1; 0.8 beats all three -> 4 of 6.
    assert auroc == pytest.approx(4 / 6)
    assert ood_auroc(score_out, score_in) == pytest.approx(1 - auroc)


def test_aupr_hand_computed():
    # Descending: 0.8 (OOD) P=1 R=1/2; 0.4 (in); 0.35 (OOD) P=2/3 R=1; 0.1 (in).
    score_in, score_out = torch.tensor([0.1, 0.4]), torch.tensor([0.35, 0.8])
    assert ood_aupr(score_in, score_out) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # Swapped, the former in-distribution scores are positive: P=1/2 at R=1/2 and at R=1.
    assert ood_aupr(score_out, score_in) == pytest.approx(0.5 * 0.5 + 0.5 * 0.5)


@pytest.mark.parametrize("n_out", [20, 100, 137])  # 0.95 · N_out whole, whole, fractional
def test_fpr95_matches_sklearn_roc_curve(rng, n_out):
    score_in = rng.normal(0.0, 1.0, size=250)
    score_out = rng.normal(1.5, 1.0, size=n_out)
    expected = _roc_fpr_at_tpr(score_in, score_out)
    assert 0 < expected < 1
    got = ood_fpr_at_tpr(torch.from_numpy(score_in), torch.from_numpy(score_out))
    assert got == expected


@pytest.mark.parametrize("n_out", [40, 61])
def test_fpr95_matches_sklearn_roc_curve_with_ties(rng, n_out):
    # Five score values: every threshold cuts through a tie group on both sides.
    score_in = rng.integers(0, 4, size=150).astype(np.float64)
    score_out = rng.integers(1, 5, size=n_out).astype(np.float64)
    expected = _roc_fpr_at_tpr(score_in, score_out)
    got = ood_fpr_at_tpr(torch.from_numpy(score_in), torch.from_numpy(score_out))
    assert got == expected
    for level in (0.5, 0.8, 1.0):
        got = ood_fpr_at_tpr(torch.from_numpy(score_in), torch.from_numpy(score_out), level)
        assert got == _roc_fpr_at_tpr(score_in, score_out, level)


def test_fpr95_hand_computed():
    # OOD scores 1 … 20: 95 % of them is 19, flagged from t = 2 up; 2 and 2.5 of the three
    # in-distribution scores reach it.
    score_out = torch.arange(1, 21, dtype=torch.float64)
    assert ood_fpr_at_tpr(torch.tensor([1.5, 2.0, 2.5]), score_out) == pytest.approx(2 / 3)
    # OOD scores 1 … 10: 9 of 10 falls short of 95 %, so all ten are flagged, from t = 1 up.
    score_out = torch.arange(1, 11, dtype=torch.float64)
    assert ood_fpr_at_tpr(torch.tensor([0.5, 1.5]), score_out) == pytest.approx(1 / 2)
    # In-distribution 0 … 99, OOD 50 … 149: the 95th largest OOD score is 55, reached by 45.
    score_in = torch.arange(100, dtype=torch.float64)
    assert ood_fpr_at_tpr(score_in, score_in + 50) == pytest.approx(0.45)


def test_fpr95_extremes():
    score_in, score_out = torch.tensor([0.1, 0.2, 0.3]), torch.tensor([0.5, 0.9])
    assert ood_fpr_at_tpr(score_in, score_out) == 0.0
    assert ood_fpr_at_tpr(score_out, score_in) == 1.0
    # A constant score (a single network's MI) flags everything to reach any TPR.
    assert ood_fpr_at_tpr(torch.zeros(5), torch.zeros(3)) == 1.0


@pytest.mark.parametrize("level", [0.0, -0.1, 1.5, float("nan")])
def test_fpr_at_a_tpr_outside_the_unit_interval_raises(level):
    with pytest.raises(EnsembleDistillError, match="tpr must lie in"):
        ood_fpr_at_tpr(torch.tensor([0.1]), torch.tensor([0.2]), level)


@pytest.mark.parametrize(
    ("score_in", "score_out"),
    [
        (torch.tensor([]), torch.tensor([1.0])),
        (torch.tensor([[0.1, 0.2]]), torch.tensor([1.0])),
        (torch.tensor([0.1, float("nan")]), torch.tensor([1.0])),
        (torch.tensor([0.1]), torch.tensor([float("inf")])),
        ([0.1, 0.2], torch.tensor([1.0])),
    ],
)
def test_bad_scores_raise(score_in, score_out):
    with pytest.raises(EnsembleDistillError):
        ood_auroc(score_in, score_out)
    with pytest.raises(EnsembleDistillError):
        ood_aupr(score_in, score_out)
    with pytest.raises(EnsembleDistillError):
        ood_fpr_at_tpr(score_in, score_out)
