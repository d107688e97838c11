"""The Python API (ensemble_distill.api): data forms, students of every method, metrics equal to
the pipeline's, clear errors, and the README's quick-start snippet, run as written."""

from __future__ import annotations

import copy
import dataclasses
import re
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ensemble_distill import (
    DeepEnsemble,
    distill,
    evaluate,
    load_teacher,
    mean_probs,
    teacher_from_modules,
    train_teacher,
    uncertainty,
)
from ensemble_distill import metrics as metric_fns
from ensemble_distill.config import build_config
from ensemble_distill.data import ArrayDataset, DataSplits
from ensemble_distill.engine import Setup, load_student
from ensemble_distill.errors import ConfigError, DataError
from ensemble_distill.evaluation import (
    classification_metrics,
    gaussian_predictive,
    ood_metrics,
    output_kind,
    predict_outputs,
    predictive,
    regression_metrics,
)
from ensemble_distill.methods import METHODS
from ensemble_distill.methods.hydra import AUTO_ADAPTER_RANK
from ensemble_distill.models import ModelSpec
from ensemble_distill.pipeline import distill_all
from ensemble_distill.teachers import save_teacher
from ensemble_distill.teachers.train import train_deep_ensemble

README = Path(__file__).resolve().parents[1] / "README.md"
FEATURES = 16  # inputs of the tiny tabular problems below
CLASSES = 3
MEMBERS = 3


def member(seed: int, outputs: int = CLASSES, width: int = 12) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(FEATURES, width), nn.ReLU(), nn.Linear(width, outputs))


def body() -> nn.Module:
    torch.manual_seed(100)
    return nn.Sequential(nn.Linear(FEATURES, 8), nn.ReLU())


def tabular(n: int = 90, seed: int = 0, regression: bool = False) -> tuple:
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(n, FEATURES, generator=generator)
    if regression:
        return x, x[:, :3].sum(1) + 0.1 * torch.randn(n, generator=generator)
    return x, x[:, :CLASSES].argmax(1)


@pytest.fixture(scope="module")
def teacher() -> DeepEnsemble:
    return teacher_from_modules([member(m) for m in range(MEMBERS)])


class PairDataset(Dataset):
    """A plain map-style Dataset of (x, y) pairs, as users write them."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], self.y[i]


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --------------------------------------------------------------------------------------------
# README
# --------------------------------------------------------------------------------------------


def readme_snippet() -> str:
    text = README.read_text()
    match = re.search(
        r"<!-- snippet: byo-ensemble -->\s*```python\n(.*?)```\s*<!-- /snippet -->", text, re.S
    )
    assert match, "README.md lost its <!-- snippet: byo-ensemble --> ... <!-- /snippet --> block"
    return match.group(1)


def test_readme_quick_start_runs_and_is_at_most_10_lines(capsys):
    code = readme_snippet()
    lines = [line for line in code.splitlines() if line.strip()]
    # Every non-blank line counts: imports and the (stand-in) data included.
    assert len(lines) <= 10, f"the quick start has {len(lines)} non-blank lines"
    exec(compile(code, str(README), "exec"), {"__name__": "readme_snippet"})
    printed = capsys.readouterr().out
    for key in ("'acc'", "'nll'", "'mi'"):
        assert key in printed


def test_distill_is_the_function_and_the_methods_live_in_their_own_package():
    import ensemble_distill.methods.kd

    assert ensemble_distill.distill is distill and callable(distill)
    assert ensemble_distill.methods.kd.KnowledgeDistillation.section == "kd"
    assert METHODS.names() == ["be", "endd", "hydra", "kd", "latentbe"]


# --------------------------------------------------------------------------------------------
# distill
# --------------------------------------------------------------------------------------------


def test_dataset_dataloader_and_tuple_give_the_same_student(teacher):
    x, y = tabular()
    forms = [
        (x, y),
        PairDataset(x, y),
        DataLoader(PairDataset(x, y), batch_size=7, shuffle=False),
        ArrayDataset(x, y),
        (x.numpy(), y.numpy()),
    ]
    students = [
        distill(teacher, method="hydra", train_data=data, body=body(), epochs=2, batch_size=32)
        for data in forms
    ]
    for student in students[1:]:
        assert same_weights(students[0], student)


@pytest.mark.parametrize(("widths", "rank"), [([8], 0), ([256, 32], AUTO_ADAPTER_RANK)])
def test_a_users_body_sizes_the_auto_adapters(teacher, widths, rank):
    """``hydra.adapter_rank: auto`` on perturbed inputs is sized against the user's body: no
    adapters where the heads alone pass 1.5x one network's parameters (one layer of 8), rank
    16 where the body's weights leave room for them (256 then 32 features)."""
    torch.manual_seed(100)
    layers, width = [], FEATURES
    for out in widths:
        layers += [nn.Linear(width, out), nn.ReLU()]
        width = out
    student = distill(
        teacher, method="hydra+gaussian", train_data=tabular(), body=nn.Sequential(*layers)
    )
    assert (0 if student.adapters is None else student.adapters.down.shape[-1]) == rank


