"""Export a distilled student to one file that outputs its prediction and its uncertainty.

``export_student(STUDENT_DIR, "onnx" | "torchscript", OUT)`` wraps the saved student in an
:class:`UncertaintyHead` and writes one self-contained file whose outputs are, per example,
exactly the quantities :mod:`ensemble_distill.evaluation` scores:

* classification — ``mean_probs`` (batch, classes): p̄ = the members' mean softmax (a
  Dirichlet's mean α/α₀ for EnD²); ``entropy`` (batch,): H[p̄]; ``mutual_information``
  (batch,): H[p̄] − mean_m H[p_m] (0 for one network; the closed form for a Dirichlet);
* regression — ``mean``, ``aleatoric``, ``epistemic`` (batch,) each: μ̄, mean_m σ_m² and
  Var_m μ_m of the members' Gaussians, in the **standardised** target units the student was
  trained on (its manifest does not keep the target statistics; they are copied into the
  metadata from the run's ``results.json`` when it is found, as ``target_mean`` /
  ``target_std``: y = target_mean + target_std · mean, variances × target_std²).

The single input ``x`` is (batch, *input_shape) float32 in the data's own space (images in
[0, 1]: normalisation is inside the model); the batch size is free. The metadata (input
shape, output names, classes, members, method, package version, ...) is embedded in the file
(ONNX ``metadata_props``, a TorchScript extra file ``metadata.json``) and also written next to
it as ``FILE.json``.

How each format is produced: ``torchscript`` by :func:`torch.jit.trace` of the head (no
freezing: it gains nothing here and would let the JIT rewrite the arithmetic); ``onnx`` by
:func:`torch.onnx.export` with the dynamo exporter (torch.export + onnxscript) and a dynamic
batch dimension. Both are written atomically.

The head is written with plain float32 tensor ops and no control flow on data, so it traces
and exports, and it matches evaluation's float64 values to about 1e-6: entropies are taken in
log space (log_softmax / logsumexp rather than xlogy of probabilities), and the Dirichlet's
mutual information, which needs digamma (no ONNX operator), uses the asymptotic series of
ψ(x) − log x (after six recurrence steps below x = 6) in a form free of the cancellation of
large digammas (see :func:`dirichlet_uncertainty`). Hydra's batched heads (``baddbmm``) and
BatchEnsemble layers export unchanged.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import math
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ensemble_distill.checkpoint import MANIFEST, atomic_write, read_manifest
from ensemble_distill.errors import CheckpointError, ConfigError, EnsembleDistillError
from ensemble_distill.evaluation import (
    DIRICHLET,
    GAUSSIAN,
    PROXY_DIRICHLET,
    as_member_logits,
    output_kind,
)
from ensemble_distill.models import gaussian
from ensemble_distill.models.gaussian import gaussian_params

FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}
INPUT_NAME = "x"
CLASSIFICATION_OUTPUTS = ("mean_probs", "entropy", "mutual_information")
REGRESSION_OUTPUTS = ("mean", "aleatoric", "epistemic")
METADATA_FILE = "metadata.json"  # the TorchScript extra file; ONNX: one metadata_props entry
METADATA_KEY = "ensemble_distill"
# From a clone (the package is not on PyPI): the export extra of the checked-out source.
INSTALL_HINT = "pip install -e '.[export]' in your clone of ensemble-distill"
ONNX_MODULES = ("onnx", "onnxruntime", "onnxscript")
# The CLI refuses an export whose outputs differ from PyTorch's by more than this.
VERIFY_TOLERANCE = 1e-4
# Examples traced with: torch.export specialises batch sizes 0 and 1, so trace with another.
TRACE_BATCH = 2


class ExportError(EnsembleDistillError):
    """An export that cannot be made: format, missing dependency, failed verification."""


class UncertaintyHead(nn.Module):
    """A student followed by the uncertainty of :mod:`ensemble_distill.evaluation`, in float32.

    ``forward(x)`` → (mean_probs (B, C), entropy (B,), mutual_information (B,)) for
    classification, (mean (B,), aleatoric (B,), epistemic (B,)) for ``task="regression"``,
    in the target's units: y = ``target_mean`` + ``target_std`` · (standardised output),
    variances times ``target_std``². Which formula applies is fixed at construction (the
    student's ``output_kind``, the task), never decided from the data.
    """

    def __init__(
        self,
        student: nn.Module,
        task: str = "classification",
        target_mean: float = 0.0,
        target_std: float = 1.0,
    ) -> None:
        super().__init__()
        if task not in ("classification", "regression"):
            raise ConfigError(f"task must be classification or regression; got {task!r}")
        self.student = student.eval()
        self.target_mean, self.target_std = float(target_mean), float(target_std)
        self.kind = GAUSSIAN if task == "regression" else output_kind(student)
        self.output_names = REGRESSION_OUTPUTS if task == "regression" else CLASSIFICATION_OUTPUTS

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        outputs = self.student(x).float()
        if self.kind == GAUSSIAN:
            standardised, alea, epi = gaussian_uncertainty(outputs)
            scale = self.target_std**2
            return standardised * self.target_std + self.target_mean, alea * scale, epi * scale
        if self.kind == DIRICHLET:
            return dirichlet_uncertainty(outputs)
        if self.kind == PROXY_DIRICHLET:  # α = e^s + 1; the prediction softmax(s)
            _, entropy, mi = dirichlet_uncertainty(F.softplus(outputs))
            return torch.softmax(outputs, dim=-1), entropy, mi
        return ensemble_uncertainty(outputs)


def ensemble_uncertainty(logits: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Member logits (B, [M,] C) → p̄ (B, C), H[p̄] (B,), MI = H[p̄] − mean_m H[p_m] (B,).

    MI is 0 for a single network's (B, C) logits, and clamped at 0 against rounding, as in
    :func:`ensemble_distill.metrics.mutual_information`.
    """
    single = logits.dim() == 2  # a shape, fixed when traced
    log_p = torch.log_softmax(as_member_logits(logits), dim=-1)  # (B, M, C)
    probs = log_p.exp()
    mean_probs = probs.mean(dim=1)
    # log p̄ = logsumexp_m log p_m − log M: finite where p̄ underflows, so 0 · log 0 = 0.
    log_mean = torch.logsumexp(log_p, dim=1) - math.log(log_p.shape[1])
    entropy = -(mean_probs * log_mean).sum(dim=-1)
    if single:
        return mean_probs, entropy, torch.zeros_like(entropy)
    member_entropy = -(probs * log_p).sum(dim=-1).mean(dim=1)
    return mean_probs, entropy, (entropy - member_entropy).clamp_min(0.0)


def dirichlet_uncertainty(log_alpha: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Log-concentrations (B, C) → mean α/α₀ (B, C), H[α/α₀] (B,), closed-form MI (B,).

    MI = H[p̄] − E_Dir[H[π]] = H[p̄] + Σ_k p̄_k ψ(α_k + 1) − ψ(α₀ + 1)
    (:mod:`ensemble_distill.metrics.dirichlet`), clamped at 0, computed without digamma and
    without cancellation in float32: with φ(a) = ψ(eᵃ + 1) − max(a, 0), bounded in
    [−0.58, 0.43], and Σ_k p̄_k max(a_k, 0) − max(a₀, 0) = Σ_k p̄_k max(−a_k, 0) − H[p̄] when
    a₀ = log α₀ ≥ 0 (0 otherwise),
    MI = (Σ_k p̄_k max(−a_k, 0) if a₀ ≥ 0 else H[p̄]) + Σ_k p̄_k φ(a_k) − φ(a₀).
    """
    log_mean = torch.log_softmax(log_alpha, dim=-1)
    mean_probs = torch.softmax(log_alpha, dim=-1)
    entropy = -(mean_probs * log_mean).sum(dim=-1)
    log_alpha0 = torch.logsumexp(log_alpha, dim=-1)
    large = (mean_probs * torch.relu(-log_alpha)).sum(dim=-1)
    mi = (
        torch.where(log_alpha0 >= 0.0, large, entropy)
        + (mean_probs * _digamma_minus_relu(log_alpha)).sum(dim=-1)
        - _digamma_minus_relu(log_alpha0)
    )
    return mean_probs, entropy, mi.clamp_min(0.0)


def _digamma_minus_relu(log_alpha: Tensor) -> Tensor:
    """φ(a) = ψ(eᵃ + 1) − max(a, 0) = softplus(−|a|) + r(eᵃ + 1), for any a (eᵃ = inf gives
    0): log(1 + α) − max(log α, 0) = softplus(−|log α|), r(x) = ψ(x) − log x
    (:func:`_digamma_remainder`)."""
    return F.softplus(-log_alpha.abs()) + _digamma_remainder(log_alpha.exp() + 1.0)


def _digamma_remainder(x: Tensor) -> Tensor:
    """r(x) = ψ(x) − log x for x ≥ 1, to about 1e-10: the asymptotic series at y ≥ 6, after
    ψ(x) = ψ(x + 6) − Σ_{i<6} 1/(x + i) for x < 6; both branches computed, one selected."""
    small = x < 6.0
    near = x.clamp(max=6.0)  # the recurrence's input, finite wherever it is not selected
    y = torch.where(small, near + 6.0, x)
    inv2 = 1.0 / (y * y)
    # −1/(2y) − 1/(12y²) + 1/(120y⁴) − 1/(252y⁶) + 1/(240y⁸): Bernoulli numbers B₂ … B₈.
    series = -0.5 / y - inv2 * (1 / 12 - inv2 * (1 / 120 - inv2 * (1 / 252 - inv2 / 240)))
    steps = sum(1.0 / (near + float(i)) for i in range(6))
    shift = torch.log((near + 6.0) / near) - steps  # log(x + 6) − log x − Σ 1/(x + i)
    return series + torch.where(small, shift, torch.zeros_like(shift))


def gaussian_uncertainty(outputs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Raw Gaussian outputs (B, [M,] 2) → μ̄, mean_m σ_m² (aleatoric), Var_m μ_m (epistemic),
    (B,) each, as :func:`ensemble_distill.metrics.mixture_moments` (standardised units)."""
    member_means, member_variances = gaussian_params(as_member_logits(outputs))  # (B, M) each
    # sum / M, not .mean(): the ONNX exporter names a value after its op, and an internal
    # value called "mean" would clash with the output of that name.
    members = member_means.shape[1]
    mu = member_means.sum(dim=1) / members
    spread = (member_means - mu.unsqueeze(1)).square().sum(dim=1) / members
    return mu, member_variances.sum(dim=1) / members, spread


def student_task(manifest: dict[str, Any]) -> str:
    """The student's task as saved in its manifest; for students saved before manifests
    recorded it, regression when it outputs the 2 raw Gaussian parameters (no classification
    dataset of this package has 2 classes)."""
    task = manifest.get("task") or (manifest.get("config") or {}).get("task")
    if task in ("classification", "regression"):
        return task
    return (
        "regression" if manifest["model"]["num_classes"] == gaussian.OUTPUTS else "classification"
    )


def check_format(fmt: str) -> None:
    """An ExportError unless ``fmt`` is a known format whose dependencies are installed."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    if fmt == "onnx":
        missing = [name for name in ONNX_MODULES if importlib.util.find_spec(name) is None]
        if missing:
            raise ExportError(
                f"--format onnx needs {', '.join(missing)}, not installed; {INSTALL_HINT}"
            )


def load_for_export(
    student_dir: Path, trust_code: bool = False
) -> tuple[nn.Module, dict[str, Any]]:
    """The saved student (CPU, eval mode) and its manifest; a one-line error otherwise.
    ``trust_code``: as for :func:`ensemble_distill.engine.load_student`."""
    from ensemble_distill.engine import load_student  # heavy imports

    student_dir = Path(student_dir)
    if not (student_dir / MANIFEST).is_file() and (student_dir / "students").is_dir():
        names = sorted(p.name for p in (student_dir / "students").iterdir() if p.is_dir())
        raise CheckpointError(
            f"{student_dir} is a run directory, not a student; pass one of its students: "
            f"{', '.join(str(student_dir / 'students' / n) for n in names) or 'none trained yet'}"
        )
    student = load_student(student_dir, "cpu", trust_code)
    return student, read_manifest(student_dir)


def export_metadata(
    manifest: dict[str, Any], head: UncertaintyHead, fmt: str, task: str
) -> dict[str, Any]:
    """What a user of the exported file needs to know: input, outputs and where they came
    from."""
    spec = manifest["model"]
    info: dict[str, Any] = {
        "format": fmt,
        "task": task,
        "method": manifest["method"],
        "output_kind": head.kind,
        "members": int(manifest["members"]),
        "dataset": manifest.get("dataset"),
        "input_name": INPUT_NAME,
        "input_shape": ["batch", *spec["input_shape"]],
        "input_dtype": "float32",
        "output_names": list(head.output_names),
        "classes": spec["num_classes"] if task == "classification" else None,
        "weights_sha256": manifest.get("weights_sha256"),
        "ensemble_distill_version": package_version(),
        "torch_version": torch.__version__,
    }
    if task == "classification":
        info["output_shapes"] = [["batch", spec["num_classes"]], ["batch"], ["batch"]]
        info["class_names"] = manifest.get("class_names")  # save_student(class_names=...)
    else:
        info["output_shapes"] = [["batch"], ["batch"], ["batch"]]
        info["target_mean"], info["target_std"] = target_scale(manifest)
        info["units"] = "the target's own units (mean, variances)"
    return info


def target_scale(manifest: dict[str, Any]) -> tuple[float, float]:
    """(target_mean, target_std) a regression student's outputs are scaled back with;
    (0, 1), i.e. standardised units, for students saved without them."""
    return float(manifest.get("target_mean", 0.0)), float(manifest.get("target_std", 1.0))


def package_version() -> str:
    try:
        return metadata.version("ensemble-distill")
    except metadata.PackageNotFoundError:
        return "unknown"


def export_student(
    student_dir: Path, fmt: str, out: Path | None = None, trust_code: bool = False
) -> Path:
    """Export the student saved in ``student_dir`` as ``fmt`` to ``out`` (default
    ``student_dir/student.onnx`` or ``student.pt``) with its metadata in ``out``.json.
    ``trust_code``: build a model its manifest names by import path (that runs its code).

    Raises:
        ExportError: unknown format, a missing optional dependency, or the exporter failed.
        CheckpointError: ``student_dir`` does not hold a student.
    """
    check_format(fmt)
    student_dir = Path(student_dir)
    student, manifest = load_for_export(student_dir, trust_code)
    task = student_task(manifest)
    head = UncertaintyHead(student, task, *target_scale(manifest)).eval()
    out = Path(out) if out is not None else student_dir / f"student{SUFFIXES[fmt]}"
    info = export_metadata(manifest, head, fmt, task)
    example = example_inputs(manifest["model"]["input_shape"], TRACE_BATCH)
    convert = _onnx_bytes if fmt == "onnx" else _torchscript
    try:
        with torch.no_grad(), quiet_torch():
            blob = convert(head, example, info)
    except Exception as exc:  # the exporter's own errors span many lines and types
        first = next(iter(str(exc).strip().splitlines()), "")
        other = "torchscript" if fmt == "onnx" else "onnx"
        raise ExportError(
            f"the {fmt} exporter failed on {student_dir} ({type(exc).__name__}: {first[:200]}); "
            f"try --format {other}"
        ) from exc
    atomic_write(out, blob)
    atomic_write(sidecar_path(out), json.dumps(info, indent=2))
    return out


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def example_inputs(input_shape: Sequence[int], batch: int, seed: int = 0) -> Tensor:
    """(batch, *input_shape) float32 uniform in [0, 1), reproducible."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, *input_shape, generator=generator)


# Loggers of the ONNX exporter that report its passes (INFO) and absent torchvision ops.
QUIET_LOGGERS = {
    "torch.onnx": logging.ERROR,
    "onnxscript": logging.WARNING,
    "onnx_ir": logging.WARNING,
}


@contextlib.contextmanager
def quiet_torch() -> Iterator[None]:
    """Silence what tracing, exporting and loading print that a user cannot act on: tracer
    warnings about shapes (the batch is the only free dimension, and is checked), TorchScript's
    deprecation notices, the ONNX exporter's notes on its optimisation passes."""
    loggers = {logging.getLogger(name): level for name, level in QUIET_LOGGERS.items()}
    previous = {logger: logger.level for logger in loggers}
    for logger, level in loggers.items():
        logger.setLevel(max(level, logger.level))
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated")
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)`")
            yield
    finally:
        for logger, level in previous.items():
            logger.setLevel(level)


def _torchscript(head: UncertaintyHead, example: Tensor, info: dict[str, Any]) -> bytes:
    traced = torch.jit.trace(head, (example,), check_trace=False)
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer, _extra_files={METADATA_FILE: json.dumps(info)})
    return buffer.getvalue()


def _onnx_bytes(head: UncertaintyHead, example: Tensor, info: dict[str, Any]) -> bytes:
    import onnx

    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(
        head,
        (example,),
        dynamo=True,
        input_names=[INPUT_NAME],
        output_names=list(head.output_names),
        dynamic_shapes={"x": {0: batch}},
        verbose=False,
    )
    model = program.model_proto
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(info)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def read_metadata(path: Path) -> dict[str, Any]:
    """The metadata embedded in an exported file (falls back on its ``.json`` sidecar)."""
    path = Path(path)
    try:
        if not is_torchscript(path):
            import onnx

            model = onnx.load(str(path), load_external_data=False)
            for entry in model.metadata_props:
                if entry.key == METADATA_KEY:
                    return json.loads(entry.value)
        else:
            files = {METADATA_FILE: ""}
            with quiet_torch():
                torch.jit.load(str(path), map_location="cpu", _extra_files=files)
            if files[METADATA_FILE]:
                return json.loads(files[METADATA_FILE])
    except (ImportError, RuntimeError, ValueError):
        pass
    return json.loads(sidecar_path(path).read_text())


def is_torchscript(path: Path) -> bool:
    """TorchScript files are zip archives, ONNX files protobuf: tell them apart by content."""
    return zipfile.is_zipfile(path)


def run_exported(path: Path, x: Tensor) -> tuple[Tensor, ...]:
    """The exported file's outputs on ``x``: onnxruntime for ONNX, torch.jit.load for
    TorchScript (whatever the file's name)."""
    path = Path(path)
    if not is_torchscript(path):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        outputs = session.run(None, {INPUT_NAME: x.float().numpy()})
        return tuple(torch.from_numpy(value) for value in outputs)
    with quiet_torch():
        module = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad(), quiet_torch():
        return tuple(module(x.float()))


def verify_export(path: Path, student: nn.Module, x: Tensor, task: str | None = None) -> float:
    """Max difference between the exported file's outputs on ``x`` and those of
    :class:`UncertaintyHead` on ``student`` (task from the file's metadata unless given):
    absolute where |value| ≤ 1, relative above."""
    info = read_metadata(path)
    task = task or info["task"]
    scale = (info.get("target_mean") or 0.0, info.get("target_std") or 1.0)
    head = UncertaintyHead(student, task, *scale).eval()
    with torch.no_grad():
        expected = head(x.float())
    got = run_exported(path, x)
    if len(got) != len(expected):
        raise ExportError(f"{path} has {len(got)} outputs, expected {len(expected)}")
    # Absolute for values up to 1 (probabilities, entropies), relative above: float32 has
    # ~7 digits, so a regression variance of ~10³ cannot agree to 1e-5 in absolute terms.
    return max(
        float(((a.double() - b.double()).abs() / b.double().abs().clamp_min(1.0)).max())
        if a.numel()
        else 0.0
        for a, b in zip(got, expected, strict=True)
    )


def export_and_verify(
    student_dir: Path,
    fmt: str,
    out: Path | None = None,
    examples: int = 5,
    trust_code: bool = False,
) -> tuple[Path, float]:
    """:func:`export_student`, then :func:`verify_export` on ``examples`` random inputs (a
    batch size other than the traced one); ExportError beyond :data:`VERIFY_TOLERANCE`."""
    path = export_student(student_dir, fmt, out, trust_code)
    student, manifest = load_for_export(Path(student_dir), trust_code)
    x = example_inputs(manifest["model"]["input_shape"], examples, seed=1)
    difference = verify_export(path, student, x)
    if not difference <= VERIFY_TOLERANCE:
        raise ExportError(
            f"{path} differs from the PyTorch student by {difference:.3g} "
            f"(> {VERIFY_TOLERANCE:g}); do not use it, and report the model that caused this"
        )
    return path, difference


__all__ = [
    "CLASSIFICATION_OUTPUTS",
    "FORMATS",
    "REGRESSION_OUTPUTS",
    "ExportError",
    "UncertaintyHead",
    "export_and_verify",
    "export_student",
    "read_metadata",
    "run_exported",
    "verify_export",
]
