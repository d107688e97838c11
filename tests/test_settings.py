"""A checkpoint's settings against a run's: keys the config gained since it was written."""

import json

import pytest

from ensemble_distill.checkpoint import FORMAT_VERSION, MANIFEST
from ensemble_distill.config import load_config
from ensemble_distill.settings import TEACHER_KEYS, changed_settings, fingerprint, student_settings


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


@pytest.mark.parametrize(
    ("key", "now", "changed"),
    [
        ("memory_format", "contiguous", ""),  # what every run did before the key existed
        ("memory_format", "channels_last", "memory_format"),
    ],
)
def test_a_key_whose_default_changed_counts_as_what_runs_did_before_it(tmp_path, key, now, changed):
    settings = fingerprint(load_config(None, [f"{key}={now}"]), TEACHER_KEYS)
    older = {name: value for name, value in settings.items() if name != key}
    assert changed_settings(saved(tmp_path, older), settings) == changed


@pytest.mark.parametrize(("head_init", "changed"), [("copy", ""), ("independent", "hydra")])
def test_hydra_students_from_before_head_init_were_copied_heads(tmp_path, head_init, changed):
    config = load_config(None, ["methods=[hydra]", f"hydra.head_init={head_init}"])
    settings = student_settings(config, "hydra", perturbed=False)
    older = without(settings, "hydra", "head_init")
    assert changed_settings(saved(tmp_path, older), settings) == changed


@pytest.mark.parametrize(
    ("copy_head", "head_init", "changed"),
    [(True, "copy", ""), (False, "independent", ""), (True, "independent", "hydra")],
)
def test_the_retired_copy_head_means_its_head_init(tmp_path, copy_head, head_init, changed):
    config = load_config(None, ["methods=[hydra]", f"hydra.head_init={head_init}"])
    settings = student_settings(config, "hydra", perturbed=False)
    older = without(settings, "hydra", "head_init")
    older["hydra"]["copy_head"] = copy_head
    assert changed_settings(saved(tmp_path, older), settings) == changed