def test_the_users_body_is_not_mutated(teacher):
    mine = body().train()
    before = copy.deepcopy(mine.state_dict())
    student = distill(teacher, method="hydra", train_data=tabular(), body=mine, epochs=2)
    assert mine.training
    assert all(torch.equal(before[k], v) for k, v in mine.state_dict().items())
    assert all(p is not q for p in student.parameters() for q in mine.parameters())
    assert not student.training  # the student comes back in eval mode


def test_the_callers_random_state_is_left_alone(teacher):
    data, mine = tabular(), body()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    distill(teacher, method="kd", train_data=data, body=mine, epochs=1)
    assert torch.equal(torch.rand(3), expected)


def whole_network() -> nn.Module:
    """A network as users have them, inputs to logits, its classifier at ``head.out``."""
    torch.manual_seed(100)
    head = nn.Sequential(OrderedDict(drop=nn.Dropout(0.0), out=nn.Linear(8, CLASSES)))
    return nn.Sequential(
        OrderedDict(body=nn.Sequential(nn.Linear(FEATURES, 8), nn.ReLU()), head=head)
    )


@pytest.mark.parametrize("method", ["hydra", "be", "kd"])
def test_head_cuts_a_whole_network_as_the_body_it_names(teacher, method):
    network = whole_network()
    before = copy.deepcopy(network.state_dict())
    cut = copy.deepcopy(network)
    cut.head.out = nn.Identity()  # the reference: the user cutting it by hand
    data = tabular()
    mine = distill(teacher, method=method, train_data=data, body=network, head="head.out", epochs=1)
    theirs = distill(teacher, method=method, train_data=data, body=cut, epochs=1)
    assert same_weights(mine, theirs)
    assert all(torch.equal(before[k], v) for k, v in network.state_dict().items())
    assert isinstance(network.head.out, nn.Linear)  # the user's network keeps its classifier


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"head": "fc"},
            "head='fc' names no layer of the network; set head=NAME, the attribute path of its "
            "final Linear layer (its Linear layers: body.0, head.out)",
        ),
        ({"head": "body.1"}, "head='body.1' of the network is ReLU, not nn.Linear"),
    ],
)
def test_a_head_that_is_no_linear_layer_is_refused_naming_the_candidates(teacher, kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        distill(teacher, train_data=tabular(), body=whole_network(), epochs=1, **kwargs)


def test_head_without_body_or_with_feature_dim_is_refused(teacher):
    with pytest.raises(ConfigError, match=r"head='fc' names a layer of body=.*pass body="):
        distill(teacher, train_data=tabular(), head="fc", epochs=1)
    with pytest.raises(ConfigError, match="leave feature_dim= out"):
        distill(teacher, train_data=tabular(), body=whole_network(), head="head.out", feature_dim=8)


@pytest.mark.parametrize(
    ("method", "shape"),
    [
        ("kd", (5, CLASSES)),
        ("hydra", (5, MEMBERS, CLASSES)),
        ("be", (5, MEMBERS, CLASSES)),
        ("latentbe", (5, CLASSES)),
        ("endd", (5, CLASSES)),
        ("hydra+gaussian", (5, MEMBERS, CLASSES)),
        ("hydra+confods", (5, MEMBERS, CLASSES)),
    ],
)
def test_every_method_trains_one_epoch_on_a_body(teacher, method, shape):
    x, y = tabular()
    student = distill(teacher, method=method, train_data=(x, y), body=body(), epochs=1)
    with torch.no_grad():
        assert tuple(student(x[:5]).shape) == shape
    row = evaluate(student, (x, y))
    assert 0.0 <= row["acc"] <= 1.0 and row["mi"] >= 0.0
    if method == "endd":
        assert output_kind(student) == "proxy_dirichlet"  # the default target


@pytest.mark.parametrize("method", ["hydra", "hydra+mixture"])  # auto phases, adapters, pool
def test_model_path_builds_the_same_student_as_the_pipeline(splits, tmp_path, method):
    """distill(model=...) trains exactly what `ensemble-distill distill` trains."""
    config = build_config(
        {
            "members": 2,
            "epochs": 2,
            "batch_size": 32,
            "model_args": {"widths": [8]},
            "methods": [method],
            "precision": "fp32",  # what prepare() resolves; this Setup is built by hand
            "hydra": {"head_widths": [6]},
            "student": {"epochs": 2},  # distill(epochs=2) sets the student's epochs
        }
    )
    spec = ModelSpec("mlp", splits.input_shape, splits.num_classes, {"widths": [8]})
    ensemble, _ = train_deep_ensemble(
        spec, splits, members=2, seed=0, epochs=1, batch_size=32, optim=config.optim, quiet=True
    )
    setup = Setup(config, splits, spec, spec, torch.device("cpu"))
    distill_all(setup, ensemble, tmp_path, quiet=True)
    expected = load_student(tmp_path / "students" / method)
    student = distill(
        ensemble,
        method=method,
        train_data=splits.train,
        val_data=splits.val,
        model="mlp",
        model_args={"widths": [8]},
        head_widths=[6],
        epochs=2,
        batch_size=32,
        precision="fp32",
    )
    assert same_weights(student, expected)


def test_options_reach_the_method_section_and_the_config(teacher):
    x, y = tabular()
    student = distill(
        teacher,
        method="hydra",
        train_data=(x, y),
        body=body(),
        head_widths=[5, 4],
        temperature=2,
        optim={"lr": 1e-2},
        epochs=1,
    )
    assert [tuple(w.shape) for w in student.heads.weights] == [
        (MEMBERS, 8, 5),
        (MEMBERS, 5, 4),
        (MEMBERS, 4, CLASSES),
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temprature": 2}, "did you mean 'temperature'"),
        ({"method": "kd", "head_widths": [4]}, "option of hydra, not of kd"),
        ({"members": 5}, "'members' cannot be set here"),
        ({"dataset": "mnist"}, "the data come from train_data"),
        ({"method": "nope"}, "unknown method 'nope'"),
        ({"alpha": 2.0}, "'hydra.alpha' must lie in [0, 1], got 2.0"),
        ({"model": "mlp"}, "either body= (your module) or model="),
    ],
)
def test_bad_options_raise_a_config_error(teacher, kwargs, message):
    kwargs = {"method": "hydra", "body": body()} | kwargs
    with pytest.raises(ConfigError, match=re.escape(message)):
        distill(teacher, train_data=tabular(), epochs=1, **kwargs)


