"""Parameter count, forward FLOPs and latency per example."""

import math

import pytest
import torch
from torch import nn

from ensemble_distill.errors import EnsembleDistillError
from ensemble_distill.metrics import count_parameters, forward_flops, latency_per_example
from ensemble_distill.models import ModelSpec, create_model
from ensemble_distill.teachers import DeepEnsemble


def test_count_parameters_linear():
    assert count_parameters(nn.Linear(7, 3)) == 7 * 3 + 3
    assert count_parameters(nn.Linear(7, 3, bias=False)) == 7 * 3


def test_count_parameters_includes_frozen_and_counts_shared_once():
    layer = nn.Linear(4, 2)
    layer.bias.requires_grad_(False)
    model = nn.Sequential(layer, nn.ReLU(), layer, nn.Linear(2, 5))
    assert count_parameters(model) == (4 * 2 + 2) + (2 * 5 + 5)


def test_forward_flops_of_an_mlp_and_its_grouped_ensemble_match_the_closed_form():
    spec = ModelSpec("mlp", (1, 6, 6), 4, {"widths": [16, 8]})
    member = create_model(spec)
    expected = 2 * (36 * 16 + 16 * 8 + 8 * 4)  # 2 FLOPs per multiply-add, per example
    x = torch.rand(5, 1, 6, 6)
    assert forward_flops(member, x) == expected
    ensemble = DeepEnsemble([create_model(spec) for _ in range(3)])
    assert forward_flops(ensemble, x) == 3 * expected


def test_forward_flops_of_a_convolution_match_the_closed_form():
    conv = nn.Conv2d(3, 8, kernel_size=3, padding=1)
    assert forward_flops(conv, torch.rand(2, 3, 10, 10)) == 2 * 8 * 10 * 10 * 3 * 3 * 3


def test_latency_is_positive_seconds_per_example():
    calls = []

    def fn(x: torch.Tensor) -> torch.Tensor:
        calls.append(torch.is_inference_mode_enabled())
        return x * 2

    value = latency_per_example(fn, torch.zeros(8, 3), repeats=4, warmup=2)
    assert isinstance(value, float) and value > 0 and math.isfinite(value)
    assert calls == [True] * 6  # warmup + repeats, all under inference_mode


def test_latency_divides_by_batch_size(monkeypatch):
    # A fake clock that advances 1 s per reading makes each call take exactly 1 s.
    ticks = iter(range(100))
    monkeypatch.setattr("ensemble_distill.metrics.cost.time.perf_counter", lambda: next(ticks))
    assert latency_per_example(lambda x: x, torch.zeros(4, 2), repeats=3, warmup=0) == 0.25


@pytest.mark.parametrize(
    ("batch", "repeats", "warmup"),
    [(torch.zeros(0, 3), 3, 1), (torch.tensor(1.0), 3, 1), (torch.zeros(2, 3), 0, 1)],
)
def test_latency_bad_arguments_raise(batch, repeats, warmup):
    with pytest.raises(EnsembleDistillError):
        latency_per_example(lambda x: x, batch, repeats=repeats, warmup=warmup)
