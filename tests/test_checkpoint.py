import json
import pickle

import pytest
import torch

from ensemble_distill.checkpoint import (
    atomic_write,
    check_shapes,
    load_checkpoint,
    save_checkpoint,
)
from ensemble_distill.errors import CheckpointError


def test_round_trip_keeps_tensors_and_manifest(tmp_path):
    state = {"w": torch.randn(3, 4), "n": torch.tensor([5])}
    save_checkpoint(tmp_path, state, {"kind": "test", "members": 2})
    loaded, manifest = load_checkpoint(tmp_path)
    assert manifest["kind"] == "test" and manifest["members"] == 2
    assert torch.equal(loaded["w"], state["w"]) and torch.equal(loaded["n"], state["n"])


def test_tampered_weights_are_refused(tmp_path):
    save_checkpoint(tmp_path, {"w": torch.zeros(4)}, {"kind": "test"})
    path = tmp_path / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match the hash"):
        load_checkpoint(tmp_path)


def test_pickle_payload_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    save_checkpoint(tmp_path, {"w": torch.zeros(1)}, {"kind": "test"})
    payload = pickle.dumps(Exploit())
    (tmp_path / "model.safetensors").write_bytes(payload)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["weights_sha256"] = __import__("hashlib").sha256(payload).hexdigest()
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        load_checkpoint(tmp_path)
    assert not marker.exists()


def test_missing_or_malformed_manifest(tmp_path):
    with pytest.raises(CheckpointError, match=r"manifest\.json missing"):
        load_checkpoint(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format_version": 99}')
    with pytest.raises(CheckpointError, match="format_version"):
        load_checkpoint(tmp_path)


def test_shape_mismatch_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="w is"):
        check_shapes({"w": torch.zeros(2, 3)}, {"w": torch.zeros(3, 2)}, tmp_path)
    with pytest.raises(CheckpointError, match="missing"):
        check_shapes({"w": torch.zeros(1), "b": torch.zeros(1)}, {"w": torch.zeros(1)}, tmp_path)


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    target = tmp_path / "sub" / "f.txt"
    atomic_write(target, "one")
    atomic_write(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["f.txt"]
