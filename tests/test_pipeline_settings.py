"""A checkpoint's settings against a run's: keys the config gained since it was written."""

import json

import pytest

from ensemble_distill.checkpoint import FORMAT_VERSION, MANIFEST
from ensemble_distill.config import load_config
from ensemble_distill.pipeline import TEACHER_KEYS, changed_settings, fingerprint, student_settings


def saved(tmp_path, settings):
    (tmp_path / MANIFEST).write_text(
        json.dumps({"format_version": FORMAT_VERSION, "config": settings})
    )
    return tmp_path


def without(settings, section, key):
    settings = json.loads(json.dumps(settings))
    del settings[section][key]
    return settings


def test_a_key_added_since_the_checkpoint_counts_as_its_default(tmp_path):
    settings = student_settings(load_config(None, ["methods=[kd+mixup]"]), "kd", perturbed=True)
    older = without(without(settings, "perturbation", "pool"), "teacher", "members")
    assert changed_settings(saved(tmp_path, older), settings) == ""


@pytest.mark.parametrize(
    ("overrides", "changed"),
    [
        (["perturbation.pool=4"], "perturbation"),  # the run asks for a pool: not the default
        (["teacher.vectorize=false"], "teacher"),  # a key both know, changed
    ],
)
def test_a_missing_key_is_not_a_wildcard(tmp_path, overrides, changed):
    config = load_config(None, ["methods=[kd+mixup]", *overrides])
    settings = student_settings(config, "kd", perturbed=True)
    older = without(student_settings(load_config(), "kd", perturbed=True), "perturbation", "pool")
    assert changed_settings(saved(tmp_path, older), settings) == changed


def test_a_key_the_config_no_longer_has_is_a_change(tmp_path):
    settings = fingerprint(load_config(), TEACHER_KEYS)
    older = json.loads(json.dumps(settings))
    older["teacher"]["retired"] = 1
    assert changed_settings(saved(tmp_path, older), settings) == "teacher"
