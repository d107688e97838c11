"""Fuzzing every config key: random values of the wrong type, NaN / ±inf, integers past int64,
empty or blank text, empty and nested junk.

* Each key's clearly bad values (drawn from its declared type) raise our ``ConfigError`` naming
  the key — in Python, as the API and ``--config`` build the config.
* Any junk at all, at any key, either builds a config that the engine's checks (``prepare``,
  architectures on the meta device) accept and that survives ``config.yaml`` unchanged, or
  raises ``ConfigError`` — never another exception.
* A sample of the bad values through the real command line: exit 2, one stderr line, OUT not
  created.

The keys are enumerated from the dataclasses, so a key added later is fuzzed too. The whole file
runs in about ten seconds (``CASES`` below).
"""

from __future__ import annotations

import math
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_config_validation import config_leaves

from ensemble_distill import cli, engine, pipeline
from ensemble_distill.config import build_config, dump_config, load_config
from ensemble_distill.data import create_dataset
from ensemble_distill.errors import ConfigError
from ensemble_distill.options import is_number

CASES = {"bad": 600, "junk": 400, "cli": 30}


KEYS = dict(config_leaves())

NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])
HUGE_INTS = st.one_of(st.integers(min_value=2**63), st.integers(max_value=-(2**63) - 1))
# Texts Python's float() or int() might read, but a config must not: none is a number here.
NOT_NUMBERS = st.sampled_from(["", " ", "abc", "1,5", "1_000", "١٢", "nan", "-inf", "1e400"])
BLANK = st.sampled_from(["", "   ", "\t", "a\x00b"])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=6))
NESTED = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
CONTAINERS = st.one_of(
    st.lists(NESTED, max_size=3), st.dictionaries(st.text(max_size=4), NESTED, max_size=3)
)


