"""Distillation on auxiliary unlabelled inputs (``distill_data``): every student, one loop."""

import json

import numpy as np
import pytest
import torch

from ensemble_distill import cli
from ensemble_distill.config import build_config
from ensemble_distill.data import ArrayDataset, DataSplits
from ensemble_distill.data.distill import load_distill_inputs
from ensemble_distill.errors import ConfigError
from ensemble_distill.methods import METHODS, DistillContext, resolve_method
from ensemble_distill.models import ModelSpec, create_model
from ensemble_distill.settings import student_settings
from ensemble_distill.teachers import DeepEnsemble

SPEC = ModelSpec("mlp", (1, 4, 4), 3, {"widths": [8]})
AUX_VALUE = 0.5  # constant auxiliary inputs: found in a batch by value, never a training input


def aux_inputs(count=10):
    return torch.full((count, 1, 4, 4), AUX_VALUE)


def make_context(splits, name="kd", aux=None, pool=0):
    config = build_config(
        {
            "members": 2,
            "epochs": 2,
            "batch_size": 16,
            "precision": "fp32",  # pooled teacher outputs in the precision of the checks below
            "student": {"epochs_multiple": 1, "schedule": None},
            "perturbation": {"pool": pool},
            "hydra": {"head_widths": [8]},
            "be": {"alpha": 0.5},  # a label term too: the clean batch must still reach it
        }
    )
    torch.manual_seed(0)
    teacher = DeepEnsemble([create_model(SPEC) for _ in range(2)]).eval()
    with torch.no_grad():
        cached = teacher(splits.train.x if aux is None else aux)
    _, perturbation = resolve_method(name)
    return DistillContext(
        splits,
        teacher,
        cached,
        config,
        torch.device("cpu"),
        quiet=True,
        perturbation=perturbation,
        distill_inputs=aux,
    )


def test_a_batch_distils_on_auxiliary_rows_and_keeps_the_clean_labelled_batch(splits):
    aux = torch.arange(10.0).view(10, 1, 1, 1).expand(10, 1, 4, 4) / 10  # row i: all i/10
    context = make_context(splits, aux=aux)
    index = torch.arange(16).unsqueeze(0)
    batch = context.batch(index)
    torch.testing.assert_close(batch.x, splits.train.x[:16])
    torch.testing.assert_close(batch.y, splits.train.y[:16])
    assert batch.perturbed and batch.x_distill.shape == (16, 1, 4, 4)
    rows = (batch.x_distill[:, 0, 0, 0] * 10).round().long()
    torch.testing.assert_close(batch.x_distill, aux[rows])
    assert len(set(rows.tolist())) > 1  # drawn at random, as many as the labelled batch
    torch.testing.assert_close(batch.teacher_outputs, context.teacher_train_outputs[rows])
    again = make_context(splits, aux=aux).batch(index)
    torch.testing.assert_close(again.x_distill, batch.x_distill)  # seeded


