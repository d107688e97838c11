"""The engine under both faces: the CLI and the Python API train the same weights."""

from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from ensemble_distill import cli, distill, engine, train_teacher
from ensemble_distill.config import build_config
from ensemble_distill.data import create_dataset
from ensemble_distill.engine import load_student, prepare, seeded
from ensemble_distill.errors import ConfigError
from ensemble_distill.methods.hydra import AUTO_ADAPTER_RANK, Hydra
from ensemble_distill.models import create_model
from ensemble_distill.teachers import DeepEnsemble

# A small digits run: every key the API call below passes as an argument or option.
WIDTHS = [24]
METHODS = ["kd", "hydra+gaussian", "be"]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    argv = ["distill", "--out", str(out), "--quiet", "members=2", "epochs=2", "batch_size=32"]
    argv += [f"model_args={{widths: {WIDTHS}}}", f"methods=[{','.join(METHODS)}]"]
    argv += ["hydra.head_widths=[8]", "perturbation.eta=0.02", "student.epochs=2"]
    assert cli.main(["train-teacher", *argv[1:]]) == 0
    assert cli.main(argv) == 0
    return out


@pytest.fixture(scope="module")
def digits():
    return create_dataset("digits")


def _assert_same_weights(module, path):
    saved = load_file(path)
    state = module.state_dict()
    assert state.keys() == saved.keys()
    for key, value in state.items():
        assert torch.equal(value, saved[key]), key


@pytest.fixture(scope="module")
def api_teacher(digits):
    return train_teacher(
        digits.train,
        val_data=digits.val,
        members=2,
        epochs=2,
        batch_size=32,
        model_args={"widths": WIDTHS},
    )


def test_api_teacher_is_bit_identical_to_the_cli_teacher(cli_run, api_teacher):
    _assert_same_weights(api_teacher, cli_run / "teacher" / "model.safetensors")


@pytest.mark.parametrize("method", METHODS)
def test_api_student_is_bit_identical_to_the_cli_student(cli_run, api_teacher, digits, method):
    options = {"head_widths": [8]} if method.startswith("hydra") else {}
    student = distill(
        api_teacher,
        method=method,
        train_data=digits.train,
        val_data=digits.val,
        model="mlp",
        model_args={"widths": WIDTHS},
        epochs=2,
        batch_size=32,
        perturbation={"eta": 0.02},
        **options,
    )
    _assert_same_weights(student, cli_run / "students" / method / "model.safetensors")
    loaded = load_student(cli_run / "students" / method)
    x = digits.test.x[:16]
    torch.testing.assert_close(loaded(x), student(x), rtol=0, atol=0)


def test_seeded_gives_the_callers_random_state_back():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    with seeded(7, torch.device("cpu")):
        inside = torch.rand(3)
    assert torch.equal(torch.rand(3), expected)
    with seeded(7, torch.device("cpu")):
        assert torch.equal(torch.rand(3), inside)


def test_prepare_refuses_bad_model_args_before_training(digits):
    config = build_config({"model_args": {"widths": [8], "depth": 3}})
    with pytest.raises(ConfigError, match="bad arguments"):
        prepare(config, digits)


def test_prepare_fills_the_tasks_default_methods(digits):
    # Images: the default Hydra distils on the pooled mixture (issue 28's chosen student).
    assert prepare(build_config({}), digits).config.methods == ["kd", "hydra+mixture", "endd"]
    config = build_config({})
    table = SimpleNamespace(task="classification", input_shape=(16,))
    assert engine.default_methods(config, table) == ["kd", "hydra", "endd"]  # no patches
    regression = SimpleNamespace(task="regression", input_shape=(16,))
    assert engine.default_methods(config, regression) == ["kd", "hydra"]


