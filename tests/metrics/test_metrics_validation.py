"""Bad inputs raise EnsembleDistillError with a one-line message."""

import pytest
import torch

from ensemble_distill.errors import EnsembleDistillError
from ensemble_distill.metrics import (
    accuracy,
    brier,
    brier_tfp,
    ece,
    expected_entropy,
    mean_probs,
    mutual_information,
    nll,
    pairwise_kl_diversity,
    predictive_entropy,
    reliability_bins,
)

LABELLED = [accuracy, nll, brier, brier_tfp, ece, reliability_bins]
UNLABELLED = [
    mean_probs,
    predictive_entropy,
    expected_entropy,
    mutual_information,
    pairwise_kl_diversity,
]

GOOD = torch.full((4, 3), 1 / 3, dtype=torch.float64)
LABELS = torch.tensor([0, 1, 2, 0])


def _nan() -> torch.Tensor:
    probs = GOOD.clone()
    probs[1, 1] = float("nan")
    return probs


def _inf() -> torch.Tensor:
    probs = GOOD.clone()
    probs[0, 0] = float("inf")
    return probs


BAD_PROBS = {
    "1-d": torch.full((3,), 1 / 3),
    "4-d": torch.full((4, 2, 1, 3), 1 / 3),
    "empty": torch.zeros(0, 3),
    "integer": torch.ones(4, 3, dtype=torch.int64),
    "nan": _nan(),
    "inf": _inf(),
    "logits": torch.tensor([[2.0, -1.0, 0.5]] * 4),
    "negative": torch.tensor([[0.5, 0.6, -0.1]] * 4),
    "not a tensor": [[1 / 3] * 3] * 4,
}

BAD_LABELS = {
    "too high": torch.tensor([0, 1, 3, 0]),
    "negative": torch.tensor([0, -1, 2, 0]),
    "wrong length": torch.tensor([0, 1, 2]),
    "2-d": LABELS[:, None],
    "float": LABELS.double(),
    "not a tensor": [0, 1, 2, 0],
}


def _raises_one_line(call) -> None:
    with pytest.raises(EnsembleDistillError) as info:
        call()
    assert "\n" not in str(info.value) and str(info.value)


@pytest.mark.parametrize("fn", LABELLED + UNLABELLED, ids=lambda f: f.__name__)
@pytest.mark.parametrize("case", list(BAD_PROBS))
def test_bad_probs_raise(fn, case):
    probs = BAD_PROBS[case]
    _raises_one_line(lambda: fn(probs, LABELS) if fn in LABELLED else fn(probs))


@pytest.mark.parametrize("fn", LABELLED, ids=lambda f: f.__name__)
@pytest.mark.parametrize("case", list(BAD_LABELS))
def test_bad_labels_raise(fn, case):
    _raises_one_line(lambda: fn(GOOD, BAD_LABELS[case]))


@pytest.mark.parametrize("num_bins", [0, -3, 2.5, True])
def test_bad_num_bins_raise(num_bins):
    _raises_one_line(lambda: ece(GOOD, LABELS, num_bins=num_bins))


def test_float32_rounding_is_tolerated_and_clipped():
    probs = torch.tensor([[1.0 + 5e-7, 0.0, -5e-7]], dtype=torch.float32)
    assert brier(probs, torch.tensor([0])) == pytest.approx(0.0, abs=1e-12)
    assert predictive_entropy(probs).item() == 0.0


def test_rows_need_not_sum_to_one():
    probs = torch.tensor([[0.5, 0.3, 0.1]], dtype=torch.float32)
    assert accuracy(probs, torch.tensor([0])) == 1.0
