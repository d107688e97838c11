"""Fuzzing every reader of a file a user hands us: random, truncated and bit-flipped bytes
either load as valid data or raise our own error type (never anything else, never a pickle).

The number of cases per test is ``FUZZ_EXAMPLES`` (docs/reliability.md quotes the total)."""

import json

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ensemble_distill.checkpoint import load_checkpoint, save_checkpoint
from ensemble_distill.data.idx import parse_images, parse_labels
from ensemble_distill.data.regression import read_numeric_csv
from ensemble_distill.errors import EnsembleDistillError
from ensemble_distill.resume import Position, Progress, load_progress, save_progress

FUZZ_EXAMPLES = 200
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def valid_checkpoint(directory):
    save_checkpoint(directory, {"w": torch.arange(6.0).view(2, 3)}, {"kind": "student"})
    return (directory / "model.safetensors").read_bytes(), (directory / "manifest.json").read_text()


@st.composite
def damaged(draw, original: bytes) -> bytes:
    """``original`` truncated, with bytes flipped, or replaced by random bytes."""
    kind = draw(st.sampled_from(["truncate", "flip", "random"]))
    if kind == "truncate":
        return original[: draw(st.integers(0, max(len(original) - 1, 0)))]
    if kind == "flip":
        data = bytearray(original)
        for position in draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=8)):
            data[position] ^= draw(st.integers(1, 255))
        return bytes(data)
    return draw(st.binary(max_size=512))


@FUZZ
@given(data=st.data())
def test_checkpoint_weights_fuzz(tmp_path_factory, data):
    directory = tmp_path_factory.mktemp("ckpt")
    weights, _ = valid_checkpoint(directory)
    blob = data.draw(damaged(weights))
    (directory / "model.safetensors").write_bytes(blob)
    try:
        state, _ = load_checkpoint(directory)
    except EnsembleDistillError:
        return
    assert blob == weights and torch.equal(state["w"], torch.arange(6.0).view(2, 3))


@FUZZ
@given(data=st.data())
def test_checkpoint_manifest_fuzz(tmp_path_factory, data):
    directory = tmp_path_factory.mktemp("ckpt")
    _, manifest = valid_checkpoint(directory)
    text = data.draw(damaged(manifest.encode()))
    (directory / "manifest.json").write_bytes(text)
    try:
        _, loaded = load_checkpoint(directory)
    except EnsembleDistillError:
        return
    assert loaded["weights_sha256"] == json.loads(manifest)["weights_sha256"]


@FUZZ
@given(blob=st.binary(max_size=2048))
def test_idx_parsers_fuzz(blob):
    for parse in (parse_images, parse_labels):
        try:
            array = parse(blob, "fuzz.idx")
        except EnsembleDistillError:
            continue
        assert array.shape[0] >= 0


@FUZZ
@given(text=st.text(alphabet="0123456789.,-e\n abxy\"'\r", max_size=400))
def test_csv_reader_fuzz(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("csv") / "table.csv"
    path.write_text(text)
    try:
        header, values = read_numeric_csv(path)
    except EnsembleDistillError:
        return
    assert values.shape[1] == len(header)


@FUZZ
@given(data=st.data())
def test_progress_file_fuzz(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("progress") / "phase.safetensors"
    module = torch.nn.Linear(2, 1)
    optimizer = torch.optim.Adam(module.parameters())
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    state = dict(optimizer=optimizer, schedule=schedule, streams=[], settings={"a": 1})
    save_progress(Progress(path, module), **state, position=Position(1, 4, []))
    blob = data.draw(damaged(path.read_bytes()))
    path.write_bytes(blob)
    try:
        position = load_progress(Progress(path, module), **state)
    except EnsembleDistillError:
        return
    assert position is not None and position.epoch == 1