def test_each_method_trains_with_its_auto_values_decided(digits):
    setup = prepare(build_config({"methods": ["hydra", "hydra+mixture", "latentbe"]}), digits)
    decided = {name: engine.method_config(setup, name) for name in setup.config.methods}
    hydra, mixture = decided["hydra"], decided["hydra+mixture"]
    assert (hydra.hydra.phase1_fraction, hydra.hydra.adapter_rank) == (0.5, 0)
    assert hydra.perturbation.pool == 0  # clean inputs: nothing to pool
    # rank 16, lowered to keep the digits MLP's Hydra within 1.5x a member's parameters
    network = engine.one_network(setup.student_spec)
    compact = Hydra().compact_adapter_rank(network, setup.config.members, hydra.hydra)
    assert 0 < compact < AUTO_ADAPTER_RANK
    assert (mixture.hydra.phase1_fraction, mixture.hydra.adapter_rank) == (0.0, compact)
    assert mixture.perturbation.pool == 3
    assert decided["latentbe"].perturbation.pool == 0  # +diverse probes the student: live
    assert setup.config.hydra.adapter_rank == "auto"  # the run's config keeps what was asked
    manifest = engine.student_manifest(setup, "hydra+mixture")["options"]
    assert (manifest["adapter_rank"], manifest["perturbation"]["pool"]) == (compact, 3)


def test_prepare_stores_images_channels_last_for_a_cnn_only(digits):
    cnn = prepare(build_config({"model": "cnn", "model_args": {"channels": [4]}}), digits)
    assert cnn.config.memory_format == "channels_last"
    for name in ("train", "val", "test"):
        x = getattr(cnn.data, name).x
        assert x.stride()[1] == 1  # (N, C, H, W) with the channels innermost
        assert torch.equal(x, getattr(digits, name).x)  # the same values
    mlp = prepare(build_config({}), digits)
    assert mlp.config.memory_format == "contiguous" and mlp.data.train.x.is_contiguous()


def test_prepare_refuses_channels_last_for_inputs_that_are_not_images():
    table = create_dataset("toy-gap")
    with pytest.raises(ConfigError, match="memory_format=channels_last needs images"):
        prepare(build_config({"memory_format": "channels_last", "methods": ["kd"]}), table)


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16"), (False, "fp32")])
def test_prepare_resolves_auto_precision_for_this_machine(digits, monkeypatch, native, expected):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    assert prepare(build_config({}), digits).config.precision == expected
    assert prepare(build_config({"precision": "fp32"}), digits).config.precision == "fp32"


def test_prepare_builds_every_students_architecture_before_training(digits):
    config = build_config({"methods": ["kd", "hydra"], "hydra": {"split": 3}})
    with pytest.raises(ConfigError, match=r"hydra\.split"):  # a 256-256 MLP has 2 such layers
        prepare(config, digits)
    prepare(config, digits, students_from_spec=False)  # the user's body is judged later


def test_prepare_refuses_heads_from_members_of_another_architecture(digits):
    options = {"methods": ["hydra"], "hydra": {"split": 1, "head_init": "members"}}
    prepare(build_config(options), digits)  # the members' own architecture: accepted
    other = options | {"student": {"model_args": {"widths": [64, 64]}}}
    with pytest.raises(ConfigError, match=r"hydra\.head_init=members"):
        prepare(build_config(other), digits)


@pytest.mark.parametrize(
    ("method", "said"),
    [
        ("kd+mixup", "kd+mixup: perturbation.pool=auto: 3 copies"),
        ("latentbe", "latentbe: perturbation.pool=auto: live (its inputs probe the student"),
    ],
)
def test_the_log_says_what_auto_pooled_and_what_ran_live(digits, caplog, method, said):
    config = {"members": 2, "student": {"epochs": 1}, "model_args": {"widths": [8]}}
    setup = prepare(build_config(config | {"methods": [method]}), digits)
    torch.manual_seed(0)
    teacher = DeepEnsemble([create_model(setup.teacher_spec) for _ in range(2)]).eval()
    with caplog.at_level("INFO", logger="ensemble_distill.engine"):
        engine.distill_student(setup, teacher, method, engine.teacher_train_outputs(setup, teacher))
    assert said in caplog.text
