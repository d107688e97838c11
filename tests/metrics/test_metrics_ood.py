"""OOD AUROC / AUPR: OOD is the positive class, higher score means more OOD."""

import numpy as np
import pytest
import torch
from scipy.stats import mannwhitneyu

from ensemble_distill.errors import EnsembleDistillError
from ensemble_distill.metrics import ood_aupr, ood_auroc


def _mann_whitney_auroc(score_in: np.ndarray, score_out: np.ndarray) -> float:
    # U of the OOD sample counts pairs with s_out > s_in, ties as ½.
    u = mannwhitneyu(score_out, score_in, alternative="two-sided").statistic
    return u / (score_in.size * score_out.size)


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
