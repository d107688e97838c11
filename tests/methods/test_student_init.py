"""``student.init`` (issue 31): students that start from the members' weights or from a file,
and ``random`` exactly as before."""

from types import SimpleNamespace

import pytest
import torch
import yaml
from safetensors.torch import save_file
from torch import nn

from ensemble_distill import engine
from ensemble_distill.cli import main
from ensemble_distill.config import build_config
from ensemble_distill.errors import ConfigError
from ensemble_distill.methods import METHODS, batchensemble
from ensemble_distill.methods.student_init import start_student
from ensemble_distill.models import ModelSpec, create_model
from ensemble_distill.teachers import DeepEnsemble

MLP = ModelSpec("mlp", (1, 4, 4), 3, {"widths": [8, 6]})
CNN = ModelSpec("cnn", (1, 8, 8), 3, {"channels": [4, 6], "hidden": 8})
MEMBERS = 3


def make_teacher(spec: ModelSpec, members: int = MEMBERS, seed: int = 0) -> DeepEnsemble:
    """Distinct random members whose batch-norm statistics have moved off their start (so a
    student that kept its own statistics would differ)."""
    torch.manual_seed(seed)
    teacher = DeepEnsemble([create_model(spec) for _ in range(members)])
    with torch.no_grad():
        teacher.train()(torch.rand(32, *spec.input_shape))
    return teacher.eval()


def build(name: str, spec: ModelSpec, start: str = "random", seed: int = 1, **section):
    """Method ``name``'s student of ``spec`` as the engine builds it (seeded), and its config
    (``student.init`` = ``start``, ``section``: the method's options)."""
    config = build_config({"members": MEMBERS, "student": {"init": start}, name: section})
    method = METHODS.get(name)
    torch.manual_seed(seed)
    return method, method.build(spec, MEMBERS, method.options(config)), config


def started(name, spec, teacher, start="member", **section) -> nn.Module:
    method, student, config = build(name, spec, start, **section)
    start_student(method, student, teacher, spec, method.options(config), start)
    return student.eval()


def outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


# (method, spec, options): the student starts as member 0 (KD, EnD²) ...
AS_MEMBER_0 = [
    pytest.param("kd", MLP, {}, id="kd-mlp"),
    pytest.param("kd", CNN, {}, id="kd-cnn"),
    pytest.param("endd", CNN, {}, id="endd-cnn"),
]
# ... or Hydra's head m starts as member m's classifier on member 0's body (linear heads) ...
LINEAR_HEADS = [
    pytest.param(MLP, {}, id="mlp"),
    pytest.param(CNN, {}, id="cnn"),
    pytest.param(MLP, {"adapter_rank": 2}, id="adapters"),  # adapters start as the identity
]
# ... or as member m itself (every layer split into the heads).
SPLIT_ALL = [pytest.param(MLP, 2, id="mlp"), pytest.param(CNN, 3, id="cnn")]
# ... or every BatchEnsemble member starts as member 0 (the factors at 1, whatever be.init says).
BE_AS_MEMBER_0 = [
    pytest.param("be", MLP, {}, id="be-mlp"),
    pytest.param("be", CNN, {"init": "normal"}, id="be-cnn"),
]


@pytest.mark.parametrize(("name", "spec", "section"), AS_MEMBER_0)
def test_one_network_starts_as_member_0(name, spec, section):
    teacher = make_teacher(spec)
    x = torch.rand(9, *spec.input_shape)
    student = started(name, spec, teacher, **section)
    torch.testing.assert_close(outputs(student, x), outputs(teacher.member(0), x))


@pytest.mark.parametrize(("spec", "section"), LINEAR_HEADS)
def test_hydra_linear_head_m_is_member_ms_classifier_on_member_0s_body(spec, section):
    teacher = make_teacher(spec)
    x = torch.rand(9, *spec.input_shape)
    ours = outputs(started("hydra", spec, teacher, **section), x)
    features = outputs(teacher.member(0).body, x)
    torch.testing.assert_close(ours[:, 0], outputs(teacher.member(0), x))
    for m in range(MEMBERS):
        torch.testing.assert_close(ours[:, m], outputs(teacher.member(m).head, features))


@pytest.mark.parametrize(("spec", "split"), SPLIT_ALL)
def test_hydra_split_into_all_layers_starts_as_the_ensemble(spec, split):
    teacher = make_teacher(spec)
    x = torch.rand(9, *spec.input_shape)
    ours = outputs(started("hydra", spec, teacher, split=split), x)
    for m in range(MEMBERS):
        torch.testing.assert_close(ours[:, m], outputs(teacher.member(m), x))


