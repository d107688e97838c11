"""Hydra's head design (issue 16): where the body splits, how the heads start, and that every
option builds, trains, saves, loads and exports."""

import pytest
import torch
from torch import nn

from ensemble_distill import cli, engine, out_folder
from ensemble_distill.config import build_config
from ensemble_distill.errors import ConfigError
from ensemble_distill.evaluation import predict_outputs
from ensemble_distill.export import export_student, verify_export
from ensemble_distill.methods import METHODS, DistillContext
from ensemble_distill.methods.hydra import HydraConfig, init_from_members, start_heads
from ensemble_distill.models import Classifier, ModelSpec, create_model
from ensemble_distill.teachers import DeepEnsemble

HYDRA = METHODS.get("hydra")
MLP = ModelSpec("mlp", (1, 8, 8), 10, {"widths": [16, 12]})
CNN = ModelSpec("cnn", (1, 8, 8), 10, {"channels": [4, 6], "hidden": 8})


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def linear(i: int, o: int) -> int:
    return i * o + o


# Hand counts, M = 3. MLP 64 → 16 → 12 → 10. CNN: conv 3x3 1 → 4 (no bias: batch norm) +
# BN(4), conv 4 → 6 + BN(6), linear 6 → 8, classifier 8 → 10.
CONV1, CONV2 = 9 * 1 * 4 + 2 * 4, 9 * 4 * 6 + 2 * 6
HAND_COUNTS = [
    (MLP, 1, linear(64, 16) + 3 * (linear(16, 12) + linear(12, 10))),
    (MLP, 2, 3 * (linear(64, 16) + linear(16, 12) + linear(12, 10))),
    (CNN, 1, CONV1 + CONV2 + 3 * (linear(6, 8) + linear(8, 10))),
    (CNN, 2, CONV1 + 3 * (CONV2 + linear(6, 8) + linear(8, 10))),
    (CNN, 3, 3 * (CONV1 + CONV2 + linear(6, 8) + linear(8, 10))),
]


@pytest.mark.parametrize(("spec", "split", "expected"), HAND_COUNTS)
def test_split_parameters_match_a_hand_count_and_heads_run_as_one(spec, split, expected):
    student = HYDRA.build(spec, 3, HydraConfig(split=split))
    assert count(student) == expected
    x = torch.rand(5, *spec.input_shape)
    student.eval()
    with torch.no_grad():
        outputs, features = student(x), student.body(x)
        assert outputs.shape == (5, 3, 10)
        for m in range(3):  # the grouped computation against each head as a plain module
            torch.testing.assert_close(outputs[:, m], student.heads.head(m)(features))


def test_split_of_all_layers_is_the_members_architecture():
    student = HYDRA.build(CNN, 3, HydraConfig(split=3))
    member = create_model(CNN)
    assert count(student) == 3 * count(member)
    assert count(student.body) == 0  # only the normalisation is shared


def trained_bn_teacher(spec: ModelSpec, members: int = 3) -> DeepEnsemble:
    """Random members whose batch-norm statistics have moved off their start."""
    teacher = DeepEnsemble([create_model(spec) for _ in range(members)])
    with torch.no_grad():
        teacher.train()(torch.rand(32, *spec.input_shape))
    return teacher.eval()


@pytest.mark.parametrize(("spec", "split"), [(MLP, 2), (CNN, 3)])
def test_all_layers_from_the_members_reproduce_the_teacher_exactly(spec, split):
    teacher = trained_bn_teacher(spec)
    student = HYDRA.build(spec, 3, HydraConfig(split=split, head_init="members"))
    init_from_members(student, teacher)
    x = torch.rand(9, *spec.input_shape)
    teacher.loop_inference = False  # the grouped layers, as the student computes them
    with torch.no_grad():
        ours = student.eval()(x)
        assert torch.equal(ours, teacher(x))
        for m in range(3):  # each member as a plain module, without the grouped layers
            torch.testing.assert_close(ours[:, m], teacher.member(m)(x))


def test_members_init_of_fewer_layers_takes_member_0s_body():
    teacher = trained_bn_teacher(CNN)
    student = HYDRA.build(CNN, 3, HydraConfig(split=1, head_init="members"))
    init_from_members(student, teacher)
    x = torch.rand(9, 1, 8, 8)
    with torch.no_grad():
        ours, theirs = student.eval()(x), teacher(x)
    torch.testing.assert_close(ours[:, 0], theirs[:, 0])  # member 0's body and its own head
    assert not torch.allclose(ours[:, 1], theirs[:, 1], atol=1e-3)  # member 1's head, 0's body


