"""The disagreement temperature (issue 28): one scalar s scales a student's members' logits
around their mean, fitted after training so that its mean validation MI is the ensemble's,
stored with the student and applied wherever its members are read.

References are independent of the code under test: the scaling in its textbook form
z̄ + s·(z_m − z̄) and the MI in numpy, the root by scipy's brentq."""

import csv
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file
from scipy.optimize import brentq
from sklearn.datasets import load_digits

from ensemble_distill import distill, load_student, save_student, train_teacher
from ensemble_distill.checkpoint import MANIFEST, load_checkpoint, save_checkpoint
from ensemble_distill.cli import main
from ensemble_distill.config import build_config
from ensemble_distill.errors import CheckpointError, ConfigError
from ensemble_distill.evaluation import predictive
from ensemble_distill.export import export_student, run_exported
from ensemble_distill.methods import DistillContext, resolve_method
from ensemble_distill.methods.disagreement_fit import (
    SCALE_BOUNDS,
    fit_disagreement_scale,
    mean_mutual_information,
)
from ensemble_distill.models import ModelSpec, create_model
from ensemble_distill.models.disagreement import (
    SCALE_BUFFER,
    at_unit_scale,
    default_scales,
    scale_disagreement,
)
from ensemble_distill.teachers import DeepEnsemble

# --- independent references ------------------------------------------------------------------


def numpy_scaled(z: np.ndarray, s: float) -> np.ndarray:
    """z̄ + s·(z_m − z̄), z̄ the members' mean logit (axis 1)."""
    mean = z.mean(axis=1, keepdims=True)
    return mean + s * (z - mean)


def numpy_mean_mi(z: np.ndarray) -> float:
    """(1/N) Σ_x [H(p̄) − (1/M) Σ_m H(p_m)] of logits (N, M, C), in nats."""
    shifted = z - z.max(axis=-1, keepdims=True)
    p = np.exp(shifted) / np.exp(shifted).sum(axis=-1, keepdims=True)

    def entropy(q: np.ndarray) -> np.ndarray:
        return -np.sum(np.where(q > 0, q * np.log(np.where(q > 0, q, 1.0)), 0.0), axis=-1)

    return float(np.mean(entropy(p.mean(axis=1)) - entropy(p).mean(axis=1)))


