"""``members`` against memory (``preflight.check_memory``): a teacher that cannot fit is refused
before anything is written, with the size it would need."""

from __future__ import annotations

import re

import pytest
import torch

from ensemble_distill import api, preflight
from ensemble_distill.cli import main
from ensemble_distill.config import load_config
from ensemble_distill.errors import ConfigError
from ensemble_distill.models import ModelSpec, create_model
from ensemble_distill.resources import byte_text

TINY = ["epochs=1", "model_args={widths: [8]}", "eval.latency_repeats=1", "--quiet"]


def test_a_billion_members_are_refused_up_front(tmp_path, capsys):
    out = tmp_path / "out"  # 110 TB: 612 weights and 12,950 cached outputs per member
    assert main(["run", "--out", str(out), "members=1000000000", *TINY]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert re.search(r"members=1000000000 needs at least [\d.]+ TB of memory for the teacher", err)
    assert "lower members" in err
    assert not out.exists()


def member() -> torch.nn.Module:
    """A digits MLP member with widths [8], on the meta device: 8·64+8 + 10·8+10 = 610
    parameters, and the mean and std buffers (1 each)."""
    with torch.device("meta"):
        return create_model(ModelSpec("mlp", (1, 8, 8), 10, {"widths": [8]}))


@pytest.mark.parametrize(
    ("overrides", "memory", "weights", "cached"),
    [
        (
            [],
            (preflight.TRAIN, preflight.OUTPUTS),
            4 * (612 + 3 * 610),
            2 * 4 * 1000,
        ),  # Adam: 2 moments
        (["optim.name=sgd"], (preflight.TRAIN,), 4 * (612 + 2 * 610), 0),  # momentum 0.9: 1
        (["optim.name=sgd", "optim.momentum=0"], (preflight.TRAIN,), 4 * (612 + 610), 0),
        ([], (preflight.LOAD,), 4 * 612, 0),  # evaluate: the saved weights only
        ([], (preflight.OUTPUTS,), 0, 2 * 4 * 1000),  # the API's distill: the caller's teacher
    ],
)
def test_the_rule_counts_weights_gradients_moments_and_cached_outputs(
    overrides, memory, weights, cached
):
    config = load_config(None, ["members=3", *overrides])
    on_device, on_host, _ = preflight.memory_need(config, member(), 1000, memory)
    assert (on_device, on_host) == (3 * weights, 3 * cached)


def test_the_refusal_comes_exactly_past_the_available_memory(monkeypatch):
    config = load_config(None, ["members=3"])
    need = sum(
        preflight.memory_need(config, member(), 1000, (preflight.TRAIN, preflight.OUTPUTS))[:2]
    )
    cpu = torch.device("cpu")
    monkeypatch.setattr(preflight, "available_memory", lambda: need)
    preflight.check_memory(config, member(), 1000, cpu, (preflight.TRAIN, preflight.OUTPUTS))
    monkeypatch.setattr(preflight, "available_memory", lambda: need - 1)
    with pytest.raises(ConfigError, match=f"needs at least {byte_text(need)} of memory"):
        preflight.check_memory(config, member(), 1000, cpu, (preflight.TRAIN, preflight.OUTPUTS))
    monkeypatch.setattr(preflight, "available_memory", lambda: None)  # unknown: not checked
    preflight.check_memory(config, member(), 1000, cpu, (preflight.TRAIN, preflight.OUTPUTS))


def test_the_api_refuses_too_many_members_too():
    x, y = torch.rand(16, 2), torch.arange(16) % 2  # 1,282 parameters: 20 TB in training
    with pytest.raises(ConfigError, match="members=1000000000 needs at least"):
        api.train_teacher((x, y), members=10**9, epochs=1, model_args={"widths": [256]})


def test_on_a_gpu_the_weights_meet_its_free_memory_and_the_outputs_the_hosts(monkeypatch):
    config = load_config(None, ["members=3"])
    memory = (preflight.TRAIN, preflight.OUTPUTS)
    on_device, on_host, _ = preflight.memory_need(config, member(), 1000, memory)
    gpu = torch.device("cuda:0")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (on_device, 10**12))
    monkeypatch.setattr(preflight, "available_memory", lambda: on_host)
    preflight.check_memory(config, member(), 1000, gpu, memory)  # each part fits its place
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (on_device - 1, 10**12))
    with pytest.raises(ConfigError, match="kB of cuda:0 memory for the teacher"):
        preflight.check_memory(config, member(), 1000, gpu, memory)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (on_device, 10**12))
    monkeypatch.setattr(preflight, "available_memory", lambda: on_host - 1)
    with pytest.raises(ConfigError, match="kB of memory for the teacher"):
        preflight.check_memory(config, member(), 1000, gpu, memory)