def test_hydra_split_of_fewer_layers_takes_member_ms_last_layers():
    teacher = make_teacher(CNN)
    x = torch.rand(9, *CNN.input_shape)
    student = started("hydra", CNN, teacher, split=1)
    ours = outputs(student, x)
    torch.testing.assert_close(ours[:, 0], outputs(teacher.member(0), x))  # body and head 0
    for m in range(MEMBERS):  # member m's last layers, on member 0's body
        head, member = student.heads.head(m), teacher.member(m)
        torch.testing.assert_close(head[-1].weight, member.head.weight)


def test_hydra_mlp_heads_have_no_counterpart_and_start_as_built():
    teacher = make_teacher(MLP)
    _, fresh, _ = build("hydra", MLP, head_widths=[5])
    student = started("hydra", MLP, teacher, head_widths=[5])
    x = torch.rand(9, *MLP.input_shape)
    torch.testing.assert_close(outputs(student.body, x), outputs(teacher.member(0).body, x))
    for ours, built in zip(student.heads.parameters(), fresh.heads.parameters(), strict=True):
        assert torch.equal(ours, built)


@pytest.mark.parametrize(("name", "spec", "section"), BE_AS_MEMBER_0)
def test_every_batchensemble_member_starts_as_member_0(name, spec, section):
    teacher = make_teacher(spec)
    x = torch.rand(9, *spec.input_shape)
    ours, member_0 = (
        outputs(started(name, spec, teacher, **section), x),
        outputs(teacher.member(0), x),
    )
    for j in range(MEMBERS):
        torch.testing.assert_close(ours[:, j], member_0)


@pytest.mark.parametrize("factors", ["normal", "ones"])
def test_latentbe_starts_as_member_0_and_its_batchensemble_too(factors, monkeypatch, splits):
    teacher = make_teacher(MLP)
    x = torch.rand(9, *MLP.input_shape)
    student = started("latentbe", MLP, teacher, init=factors)
    torch.testing.assert_close(outputs(student, x), outputs(teacher.member(0), x))
    seen = []

    def first_step(ensemble, context, options, desc):  # the BatchEnsemble as training gets it
        seen.append(outputs(ensemble, x))
        return []

    monkeypatch.setattr(batchensemble, "train_one_to_one", first_step)
    config = build_config({"members": MEMBERS, "student": {"init": "member"}})
    context = SimpleNamespace(teacher=teacher, config=config, bind_student=lambda student: None)
    options = METHODS.get("latentbe").options_type(init=factors)
    METHODS.get("latentbe").train(student, context, options)
    for j in range(MEMBERS):
        torch.testing.assert_close(seen[0][:, j], outputs(teacher.member(0), x))


@pytest.mark.parametrize(
    ("name", "section"), [("kd", {}), ("endd", {}), ("hydra", {}), ("be", {}), ("latentbe", {})]
)
def test_random_is_what_a_config_without_the_key_builds(name, section):
    method = METHODS.get(name)
    torch.manual_seed(1)
    before = method.build(MLP, MEMBERS, method.options(build_config({"members": MEMBERS})))
    student = started(name, MLP, make_teacher(MLP), start="random", **section)
    assert before.state_dict().keys() == student.state_dict().keys()
    for key, value in before.state_dict().items():
        assert torch.equal(value, student.state_dict()[key]), key


@pytest.mark.parametrize(
    ("name", "spec", "section"),
    [("kd", MLP, {}), ("endd", CNN, {}), ("hydra", MLP, {"split": 1}), ("be", CNN, {})],
)
def test_a_weights_file_round_trips(name, spec, section, tmp_path):
    _, saved, _ = build(name, spec, seed=7, **section)
    path = tmp_path / "student.safetensors"
    save_file({k: v.contiguous() for k, v in saved.state_dict().items()}, path)
    student = started(name, spec, make_teacher(spec), start=str(path), **section)
    for key, value in saved.state_dict().items():
        assert torch.equal(value, student.state_dict()[key]), key


def state_file(tmp_path, state) -> str:
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, path)
    return str(path)


