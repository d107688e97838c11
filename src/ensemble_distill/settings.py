"""The settings fingerprints: which config values decide each phase's weights, and whether a
finished checkpoint was trained with this run's.

A finished teacher or student stores its fingerprint (:func:`fingerprint` of
:func:`teacher_keys`, or :func:`student_settings`) in its manifest; a rerun into the same OUT
keeps it only when the fingerprint still matches (:func:`finished`), and a step that only reads
it refuses one of other settings (:func:`require_checkpoint`). The comparison
(:func:`changed_settings`, :func:`same_setting`) reads a key the config gained since the
checkpoint was written as ``config.BEFORE_THE_KEY`` or its default says, and a retired key as
``config.RETIRED`` says, so that an upgrade does not retrain what it did not change.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ensemble_distill.checkpoint import MANIFEST, read_manifest
from ensemble_distill.config import (
    BEFORE_THE_KEY,
    IDENTITY_KEYS,
    RETIRED,
    UNRECORDED,
    RunConfig,
    load_config,
)
from ensemble_distill.data.identity import describe_change
from ensemble_distill.errors import ConfigError

# The keys that decide the teacher's weights.
TEACHER_KEYS = (
    "dataset",
    "dataset_args",
    "data_identity",  # the data files' content (data/identity.py): a grown folder is new data
    "val_fraction",
    "split_seed",
    "seed",
    "model",
    "model_args",
    "members",
    "epochs",
    "batch_size",
    "optim",
    "teacher",
    "precision",  # resolved (engine.resolve_hardware): bf16 rounding changes the weights
    "memory_format",  # so does another convolution algorithm
    "compile",
)
# What decides a teacher loaded from the user's files (``teacher.members``): the files (their
# SHA-256 are in ``teacher``) and the architecture they load into; training keys play no part.
LOADED_TEACHER_KEYS = (
    "dataset",
    "dataset_args",
    "data_identity",
    "val_fraction",
    "split_seed",
    "model",
    "model_args",
    "members",
    "teacher",
)


def teacher_keys(config: RunConfig) -> tuple[str, ...]:
    """The config keys whose values a finished teacher is checked against on a rerun."""
    return LOADED_TEACHER_KEYS if config.teacher.members is not None else TEACHER_KEYS


def fingerprint(config: RunConfig, keys: Sequence[str]) -> dict[str, Any]:
    """The config's values of ``keys`` as JSON values: the settings that decide a phase's
    weights, stored in its finished checkpoint's manifest. A data identity the data do not have
    (built-in or in-memory data) is left out, so such settings read as before the key."""
    values = config.to_dict()
    kept = [key for key in keys if not (key in IDENTITY_KEYS and values[key] is None)]
    return json.loads(json.dumps({key: values[key] for key in kept}))


def student_settings(config: RunConfig, section: str, perturbed: bool) -> dict[str, Any]:
    """What decides a student's weights: its teacher's settings, the student architecture and
    epochs, its method's config section and, if it has them, the perturbation and the
    auxiliary distillation data (``distill_data``, and a file's identity)."""
    keys = (*TEACHER_KEYS, "task", "student", section, *(("perturbation",) if perturbed else ()))
    aux = ("distill_data", "distill_data_identity") if config.distill_data is not None else ()
    return fingerprint(config, (*keys, *aux))


def finished(directory: Path, settings: dict[str, Any], force: bool) -> bool:
    """Whether ``directory`` holds a finished checkpoint trained with ``settings`` (kept).

    Raises:
        ConfigError: it was trained with other settings and ``force`` is not set.
    """
    if force or not (directory / MANIFEST).is_file():
        return False
    changed = changed_settings(directory, settings)
    if changed:
        raise ConfigError(
            f"{directory} was trained with other settings (changed: {changed}); "
            "rerun with --force to retrain it, or use another --out"
        )
    return True


def require_checkpoint(directory: Path, settings: dict[str, Any]) -> None:
    """Refuse a step that reads ``directory`` when its checkpoint is missing or was trained
    with other settings than ``settings`` (its outputs would not be this config's).

    Raises:
        CheckpointError: no finished checkpoint in ``directory``.
        ConfigError: it was trained with other settings.
    """
    changed = changed_settings(directory, settings)
    if changed:
        raise ConfigError(
            f"{directory} was trained with other settings than this run's (changed: "
            f"{changed}); give the values in its {MANIFEST} (check --config, config.yaml and "
            "the key=value overrides), or retrain it with `ensemble-distill run --force`"
        )


def changed_settings(directory: Path, settings: dict[str, Any]) -> str:
    """The keys of ``settings`` that the checkpoint in ``directory`` was trained with other
    values of, comma-separated ('' when none); a changed data identity says how the files
    changed."""
    saved = read_manifest(directory).get("config")
    if saved == settings:
        return ""
    if not isinstance(saved, dict):
        saved = {}
    defaults = fingerprint(load_config(), list(settings))
    changed = sorted(
        key
        for key in settings
        if not same_setting(saved.get(key, MISSING), settings[key], defaults.get(key), key)
    )
    return ", ".join(
        f"{key} ({describe_change(saved.get(key), settings[key])})" if key in IDENTITY_KEYS else key
        for key in changed
    )


MISSING = object()  # a key a saved checkpoint's settings do not have


def same_setting(saved: Any, value: Any, default: Any, key: str) -> bool:
    """``saved == value`` for the (dotted) ``key``, where a key missing from the saved settings
    is one the config gained after that checkpoint was written (``perturbation.pool``,
    ``teacher.members``): it was trained as ``config.BEFORE_THE_KEY`` or the default says; a key
    only the saved settings have must be a ``config.RETIRED`` one that means what ``value`` says."""
    if saved is MISSING:
        saved = BEFORE_THE_KEY.get(key, default)
        if saved is UNRECORDED:
            return True
    if not (isinstance(saved, dict) and isinstance(value, dict) and isinstance(default, dict)):
        return saved == value
    saved = dict(saved)
    for name in set(saved) - set(value):
        replaced_by = RETIRED.get(f"{key}.{name}", {}).get(saved.pop(name))
        if replaced_by is None:
            return False
        saved.setdefault(*replaced_by)
    return all(
        same_setting(saved.get(name, MISSING), item, default.get(name), f"{key}.{name}")
        for name, item in value.items()
    )
