"""The training loop's pieces: the supervised loss every teacher member and student label term
uses, the schedule, precision and torch.compile."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ensemble_distill.config import OptimConfig
from ensemble_distill.errors import ConfigError
from ensemble_distill.metrics import gaussian_nll
from ensemble_distill.models.gaussian import gaussian_params
from ensemble_distill.training import compiled, fit, resolve_precision, supervised_loss


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


@pytest.mark.parametrize(
    ("amx", "avx512_bf16", "expected"),
    [
        (True, False, "bf16"),
        (False, True, "bf16"),
        (False, False, "fp32"),
    ],
)
def test_auto_precision_is_bf16_only_where_the_cpu_computes_it(
    monkeypatch, amx, avx512_bf16, expected
):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    assert resolve_precision("auto", "cpu") == expected
    for explicit in ("fp32", "bf16"):  # an explicit choice is kept on any CPU
        assert resolve_precision(explicit, "cpu") == explicit
    with pytest.raises(ConfigError, match="precision=auto"):
        resolve_precision("fp8", "cpu")


def _tiny_problem():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    x, y = torch.randn(8, 3), torch.tensor([0, 1] * 4)
    return model, lambda index: F.cross_entropy(model(x[index[0]]), y[index[0]])


def test_compiled_falls_back_to_eager_with_one_warning_when_compiling_fails(monkeypatch, caplog):
    _, loss_fn = _tiny_problem()
    calls = []

    def broken_compile(fn):
        def run(index):
            calls.append(index)
            raise torch._dynamo.exc.Unsupported("no compiler here")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    step = compiled(loss_fn, "kd")
    index = torch.arange(8)[None]
    with caplog.at_level("WARNING", logger="ensemble_distill"):
        first, second = step(index), step(index)
    assert torch.equal(first, loss_fn(index)) and torch.equal(second, first)
    assert len(calls) == 1  # the compiled function is not tried again
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "compile=true failed" in warnings[0].getMessage()
    assert "kd" in warnings[0].getMessage()


def test_compiled_lets_errors_of_the_loss_itself_through(monkeypatch):
    def bad_loss(index):
        raise ValueError("labels out of range")

    monkeypatch.setattr(torch, "compile", lambda fn: fn)
    with pytest.raises(ValueError, match="labels out of range"):
        compiled(bad_loss, "kd")(torch.arange(2)[None])


@pytest.mark.slow  # torch.compile: `make test-all` only
def test_a_compiled_training_run_matches_eager():
    """One real torch.compile (inductor, C++ on CPU): the losses of two epochs agree with an
    eager run's from the same start."""
    histories = []
    for compile in (False, True):
        model, loss_fn = _tiny_problem()
        history = fit(
            model.parameters(),
            loss_fn,
            num_examples=8,
            epochs=2,
            batch_size=4,
            optim=OptimConfig(),
            seeds=[0],
            quiet=True,
            compile=compile,
        )
        histories.append([row["loss"] for row in history])
    assert histories[1] == pytest.approx(histories[0], rel=1e-5)