def bad_for(kind: Any) -> st.SearchStrategy:
    """Values that cannot be of type ``kind`` (``X | None``: of X, None excluded)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        options = [option for option in args if option is not type(None)]
        if options == [list[str], str]:  # file names: one, or a list of them
            return st.one_of(
                st.integers(),
                st.floats(),
                st.booleans(),
                st.dictionaries(st.text(max_size=3), NESTED, min_size=1, max_size=2),
                st.lists(bad_for(str).filter(lambda v: v is not None), min_size=1, max_size=3),
            )
        if options == [str, int]:  # an attribute path, or an nn.Sequential index (student.head)
            blank = st.one_of(BLANK, st.integers(max_value=-1), st.floats(), st.booleans())
            return st.one_of(blank, CONTAINERS)
        if len(options) == 2 and typing.get_origin(options[1]) is typing.Literal:
            # a number or a choice (pool: auto): neither a valid number nor the choice's text
            number, choice = options
            choices = {str(c).lower() for c in typing.get_args(choice)}
            text = st.text(max_size=8).filter(lambda t: t.lower() not in choices)
            return st.one_of(
                bad_for(number).filter(lambda v: v is not None),
                text.filter(lambda t: not is_number(t)),
            )
        assert len(options) == 1, f"extend bad_for for the union {kind}"
        return bad_for(options[0]).filter(lambda value: value is not None)
    if origin is typing.Literal:
        choices = {str(choice).lower() for choice in args}
        text = st.text(max_size=8).filter(lambda t: t not in args and t.lower() not in choices)
        return st.one_of(st.none(), text, st.integers(), st.floats(), CONTAINERS)
    if origin is list:
        return st.one_of(
            st.none(),
            st.text(max_size=4),
            st.integers(),
            st.dictionaries(st.text(max_size=3), NESTED, max_size=2),
            st.lists(bad_for(args[0]).filter(lambda v: v is not None), min_size=1, max_size=3),
        )
    by_type = {
        int: st.one_of(HUGE_INTS, st.floats(), NOT_NUMBERS, st.booleans(), CONTAINERS),
        float: st.one_of(
            NON_FINITE,
            st.integers(min_value=10**309, max_value=10**400),
            NOT_NUMBERS,
            st.booleans(),
            CONTAINERS,
        ),
        bool: st.one_of(st.integers(), st.floats(), st.text(max_size=5), CONTAINERS),
        str: st.one_of(BLANK, st.integers(), st.floats(), st.booleans(), CONTAINERS),
        dict: st.one_of(
            st.text(max_size=4),
            st.integers(),
            st.lists(NESTED, max_size=3),
            st.dictionaries(st.text(min_size=1, max_size=4), NON_FINITE, min_size=1, max_size=2),
        ),
    }
    return st.one_of(st.none(), by_type[kind])


def key_and_bad_value() -> st.SearchStrategy:
    return st.sampled_from(sorted(KEYS)).flatmap(
        lambda key: st.tuples(st.just(key), bad_for(KEYS[key]))
    )


def nested(key: str, value: Any) -> dict[str, Any]:
    """``{"kd": {"alpha": value}}`` for ``kd.alpha``."""
    *sections, leaf = key.split(".")
    data: dict[str, Any] = {leaf: value}
    for section in reversed(sections):
        data = {section: data}
    return data


FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def test_every_key_is_fuzzed():
    assert len(KEYS) > 50  # every section's keys, not only the top level
    for kind in KEYS.values():
        bad_for(kind)  # a type bad_for does not know fails here


@settings(FUZZ, max_examples=CASES["bad"])
@given(case=key_and_bad_value())
def test_a_bad_value_of_any_key_is_a_config_error_naming_the_key(case):
    key, value = case
    with pytest.raises(ConfigError) as caught:
        build_config(nested(key, value))
    assert key in str(caught.value), str(caught.value)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 1000


@pytest.fixture(scope="module")
def digits():
    return create_dataset("digits", split_seed=0, val_fraction=0.1)


@settings(FUZZ, max_examples=CASES["junk"])
@given(key=st.sampled_from(sorted(KEYS)), value=NESTED)
# Found by this test: heads too big for any tensor, met while sizing Hydra's ``auto`` adapters.
@example(key="hydra.head_widths", value=[679069643, 679118271])
def test_any_junk_is_accepted_whole_or_refused_as_a_config_error(digits, key, value):
    try:
        setup = engine.prepare(build_config(nested(key, value)), digits)
    except ConfigError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 1000, str(exc)
        return
    saved = yaml.safe_load(dump_config(setup.config))  # config.yaml, read back
    assert build_config(saved).to_dict() == setup.config.to_dict()


def as_override(key: str, value: Any) -> str | None:
    """``key=TEXT`` that the command line parses back to ``value``; None where YAML cannot
    spell ``value`` in one line that reads back the same."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6, allow_unicode=True)
    text = text.removesuffix("\n").removesuffix("\n...").strip()
    if "\n" in text or not text:
        return None
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    same = repr(parsed) == repr(value) and type(parsed) is type(value)
    return f"{key}={text}" if same else None


@settings(FUZZ, max_examples=CASES["cli"])
@given(case=key_and_bad_value())
def test_bad_values_through_the_command_line(case, tmp_path_factory, capsys, monkeypatch):
    override = as_override(*case)
    if override is None:
        return
    out = Path(tmp_path_factory.mktemp("fuzz")) / "out"
    monkeypatch.setattr(pipeline, "prepare", refuse_training)
    code = cli.main(["run", "--out", str(out), "--quiet", override])
    err = capsys.readouterr().err
    assert code == 2, (override, err)
    assert len(err.splitlines()) == 1 and err.startswith("ensemble-distill: error: "), err
    assert not out.exists()
    with pytest.raises(ConfigError):
        load_config(None, [override])


def refuse_training(*args: Any, **kwargs: Any) -> None:
    pytest.fail("a bad value passed validation and the run would start")
