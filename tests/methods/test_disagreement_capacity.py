"""Hydra's levers on the members' disagreement (issue 28): the MI-matching term and
low-rank adapters, against independent references."""

import numpy as np
import pytest
import torch
from scipy.stats import entropy

from ensemble_distill.config import build_config
from ensemble_distill.errors import ConfigError
from ensemble_distill.methods.losses import disagreement_loss, member_mutual_information
from ensemble_distill.metrics import mutual_information
from ensemble_distill.models.heads import LowRankAdapters, StackedMLPHeads


def test_member_mutual_information_matches_scipy_and_the_metric():
    logits = torch.randn(6, 4, 5, dtype=torch.float64) * 3
    probs = torch.softmax(logits, -1).numpy()
    expected = [entropy(p.mean(0)) - np.mean([entropy(member) for member in p]) for p in probs]
    got = member_mutual_information(logits)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got.numpy(), mutual_information(torch.from_numpy(probs)).numpy())


def test_disagreement_loss_is_zero_for_the_teachers_own_logits_and_has_the_right_gradient():
    teacher = torch.randn(5, 3, 4, dtype=torch.float64)
    assert disagreement_loss(teacher, teacher).item() == 0.0
    student = torch.randn(5, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: disagreement_loss(s, teacher), (student,))
    mi_s, mi_t = member_mutual_information(student), member_mutual_information(teacher)
    expected = ((mi_s - mi_t) ** 2).mean()
    torch.testing.assert_close(disagreement_loss(student, teacher), expected)


def test_adapters_start_as_the_shared_features_and_match_a_per_member_loop():
    torch.manual_seed(0)
    adapters = LowRankAdapters(6, 2, members=3)
    features = torch.randn(4, 6)
    torch.testing.assert_close(adapters(features), features.expand(3, 4, 6))  # B = 0
    with torch.no_grad():
        adapters.up.normal_()
    out = adapters(features)
    for m in range(3):
        reference = features + torch.relu(features @ adapters.down[m]) @ adapters.up[m]
        torch.testing.assert_close(out[m], reference)
    torch.testing.assert_close(adapters(features, slice(1, 2))[0], out[1])


def test_heads_take_per_member_features():
    torch.manual_seed(0)
    heads = StackedMLPHeads(6, [], 3, members=2)
    features = torch.randn(2, 5, 6)
    out = heads(features)  # (batch, members, classes)
    for m in range(2):
        torch.testing.assert_close(
            out[:, m], features[m] @ heads.weights[0][m] + heads.biases[0][m]
        )


def test_options_are_checked():
    with pytest.raises(ConfigError, match=r"hydra\.adapter_rank"):
        build_config({"hydra": {"adapter_rank": 4, "split": 1}})
    with pytest.raises(ConfigError, match=r"hydra\.disagreement_weight"):
        build_config({"hydra": {"disagreement_weight": -1}})


def test_hydra_with_both_levers_trains_saves_and_reloads_bit_for_bit(tmp_path):
    from ensemble_distill import load_student
    from ensemble_distill.cli import main

    out = tmp_path / "run"
    args = [
        "members=3",
        "epochs=2",
        "model_args={widths: [16]}",
        "eval.latency_repeats=1",
        "methods=[hydra+mixture]",
        "hydra.adapter_rank=4",
        "hydra.disagreement_weight=1.0",
        "hydra.phase1_fraction=0",
        "perturbation.pool=2",
        "perturbation.patch=4",
        "--quiet",
    ]
    assert main(["train-teacher", "--out", str(out), *args]) == 0
    assert main(["distill", "--out", str(out), "--quiet"]) == 0  # no evaluation or report
    student = load_student(out / "students" / "hydra+mixture")
    assert student.adapters is not None and student.adapters.up.abs().sum() > 0
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        assert student(x).shape == (4, 3, 10)
        torch.testing.assert_close(student(x), load_student(out / "students" / "hydra+mixture")(x))