@pytest.mark.parametrize("pool", [0, 2])
def test_perturbed_auxiliary_inputs_live_or_pooled(splits, pool):
    aux = torch.rand(10, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    context = make_context(splits, name="kd+gaussian", aux=aux, pool=pool)
    batch = context.batch(torch.arange(16).unsqueeze(0))
    step = (batch.x_distill.unsqueeze(1) - aux.unsqueeze(0)).flatten(2).abs().amax(-1)
    assert (step.min(1).values < 5 / 255).all()  # each row is an auxiliary input, perturbed
    assert (step.min(1).values > 0).all()
    with torch.no_grad():
        torch.testing.assert_close(batch.teacher_outputs, context.teacher(batch.x_distill))
    if pool:
        assert context.pool.examples == len(aux)


def student_inputs(student_name, context):
    """The input batches every module outside the teacher was called on while training
    (validation runs in eval mode and is left out)."""
    seen = []
    teacher_modules = set(context.teacher.modules())

    def record(module, args):
        x = args[0] if args else None
        image = torch.is_tensor(x) and x.shape[1:] == (1, 4, 4)
        if image and module.training and module not in teacher_modules:
            seen.append(x.detach().clone())

    method = METHODS.get(student_name.split("+")[0])
    options = method.options(context.config)
    student = method.build(SPEC, 2, options, context.data.mean, context.data.std)
    handle = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        method.train(student, context, options)
    finally:
        handle.remove()
    return seen


def is_clean(x, train_x):
    """Whether every row of ``x`` is a training input."""
    return bool((x.flatten(1)[:, None] == train_x.flatten(1)[None]).all(-1).any(1).all())


@pytest.mark.parametrize("name", ["kd", "hydra", "endd", "be", "latentbe+mixup"])
def test_every_student_distils_on_the_auxiliary_inputs(splits, name):
    seen = student_inputs(name, make_context(splits, name, aux=aux_inputs()))
    assert any((x == AUX_VALUE).all() for x in seen)  # (mixup of constant rows: the same)
    clean = any(is_clean(x, splits.train.x) for x in seen)
    # Only be has a label term here (alpha 0.5, on the clean batch); endd has none, others α 1.
    assert clean == (name == "be")
    without = student_inputs(name, make_context(splits, name))
    assert not any((x == AUX_VALUE).all() for x in without)


def named_splits(name, task="classification"):
    x = torch.rand(6, 1, 4, 4)
    y = torch.zeros(6) if task == "regression" else torch.zeros(6, dtype=torch.long)
    split = ArrayDataset(x, y)
    return DataSplits(name, split, split, split, 1 if task == "regression" else 2, task=task)


@pytest.mark.parametrize(
    ("dataset", "value", "message"),
    [
        ("mnist", "fashion-mnist", "OOD partner of dataset 'mnist'"),
        ("fashion-mnist", "mnist", "OOD partner of dataset 'fashion-mnist'"),
        ("cifar10", "svhn", "OOD partner"),
        ("digits", "digits", "the run's own dataset"),
    ],
)
def test_the_ood_partner_and_the_dataset_itself_are_refused_before_loading(
    dataset, value, message, monkeypatch
):
    def no_loading(*args, **kwargs):
        raise AssertionError("loaded a dataset that should have been refused")

    monkeypatch.setattr("ensemble_distill.data.distill.create_dataset", no_loading)
    with pytest.raises(ConfigError, match=message):
        load_distill_inputs(value, named_splits(dataset))


def test_regression_runs_take_no_distill_data(tmp_path):
    path = tmp_path / "aux.npy"
    np.save(path, np.zeros((3, 1, 4, 4), np.float32))
    with pytest.raises(ConfigError, match="distill_data is for classification"):
        load_distill_inputs(str(path), named_splits("toy-gap", "regression"))


def test_numpy_inputs_are_shaped_and_scaled_as_the_training_inputs(tmp_path):
    images = np.arange(5 * 16, dtype=np.uint8).reshape(5, 4, 4)  # no channel axis, 0..79
    np.savez(tmp_path / "aux.npz", x=images, labels=np.zeros(5))  # extra arrays: ignored
    x = load_distill_inputs(str(tmp_path / "aux.npz"), named_splits("tiny"))
    assert x.shape == (5, 1, 4, 4) and x.dtype == torch.float32
    torch.testing.assert_close(x, torch.from_numpy(images).float().unsqueeze(1) / 255)
    floats = np.random.default_rng(0).random((4, 1, 4, 4))
    np.save(tmp_path / "aux.npy", floats)
    x = load_distill_inputs(str(tmp_path / "aux.npy"), named_splits("tiny"))
    torch.testing.assert_close(x, torch.from_numpy(floats).float())


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((5, 1, 7, 7), np.float32), r"shape \(5, 1, 7, 7\).*\(N, 1, 4, 4\)"),
        (np.zeros((0, 1, 4, 4), np.float32), "give N ≥ 1 inputs"),
        (np.full((5, 1, 4, 4), 3.0), r"values in \[3, 3\].*scale them to \[0, 1\]"),
        (np.full((5, 1, 4, 4), np.nan), "NaN"),
        (np.zeros((5, 1, 4, 4), bool), "holds bool values"),
    ],
)
def test_bad_numpy_inputs_are_refused_with_the_fix(tmp_path, array, message):
    np.save(tmp_path / "aux.npy", array)
    with pytest.raises(ConfigError, match=message):
        load_distill_inputs(str(tmp_path / "aux.npy"), named_splits("tiny"))


def test_unreadable_files_are_refused_without_unpickling(tmp_path):
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "text.npz").write_text("not an archive")
    np.savez(tmp_path / "two.npz", a=np.zeros((2, 4, 4)), b=np.zeros((2, 4, 4)))
    cases = {
        "objects.npy": "not a numeric .npy / .npz array",
        "text.npz": "not a numeric .npy / .npz array",
        "two.npz": "holds arrays \\['a', 'b'\\]; name the inputs 'x'",
        "missing.npz": "not found",
    }
    for name, message in cases.items():
        with pytest.raises(ConfigError, match=message):
            load_distill_inputs(str(tmp_path / name), named_splits("tiny"))


def test_distill_data_is_part_of_the_students_fingerprint_only_when_set():
    plain = build_config({})
    assert "distill_data" not in student_settings(plain, "kd", perturbed=False)
    aux = build_config({"distill_data": "aux.npz"})
    assert student_settings(aux, "kd", perturbed=False)["distill_data"] == "aux.npz"


def test_cli_distils_digits_on_an_npz_file(tmp_path, capsys):
    images = np.random.default_rng(0).integers(0, 256, (200, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "aux.npz", x=images)
    out = tmp_path / "out"
    args = ["run", "--out", str(out), "--quiet", "members=2", "epochs=1", "student.epochs=1"]
    args += ["methods=[kd,hydra,kd+mixup]", "perturbation.pool=2", "eval.latency_repeats=1"]
    args += ["model_args={widths: [16]}", f"distill_data={tmp_path / 'aux.npz'}"]
    assert cli.main(args) == 0, capsys.readouterr().err
    for name in ("kd", "hydra", "kd+mixup"):
        manifest = json.loads((out / "students" / name / "manifest.json").read_text())
        assert manifest["config"]["distill_data"] == str(tmp_path / "aux.npz")
    assert "input pool: 2 copies of 200 inputs" in (out / "run.log").read_text()


def test_cli_refuses_bad_distill_data_before_writing(tmp_path, capsys):
    np.save(tmp_path / "aux.npy", np.zeros((5, 28, 28), np.float32))
    for value, message in [
        (str(tmp_path / "aux.npy"), "distill_data"),
        ("digits", "the run's own dataset"),
        ("nowhere", "must be a registered dataset"),
    ]:
        out = tmp_path / "out"
        assert cli.main(["run", "--out", str(out), "--quiet", f"distill_data={value}"]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
        assert not out.exists()


def test_config_refuses_a_distill_data_that_is_neither_a_dataset_nor_a_numpy_file():
    with pytest.raises(ConfigError, match="'distill_data' must be a registered dataset"):
        build_config({"distill_data": "images.png"})
    with pytest.raises(ConfigError, match="needs dataset_args"):
        build_config({"distill_data": "csv"})
    assert build_config({"distill_data": "cifar100", "dataset": "cifar10"}).distill_data
