"""Hydra and EnD² students trained on tiny data through the real DistillContext."""

import dataclasses

import pytest
import torch

from ensemble_distill.config import build_config
from ensemble_distill.evaluation import output_kind, predict, predict_outputs
from ensemble_distill.methods import METHODS, PERTURBATIONS, DistillContext
from ensemble_distill.models import ModelSpec
from ensemble_distill.teachers import train_deep_ensemble

SPEC = ModelSpec("mlp", (1, 4, 4), 3, {"widths": [16]})

# Students train as long as the teacher, on its schedule: these tests count epochs and phases.
ONE_TO_ONE_BUDGET = {"student": {"epochs_multiple": 1, "schedule": None}}


def make_context(splits, **overrides):
    config = build_config(
        {"members": 3, "epochs": 4, "batch_size": 16, **ONE_TO_ONE_BUDGET, **overrides}
    )
    teacher, _ = train_deep_ensemble(
        SPEC, splits, members=3, seed=0, epochs=4, batch_size=16, optim=config.optim, quiet=True
    )
    logits = predict_outputs(teacher, splits.train.x)
    return DistillContext(splits, teacher, logits, config, torch.device("cpu"), quiet=True)


def train_student(name, context):
    method = METHODS.get(name)
    student = method.build(
        SPEC, 3, method.options(context.config), context.data.mean, context.data.std
    )
    history = method.train(student, context, method.options(context.config))
    return student, history


def test_copied_hydra_heads_are_identical_after_phase_one(splits):
    hydra = {"phase1_fraction": 1.0, "head_widths": [8], "head_init": "copy"}
    context = make_context(splits, hydra=hydra)
    student, history = train_student("hydra", context)
    assert {row["phase"] for row in history} == {1}
    logits = student(splits.test.x)
    for m in range(1, 3):
        torch.testing.assert_close(logits[:, m], logits[:, 0])


def test_hydra_two_phases_give_distinct_heads_and_positive_mi(splits):
    context = make_context(splits, hydra={"head_widths": [8], "temperature": 2.0})
    student, history = train_student("hydra", context)
    assert [row["phase"] for row in history] == [1, 1, 2, 2]
    pred = predict(student, splits.test.x)
    assert pred.probs.shape == (len(splits.test), 3, 3)
    assert pred.mi.mean() > 0


@pytest.mark.parametrize(
    ("target", "kind"), [("members", "dirichlet"), ("proxy", "proxy_dirichlet")]
)
def test_endd_is_a_dirichlet_with_positive_mi(splits, target, kind):
    # Without annealing the objective is the same every epoch, so its loss must fall.
    context = make_context(splits, endd={"target": target, "initial_temperature": 1.0})
    student, history = train_student("endd", context)
    assert output_kind(student) == kind
    assert history[-1]["loss"] < history[0]["loss"]
    pred = predict(student, splits.ood["noise"].x)
    assert pred.probs.shape == (20, 1, 3) and (pred.mi > 0).all()


def test_kd_student_has_zero_mi(splits):
    student, _ = train_student("kd", make_context(splits))
    assert predict(student, splits.test.x).mi.abs().max() == 0


def test_perturbed_batches_run_the_teachers_live(splits):
    context = make_context(splits, perturbation={"eta": 0.05})
    index = torch.arange(8).unsqueeze(0)
    clean = context.batch(index)
    assert not clean.perturbed
    torch.testing.assert_close(clean.teacher_outputs, context.teacher_train_outputs[:8])
    perturbed = dataclasses.replace(context, perturbation=PERTURBATIONS.get("ods")).batch(index)
    assert perturbed.perturbed and not torch.equal(perturbed.x_distill, perturbed.x)
    torch.testing.assert_close(perturbed.teacher_outputs, context.teacher(perturbed.x_distill))
    torch.testing.assert_close(perturbed.x, clean.x)


def test_hydra_with_confods_trains(splits):
    context = make_context(splits, hydra={"head_widths": [8]})
    context = dataclasses.replace(context, perturbation=PERTURBATIONS.get("confods"))
    student, history = train_student("hydra", context)
    assert len(history) == 4 and predict(student, splits.test.x).mi.mean() > 0


def test_batchensemble_one_to_one_student_has_member_diversity(splits):
    context = make_context(splits)
    student, history = train_student("be", context)
    assert len(history) == 4
    pred = predict(student, splits.test.x)
    assert pred.probs.shape == (len(splits.test), 3, 3) and pred.mi.mean() > 0


def test_latentbe_folds_into_one_plain_network(splits):
    context = make_context(splits)
    student, history = train_student("latentbe", context)
    assert len(history) == 4
    assert not any(
        "BatchEnsemble" in type(m).__name__ or type(m).__name__.startswith("BE")
        for m in student.modules()
    )
    assert predict(student, splits.test.x).probs.shape == (len(splits.test), 1, 3)
