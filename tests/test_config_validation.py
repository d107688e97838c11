"""Every bad value of every config key is refused: one line on stderr, exit 2, OUT not created.

The config's leaf keys are enumerated from the dataclasses (``Config`` and its sections), so a
key added later without a bad value in :data:`BAD` fails :func:`test_every_key_has_a_bad_value`.
"""

from __future__ import annotations

import dataclasses
import time
import typing
from collections.abc import Iterator
from typing import Any

import pytest

from ensemble_distill import cli, out_folder, pipeline
from ensemble_distill.config import Config, OptimConfig, build_config, load_config
from ensemble_distill.errors import ConfigError
from ensemble_distill.methods.endd import EnDConfig
from ensemble_distill.methods.hydra import HydraConfig
from ensemble_distill.methods.kd import KDConfig
from ensemble_distill.options import InvalidValue

HUGE = 10**20  # past any torch seed (torch.manual_seed takes < 2**64; members use seed*1000+m)


# Dotted key -> bad values, each a `key=value` override (or `(override, text)` where the error
# names the offending value rather than the key). Wrong type, out of range or unknown choice.
BAD: dict[str, list] = {
    "dataset": ["dataset=nope", "dataset=5"],
    "dataset_args": ["dataset_args={x: 1}", "dataset_args=[1]"],
    "task": ["task=bogus", "task=1"],
    "data_dir": ["data_dir=5", "data_dir=[a]"],  # any string is a valid folder
    "download": ["download=maybe", "download=1"],  # any bool is valid
    "data_identity": ["data_identity=abc", "data_identity=5"],  # only what a run records
    "distill_data_identity": ["distill_data_identity=3 files", "distill_data_identity=[a]"],
    "ood": ["ood=5", "ood=[a]"],  # a name or folder is checked when the data is loaded
    "ood_identity": ["ood_identity=abc", "ood_identity=5"],  # only what a run records
    "distill_data": [
        "distill_data=nope",
        "distill_data=5",
        "distill_data=digits",  # the run's own dataset: the default
        "distill_data=missing.npz",
    ],
    "val_fraction": ["val_fraction=1", "val_fraction=0", "val_fraction=x"],
    "split_seed": [
        "split_seed=-1",
        f"split_seed={HUGE}",
    ],
    "seed": [
        "seed=-1",
        "seed=1.5",
        f"seed={HUGE}",
    ],
    "device": ["device=tpu", "device=cpu:abc", "device=5"],
    "precision": ["precision=fp8"],
    "memory_format": ["memory_format=nhwc", "memory_format=1"],
    "compile": ["compile=maybe", "compile=1"],
    "tensorboard": ["tensorboard=maybe", "tensorboard=1"],
    "model": ["model=nope"],
    "model_args": [
        "model_args={nope: 1}",
        "model_args=[1]",
        "model_args={widths: 3}",
        "model_args={widths: [-1]}",
        "model_args={widths: [0]}",
    ],
    "members": ["members=0", "members=three", "members=true"],
    "epochs": ["epochs=0", "epochs=2.5"],
    "batch_size": ["batch_size=0"],
    "methods": ["methods=[nope]", "methods=[kd,kd]", "methods=[kd+nope]", "methods=kd"],
    "optim.name": ["optim.name=bogus"],
    "optim.lr": ["optim.lr=0", "optim.lr=nan", "optim.lr=x"],
    "optim.weight_decay": ["optim.weight_decay=-1"],
    "optim.momentum": ["optim.momentum=2", "optim.momentum=-0.1"],
    "optim.schedule": ["optim.schedule=bogus"],
    "optim.warmup_fraction": ["optim.warmup_fraction=1", "optim.warmup_fraction=-0.1"],
    "teacher.vectorize": ["teacher.vectorize=maybe"],
    "teacher.members": ["teacher.members=[]", "teacher.members=3"],
    "teacher.members_sha256": ["teacher.members_sha256=[abc]"],
    "teacher.augment_shift": ["teacher.augment_shift=-1", "teacher.augment_shift=two"],
    "student.model": ["student.model=nope", "student.model=5"],
    "student.model_args": [
        ("student.model_args={nope: 1}", "{'nope': 1}"),
        "student.model_args=[1]",
        "student.model_args={widths: [-1]}",
        "student.model_args={widths: [0]}",
    ],
    "student.head": [
        "student.head=fc",  # the default model, mlp, is registered: it has its own head
        "student.head=fc..out",
        "student.head=[fc]",
    ],
    "student.epochs": ["student.epochs=0", "student.epochs=x"],
    "student.epochs_multiple": ["student.epochs_multiple=0", "student.epochs_multiple=x"],
    "student.lr": ["student.lr=0", "student.lr=x"],
    "student.weight_decay": ["student.weight_decay=-1"],
    "student.schedule": ["student.schedule=bogus"],
    "student.init": [
        "student.init=bogus",
        "student.init=weights.pt",  # a pickle: refused, whatever it holds
        "student.init=missing.safetensors",  # read when the run is prepared
    ],
    "perturbation.eta": ["perturbation.eta=-1"],
    "perturbation.temperature": ["perturbation.temperature=0"],
    "perturbation.mixup_alpha": ["perturbation.mixup_alpha=0"],
    "perturbation.max_shift": ["perturbation.max_shift=-1", "perturbation.max_shift=1.5"],
    "perturbation.pool": ["perturbation.pool=-1", "perturbation.pool=1.5"],
    "perturbation.patch": ["perturbation.patch=0", "perturbation.patch=2.5"],
    "perturbation.mixture": [
        ("perturbation.mixture={gaussian: -1}", "perturbation.mixture.gaussian"),
        ("perturbation.mixture={nope: 1}", "perturbation.mixture.nope"),
        "perturbation.mixture={mixup: 0}",
        "perturbation.mixture=[mixup]",
    ],
    "eval.batch_size": ["eval.batch_size=0"],
    "eval.latency_repeats": ["eval.latency_repeats=0"],
    "eval.diversity_etas": [
        "eval.diversity_etas=[-1]",
        "eval.diversity_etas=[.nan]",
        "eval.diversity_etas=0.1",
    ],
    "eval.diversity_examples": ["eval.diversity_examples=0"],
    "eval.corruptions": [
        "eval.corruptions=[rain]",
        "eval.corruptions=[contrast, contrast]",
        "eval.corruptions=contrast",
    ],
    "eval.severities": [
        "eval.severities=[0]",
        "eval.severities=[6]",
        "eval.severities=[]",
        "eval.severities=[1.5]",
    ],
    "kd.alpha": ["kd.alpha=2", "kd.alpha=-0.1"],
    "kd.temperature": ["kd.temperature=0"],
    "hydra.head_widths": ["hydra.head_widths=[0]", "hydra.head_widths=[1.5]"],
    "hydra.temperature": ["hydra.temperature=0"],
    "hydra.alpha": ["hydra.alpha=2"],
    "hydra.phase1_fraction": ["hydra.phase1_fraction=1.5", "hydra.phase1_fraction=-0.5"],
    "hydra.head_init": ["hydra.head_init=bogus", "hydra.head_init=members"],  # members: split
    "hydra.head_init_std": ["hydra.head_init_std=0", "hydra.head_init_std=-1"],
    "hydra.adapter_rank": ["hydra.adapter_rank=-1", "hydra.adapter_rank=1.5"],
    "hydra.disagreement_weight": ["hydra.disagreement_weight=-1"],
    "hydra.disagreement_temperature": ["hydra.disagreement_temperature=maybe"],
    "hydra.split": [
        "hydra.split=0",
        "hydra.split=x",
        "hydra.split=1.5",
        "hydra.split=99",  # past the model's weight layers: prepare builds the student on meta
    ],
    "endd.target": ["endd.target=bogus", "endd.target=1"],
    "endd.smoothing": ["endd.smoothing=1", "endd.smoothing=-0.1"],
    "endd.initial_temperature": ["endd.initial_temperature=0.5"],
    "endd.anneal_fraction": ["endd.anneal_fraction=0", "endd.anneal_fraction=1.5"],
    "be.init": ["be.init=bogus"],
    "be.init_std": ["be.init_std=-1"],
    "be.factor_lr_scale": ["be.factor_lr_scale=0"],
    "be.alpha": ["be.alpha=2"],
    "be.temperature": ["be.temperature=0"],
    "be.disagreement_temperature": ["be.disagreement_temperature=2"],
    "latentbe.init": ["latentbe.init=bogus"],
    "latentbe.init_std": ["latentbe.init_std=-1"],
    "latentbe.factor_lr_scale": ["latentbe.factor_lr_scale=0"],
    "latentbe.alpha": ["latentbe.alpha=2"],
    "latentbe.temperature": ["latentbe.temperature=0"],
}


