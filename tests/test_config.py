import pytest

from ensemble_distill.config import Config, build_config, dump_config, load_config
from ensemble_distill.errors import ConfigError


def test_defaults_round_trip_through_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(Config()))
    assert load_config(path) == Config()


def test_overrides_parse_types_and_nested_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("members: 7\nkd: {alpha: 0.5}\n")
    config = load_config(
        path, ["kd.temperature=2", "methods=[kd]", "members=3", "data_dir=/some/where"]
    )
    assert config.members == 3  # the override wins over the file
    assert config.kd.alpha == 0.5 and config.kd.temperature == 2.0
    assert isinstance(config.kd.temperature, float)  # an int is accepted as a float
    assert config.methods == ["kd"] and config.data_dir == "/some/where"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"membrs": 3}, "did you mean 'members'"),
        ({"kd": {"temp": 1}}, "unknown config key 'kd.temp'"),
        ({"members": "three"}, "'members' must be int"),
        ({"epochs": True}, "'epochs' must be int"),
        ({"methods": "kd"}, "'methods' must be list"),
        ({"methods": [1]}, "'methods[0]' must be str"),
        ({"kd": 3}, "'kd' must be a mapping"),
        ({"student": {"model": 5}}, "'student.model' must be"),
    ],
)
def test_bad_keys_and_types_are_refused(data, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        build_config(data)


def test_bad_override_syntax_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["members"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("members: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


def test_exponent_floats_without_a_dot_are_floats():
    # YAML 1.1 reads 1e-3 as a string; a learning rate written that way must still work.
    config = load_config(None, ["optim.lr=1e-3", "perturbation.eta=4e-2"])
    assert config.optim.lr == 1e-3 and config.perturbation.eta == 0.04
    with pytest.raises(ConfigError, match="must be float"):
        load_config(None, ["optim.lr=nan"])


def test_student_recipe_keys_resolve_against_the_run_keys():
    config = build_config(
        {"epochs": 8, "optim": {"lr": 1e-3}, "student": {"epochs_multiple": 2.5, "lr": 3e-3}}
    )
    assert config.student_epochs() == 20
    assert config.student_optim().lr == 3e-3
    assert config.student_optim().schedule == "onecycle"  # the students' own default
    no_own = build_config({"student": {"schedule": None}})
    assert no_own.student_optim().schedule == no_own.optim.schedule  # null: the run's
    # An absolute number of epochs wins over the multiple.
    assert build_config({"epochs": 8, "student": {"epochs": 3}}).student_epochs() == 3
    assert build_config({"epochs": 8, "student": {"epochs_multiple": 0.01}}).student_epochs() == 1
    with pytest.raises(ConfigError, match=r"'student\.epochs_multiple' must be > 0"):
        build_config({"student": {"epochs_multiple": 0}})


@pytest.mark.parametrize("model", ["resnet20", "cnn", "wrn28"])
def test_a_model_without_model_args_takes_its_own_defaults(tmp_path, model):
    """`model=resnet20` alone must not inherit the mlp's default widths (issue 32)."""
    assert load_config(None, [f"model={model}"]).model_args == {}
    assert load_config(None, [f"model={model}", "model_args={depth: 2}"]).model_args == {"depth": 2}
    assert load_config(None, ["model=mlp"]).model_args == load_config().model_args
    config = tmp_path / "c.yaml"
    config.write_text(f"model: {model}\n")
    assert load_config(config).model_args == {}