def test_bad_bodies_and_data_are_named(teacher):
    x, y = tabular()
    with pytest.raises(ConfigError, match=r"features \(batch, F\)"):
        distill(teacher, train_data=(x, y), body=nn.Unflatten(1, (4, 4)), epochs=1)
    with pytest.raises(ConfigError, match="body cannot take inputs of shape"):
        distill(teacher, train_data=(x, y), body=nn.Linear(5, 4), epochs=1)
    with pytest.raises(ConfigError, match="teacher cannot take inputs"):
        distill(teacher, train_data=(x[:, :5], y), body=body(), epochs=1)
    with pytest.raises(DataError, match="must be a torch Dataset"):
        distill(teacher, train_data="data.csv", body=body(), epochs=1)
    with pytest.raises(DataError, match="one-hot"):
        distill(teacher, train_data=(x, nn.functional.one_hot(y)), body=body(), epochs=1)
    with pytest.raises(DataError, match=r"labels must lie in \[0, 3\)"):
        distill(teacher, train_data=(x, y + 5), body=body(), epochs=1)


def test_mismatched_teacher_modules_name_the_first_difference():
    with pytest.raises(
        ConfigError, match=r"member 2 differs from member 0 at parameter '0.weight'"
    ):
        teacher_from_modules([member(0), member(1), member(2, width=7)])
    with pytest.raises(ConfigError, match="at module 1: Tanh"):
        teacher_from_modules(
            [member(0), nn.Sequential(nn.Linear(FEATURES, 12), nn.Tanh(), nn.Linear(12, 3))]
        )
    with pytest.raises(ConfigError, match="at least one module"):
        teacher_from_modules([])


