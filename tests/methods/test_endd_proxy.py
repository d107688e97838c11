"""EnD² with the Proxy-Dirichlet target (Ryabinin, Malinin & Gales 2021): the KL against
torch.distributions, the precision estimate against an independent computation, gradients,
the option's validation and resume key, and a student trained end to end on digits."""

import json
import math

import numpy as np
import pytest
import torch
from torch.distributions import Dirichlet, kl_divergence

from ensemble_distill.checkpoint import FORMAT_VERSION, MANIFEST
from ensemble_distill.config import build_config, load_config
from ensemble_distill.engine import load_student, prepare, save_student, student_manifest
from ensemble_distill.errors import ConfigError
from ensemble_distill.evaluation import DIRICHLET, PROXY_DIRICHLET, output_kind, predict
from ensemble_distill.methods.endd import EnDConfig, EnsembleDistributionDistillation, PriorNetwork
from ensemble_distill.methods.losses import (
    PROXY_EPS,
    dirichlet_kl,
    proxy_dirichlet_loss,
    proxy_dirichlet_target,
)
from ensemble_distill.pipeline import run
from ensemble_distill.settings import changed_settings, student_settings


def test_dirichlet_kl_matches_torch_distributions():
    generator = torch.Generator().manual_seed(0)
    alpha = torch.rand(64, 5, generator=generator, dtype=torch.float64) * 20 + 0.05
    beta = torch.rand(64, 5, generator=generator, dtype=torch.float64) * 20 + 0.05
    expected = kl_divergence(Dirichlet(alpha), Dirichlet(beta))
    torch.testing.assert_close(dirichlet_kl(alpha, beta), expected)
    assert dirichlet_kl(alpha, alpha).abs().max() < 1e-12


def numpy_precision(member_probs: np.ndarray) -> np.ndarray:
    """The paper's β̂₀ = (K − 1) / (2 Σ_k π̂_k (ln π̂_k − (1/M) Σ_m ln π_k^(m))), written out
    from probabilities (batch, members, classes) in NumPy."""
    classes = member_probs.shape[-1]
    mean = member_probs.mean(axis=1)
    mean_log = np.log(member_probs).mean(axis=1)
    mkl = (mean * (np.log(mean) - mean_log)).sum(-1)
    return (classes - 1) / (2 * mkl + PROXY_EPS)


def test_proxy_target_is_the_members_mean_and_the_papers_precision():
    probs = np.array(
        [
            [[0.7, 0.2, 0.1], [0.5, 0.3, 0.2], [0.6, 0.1, 0.3]],
            [[0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.34, 0.33, 0.33]],
        ]
    )
    mean, precision = proxy_dirichlet_target(torch.from_numpy(np.log(probs)))  # logits = log π
    np.testing.assert_allclose(mean.numpy(), probs.mean(1), rtol=1e-12)
    np.testing.assert_allclose(precision.numpy(), numpy_precision(probs), rtol=1e-10)
    # The members of the second example disagree more: a lower precision.
    assert precision[1] < precision[0]


def test_proxy_precision_recovers_the_precision_members_were_drawn_with():
    """Minka's closed form approximates the maximum-likelihood precision: members sampled from
    a Dirichlet of precision 100 give an estimate near 100."""
    torch.manual_seed(0)
    mean = torch.tensor([0.4, 0.2, 0.1, 0.1, 0.1, 0.05, 0.05], dtype=torch.float64)
    members = Dirichlet(100.0 * mean).sample((1, 4000))  # (1, M, K)
    _, precision = proxy_dirichlet_target(members.log())
    assert precision.item() == pytest.approx(100.0, rel=0.1)


def test_identical_members_give_a_large_precision_and_a_finite_loss():
    logits = torch.tensor([[4.0, 0.0, -2.0, 1.0]]).expand(3, 5, 4).clone()
    logits[1] *= 30  # near one-hot members, agreeing
    _, precision = proxy_dirichlet_target(logits)
    torch.testing.assert_close(precision, torch.full((3,), 3 / PROXY_EPS, dtype=torch.float64))
    outputs = torch.zeros(3, 4, requires_grad=True)
    loss = proxy_dirichlet_loss(outputs, logits)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(outputs.grad).all()


def test_proxy_loss_is_the_kl_to_the_proxy_over_its_precision():
    generator = torch.Generator().manual_seed(1)
    teacher = torch.randn(6, 4, 5, generator=generator, dtype=torch.float64) * 2
    outputs = torch.randn(6, 5, generator=generator, dtype=torch.float64) * 2
    probs = torch.softmax(teacher, -1).numpy()
    precision = torch.from_numpy(numpy_precision(probs))
    beta = precision.unsqueeze(-1) * torch.from_numpy(probs.mean(1)) + 1.0
    alpha = outputs.exp() + 1.0  # the model offset 1
    kl = kl_divergence(Dirichlet(alpha), Dirichlet(beta))  # reverse: model first
    expected = (kl / precision).mean()
    torch.testing.assert_close(proxy_dirichlet_loss(outputs, teacher), expected)
    # Zero, the minimum, exactly at the proxy itself: there softmax(s) is the members' mean.
    at_target = (beta - 1.0).log()
    assert proxy_dirichlet_loss(at_target, teacher).abs() < 1e-9 and expected > 0
    torch.testing.assert_close(torch.softmax(at_target, -1).numpy(), probs.mean(1))


