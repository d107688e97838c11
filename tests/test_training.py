"""The supervised loss every teacher member and student label term uses."""

import pytest
import torch
import torch.nn.functional as F

from ensemble_distill.metrics import gaussian_nll
from ensemble_distill.models.gaussian import gaussian_params
from ensemble_distill.training import supervised_loss


def test_supervised_loss_is_cross_entropy_for_integer_labels():
    torch.manual_seed(0)
    logits, labels = torch.randn(4, 3, 5), torch.randint(0, 5, (4, 3))  # (members, batch, C)
    expected = torch.stack(
        [F.cross_entropy(logits[m], labels[m]) for m in range(4)]
    ).mean()  # equal batch sizes: the mean of member means is the overall mean
    torch.testing.assert_close(supervised_loss(logits, labels), expected)


def test_supervised_loss_is_gaussian_nll_for_float_targets():
    torch.manual_seed(0)
    outputs, y = torch.randn(32, 2, dtype=torch.float64), torch.randn(32, dtype=torch.float64)
    mean, var = gaussian_params(outputs)
    expected = F.gaussian_nll_loss(mean, y, var, full=True)
    torch.testing.assert_close(supervised_loss(outputs, y), expected)
    assert supervised_loss(outputs, y).item() == pytest.approx(gaussian_nll(mean, var, y))

    members = torch.randn(32, 5, 2, dtype=torch.float64)  # (batch, members, 2) vs y (batch,)
    mean, var = gaussian_params(members)
    expected = F.gaussian_nll_loss(mean, y[:, None].expand_as(mean), var, full=True)
    torch.testing.assert_close(supervised_loss(members, y[:, None].expand_as(mean)), expected)


def test_one_cycle_warms_up_linearly_then_follows_a_cosine_to_zero():
    import math

    from ensemble_distill.training import one_cycle

    assert [one_cycle(s, warmup=4, total=20) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    for step in range(4, 20):
        done = (step - 4) / 16
        assert one_cycle(step, 4, 20) == pytest.approx(0.5 * (1 + math.cos(math.pi * done)))
    assert one_cycle(20, 4, 20) == pytest.approx(0.0)
    assert one_cycle(0, 0, 10) == 1.0  # no warm-up: a plain cosine