def test_teacher_from_modules_copies_and_matches_the_members():
    modules = [member(m) for m in range(MEMBERS)]
    before = [copy.deepcopy(m.state_dict()) for m in modules]
    teacher = teacher_from_modules(modules)
    x = tabular()[0][:4]
    with torch.no_grad():
        expected = torch.stack([m(x) for m in modules], dim=1)
        torch.testing.assert_close(teacher(x), expected)
    for module, state in zip(modules, before, strict=True):
        assert all(torch.equal(state[k], v) for k, v in module.state_dict().items())


@pytest.mark.parametrize("method", ["kd", "hydra", "hydra+gaussian"])
def test_regression_students_train_on_float_targets(method):
    teacher = teacher_from_modules([member(m, outputs=2) for m in range(MEMBERS)])
    x, y = tabular(regression=True)
    student = distill(teacher, method=method, train_data=(x, y), body=body(), epochs=1)
    with torch.no_grad():
        out = student(x[:4])
    assert out.shape[-1] == 2 and out.shape[0] == 4
    row = evaluate(student, (x, y), ood_data=x + 2.0)
    expected = regression_metrics(gaussian_predictive(predict_outputs(student, x)), y)
    assert {k: row[k] for k in expected} == expected
    assert "ood_auroc_total" in row


def test_regression_refuses_classification_only_methods_and_logit_teachers(teacher):
    x, y = tabular(regression=True)
    gaussian_teacher = teacher_from_modules([member(m, outputs=2) for m in range(MEMBERS)])
    with pytest.raises(ConfigError, match="does not support regression"):
        distill(gaussian_teacher, method="be", train_data=(x, y), body=body(), epochs=1)
    with pytest.raises(ConfigError, match="float targets mean regression"):
        distill(teacher, method="kd", train_data=(x, y), body=body(), epochs=1)


# --------------------------------------------------------------------------------------------
# evaluate, mean_probs, uncertainty
# --------------------------------------------------------------------------------------------


def test_evaluate_equals_the_pipelines_metric_functions(teacher):
    x, y = tabular(n=60, seed=1)
    x_val, y_val = tabular(n=30, seed=2)
    x_ood = torch.rand(20, FEATURES) * 3
    student = distill(teacher, method="endd", train_data=tabular(), body=body(), epochs=1)
    for model in (teacher, student, teacher.member(0)):
        kind = output_kind(model)
        test = predictive(predict_outputs(model, x), kind)
        val = predictive(predict_outputs(model, x_val), kind)
        expected = classification_metrics(test, y)
        expected |= metric_fns.calibrated_metrics(val.probs, y_val, test.probs, y)
        expected |= ood_metrics(test, predictive(predict_outputs(model, x_ood), kind))
        row = evaluate(model, PairDataset(x, y), ood_data=x_ood, val_data=(x_val, y_val))
        assert row == expected


def test_mean_probs_and_uncertainty(teacher):
    x = tabular()[0][:10]
    probs = mean_probs(teacher, x)
    assert probs.shape == (10, CLASSES)
    torch.testing.assert_close(probs.sum(1), torch.ones(10, dtype=probs.dtype))
    with torch.no_grad():
        expected = torch.softmax(teacher(x).double(), -1).mean(1)
    torch.testing.assert_close(probs, expected)
    values = uncertainty(teacher, x)
    assert set(values) == {"entropy", "mutual_information", "expected_entropy"}
    assert all(v.shape == (10,) for v in values.values())
    assert (values["mutual_information"] > 0).all()
    single = uncertainty(teacher.member(0), x)  # one network: no model uncertainty
    assert torch.equal(single["mutual_information"], torch.zeros(10, dtype=torch.float64))


# --------------------------------------------------------------------------------------------
# teachers: train_teacher, load_teacher
# --------------------------------------------------------------------------------------------


def test_train_teacher_then_load_it_from_a_run_folder(tmp_path, splits: DataSplits):
    ensemble = train_teacher(
        splits.train, val_data=splits.val, members=2, epochs=1, model_args={"widths": [8]}
    )
    assert ensemble.num_members == 2 and not ensemble.training
    spec = ModelSpec("mlp", splits.input_shape, splits.num_classes, {"widths": [8]})
    save_teacher(tmp_path / "teacher", ensemble, spec, {})
    for path in (tmp_path, tmp_path / "teacher"):
        loaded = load_teacher(path)
        assert isinstance(loaded, DeepEnsemble)
        assert same_weights(loaded, ensemble)


