"""benchmarks/precision.py's comparison on digits: bf16 autocast keeps the teachers' and the KD
students' test accuracy and cNLL within the seeds' spread of fp32's."""

import sys
from pathlib import Path

import pytest
import torch

from ensemble_distill.data import create_dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import precision

pytestmark = pytest.mark.slow  # benchmark smoke run: `make test-all` only

DIGITS = {"members": 2, "epochs": 6, "model_args": {"widths": [64]}, "methods": ["kd"]}


def test_bf16_keeps_accuracy_and_cnll_of_fp32_within_seed_noise():
    runs = precision.compare(
        DIGITS | {"student": {"epochs": 6}}, [0, 1, 2], create_dataset("digits")
    )
    scores = {
        p: torch.tensor(
            [
                [seed[m][k] for m in precision.MODELS for k in precision.METRICS]
                for seed in runs[p].values()
            ]
        )
        for p in precision.PRECISIONS
    }
    assert not torch.equal(scores["fp32"], scores["bf16"])  # bf16 really ran
    verdict = precision.within_noise(runs)
    for model in precision.MODELS:
        for metric in precision.METRICS:
            assert verdict[model][metric]["within"], (model, metric, verdict[model][metric])


def test_within_noise_flags_a_gap_beyond_twice_the_spread():
    def runs(values):
        return {
            0: {"teacher": {"acc": values[0], "cnll": 0.1}, "kd": {"acc": 0.9, "cnll": 0.1}},
            1: {"teacher": {"acc": values[1], "cnll": 0.1}, "kd": {"acc": 0.9, "cnll": 0.1}},
        }

    verdict = precision.within_noise({"fp32": runs([0.90, 0.91]), "bf16": runs([0.80, 0.81])})
    assert not verdict["teacher"]["acc"]["within"]  # a 0.10 gap against a 0.007 spread
    assert verdict["kd"]["acc"]["within"] and verdict["teacher"]["cnll"]["within"]
