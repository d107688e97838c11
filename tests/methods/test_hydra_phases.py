"""How Hydra shares the student's epochs between its two phases (issue 19, item 5): each phase
gets at least one epoch when there are two, and a single epoch skips phase 1 with a warning
instead of silently."""

import logging

import pytest
import torch

from ensemble_distill.cli import main
from ensemble_distill.config import build_config
from ensemble_distill.evaluation import predict_outputs
from ensemble_distill.methods import METHODS, DistillContext, resolve_method
from ensemble_distill.methods.hydra import AUTO_ADAPTER_RANK, HydraConfig, phase1_epochs
from ensemble_distill.metrics.cost import count_parameters
from ensemble_distill.models import ModelSpec, create_classifier, create_model
from ensemble_distill.teachers import DeepEnsemble

HYDRA = METHODS.get("hydra")
TINY = ModelSpec("mlp", (1, 4, 4), 3, {"widths": [8]})
WARNING = "1 student epoch cannot hold both phases; phase 1 is skipped"


@pytest.mark.parametrize(
    ("epochs", "fraction", "phase1"),
    [
        (10, 0.5, 5),  # round(f·E) where it leaves both phases an epoch
        (3, 0.5, 2),
        (2, 0.5, 1),  # round(1.0)
        (2, 0.1, 1),  # round(0.2) = 0 would skip phase 1
        (10, 0.04, 1),
        (2, 0.9, 1),  # round(1.8) = 2 would leave phase 2 none
        (10, 0.97, 9),
        (5, 0.0, 0),  # 0 and 1 are taken as asked: one phase only
        (5, 1.0, 5),
        (1, 0.0, 0),
        (1, 1.0, 1),
    ],
)
def test_each_phase_gets_an_epoch_when_there_are_two(epochs, fraction, phase1, caplog):
    assert phase1_epochs(epochs, fraction) == phase1
    assert not caplog.records


@pytest.mark.parametrize("fraction", [0.5, 0.7])
def test_one_epoch_skips_phase_1_with_a_warning_naming_the_fix(fraction, caplog):
    assert phase1_epochs(1, fraction) == 0
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert WARNING in record.getMessage() and "student.epochs >= 2" in record.getMessage()
    assert f"hydra.phase1_fraction={fraction}" in record.getMessage()


def context(splits, student_epochs: int, fraction: float) -> DistillContext:
    config = build_config(
        {
            "members": 3,
            "epochs": 1,
            "batch_size": 16,
            "student": {"epochs": student_epochs},
            "hydra": {"phase1_fraction": fraction, "head_widths": [8]},
        }
    )
    torch.manual_seed(1)
    teacher = DeepEnsemble([create_model(TINY) for _ in range(3)]).eval()
    outputs = predict_outputs(teacher, splits.train.x)
    return DistillContext(splits, teacher, outputs, config, torch.device("cpu"), quiet=True)


@pytest.mark.parametrize(
    ("epochs", "fraction", "phases"),
    [(2, 0.1, [1, 2]), (2, 0.5, [1, 2]), (3, 0.9, [1, 1, 2]), (1, 0.5, [2])],
)
def test_training_runs_the_phases_of_the_split(splits, epochs, fraction, phases):
    options = HydraConfig(head_widths=[8], phase1_fraction=fraction)
    torch.manual_seed(0)
    student = HYDRA.build(TINY, 3, options)
    history = HYDRA.train(student, context(splits, epochs, fraction), options)
    assert [row["phase"] for row in history] == phases


def test_the_warning_reaches_run_log(tmp_path):
    out = tmp_path / "run"
    args = ["members=2", "epochs=1", "student.epochs=1", "methods=[hydra]"]
    args += ["model_args={widths: [8]}", "hydra.head_widths=[8]", "eval.latency_repeats=1"]
    assert main(["run", "--out", str(out), "--quiet", *args]) == 0
    log = (out / "run.log").read_text()
    assert f"WARNING ensemble_distill.methods.hydra: hydra.phase1_fraction=0.5: {WARNING}" in log


@pytest.mark.parametrize(
    ("perturbed", "split", "phase1", "rank"),
    [
        (False, None, 0.5, 0),  # clean inputs: the paper's two phases, no adapters
        (True, None, 0.0, AUTO_ADAPTER_RANK),  # perturbed: one joint phase, adapters
        (True, 1, 0.0, 0),  # split heads take no adapters
        (False, 1, 0.5, 0),
    ],
)
def test_auto_phases_and_adapters_follow_the_inputs(perturbed, split, phase1, rank):
    options = HYDRA.resolve(HydraConfig(split=split), perturbed)
    assert (options.phase1_fraction, options.adapter_rank) == (phase1, rank)


@pytest.mark.parametrize(
    ("spec", "members"),
    [
        (ModelSpec("mlp", (64,), 10, {"widths": [256, 256]}), 5),  # digits' default: lowered
        (ModelSpec("cnn", (1, 28, 28), 10, {}), 4),  # the default cnn: lowered
        (ModelSpec("mlp", (784,), 10, {"widths": [400, 400]}), 10),  # the MNIST study's: 16
        (ModelSpec("mlp", (16,), 3, {"widths": [8]}), 5),  # no room at all: none
    ],
)
def test_auto_adapters_keep_the_student_compact(spec, members):
    """The decided rank r is the largest ≤ 16 at which the built student has at most 1.5x one
    network's parameters (counted on real modules): r + 1 would exceed it, unless r = 16; 0
    where even rank 1 would (the heads alone may exceed it: adapters cannot help that)."""

    def ratio(rank: int) -> float:
        options = HydraConfig(adapter_rank=rank)
        student = HYDRA.build(spec, members, options)
        return count_parameters(student) / count_parameters(create_model(spec))

    network = create_classifier(spec)
    rank = HYDRA.resolve(HydraConfig(), True, network, members).adapter_rank
    assert 0 <= rank <= AUTO_ADAPTER_RANK
    if rank:
        assert ratio(rank) <= 1.5
    if rank < AUTO_ADAPTER_RANK:
        assert ratio(rank + 1) > 1.5
    assert HYDRA.resolve(HydraConfig(), False, network, members).adapter_rank == 0


@pytest.mark.parametrize("perturbed", [False, True])
def test_explicit_phases_and_adapters_are_kept(perturbed):
    options = HYDRA.resolve(HydraConfig(phase1_fraction=0.3, adapter_rank=4), perturbed)
    assert (options.phase1_fraction, options.adapter_rank) == (0.3, 4)


@pytest.mark.parametrize(("name", "phases"), [("hydra", [1, 2]), ("hydra+mixup", [2, 2])])
def test_undecided_auto_phases_follow_the_contexts_inputs(splits, name, phases):
    trained = context(splits, 2, "auto")
    trained.perturbation = resolve_method(name)[1]
    options = HydraConfig(head_widths=[8])
    torch.manual_seed(0)
    student = HYDRA.build(TINY, 3, options)
    assert student.adapters is None  # built undecided: as on clean inputs
    history = HYDRA.train(student, trained, options)
    assert [row["phase"] for row in history] == phases
