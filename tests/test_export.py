"""``ensemble-distill export``: one file per student whose outputs equal evaluation's."""

import importlib.util
import json

import pytest
import torch

from ensemble_distill import export
from ensemble_distill.cli import main
from ensemble_distill.errors import ConfigError
from ensemble_distill.evaluation import (
    PROXY_DIRICHLET,
    gaussian_predictive,
    output_kind,
    predictive,
)
from ensemble_distill.export import (
    TRACE_BATCH,
    UncertaintyHead,
    dirichlet_uncertainty,
    ensemble_uncertainty,
    example_inputs,
    export_student,
    load_for_export,
    read_metadata,
    run_exported,
    verify_export,
)
from ensemble_distill.methods.endd import PriorNetwork

TINY = ["members=2", "epochs=1", "model_args={widths: [8]}", "eval.latency_repeats=1"]
METHODS = ["kd", "hydra", "endd", "be"]
TOLERANCE = 1e-5  # the bar, for exported vs PyTorch and for float32 vs float64
HAS_ONNX = all(importlib.util.find_spec(name) for name in export.ONNX_MODULES)
FORMATS = [
    pytest.param("onnx", marks=pytest.mark.skipif(not HAS_ONNX, reason="pip install '.[export]'")),
    "torchscript",
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "run"
    methods = f"methods=[{', '.join(METHODS)}]"
    assert main(["run", "--out", str(out), "--quiet", *TINY, methods]) == 0
    return out


@pytest.fixture(scope="module")
def cnn_run_dir(tmp_path_factory):
    """A BatchEnsemble student of a convolutional network: its BEConv2d splits the tiled batch
    per member, which must stay symbolic in the batch size for the export."""
    out = tmp_path_factory.mktemp("export") / "cnn"
    args = ["model=cnn", "model_args={channels: [4], hidden: 8}", "methods=[be]"]
    assert main(["run", "--out", str(out), "--quiet", *TINY, *args]) == 0
    return out


@pytest.fixture(scope="module")
def regression_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "regression"
    args = ["dataset=toy-gap", "methods=[kd, hydra]"]
    assert main(["run", "--out", str(out), "--quiet", *TINY, *args]) == 0
    return out


def max_diff(a, b):
    return float((a.detach().double() - b.detach().double()).abs().max())


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("method", METHODS)
def test_export_matches_the_student_and_the_evaluation(run_dir, tmp_path, method, fmt):
    student_dir = run_dir / "students" / method
    path = export_student(student_dir, fmt, tmp_path / f"{method}.{fmt}")
    info = read_metadata(path)
    assert json.loads((tmp_path / f"{method}.{fmt}.json").read_text()) == info
    assert info["method"] == method and info["task"] == "classification"
    assert info["classes"] == 10 and info["members"] == 2 and info["input_shape"][0] == "batch"
    assert info["output_names"] == ["mean_probs", "entropy", "mutual_information"]
    student, manifest = load_for_export(student_dir)
    shape = manifest["model"]["input_shape"]
    for batch in (7, 1):  # neither is the traced batch size
        assert batch != TRACE_BATCH
        x = example_inputs(shape, batch, seed=batch)
        assert verify_export(path, student, x) <= TOLERANCE
        probs, entropy, mi = run_exported(path, x)
        assert probs.shape == (batch, 10) and entropy.shape == mi.shape == (batch,)
        assert probs.dtype == entropy.dtype == mi.dtype == torch.float32
        with torch.no_grad():
            reference = predictive(student(x), output_kind(student))  # float64
        assert max_diff(probs, reference.probs.mean(dim=1)) <= TOLERANCE
        assert max_diff(entropy, reference.entropy) <= TOLERANCE
        assert max_diff(mi, reference.mi) <= TOLERANCE
        if method == "kd":
            assert (mi == 0).all()


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_convolutional_batchensemble_exports_for_any_batch_size(cnn_run_dir, tmp_path, fmt):
    student_dir = cnn_run_dir / "students" / "be"
    path = export_student(student_dir, fmt, tmp_path / f"be.{fmt}")
    student, manifest = load_for_export(student_dir)
    for batch in (7, 1):  # neither is the traced batch size
        x = example_inputs(manifest["model"]["input_shape"], batch, seed=batch)
        assert verify_export(path, student, x) <= TOLERANCE


@pytest.mark.parametrize("fmt", FORMATS)
def test_regression_students_export_mean_and_variances(regression_dir, tmp_path, fmt):
    results = json.loads((regression_dir / "results.json").read_text())
    for method in ("kd", "hydra"):
        student_dir = regression_dir / "students" / method
        path = export_student(student_dir, fmt, tmp_path / method)
        info = read_metadata(path)
        assert info["task"] == "regression" and info["classes"] is None
        assert info["output_names"] == ["mean", "aleatoric", "epistemic"]
        assert info["target_mean"] == results["target_mean"]  # outputs in the target's units
        student, _ = load_for_export(student_dir)
        x = torch.linspace(-3, 3, 11).unsqueeze(1)
        assert verify_export(path, student, x) <= TOLERANCE
        mean, aleatoric, epistemic = run_exported(path, x)
        with torch.no_grad():  # float64, in the target's units
            reference = gaussian_predictive(
                student(x), results["target_mean"], results["target_std"]
            )
        means, variances = reference.means, reference.variances
        # float32 in the target's units (variances ~10³): relative, as float32 allows.
        for got, want in (
            (mean, means.mean(dim=1)),
            (aleatoric, variances.mean(dim=1)),
            (epistemic, reference.epistemic),
        ):
            torch.testing.assert_close(got.double(), want, rtol=TOLERANCE, atol=TOLERANCE)
        assert (epistemic == 0).all() if method == "kd" else (epistemic > 0).all()


@pytest.mark.parametrize("fmt", FORMATS)
def test_cli_exports_verifies_and_prints_the_path(run_dir, capsys, fmt):
    assert main(["export", str(run_dir / "students" / "hydra"), "--format", fmt]) == 0
    suffix = ".onnx" if fmt == "onnx" else ".pt"
    path = run_dir / "students" / "hydra" / f"student{suffix}"
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(path) and path.is_file()
    assert float(lines[1].rpartition(": ")[2]) <= TOLERANCE
    assert not list(path.parent.glob(".*.tmp"))


def test_cli_out_may_have_any_name(run_dir, tmp_path, capsys):
    out = tmp_path / "deep" / "model.bin"
    args = ["export", str(run_dir / "students" / "be"), "--format", "torchscript"]
    assert main([*args, "--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith(str(out)) and out.is_file()
    assert read_metadata(out)["method"] == "be"


def refused(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ensemble-distill: error:") and message in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_unknown_format_is_one_line(run_dir, tmp_path, capsys):
    out = tmp_path / "x.tflite"
    args = ["export", str(run_dir / "students" / "kd"), "--out", str(out)]
    refused(capsys, [*args, "--format", "tflite"], "unknown export format 'tflite'")
    assert not out.exists()


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("missing", "no checkpoint in"),
        ("teacher", "not a student"),
        (".", "is a run directory, not a student"),
    ],
)
def test_a_directory_that_is_not_a_student_is_one_line(run_dir, tmp_path, capsys, where, message):
    out = tmp_path / "x.pt"
    args = ["export", str(run_dir / where), "--format", "torchscript", "--out", str(out)]
    refused(capsys, args, message)
    assert not out.exists()


def test_missing_onnx_dependency_names_the_extra(run_dir, tmp_path, capsys, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "onnxscript" else find_spec(name, *a),
    )
    args = ["export", str(run_dir / "students" / "kd"), "--format", "onnx"]
    refused(capsys, [*args, "--out", str(tmp_path / "x.onnx")], "pip install -e '.[export]'")


def test_extra_arguments_are_refused(run_dir):
    with pytest.raises(SystemExit):
        main(["export", str(run_dir / "students" / "kd"), "--format", "onnx", "members=3"])


def test_dirichlet_uncertainty_matches_float64_over_extreme_concentrations():
    generator = torch.Generator().manual_seed(0)
    for scale, shift in [(1, 0), (10, 0), (3, -20), (2, 20), (1, 100), (1, -60), (40, -40)]:
        log_alpha = torch.randn(500, 10, generator=generator) * scale + shift
        probs, entropy, mi = dirichlet_uncertainty(log_alpha)
        reference = predictive(log_alpha, "dirichlet")
        assert max_diff(probs, reference.probs[:, 0]) <= TOLERANCE
        assert max_diff(entropy, reference.entropy) <= TOLERANCE
        assert max_diff(mi, reference.mi) <= TOLERANCE, (scale, shift)


def test_a_proxy_dirichlet_head_matches_the_evaluation():
    """A Proxy-Dirichlet student (α = e^s + 1) exports softmax(s) and the Dirichlet's
    uncertainties, as :func:`predictive` computes them in float64."""
    generator = torch.Generator().manual_seed(1)
    network = torch.nn.Linear(5, 10)
    head = UncertaintyHead(PriorNetwork(network, proxy=True))
    for scale in (1.0, 10.0, 40.0):
        x = torch.randn(300, 5, generator=generator) * scale
        probs, entropy, mi = head(x)
        reference = predictive(network(x).detach(), PROXY_DIRICHLET)
        assert max_diff(probs, reference.probs[:, 0]) <= TOLERANCE
        assert max_diff(entropy, reference.entropy) <= TOLERANCE
        assert max_diff(mi, reference.mi) <= TOLERANCE, scale


def test_ensemble_uncertainty_matches_float64_on_extreme_logits():
    generator = torch.Generator().manual_seed(0)
    for scale in (0.1, 1.0, 30.0, 300.0):
        logits = torch.randn(500, 4, 10, generator=generator) * scale
        for outputs in (logits, logits[:, 0]):  # members, and one network (MI = 0)
            probs, entropy, mi = ensemble_uncertainty(outputs)
            reference = predictive(outputs)
            assert max_diff(probs, reference.probs.mean(dim=1)) <= TOLERANCE
            assert max_diff(entropy, reference.entropy) <= TOLERANCE
            assert max_diff(mi, reference.mi) <= TOLERANCE
            assert torch.isfinite(entropy).all() and torch.isfinite(mi).all()


def test_unknown_task_is_refused():
    with pytest.raises(ConfigError, match="task must be"):
        UncertaintyHead(torch.nn.Identity(), task="ranking")


def test_an_exporter_failure_is_one_line(run_dir, tmp_path, capsys, monkeypatch):
    def fail(*args):
        raise RuntimeError("unsupported operator\nmany lines of graph")

    monkeypatch.setattr(export, "_torchscript", fail)
    out = tmp_path / "x.pt"
    args = ["export", str(run_dir / "students" / "kd"), "--format", "torchscript"]
    refused(capsys, [*args, "--out", str(out)], "unsupported operator); try --format onnx")
    assert not out.exists()