def test_train_teacher_cnn_uses_the_architectures_defaults(splits: DataSplits):
    small = dataclasses.replace(splits, train=splits.train.subset(torch.arange(12)))
    ensemble = train_teacher(small.train, members=2, epochs=1, model="cnn", num_classes=3)
    with torch.no_grad():
        assert ensemble(splits.test.x[:2]).shape == (2, 2, 3)


# --------------------------------------------------------------------------------------------
# Reliability, round two (issue #18): inputs the API used to accept silently or crash on
# --------------------------------------------------------------------------------------------


def leaky_member(seed: int, slope: float = 0.01, p: float = 0.0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(FEATURES, 12), nn.LeakyReLU(slope), nn.Dropout(p), nn.Linear(12, CLASSES)
    )


def test_members_with_other_settings_than_member_0_are_refused():
    with pytest.raises(ConfigError, match=r"'negative_slope' of module 1 \(LeakyReLU\): 0.3 vs"):
        teacher_from_modules([leaky_member(0), leaky_member(1, slope=0.3)])
    with pytest.raises(ConfigError, match=r"member 2 .* 'p' of module 2 \(Dropout\): 0.5 vs 0.1"):
        teacher_from_modules([leaky_member(m, p=0.1) for m in range(2)] + [leaky_member(2, p=0.5)])
    teacher = teacher_from_modules([leaky_member(m, slope=0.2) for m in range(MEMBERS)])
    assert teacher.member(1)[1].negative_slope == 0.2  # equal settings: kept exactly
    teacher_from_modules([nn.LSTM(4, 8), nn.LSTM(4, 8)])  # weights seen through a list: equal


def test_members_without_weights_are_refused():
    with pytest.raises(ConfigError, match=r"\(Identity\) have no parameters"):
        teacher_from_modules([nn.Identity(), nn.Identity()])
    with pytest.raises(ConfigError, match="have no parameters"):
        distill([nn.Identity(), nn.Identity()], method="kd", train_data=tabular(), epochs=1)


def test_float_labels_of_a_classifier_teacher_are_refused_with_the_fix():
    x, y = tabular()
    binary = teacher_from_modules([member(m, outputs=2) for m in range(MEMBERS)])
    labels = (y > 0).float()
    with pytest.raises(ConfigError, match=r"all 0 or 1 .* use int64 labels \(y.long\(\)\)"):
        distill(binary, method="kd", train_data=(x, labels), body=body(), epochs=1)
    with pytest.raises(ConfigError, match=r"all 0 or 1 .* evaluate\(\.\.\., task='regression'\)"):
        evaluate(member(0, outputs=2), (x, labels))
    classifier = teacher_from_modules(
        [member(m, outputs=2) for m in range(2)], task="classification"
    )
    with pytest.raises(ConfigError, match="is a classification model but train_data has float"):
        distill(classifier, method="kd", train_data=tabular(regression=True), epochs=1)
    regression = teacher_from_modules([member(m, outputs=2) for m in range(2)], task="regression")
    with pytest.raises(ConfigError, match="is a regression model but data has integer labels"):
        evaluate(regression, (x, (y > 0).long()))
    assert "rmse" in evaluate(regression, (x, labels))  # stated: 0/1 regression targets


def test_evaluate_refuses_a_model_returning_a_tuple():
    class Pair(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(FEATURES, CLASSES)

        def forward(self, x):
            return self.linear(x), x

    with pytest.raises(ConfigError, match="the model returned a tuple, not one tensor"):
        evaluate(Pair(), tabular())


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1e300])
def test_non_finite_inputs_are_refused_naming_the_argument(value):
    x, y = tabular()
    bad = x.double()  # float64: 1e300 is finite here and overflows float32
    bad[5, 2] = value
    with pytest.raises(DataError, match=r"^ood_data inputs contain NaN .* first at index 5;"):
        evaluate(member(0), (x, y), ood_data=bad)
    with pytest.raises(DataError, match=r"^train_data inputs contain NaN"):
        train_teacher((bad, y), members=2, epochs=1)
    with pytest.raises(DataError, match=r"^x inputs contain NaN"):
        mean_probs(member(0), bad)


def test_train_teacher_refuses_a_bad_optimiser_before_training():
    with pytest.raises(ConfigError, match=r"'optim.lr' must be > 0, got -1"):
        train_teacher(tabular(), members=2, epochs=1, optim={"lr": -1})
    with pytest.raises(ConfigError, match=r"'optim.lr' must be a finite number, got nan"):
        train_teacher(tabular(), members=2, epochs=1, optim={"lr": float("nan")})