def test_a_file_of_other_keys_or_shapes_is_one_line_naming_them(tmp_path):
    _, student, _ = build("kd", MLP)
    state = student.state_dict()
    extra = state_file(tmp_path, {**state, "body.9.weight": torch.zeros(2)})
    with pytest.raises(ConfigError, match=r"1 unexpected keys \('body\.9\.weight'\)") as error:
        started("kd", MLP, make_teacher(MLP), start=extra)
    assert "\n" not in str(error.value) and "student.init file" in str(error.value)
    missing = state_file(tmp_path, {k: v for k, v in state.items() if k != "head.bias"})
    with pytest.raises(ConfigError, match=r"1 missing keys \('head\.bias'\)"):
        started("kd", MLP, make_teacher(MLP), start=missing)
    shaped = state_file(tmp_path, {**state, "head.bias": torch.zeros(4)})
    with pytest.raises(ConfigError, match=r"'head\.bias' has shape \(4,\) in the file but \(3,\)"):
        started("kd", MLP, make_teacher(MLP), start=shaped)


def test_a_file_that_is_no_safetensors_is_refused(tmp_path):
    pickled = tmp_path / "weights.safetensors"
    torch.save({"head.bias": torch.zeros(3)}, pickled)  # a pickle under the right name
    with pytest.raises(ConfigError, match=r"not a readable \.safetensors file"):
        started("kd", MLP, make_teacher(MLP), start=str(pickled))
    with pytest.raises(ConfigError, match="does not exist"):
        started("kd", MLP, make_teacher(MLP), start=str(tmp_path / "gone.safetensors"))
    with pytest.raises(ConfigError, match=r"pickles such as \.pt are refused"):
        build_config({"student": {"init": "weights.pt"}})


@pytest.mark.parametrize(("name", "section"), [("kd", {}), ("hydra", {}), ("hydra", {"split": 2})])
def test_members_of_another_architecture_are_refused_naming_the_fix(name, section):
    other = make_teacher(ModelSpec("mlp", (1, 4, 4), 3, {"widths": [8, 5]}))
    with pytest.raises(ConfigError, match=r"student\.init=random"):
        started(name, MLP, other, **section)


def prepared(splits, **config):
    base = {"members": MEMBERS, "epochs": 1, "batch_size": 16, "model_args": {"widths": [8]}}
    return engine.prepare(build_config(base | config), splits)


def test_prepare_refuses_member_for_another_student_architecture(splits):
    student = {"init": "member", "model_args": {"widths": [4]}}
    with pytest.raises(ConfigError, match=r"student\.init=member copies the members' weights"):
        prepared(splits, student=student)
    with pytest.raises(ConfigError, match="a body of your own is not theirs"):
        engine.prepare(
            build_config({"members": MEMBERS, "student": {"init": "member"}}),
            splits,
            students_from_spec=False,
        )


def test_prepare_refuses_a_file_that_fits_no_student_before_training(splits, tmp_path):
    path = state_file(tmp_path, {"head.weight": torch.zeros(3, 8)})
    with pytest.raises(ConfigError, match=r"the student of method 'kd': \d+ missing keys"):
        prepared(splits, methods=["kd"], student={"init": path})


def distilled(setup, name, **kwargs):
    teacher = make_teacher(setup.teacher_spec)
    outputs_ = engine.teacher_train_outputs(setup, teacher)
    return engine.distill_student(setup, teacher, name, outputs_, **kwargs)[0], teacher


def test_the_engine_starts_students_before_training_and_a_resume_keeps_the_trained(
    splits, tmp_path, monkeypatch
):
    setup = prepared(splits, methods=["kd"], student={"init": "member", "epochs": 2})
    progress = {"progress_dir": tmp_path / "progress", "progress_settings": {"run": 1}}
    trained, teacher = distilled(setup, "kd", **progress)
    x = splits.test.x
    assert not torch.allclose(outputs(trained, x), outputs(teacher.member(0), x))
    resumed, _ = distilled(setup, "kd", **progress)  # its phase is finished: restored, not redone
    for key, value in trained.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    seen = []
    monkeypatch.setattr(METHODS.get("kd"), "train", lambda s, c, o: seen.append(outputs(s, x)))
    distilled(setup, "kd")
    torch.testing.assert_close(seen[0], outputs(teacher.member(0), x))


def test_cli_run_with_member_start_records_the_key(tmp_path):
    out = tmp_path / "run"
    args = ["members=2", "epochs=1", "model_args={widths: [16]}", "eval.latency_repeats=2"]
    methods = ["methods=[kd,hydra]", "student.init=member", "student.epochs=1"]
    assert main(["run", "--out", str(out), "--quiet", *args, *methods]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["student"]["init"] == "member"
    manifest = yaml.safe_load((out / "students" / "hydra" / "manifest.json").read_text())
    assert manifest["config"]["student"]["init"] == "member"