def teacher_like_logits(
    seed: int, n: int = 400, members: int = 5, classes: int = 10, spread: float = 0.5
) -> torch.Tensor:
    """Member logits as an ensemble gives them: a class signal and noise all members share,
    plus each member's own deviation of sd ``spread``; float64 (N, M, C)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(classes, (n,), generator=generator)
    shared = 4.0 * torch.nn.functional.one_hot(labels, classes).double()
    shared += torch.randn(n, classes, generator=generator, dtype=torch.float64)
    own = torch.randn(n, members, classes, generator=generator, dtype=torch.float64)
    return shared[:, None] + spread * own


# --- the scaling -----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_s_1_is_the_identity_bit_for_bit(dtype):
    z = teacher_like_logits(0).to(dtype)
    scaled = scale_disagreement(z, torch.ones(()))
    assert scaled.dtype == dtype
    assert torch.equal(scaled, z)


@pytest.mark.parametrize("s", [0.0, 0.1, 0.7, 2.0, 15.0])
def test_the_scaling_is_the_textbook_form_and_keeps_the_members_mean(s):
    z = teacher_like_logits(1)
    scaled = scale_disagreement(z, torch.tensor(s, dtype=torch.float64))
    np.testing.assert_allclose(scaled.numpy(), numpy_scaled(z.numpy(), s), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(scaled.mean(dim=1), z.mean(dim=1), rtol=0, atol=1e-12)


def test_s_0_makes_the_members_one():
    z = teacher_like_logits(2)
    assert mean_mutual_information(scale_disagreement(z, 0.0)) == pytest.approx(0.0, abs=1e-15)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    members=st.integers(2, 6),
    classes=st.integers(2, 10),
    spread=st.floats(0.05, 2.0),
)
def test_mean_mi_rises_with_s(seed, members, classes, spread):
    # On ensemble-like logits, s from 10⁻² to 10; far beyond (s ≳ 40, members one-hot) the mean
    # MI can overshoot its limit and come back down, which the fit's grid scan allows for.
    z = teacher_like_logits(seed, 256, members, classes, spread)
    scales = np.logspace(-2, 1, 25)
    mi = [numpy_mean_mi(numpy_scaled(z.numpy(), s)) for s in scales]
    assert np.all(np.diff(mi) >= -1e-12), mi
    ours = [mean_mutual_information(scale_disagreement(z, s)) for s in scales]
    np.testing.assert_allclose(ours, mi, rtol=1e-9, atol=1e-12)


# --- the fit ---------------------------------------------------------------------------------


@pytest.mark.parametrize("s0", [0.05, 0.4, 1.7, 6.0])
def test_the_fit_recovers_a_known_scale(s0):
    z = teacher_like_logits(3)
    target = numpy_mean_mi(numpy_scaled(z.numpy(), s0))  # the "teacher": the members scaled by s0
    reference = math.exp(
        brentq(
            lambda u: numpy_mean_mi(numpy_scaled(z.numpy(), math.exp(u))) - target,
            math.log(SCALE_BOUNDS[0]),
            math.log(SCALE_BOUNDS[1]),
            xtol=1e-12,
        )
    )
    assert reference == pytest.approx(s0, rel=1e-6)
    fitted = fit_disagreement_scale(z.float(), target)
    assert fitted == pytest.approx(reference, rel=1e-5)  # float32 logits against float64


def test_an_unreachable_target_takes_the_nearer_end_and_says_so(caplog):
    z = teacher_like_logits(4, members=3)
    with caplog.at_level("WARNING"):
        assert fit_disagreement_scale(z, math.log(3) + 1.0) == pytest.approx(SCALE_BOUNDS[1])
    assert "no s in [0.01, 100]" in caplog.text
    assert fit_disagreement_scale(z, 0.0) == pytest.approx(SCALE_BOUNDS[0])


# --- the validation inputs it reads ----------------------------------------------------------

SPEC = ModelSpec("mlp", (1, 4, 4), 3, {"widths": [8]})


def make_context(splits, name):
    config = build_config(
        {"members": 2, "epochs": 1, "eval": {"batch_size": 7}, "perturbation": {"eta": 0.05}}
    )
    torch.manual_seed(0)
    teacher = DeepEnsemble([create_model(SPEC) for _ in range(2)]).eval()
    with torch.no_grad():
        cached = teacher(splits.train.x)
    _, perturbation = resolve_method(name)
    return DistillContext(splits, teacher, cached, config, torch.device("cpu"), True, perturbation)


def test_the_fit_reads_validation_inputs_clean_and_perturbed_never_ood(splits):
    assert [x is splits.val.x for x in make_context(splits, "hydra").validation_inputs()] == [True]
    context = make_context(splits, "hydra+gaussian")
    training_stream = context._state.generator.get_state()
    clean, perturbed = context.validation_inputs()
    assert clean is splits.val.x
    assert perturbed.shape == clean.shape and not torch.equal(perturbed, clean)
    assert (perturbed - clean).abs().max() <= 0.05 * 6  # η·N(0, 1), clipped: near the inputs
    # Its own seeded stream: the same inputs again, and the training stream untouched.
    assert torch.equal(context.validation_inputs()[1], perturbed)
    assert torch.equal(context._state.generator.get_state(), training_stream)


# --- end to end: the API ---------------------------------------------------------------------

SMALL = {"model": "mlp", "model_args": {"widths": [16]}, "quiet": True}


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32).view(-1, 1, 8, 8) / 16
    return x, torch.tensor(data.target)


@pytest.fixture(scope="module")
def teacher(digits):
    x, y = digits
    return train_teacher((x[:600], y[:600]), members=3, epochs=2, **SMALL)


@pytest.fixture(scope="module", params=["hydra", "be"])
def fitted(request, digits, teacher):
    x, y = digits
    student = distill(
        teacher,
        method=request.param,
        train_data=(x[:600], y[:600]),
        val_data=(x[600:800], y[600:800]),
        epochs=2,
        disagreement_temperature=True,
        **SMALL,
    )
    return request.param, student


def test_the_fitted_student_has_the_ensembles_mean_validation_mi(fitted, digits, teacher):
    _, student = fitted
    scale = float(getattr(student, SCALE_BUFFER))
    assert scale != 1.0 and SCALE_BOUNDS[0] < scale < SCALE_BOUNDS[1]
    x_val = digits[0][600:800]
    with torch.no_grad():
        ours = predictive(student(x_val)).mi.mean()
        target = predictive(teacher(x_val)).mi.mean()
        before = predictive(at_unit_scale(student)(x_val)).mi.mean()
    assert float(ours) == pytest.approx(float(target), rel=1e-4)
    assert float(before) != pytest.approx(float(target), rel=1e-2)


def test_a_saved_fitted_student_loads_bit_for_bit(fitted, digits, tmp_path):
    name, student = fitted
    directory = save_student(student, tmp_path / name)
    manifest = json.loads((directory / MANIFEST).read_text())
    assert manifest["disagreement_scale"] == float(getattr(student, SCALE_BUFFER))
    loaded = load_student(directory)
    assert float(getattr(loaded, SCALE_BUFFER)) == manifest["disagreement_scale"]
    x = digits[0][800:900]
    with torch.no_grad():
        assert torch.equal(loaded(x), student(x))


def without_key(directory, out, key):
    """A copy of the checkpoint in ``directory`` whose weights lack ``key`` (as written before
    that tensor existed), with a manifest that vouches for them."""
    state, manifest = load_checkpoint(directory)
    del state[key]
    dropped = ("format_version", "weights_sha256", "disagreement_scale")
    save_checkpoint(out, state, {k: v for k, v in manifest.items() if k not in dropped})
    return out


def test_a_checkpoint_from_before_the_scale_loads_with_s_1(fitted, digits, tmp_path):
    _, student = fitted
    old = without_key(save_student(student, tmp_path / "new"), tmp_path / "old", SCALE_BUFFER)
    loaded = load_student(old)
    assert float(getattr(loaded, SCALE_BUFFER)) == 1.0
    x = digits[0][800:900]
    with torch.no_grad():
        assert torch.equal(loaded(x), at_unit_scale(student)(x))
    # Only the scale is filled in: any other missing tensor is still refused.
    other = next(key for key in student.state_dict() if key != SCALE_BUFFER)
    broken = without_key(save_student(student, tmp_path / "again"), tmp_path / "broken", other)
    with pytest.raises(CheckpointError, match="missing"):
        load_student(broken)


def test_default_scales_fills_the_scale_alone():
    expected = {"heads.w": torch.zeros(2), SCALE_BUFFER: torch.ones(()), "x.y": torch.ones(())}
    filled = default_scales(expected, {"heads.w": torch.ones(2)})
    assert set(filled) == {"heads.w", SCALE_BUFFER}
    assert torch.equal(filled[SCALE_BUFFER], torch.ones(()))
    kept = {"heads.w": torch.ones(2), SCALE_BUFFER: torch.tensor(3.0)}
    assert default_scales(expected, kept)[SCALE_BUFFER] == 3.0


def test_the_export_applies_the_scale(fitted, digits, tmp_path):
    name, student = fitted
    path = export_student(save_student(student, tmp_path / name), "torchscript")
    x = digits[0][800:900]
    _, _, mutual_information = run_exported(path, x)
    with torch.no_grad():
        scaled = predictive(student(x)).mi
        unscaled = predictive(at_unit_scale(student)(x)).mi
    torch.testing.assert_close(mutual_information.double(), scaled, rtol=0, atol=1e-5)
    assert not torch.allclose(mutual_information.double(), unscaled, atol=1e-3)


# --- end to end: the command line ------------------------------------------------------------

RUN = [
    "members=3",
    "epochs=1",
    "student.epochs=2",
    "model_args={widths: [16]}",
    "eval.latency_repeats=1",
    "perturbation.eta=0.05",
]


@pytest.mark.slow  # an end-to-end run: `make test-all` only
def test_a_run_fits_records_and_reports_the_scale(tmp_path, caplog):
    out = tmp_path / "run"
    methods = "methods=[hydra, be+gaussian, kd]"
    options = ["hydra.disagreement_temperature=true", "be.disagreement_temperature=true"]
    with caplog.at_level("INFO"):
        assert main(["run", "--out", str(out), "--quiet", *RUN, methods, *options]) == 0
    results = json.loads((out / "results.json").read_text())
    names = list(results["methods"])
    assert names == [
        *("ensemble", "member", "hydra", "hydra@s=1"),
        *("be+gaussian", "be+gaussian@s=1", "kd"),  # kd has no members: no s, no second row
    ]
    predictions = load_file(out / "predictions.safetensors")
    for name in ("hydra", "be+gaussian"):
        manifest = json.loads((out / "students" / name / MANIFEST).read_text())
        scale = manifest["disagreement_scale"]
        assert scale != 1.0
        # The extra row is the same weights at s = 1: scaling its outputs gives the student's.
        torch.testing.assert_close(
            predictions[f"{name}/test"],
            scale_disagreement(predictions[f"{name}@s=1/test"], scale),
            rtol=1e-5,
            atol=1e-5,
        )
        assert results["methods"][name]["mi"] != results["methods"][f"{name}@s=1"]["mi"]
        with (out / "students" / name / "history.csv").open() as handle:
            last = list(csv.DictReader(handle))[-1]
        assert float(last["disagreement_scale"]) == scale
        assert float(last["val_mi"]) == pytest.approx(float(last["val_mi_ensemble"]), rel=1e-5)
    assert "(clean and perturbed)" in caplog.text  # be+gaussian: its perturbed val inputs too
    report = (out / "report.md").read_text()
    assert "hydra@s=1" in report and "be+gaussian@s=1" in report


def test_the_option_is_off_by_default_and_only_where_members_are():
    config = build_config({})
    assert config.hydra.disagreement_temperature is False
    assert config.be.disagreement_temperature is False
    with pytest.raises(ConfigError, match="disagreement_temperature"):
        build_config({"latentbe": {"disagreement_temperature": True}})


def test_regression_heads_are_refused(tmp_path, capsys):
    args = ["dataset=toy-gap", "members=2", "epochs=1", "methods=[hydra]"]
    out = str(tmp_path / "run")
    assert main(["run", "--out", out, "--quiet", *args, "hydra.disagreement_temperature=true"]) == 2
    assert "hydra.disagreement_temperature" in capsys.readouterr().err