def make_context(splits, teacher_spec, members=3, **hydra):
    config = build_config(
        {"members": members, "epochs": 2, "batch_size": 16, "hydra": hydra, "student": {}}
    )
    torch.manual_seed(1)
    teacher = DeepEnsemble([create_model(teacher_spec) for _ in range(members)]).eval()
    outputs = predict_outputs(teacher, splits.train.x)
    return DistillContext(splits, teacher, outputs, config, torch.device("cpu"), quiet=True)


TINY = ModelSpec("mlp", (1, 4, 4), 3, {"widths": [8, 6]})


def test_members_init_refuses_another_student_architecture_before_training(splits):
    options = HydraConfig(split=1, head_init="members")
    other = ModelSpec("mlp", (1, 4, 4), 3, {"widths": [8, 5]})
    context = make_context(splits, TINY, split=1, head_init="members")
    student = HYDRA.build(other, 3, options)
    with pytest.raises(ConfigError, match=r"hydra\.head_init=members needs the student's arch"):
        HYDRA.train(student, context, options)
    with pytest.raises(ConfigError, match="2 heads for 3 members"):
        HYDRA.train(HYDRA.build(TINY, 2, options), context, options)


def heads_of(student) -> list[torch.Tensor]:
    return [p.detach().clone() for p in student.heads.parameters()]


@pytest.mark.parametrize("split", [None, 2])
def test_perturbed_heads_differ_within_the_expected_distance(split):
    widths = [32, 32] if split is None else None  # tensors large enough for the sd estimate
    options = HydraConfig(head_init="perturbed", head_init_std=0.1, split=split, head_widths=widths)
    student = HYDRA.build(MLP, 4, options)
    copied = HYDRA.build(MLP, 4, options)
    copied.load_state_dict(student.state_dict())
    start_heads(copied, HydraConfig(head_init="copy", split=split, head_widths=widths), seed=0)
    start_heads(student, options, seed=0)
    for perturbed, copy in zip(heads_of(student), heads_of(copied), strict=True):
        for m in range(4):
            assert torch.equal(copy[m], copy[0])
            if copy[0].numel() < 100:
                continue
            ratio = (perturbed[m] - copy[m]).pow(2).mean().sqrt() / copy[m].std(correction=0)
            assert 0.08 < ratio < 0.12  # noise sd = 0.1 × the tensor's sd
            if m:
                assert not torch.equal(perturbed[m], perturbed[0])
    again = HYDRA.build(MLP, 4, options)
    again.load_state_dict(copied.state_dict())
    start_heads(again, options, seed=0)  # the noise is the seed's alone
    assert all(map(torch.equal, heads_of(again), heads_of(student)))


@pytest.mark.parametrize("split", [None, 1])
def test_independent_heads_differ_where_copied_heads_agree(splits, split):
    widths = [8] if split is None else None
    logits = {}
    for head_init in ("copy", "independent"):
        options = HydraConfig(
            head_init=head_init, split=split, head_widths=widths, phase1_fraction=1.0
        )
        context = make_context(
            splits, TINY, split=split, head_init=head_init, head_widths=widths, phase1_fraction=1.0
        )
        torch.manual_seed(0)
        student = HYDRA.build(TINY, 3, options)
        history = HYDRA.train(student, context, options)
        assert {row["phase"] for row in history} == {1}  # phase 2 starts from head_init alone
        with torch.no_grad():
            logits[head_init] = student.eval()(splits.test.x)
    copy, independent = logits["copy"], logits["independent"]
    torch.testing.assert_close(copy[:, 0], independent[:, 0])  # the same phase 1
    for m in (1, 2):
        torch.testing.assert_close(copy[:, m], copy[:, 0])
        assert not torch.allclose(independent[:, m], independent[:, 0], atol=1e-3)


def test_independent_split_heads_are_the_architectures_own_draws():
    student = HYDRA.build(CNN, 4, HydraConfig(split=3, head_init="independent"))
    conv = student.heads.stacked[4].weight  # the second conv, (M, 6, 4, 3, 3)
    assert not torch.equal(conv[1], conv[0])
    spread = conv.flatten(1).std(dim=1)  # Kaiming fan-out: √(2/54) = 0.19; PyTorch's default 0.10
    assert ((spread - (2 / 54) ** 0.5).abs() < 0.03).all()


def test_split_past_the_architecture_names_the_key_and_range_on_the_meta_device():
    with (
        torch.device("meta"),
        pytest.raises(ConfigError, match=r"'hydra\.split' must lie in \[1, 3\]"),
    ):
        HYDRA.build(CNN, 3, HydraConfig(split=4))
    flat = ModelSpec("mlp", (1, 8, 8), 10, {"widths": []})
    with pytest.raises(
        ConfigError, match=r"'hydra\.split' needs a student body with weight layers"
    ):
        HYDRA.build(flat, 3, HydraConfig(split=1))


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 4)

    def forward(self, x):
        return x + self.layer(x)


