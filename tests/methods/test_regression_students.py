"""KD and Hydra students of a Gaussian deep ensemble, trained on tiny data."""

import pytest
import torch

from ensemble_distill.config import build_config
from ensemble_distill.data import create_dataset
from ensemble_distill.evaluation import gaussian_predictive, predict_outputs
from ensemble_distill.methods import METHODS, DistillContext
from ensemble_distill.methods.losses import hydra_regression_loss, kd_regression_loss
from ensemble_distill.models import ModelSpec
from ensemble_distill.teachers import train_deep_ensemble

SPEC = ModelSpec("mlp", (1,), 2, {"widths": [32]})

# Students train as long as the teacher, on its schedule: these tests count epochs and phases.
ONE_TO_ONE_BUDGET = {"student": {"epochs_multiple": 1, "schedule": None}}


def make_context(**overrides):
    data = create_dataset("toy-gap")
    config = build_config(
        {"members": 3, "epochs": 30, "batch_size": 64, **ONE_TO_ONE_BUDGET, **overrides}
    )
    teacher, _ = train_deep_ensemble(
        SPEC, data, members=3, seed=0, epochs=30, batch_size=64, optim=config.optim, quiet=True
    )
    outputs = predict_outputs(teacher, data.train.x)
    return DistillContext(data, teacher, outputs, config, torch.device("cpu"), quiet=True)


def train_student(name, context):
    method = METHODS.get(name)
    student = method.build(SPEC, 3, method.options(context.config))
    history = method.train(student, context, method.options(context.config))
    return student, history


def test_regression_teacher_fits_the_cubic():
    context = make_context()
    pred = gaussian_predictive(predict_outputs(context.teacher, context.data.test.x))
    y = context.data.test.y.double()
    rmse = (pred.means.mean(1) - y).pow(2).mean().sqrt()
    assert rmse < 0.3  # standardised units: the noise alone is ≈ 0.09 of the target's sd
    assert pred.means.shape == (len(y), 3) and (pred.epistemic > 0).all()


@pytest.mark.slow  # long training: `make test-all` only
def test_kd_and_hydra_approach_their_targets_on_training_inputs():
    context = make_context(hydra={"head_widths": [16], "head_init": "independent"})
    x, teacher = context.data.train.x, context.teacher_train_outputs
    for name, loss in (("kd", kd_regression_loss), ("hydra", hydra_regression_loss)):
        method = METHODS.get(name)
        untrained = method.build(SPEC, 3, method.options(context.config))
        before = loss(predict_outputs(untrained, x), teacher)
        student, history = train_student(name, context)
        after = loss(predict_outputs(student, x), teacher)
        assert after < 0.3 * before, name
        assert {"val_rmse", "val_nll"} <= set(history[-1])


@pytest.mark.slow  # an end-to-end run: `make test-all` only
def test_hydra_keeps_epistemic_variance_where_kd_has_none():
    context = make_context(hydra={"head_widths": [16], "head_init": "independent"})
    gap = context.data.ood["gap"].x
    kd, _ = train_student("kd", context)
    hydra, _ = train_student("hydra", context)
    assert predict_outputs(kd, gap).shape == (len(gap), 2)
    assert (gaussian_predictive(predict_outputs(kd, gap)).epistemic == 0).all()
    hydra_gap = gaussian_predictive(predict_outputs(hydra, gap)).epistemic.mean()
    hydra_train = gaussian_predictive(predict_outputs(hydra, context.data.test.x)).epistemic.mean()
    assert hydra_gap > hydra_train > 0