def config_leaves(cls: type = Config, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, declared type) of every non-section field of ``cls``, sections recursed
    into (also the key list of tests/test_config_fuzz.py)."""
    hints = typing.get_type_hints(cls)
    for item in dataclasses.fields(cls):
        kind = hints[item.name]
        if dataclasses.is_dataclass(kind):
            yield from config_leaves(kind, f"{prefix}{item.name}.")
        else:
            yield prefix + item.name, kind


def cases() -> Iterator:
    """(key, override, text the error must contain) for every entry of :data:`BAD`."""
    for key, values in BAD.items():
        for value in values:
            marks = ()
            if isinstance(value, type(pytest.param(None))):
                (value,), marks = value.values, value.marks
            override, text = value if isinstance(value, tuple) else (value, key)
            yield pytest.param(key, override, text, marks=marks, id=override)


def test_every_key_has_a_bad_value():
    keys = [key for key, _ in config_leaves()]
    assert len(keys) == len(set(keys))
    missing = sorted(set(keys) - set(BAD))
    assert not missing, f"config keys without a bad value in BAD: {', '.join(missing)}"
    stale = sorted(set(BAD) - set(keys))
    assert not stale, f"BAD lists keys the config no longer has: {', '.join(stale)}"
    for key, values in BAD.items():
        assert values, f"BAD[{key!r}] is empty"


@pytest.mark.parametrize(("key", "override", "text"), list(cases()))
def test_a_bad_value_is_one_line_exit_2_and_writes_nothing(
    key, override, text, tmp_path, capsys, monkeypatch
):
    assert override.partition("=")[0] == key  # the table entry sets its own key
    out = tmp_path / "out"
    start_output = out_folder.start_output

    def accepted(*args, **kwargs):  # validation is over: stop here instead of training
        start_output(*args, **kwargs)
        pytest.fail(f"{override!r} was accepted: the run started writing {out}")

    monkeypatch.setattr(out_folder, "start_output", accepted)
    code = cli.main(["run", "--out", str(out), "--quiet", override])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), err
    assert lines[0].startswith("ensemble-distill: error: "), err
    assert text in lines[0], f"the error does not name {text!r}: {lines[0]}"
    assert not out.exists()


def test_a_section_built_in_python_validates_itself():
    with pytest.raises(ConfigError, match="'alpha' must lie in"):
        KDConfig(alpha=2)
    with pytest.raises(ConfigError, match=r"'temperature' must be float, got 'hot' \(str\)"):
        KDConfig(temperature="hot")
    with pytest.raises(InvalidValue, match=r"'head_widths\[1\]' must be >= 1"):
        HydraConfig(head_widths=[4, 0])
    with pytest.raises(ConfigError, match="'head_init' must be one of copy, independent"):
        HydraConfig(head_init=True)
    with pytest.raises(ConfigError, match="'split' cannot be combined with hidden head_widths"):
        HydraConfig(split=1, head_widths=[4])
    with pytest.raises(ConfigError, match="'initial_temperature' must be >= 1"):
        EnDConfig(initial_temperature=0.5)
    with pytest.raises(ConfigError, match="'members' must be int"):
        Config(members=True)  # a bool is not an int to a config


def test_build_config_names_the_dotted_key():
    with pytest.raises(InvalidValue, match=r"'kd\.alpha' must lie in") as caught:
        build_config({"kd": {"alpha": 2}})
    assert caught.value.key == "kd.alpha" and caught.value.value == 2.0
    with pytest.raises(ConfigError, match=r"'eval.diversity_etas\[1\]' must be >= 0"):
        build_config({"eval": {"diversity_etas": [0.1, -1]}})


def test_ints_are_accepted_as_floats():
    options = KDConfig(alpha=1, temperature=2)
    assert options.alpha == 1.0 and isinstance(options.alpha, float)
    assert isinstance(options.temperature, float)
    config = build_config({"optim": {"lr": 1}, "val_fraction": "2e-1"})
    assert config.optim.lr == 1.0 and isinstance(config.optim.lr, float)
    assert config.val_fraction == 0.2


def test_a_yaml_boolean_is_accepted_as_the_choice_true_or_false():
    assert load_config(None, ["teacher.vectorize=true"]).teacher.vectorize == "true"
    assert load_config(None, ["teacher.vectorize=false"]).teacher.vectorize == "false"
    assert build_config({"teacher": {"vectorize": True}}).teacher.vectorize == "true"


def test_a_choice_error_lists_the_choices():
    with pytest.raises(ConfigError, match="'name' must be one of adam, sgd, got 'bogus'"):
        OptimConfig(name="bogus")
    with pytest.raises(ConfigError, match=r"'optim\.schedule' must be one of cosine, constant"):
        build_config({"optim": {"schedule": "linear"}})
    with pytest.raises(ConfigError, match="'task' must be one of classification, regression"):
        build_config({"task": "ranking"})


# --------------------------------------------------------------------------------------------
# Round two (issue #18): values and files that used to pass validation or crash with a traceback
# --------------------------------------------------------------------------------------------


def refused_by_the_cli(args: list[str], tmp_path, capsys, monkeypatch) -> str:
    """``run`` with ``args``: exit 2, one stderr line, OUT not created; the line. Validation
    that lets the run through fails the test before any training starts."""
    out = tmp_path / "out"
    real_prepare = pipeline.prepare

    def accepted(*a, **k):
        real_prepare(*a, **k)
        pytest.fail(f"{args} passed validation")

    monkeypatch.setattr(pipeline, "prepare", accepted)
    code = cli.main(["run", "--out", str(out), "--quiet", *args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("ensemble-distill: error: "), err
    assert not out.exists()
    return err


ROUND_TWO = [
    (["optim.lr=-1"], "'optim.lr' must be > 0"),
    (["optim.lr=0"], "'optim.lr' must be > 0"),
    ([f"seed={10**17}"], "'seed' must lie in [0, 2**32)"),
    ([f"split_seed={10**20}"], "'split_seed' must fit in 64 bits"),
    (["model_args={widths: [-3]}"], "fix model_args"),
    (["methods=[hydra]", "hydra.head_widths=[0]"], "'hydra.head_widths[0]' must be >= 1"),
    (["eval.batch_size=0"], "'eval.batch_size' must be >= 1"),
    (["eval.latency_repeats=0"], "'eval.latency_repeats' must be >= 1"),
    (["kd.temperature=.nan"], "'kd.temperature' must be a finite number, got nan"),
    (["kd.temperature=-.inf"], "'kd.temperature' must be a finite number"),
    (["kd.temperature=1e400"], "'kd.temperature' must be a finite number, got '1e400'"),
    (["kd.alpha=१"], "'kd.alpha' must be float"),  # float() reads Devanagari digits
    (["optim.lr=true"], "'optim.lr' must be float, got True (bool)"),
    ([f"members={10**20}"], "'members' must fit in 64 bits"),
    ([f"optim.lr={10**400}"], "'optim.lr' must be a finite number"),
    (["student.epochs_multiple=1e300"], "'student.epochs_multiple' times epochs (40)"),
    (["data_dir=''"], "'data_dir' must be a non-empty text"),
    (["model_args={widths: [.nan]}"], "'model_args.widths[0]' must be a finite number"),
    (["model_args={widths: [3], widths: [4]}"], "key 'widths' is given twice"),
    (['model_args={"a\\nb": 1}'], "'model_args' must map argument names (like widths)"),
    (["model_args={a: &a [1, 1], b: [*a, *a]}"], "bad arguments {'a': [1, 1], 'b': [[1, 1]"),
]


@pytest.mark.parametrize(("args", "text"), ROUND_TWO, ids=[" ".join(a) for a, _ in ROUND_TWO])
def test_round_two_values_are_refused_before_anything_is_written(
    args, text, tmp_path, capsys, monkeypatch
):
    assert text in refused_by_the_cli(args, tmp_path, capsys, monkeypatch)


def laughs(depth: int) -> str:
    """A "billion laughs": each level a list of nine aliases of the one before (9**depth)."""
    lines = ["model_args:", '  l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, depth + 1):
        lines.append(f"  l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * 9)}]")
    return "\n".join(lines) + "\n"


def test_yaml_aliases_that_expand_are_refused_at_once(tmp_path, capsys, monkeypatch):
    path = tmp_path / "laughs.yaml"
    path.write_text(laughs(9))  # 9**9 * 8 strings once expanded: minutes and gigabytes
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"aliases \(\*name\) expand to more than 10000"):
        load_config(path)
    flow = "{a: &a [x, x, x, x, x, x, x, x, x, x], b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]"
    flow += ", c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b], d: [*c, *c, *c, *c, *c, *c, *c, *c]}"
    with pytest.raises(ConfigError, match=r"^override 'model_args': its aliases .* expand"):
        load_config(None, [f"model_args={flow}"])
    assert time.perf_counter() - start < 2.0
    err = refused_by_the_cli(["--config", str(path)], tmp_path, capsys, monkeypatch)
    assert len(err) < 300


def test_yaml_aliases_that_refer_to_themselves_or_nest_too_deep_are_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model_args: &m {widths: *m}\n")
    with pytest.raises(ConfigError, match=r"an alias .* refers to a value that contains it"):
        load_config(path)
    path.write_text("model_args: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply to read"):
        load_config(path)


def test_small_yaml_anchors_and_merge_keys_still_work(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "student: {lr: 0.004, model_args: &widths {widths: [32]}}\n"
        "model_args: *widths\n"
        "optim: {<<: {lr: 0.002, name: sgd}, lr: 0.003}\n"  # a merge, then its key: not twice
    )
    config = load_config(path)
    assert config.model_args == {"widths": [32]} == config.student.model_args
    assert (config.optim.lr, config.optim.name) == (0.003, "sgd")


def test_duplicate_yaml_keys_are_refused_naming_the_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("members: 2\nepochs: 1\nmembers: 3\n")
    with pytest.raises(
        ConfigError, match=r"c.yaml: key 'members' is given twice \(again on line 3"
    ):
        load_config(path)
    path.write_text("optim:\n  lr: 0.1\n  lr: 0.2\n")
    with pytest.raises(ConfigError, match="key 'lr' is given twice"):
        load_config(path)


def test_a_config_that_is_not_a_yaml_text_file_is_refused(tmp_path, capsys, monkeypatch):
    binary = tmp_path / "weights.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ConfigError, match=r"weights.bin is not UTF-8 text \(byte 0x80 at offset"):
        load_config(binary)
    with pytest.raises(ConfigError, match="is a folder; give --config the path of a YAML file"):
        load_config(tmp_path)
    refused_by_the_cli(["--config", str(binary)], tmp_path, capsys, monkeypatch)