def test_split_of_a_body_that_is_not_a_layer_stack_names_the_key():
    base = Classifier(nn.Sequential(nn.Flatten(), nn.Linear(16, 4), Residual()), nn.Linear(4, 3), 4)
    with pytest.raises(ConfigError, match=r"'hydra\.split' needs a student that is a plain stack"):
        HYDRA.student(base, 3, HydraConfig(split=1))


def test_a_user_body_splits_with_fresh_heads():
    base = Classifier(nn.Sequential(nn.Flatten(), nn.Linear(16, 6), nn.ReLU()), nn.Linear(6, 3), 6)
    student = HYDRA.student(base, 3, HydraConfig(split=1))
    weights = student.heads.stacked[0].weight
    assert torch.equal(weights[0], base.body[1].weight)  # head 0 is the given body's layer
    assert not torch.equal(weights[1], weights[0])
    assert student(torch.rand(5, 1, 4, 4)).shape == (5, 3, 3)


ROUND_TRIPS = [
    pytest.param("mlp", {"head_init": "copy"}, id="copy"),
    pytest.param("mlp", {"head_init": "independent", "head_widths": [8]}, id="independent"),
    pytest.param("mlp", {"head_init": "perturbed"}, id="perturbed"),
    pytest.param("cnn", {"split": 2, "head_init": "perturbed"}, id="cnn-split"),
    pytest.param("mlp", {"split": 2, "head_init": "members"}, id="members-all-layers"),
]


@pytest.mark.parametrize(("model", "hydra"), ROUND_TRIPS)
def test_save_load_round_trip_gives_identical_outputs(tmp_path, model, hydra):
    model_args = {"widths": [16, 12]} if model == "mlp" else {"channels": [4, 6], "hidden": 8}
    config = build_config(
        {
            "members": 3,
            "model": model,
            "model_args": model_args,
            "hydra": hydra,
            "methods": ["hydra"],
        }
    )
    setup = engine.prepare(config)
    options = HYDRA.options(setup.config)
    student = HYDRA.build(setup.student_spec, 3, options, setup.data.mean, setup.data.std)
    if options.head_init == "members":
        init_from_members(student, trained_bn_teacher(setup.teacher_spec))
    start_heads(student, options, seed=1)
    engine.save_student(tmp_path, student, engine.student_manifest(setup, "hydra"))
    loaded = engine.load_student(tmp_path)
    x = setup.data.test.x[:17]
    with torch.no_grad():
        assert torch.equal(loaded(x), student.eval()(x))


@pytest.mark.slow  # long end to end: `make test-all` only
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_a_split_student_runs_end_to_end_and_exports(tmp_path, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnxscript")
    out = tmp_path / "run"
    args = ["members=2", "epochs=1", "methods=[hydra]", "model=cnn", "eval.latency_repeats=1"]
    args += ["model_args={channels: [4, 6], hidden: 8}", "hydra.split=2"]
    assert cli.main(["run", "--out", str(out), "--quiet", *args]) == 0
    student_dir = out / "students" / "hydra"
    path = export_student(student_dir, fmt, tmp_path / f"student.{fmt}")
    student = engine.load_student(student_dir)
    assert verify_export(path, student, torch.rand(7, 1, 8, 8)) <= 1e-5


def test_split_with_head_widths_is_one_line_exit_2_and_writes_nothing(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(out_folder, "start_output", lambda *a, **k: pytest.fail("run started"))
    out = tmp_path / "out"
    code = cli.main(["run", "--out", str(out), "hydra.split=1", "hydra.head_widths=[8]"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1
    assert "'hydra.split' cannot be combined with hidden head_widths" in err
    assert not out.exists()


def test_the_default_heads_are_linear_and_each_starts_from_its_own_weights():
    """The RQ3 study's choice (docs/results/hydra_tradeoff.md): one linear layer per head on the
    body's features, and phase 2 keeps each head's own random start."""
    options = HydraConfig()
    student = HYDRA.build(MLP, 3, options)
    # MLP 64 → 16 → 12 is the body; each head 12 → 10.
    assert count(student) == linear(64, 16) + linear(16, 12) + 3 * linear(12, 10)
    start_heads(student, options, seed=0)
    weights = student.heads.weights[0]
    assert not torch.equal(weights[1], weights[0]) and not torch.equal(weights[2], weights[0])


def test_null_head_widths_keep_meaning_the_papers_heads():
    """Checkpoints written while [100, 100] was the default store head_widths null: they must
    still build the heads they were trained with."""
    assert HydraConfig(head_widths=None).mlp_widths == [100, 100]
    assert HydraConfig().mlp_widths == []
    assert HydraConfig(split=1, head_widths=[]).split == 1  # no hidden widths: split allowed
