"""ECE and reliability bins against torchmetrics and a hand-computed case."""

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import multiclass_calibration_error

from ensemble_distill.metrics import ece, reliability_bins


def _assert_no_confidence_on_edge(p_bar: np.ndarray, num_bins: int = 15) -> None:
    scaled = p_bar.max(axis=1) * num_bins
    assert np.min(np.abs(scaled - np.round(scaled))) > 1e-4  # precondition, float32-safe


@pytest.mark.parametrize("scale", [1.0, 2.0, 4.0])
def test_ece_matches_torchmetrics_single_model(make_probs, scale):
    probs, labels = make_probs(500, 10, scale=scale)
    _assert_no_confidence_on_edge(probs.numpy())
    expected = multiclass_calibration_error(probs, labels, num_classes=10, n_bins=15, norm="l1")
    assert ece(probs, labels) == pytest.approx(expected.item(), abs=1e-6)


def test_ece_matches_torchmetrics_on_member_mean(make_probs):
    probs, labels = make_probs(500, 4, 10)
    p_bar = probs.mean(dim=1)
    _assert_no_confidence_on_edge(p_bar.numpy())
    expected = multiclass_calibration_error(p_bar, labels, num_classes=10, n_bins=15, norm="l1")
    assert ece(probs, labels) == pytest.approx(expected.item(), abs=1e-6)


def _row(top_class: int, confidence: float, num_classes: int = 10) -> list[float]:
    rest = (1.0 - confidence) / (num_classes - 1)
    return [confidence if k == top_class else rest for k in range(num_classes)]


def _hand_case() -> tuple[torch.Tensor, torch.Tensor]:
    rows = [
        _row(0, 1.0),  # confidence exactly 1.0, correct     -> last bin (14/15, 1]
        _row(1, 1.0),  # confidence exactly 1.0, wrong       -> last bin
        _row(3, 2 / 15),  # exactly on the edge 2/15, correct -> bin (1/15, 2/15]
        _row(2, 0.18),  # 0.18 * 15 = 2.7, wrong             -> bin (2/15, 3/15]
        _row(0, 0.5),  # 0.5 * 15 = 7.5, wrong               -> bin (7/15, 8/15]
    ]
    return torch.tensor(rows, dtype=torch.float64), torch.tensor([0, 0, 3, 0, 5])


def test_reliability_bins_hand_case():
    probs, labels = _hand_case()
    bins = reliability_bins(probs, labels)
    expected_counts = np.zeros(15, dtype=np.int64)
    expected_counts[[14, 1, 2, 7]] = [2, 1, 1, 1]
    np.testing.assert_array_equal(bins.counts.numpy(), expected_counts)
    assert bins.confidence[14].item() == 1.0
    assert bins.accuracy[14].item() == 0.5
    assert bins.confidence[1].item() == pytest.approx(2 / 15)
    assert bins.accuracy[1].item() == 1.0
    assert np.isnan(bins.confidence[0].item()) and np.isnan(bins.accuracy[0].item())
    np.testing.assert_allclose(bins.edges.numpy(), np.arange(16) / 15)


def test_ece_hand_case():
    probs, labels = _hand_case()
    # Bins: last (n=2, acc 1/2, conf 1), 2/15 (n=1, acc 1), 0.18 (n=1, acc 0), 0.5 (n=1, acc 0).
    expected = (2 * abs(0.5 - 1.0) + abs(1 - 2 / 15) + abs(0 - 0.18) + abs(0 - 0.5)) / 5
    assert ece(probs, labels) == pytest.approx(expected, rel=1e-12)


def test_confidence_zero_is_counted():
    probs = torch.zeros(1, 3, dtype=torch.float64)  # degenerate, but must not vanish
    bins = reliability_bins(probs, torch.tensor([0]))
    assert bins.counts[0].item() == 1


def test_ece_all_correct_and_certain_is_zero():
    probs = torch.eye(4, dtype=torch.float64)
    assert ece(probs, torch.arange(4)) == 0.0


@pytest.mark.parametrize("num_bins", [1, 10, 15, 20])
def test_bin_counts_sum_to_n(make_probs, num_bins):
    probs, labels = make_probs(300, 3, 5)
    bins = reliability_bins(probs, labels, num_bins=num_bins)
    assert bins.counts.shape == (num_bins,)
    assert bins.counts.sum().item() == 300


def test_single_bin_ece_is_accuracy_confidence_gap(make_probs):
    probs, labels = make_probs(300, 5)
    p = probs.numpy()
    gap = abs(np.mean(p.argmax(axis=1) == labels.numpy()) - np.mean(p.max(axis=1)))
    assert ece(probs, labels, num_bins=1) == pytest.approx(gap, rel=1e-12)