def test_proxy_loss_gradients_are_finite_and_match_finite_differences():
    generator = torch.Generator().manual_seed(2)
    teacher = torch.randn(4, 3, 5, generator=generator, dtype=torch.float64) * 3
    outputs = torch.randn(4, 5, generator=generator, dtype=torch.float64).requires_grad_()
    torch.autograd.gradcheck(lambda s: proxy_dirichlet_loss(s, teacher), (outputs,))
    # Extreme but finite outputs and teachers: no NaN or inf in the gradient.
    extreme = torch.tensor([[60.0, -60.0, 0.0], [-30.0, 80.0, 5.0]], requires_grad=True)
    members = torch.tensor([[[90.0, -90.0, 0.0], [0.0, 90.0, -90.0]]]).expand(2, 2, 3)
    loss = proxy_dirichlet_loss(extreme, members)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(extreme.grad).all()


def test_proxy_loss_computes_in_float32_on_bf16_outputs():
    torch.manual_seed(0)
    student = (torch.randn(64, 10) * 3).bfloat16()
    teacher = (torch.randn(64, 4, 10) * 3).bfloat16()
    got = proxy_dirichlet_loss(student, teacher)
    exact = proxy_dirichlet_loss(student.double(), teacher.double())
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), exact, rtol=1e-5, atol=1e-6)


def test_the_target_option_is_validated_and_defaults_to_proxy():
    assert EnDConfig().target == "proxy"  # chosen on validation (docs/results/endd_targets.md)
    assert build_config({"endd": {"target": "proxy"}}).endd.target == "proxy"
    with pytest.raises(ConfigError, match="'target' must be one of members, proxy"):
        EnDConfig(target="bogus")
    with pytest.raises(ConfigError, match=r"'endd\.target' must be one of members, proxy"):
        build_config({"endd": {"target": "mean"}})


def test_the_proxy_student_is_read_with_its_offset():
    network = torch.nn.Linear(3, 4)
    x = torch.randn(5, 3) * 10
    s = network(x)
    plain, proxy = PriorNetwork(network), PriorNetwork(network, proxy=True)
    torch.testing.assert_close(plain(x), s)
    torch.testing.assert_close(proxy(x), s)  # the network's output, read as α = e^s + 1
    assert output_kind(plain) == DIRICHLET and output_kind(proxy) == PROXY_DIRICHLET


@pytest.mark.parametrize(("target", "changed"), [("members", ""), ("proxy", "endd")])
def test_endd_students_from_before_the_key_were_trained_on_the_members(tmp_path, target, changed):
    config = load_config(None, ["methods=[endd]", f"endd.target={target}"])
    settings = student_settings(config, "endd", perturbed=False)
    older = json.loads(json.dumps(settings))
    del older["endd"]["target"]
    manifest = {"format_version": FORMAT_VERSION, "config": older}
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    assert changed_settings(tmp_path, settings) == changed


def test_a_proxy_student_trains_on_digits_and_reloads(tmp_path):
    """End to end on digits: the tiny config of tests/conftest.py with the proxy target and
    batches of 32 (at 128 its teacher is barely above chance: nothing to distil)."""
    config = build_config(
        {
            "members": 3,
            "epochs": 2,
            "batch_size": 32,
            "model_args": {"widths": [16]},
            "eval": {"latency_repeats": 2},
            "methods": ["endd"],
            "endd": {"target": "proxy"},
            "student": {"epochs_multiple": 2},
        }
    )
    out = tmp_path / "run"
    run(config, out, quiet=True)
    results = json.loads((out / "results.json").read_text())
    row = results["methods"]["endd"]
    assert row["acc"] > 0.3 and row["mi"] > 0 and math.isfinite(row["cnll"])
    history = (out / "students" / "endd" / "history.csv").read_text().splitlines()
    header, first, last = history[0].split(","), history[1].split(","), history[-1].split(",")
    loss = header.index("loss")
    assert float(last[loss]) < float(first[loss])
    student = load_student(out / "students" / "endd")
    assert output_kind(student) == PROXY_DIRICHLET and student.proxy
    pred = predict(student, torch.rand(8, 1, 8, 8))
    assert pred.probs.shape == (8, 1, 10) and (pred.mi > 0).all()


def test_a_student_saved_before_the_target_key_reloads_as_a_members_student(tmp_path):
    """A manifest without ``endd.target`` (written before the key) rebuilds the student it
    saved: no +1 offset, whatever today's default; with the key, as saved."""
    config = build_config({"members": 2, "epochs": 1, "model_args": {"widths": [8]}})
    setup = prepare(config)
    student = EnsembleDistributionDistillation().build(
        setup.student_spec, 2, EnDConfig(target="members")
    )
    manifest = student_manifest(setup, "endd")
    for target, kind in (("members", DIRICHLET), ("proxy", PROXY_DIRICHLET)):
        manifest["options"]["target"] = target
        save_student(tmp_path / target, student, manifest)
        assert output_kind(load_student(tmp_path / target)) == kind
    del manifest["options"]["target"]
    save_student(tmp_path / "older", student, manifest)
    older = load_student(tmp_path / "older")
    assert output_kind(older) == DIRICHLET
    x = torch.rand(4, 1, 8, 8)
    torch.testing.assert_close(older(x), student.eval()(x))
