"""Checkpoints as safetensors + a JSON manifest, written atomically; no pickle anywhere.

Layout of a checkpoint directory::

    DIR/model.safetensors   tensors only (safetensors cannot carry code)
    DIR/manifest.json       what the tensors are: architecture, members, data, metrics, and the
                            SHA-256 of model.safetensors, checked before loading
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load, save
from torch import Tensor

from ensemble_distill.errors import CheckpointError

WEIGHTS = "model.safetensors"
MANIFEST = "manifest.json"
FORMAT_VERSION = 1
# Our temporary files carry this prefix (and end in ``.tmp``), so that a cleanup after a killed
# write can tell them from a user's files: only files this package wrote are ever removed.
TEMPORARY_PREFIX = ".ensemble-distill-"
TEMPORARY_SUFFIX = ".tmp"


def encode_text(text: str) -> bytes:
    """``text`` as UTF-8, with the undecodable bytes of file names kept as they were: under a
    C locale Python reads a name such as ``résumé`` as lone surrogates (``surrogateescape``),
    which plain ``str.encode`` refuses."""
    return text.encode("utf-8", "surrogateescape")


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new, never a part.

    Writes a temporary file in the same folder, fsyncs it, then renames it over ``path``. The
    file gets the permissions a plain ``open`` would give it (0o666 less the umask), not
    ``mkstemp``'s private 0o600, so that a shared results folder stays readable.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = encode_text(data) if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f"{TEMPORARY_PREFIX}{path.name}.", suffix=TEMPORARY_SUFFIX
    )
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except OSError as exc:  # name the file the user asked for, not our temporary one
        Path(tmp).unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def is_temporary(path: Path) -> bool:
    """Whether ``path`` is a temporary file of :func:`atomic_write` (left by a killed write)."""
    name = path.name
    return name.startswith(TEMPORARY_PREFIX) and name.endswith(TEMPORARY_SUFFIX)


def current_umask() -> int:
    """The process umask (reading it means setting it: set it back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_checkpoint(directory: Path, state: dict[str, Tensor], manifest: dict[str, Any]) -> None:
    """Save tensors and manifest; the manifest records the weights' SHA-256."""
    blob = save({k: v.detach().contiguous().cpu() for k, v in state.items()})
    full = {
        "format_version": FORMAT_VERSION,
        **manifest,
        "weights_sha256": hashlib.sha256(blob).hexdigest(),
    }
    atomic_write(directory / WEIGHTS, blob)
    # The manifest goes last: a directory with a manifest has complete weights.
    atomic_write(directory / MANIFEST, json.dumps(full, indent=2))


def load_checkpoint(directory: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read and verify a checkpoint written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: missing files, a manifest that is not JSON, or weights whose hash
            differs from the manifest's (tampered or truncated).
    """
    manifest = read_manifest(directory)
    weights = directory / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{weights} is missing; re-create the checkpoint")
    blob = weights.read_bytes()
    if hashlib.sha256(blob).hexdigest() != manifest.get("weights_sha256"):
        raise CheckpointError(
            f"{weights} does not match the hash in its manifest (tampered or truncated); "
            "re-create the checkpoint"
        )
    try:
        return load(blob), manifest
    except SafetensorError as exc:
        raise CheckpointError(f"{weights} is not a valid safetensors file ({exc})") from None


def read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    if not path.is_file():
        raise CheckpointError(
            f"no checkpoint in {directory} ({MANIFEST} missing); train it first or check the path"
        )
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"{path} is not valid JSON ({exc}); re-create the checkpoint"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} is not an ensemble-distill manifest (format_version {FORMAT_VERSION} expected)"
        )
    return manifest


def check_shapes(expected: dict[str, Tensor], loaded: dict[str, Tensor], where: Path) -> None:
    """Refuse weights whose names, shapes or dtypes differ from the architecture's."""
    missing = sorted(set(expected) - set(loaded))
    extra = sorted(set(loaded) - set(expected))
    if missing or extra:
        raise CheckpointError(
            f"{where}: weights do not fit the architecture in the manifest "
            f"(missing {missing[:3]}, unexpected {extra[:3]})"
        )
    for name, tensor in expected.items():
        got = loaded[name]
        if got.shape != tensor.shape or got.dtype != tensor.dtype:
            raise CheckpointError(
                f"{where}: {name} is {tuple(got.shape)} {got.dtype}, the architecture needs "
                f"{tuple(tensor.shape)} {tensor.dtype}"
            )
