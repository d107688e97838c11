"""Selective prediction: the risk–coverage curve, AURC, the oracle's AURC and E-AURC."""

import itertools
import math

import numpy as np
import pytest
import torch

from ensemble_distill.errors import EnsembleDistillError
from ensemble_distill.metrics import (
    accuracy,
    aurc,
    eaurc,
    optimal_aurc,
    risk_coverage,
)


def _loop_risks(confidence: list[float], wrong: list[bool]) -> list[float]:
    """Risks by walking the examples from the most confident down, one at a time (Python's
    stable sort: ties keep the given order)."""
    order = sorted(range(len(confidence)), key=lambda i: -confidence[i])
    risks, errors = [], 0
    for answered, i in enumerate(order, start=1):
        errors += wrong[i]
        risks.append(errors / answered)
    return risks


def _tie_averaged_risks(confidence: list[float], wrong: list[bool]) -> np.ndarray:
    """The loop's risks averaged over every order of the examples: ties broken at random."""
    orders = list(itertools.permutations(range(len(confidence))))
    curves = [
        _loop_risks([confidence[i] for i in order], [wrong[i] for i in order]) for order in orders
    ]
    return np.mean(curves, axis=0)


def _two_class(confidence: list[float], wrong: list[bool]) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 2) probabilities predicting class 0 with the given confidences (> ½), and labels
    that make the prediction wrong where asked."""
    p = torch.tensor(confidence, dtype=torch.float64)
    return torch.stack([p, 1 - p], dim=1), torch.tensor(wrong, dtype=torch.int64)


def test_hand_computed_curve_and_areas():
    # Most confident first: right, wrong, right, wrong -> errors 0, 1, 1, 2 among the first k.
    probs, labels = _two_class([0.6, 0.9, 0.7, 0.8], [True, False, False, True])
    coverage, risk = risk_coverage(probs, labels)
    assert coverage.tolist() == [0.25, 0.5, 0.75, 1.0]
    assert risk.tolist() == pytest.approx([0, 1 / 2, 1 / 3, 1 / 2], rel=1e-12)
    assert aurc(probs, labels) == pytest.approx((0 + 1 / 2 + 1 / 3 + 1 / 2) / 4)
    # Oracle with 2 errors of 4: both right ones first -> risks 0, 0, 1/3, 1/2.
    assert optimal_aurc(probs, labels) == pytest.approx((1 / 3 + 1 / 2) / 4)
    assert eaurc(probs, labels) == pytest.approx(1 / 2 / 4)


def test_ties_count_in_expectation_over_their_order():
    # 0.7 twice, one right and one wrong: half an error expected among the first of the two.
    probs, labels = _two_class([0.7, 0.9, 0.7], [True, False, False])
    _, risk = risk_coverage(probs, labels)
    assert risk.tolist() == pytest.approx([0, 0.5 / 2, 1 / 3], rel=1e-12)


def test_tied_curve_matches_the_loop_averaged_over_every_order():
    confidence = [0.8, 0.6, 0.8, 0.9, 0.6, 0.8]
    wrong = [True, False, False, True, True, False]
    _, risk = risk_coverage(*_two_class(confidence, wrong))
    np.testing.assert_allclose(risk.numpy(), _tie_averaged_risks(confidence, wrong), rtol=1e-12)


def test_random_curve_matches_the_loop(make_probs):
    probs, labels = make_probs(300, 5, 4)  # members: ranked by the mean prediction's max
    p_bar = probs.mean(dim=1)
    wrong = (p_bar.argmax(dim=1) != labels).tolist()
    expected = _loop_risks(p_bar.max(dim=1).values.tolist(), wrong)
    coverage, risk = risk_coverage(probs, labels)
    np.testing.assert_allclose(risk.numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(coverage.numpy(), np.arange(1, 301) / 300)
    assert risk[-1].item() == pytest.approx(1 - accuracy(probs, labels))
    assert aurc(probs, labels) == pytest.approx(np.mean(expected), rel=1e-12)


def test_curve_does_not_depend_on_the_examples_order(rng):
    # Confidences on a coarse grid: many ties, which a fixed order would break arbitrarily.
    confidence = (rng.integers(6, 10, size=200) / 10).tolist()
    wrong = (rng.random(200) < 0.3).tolist()
    probs, labels = _two_class(confidence, wrong)
    permutation = torch.from_numpy(rng.permutation(200))
    _, risk = risk_coverage(probs, labels)
    _, shuffled = risk_coverage(probs[permutation], labels[permutation])
    np.testing.assert_allclose(risk.numpy(), shuffled.numpy(), rtol=1e-12)


def test_perfect_ranking_has_no_excess_and_the_worst_ranking_most(rng):
    wrong = (rng.random(100) < 0.2).tolist()
    perfect = [0.6 if w else 0.9 for w in wrong]
    assert eaurc(*_two_class(perfect, wrong)) == pytest.approx(0.0, abs=1e-15)
    worst = _two_class([0.9 if w else 0.6 for w in wrong], wrong)
    assert aurc(*worst) > aurc(*_two_class(perfect, wrong))
    # A constant confidence answers in random order: the risk is the error rate at every k.
    constant = _two_class([0.7] * 100, wrong)
    np.testing.assert_allclose(risk_coverage(*constant)[1].numpy(), sum(wrong) / 100, rtol=1e-12)
    assert 0 < eaurc(*constant) < eaurc(*worst)


def test_optimal_aurc_approaches_geifmans_closed_form():
    n, errors = 20_000, 2_000
    probs, labels = _two_class([0.9] * n, [i < errors for i in range(n)])
    r = errors / n
    assert optimal_aurc(probs, labels) == pytest.approx(r + (1 - r) * math.log(1 - r), abs=1e-3)


@pytest.mark.parametrize(
    ("probs", "labels"),
    [
        (torch.tensor([[2.0, -1.0]]), torch.tensor([0])),  # logits, not probabilities
        (torch.tensor([[0.6, 0.4]]), torch.tensor([0, 1])),  # one label too many
        (torch.tensor([[0.6, 0.4]]), torch.tensor([0.0])),  # float labels
    ],
)
def test_bad_inputs_raise(probs, labels):
    for metric in (risk_coverage, aurc, optimal_aurc, eaurc):
        with pytest.raises(EnsembleDistillError):
            metric(probs, labels)
