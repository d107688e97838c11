"""benchmarks/recipes.py --quick: runs end to end on digits (MNIST's study and Fashion-MNIST's),
and chooses on validation only."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from ensemble_distill.cli import main

pytestmark = pytest.mark.slow  # benchmark smoke run: `make test-all` only

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "recipes.py"


def quick(tmp: Path, doc: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(SCRIPT), "--quick", *args]
    command += ["--data-dir", str(tmp), "--runs", str(tmp / "runs"), "--doc", str(doc)]
    return subprocess.run(command, check=True, capture_output=True, cwd=ROOT, text=True)


@pytest.fixture(scope="module")
def record(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("recipes")
    doc = tmp / "docs" / "results" / "recipes"
    quick(tmp, doc, "--seeds", "0")
    assert "## Floors" in doc.with_suffix(".md").read_text()
    assert (tmp / "docs" / "img" / "recipes.png").is_file()
    return json.loads(doc.with_suffix(".json").read_text())


@pytest.fixture(scope="module")
def fashion(tmp_path_factory) -> tuple[Path, Path]:
    """The Fashion-MNIST study's recipes on digits, tiny: (its folder, its doc path)."""
    tmp = tmp_path_factory.mktemp("recipes_fashion")
    doc = tmp / "docs" / "results" / "recipes_fashion"
    quick(tmp, doc, "--dataset", "fashion-mnist", "--seeds", "0")
    return tmp, doc


@pytest.fixture(scope="module")
def recipes():
    """benchmarks/recipes.py as a module (it imports its neighbour seeds.py)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location("recipes_benchmark", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclasses look their module up there
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    yield module
    sys.modules.pop(spec.name, None)


def test_each_method_is_chosen_by_validation_cnll(record):
    rows = record["summary"]["rows"]
    for method, label in record["summary"]["chosen"].items():
        candidates = [r["val_cnll"][0] for r in rows.values() if r["method"] == method]
        assert rows[label]["val_cnll"][0] == min(candidates)
    assert set(record["summary"]["chosen"]) == {"kd", "hydra", "endd"}


def test_live_inputs_cost_the_teachers_forward_on_top(record):
    recipes = record["per_seed"]["0"]["recipes"]
    clean, mixup = recipes["fm-clean-3x"]["kd"], recipes["fm-mixup-3x"]["kd+mixup"]
    # The same epochs plus the teachers' forward on every mixed batch.
    assert mixup["train_flops"] > clean["train_flops"]
    assert len(record["summary"]["curve"]) == 3  # DE-1 … DE-3 of the quick teacher


def test_fashion_study_reads_and_writes_its_own_paths(recipes):
    study = recipes.STUDIES["fashion-mnist"]
    assert study.config == "diversity_fashion.yaml"
    assert study.runs == ROOT / "runs" / "recipes_fashion"
    assert study.doc == ROOT / "docs" / "results" / "recipes_fashion"
    mnist = recipes.STUDIES["mnist"]
    assert (mnist.runs, mnist.doc) == (
        ROOT / "runs" / "recipes",
        ROOT / "docs" / "results" / "recipes",
    )
    # Every recipe pins what its rows depend on, whatever the defaults become.
    for name, (methods, overrides) in study.variants.items():
        config = study.config_for("DATA", 0, overrides, methods)
        assert (config.members, config.epochs, config.precision) == (4, 15, "fp32")
        assert (config.hydra.head_widths, config.hydra.head_init) == ([128], "copy")
        multiple = float(next(o for o in overrides if "epochs_multiple" in o).split("=")[1])
        assert config.student_epochs() == 15 * multiple  # student.epochs=null: the multiple rules
        assert config.eval.diversity_etas == []
        function_matching = name.startswith("fm-")
        assert config.student.schedule == ("onecycle" if function_matching else "cosine")
        for section in (config.kd, config.hydra):
            expected = (1.0, 1.0) if function_matching else (0.9, 4.0)
            assert (section.alpha, section.temperature) == expected


def test_fashion_quick_writes_its_page_from_one_seed(fashion):
    tmp, doc = fashion
    record = json.loads(doc.with_suffix(".json").read_text())
    page = doc.with_suffix(".md").read_text()
    assert (tmp / "docs" / "img" / "recipes_fashion.png").is_file()
    assert "--dataset fashion-mnist --seeds 0 --quick" in record["command"]
    assert set(record["per_seed"]["0"]["recipes"]) == {
        "today",
        "fm-clean-1x",
        "fm-clean-2x",
        "fm-clean-4x",
        "fm-clean-6x",
        "fm-mixup-pool4-2x",
        "fm-mixup-pool4-4x",
        "fm-clean-2x-proxy",
    }
    assert set(record["summary"]["chosen"]) == {"kd", "hydra", "endd"}
    assert len(record["summary"]["curve"]) == 2  # DE-1, DE-2 of the quick teacher
    assert "Seeds: 0 (a single seed: no spread)" in page
    assert "## Floors (issue 15: Fashion-MNIST M = 4, test split, seed 0 only)" in page
    assert "![cNLL against training compute](../img/recipes_fashion.png)" in page
    assert "unfinished" not in record
    run_dir = tmp / "runs" / "seed0" / "fm-mixup-pool4-2x"
    assert (run_dir / "results.json").is_file()
    # A study's runs skip the report (report=False); the report command builds it from them.
    assert not (run_dir / "report.html").exists()
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "report.html").is_file() and (run_dir / "report.md").is_file()


def test_from_json_rewrites_the_page_and_names_its_ties(fashion, tmp_path):
    """--from-json re-tabulates the per-seed scores the JSON holds (no runs, no data): two KD
    recipes with the same validation cNLL are a tie, named with its tie-break."""
    _, doc = fashion
    record = json.loads(doc.with_suffix(".json").read_text())
    recipes = record["per_seed"]["0"]["recipes"]
    recipes["fm-clean-2x"]["kd"]["val_cnll"] = recipes["fm-clean-1x"]["kd"]["val_cnll"] = 0.0
    rewritten = tmp_path / "docs" / "results" / "recipes_fashion"
    rewritten.parent.mkdir(parents=True)
    rewritten.with_suffix(".json").write_text(json.dumps(record))
    command = [sys.executable, str(SCRIPT), "--from-json", "--dataset", "fashion-mnist"]
    subprocess.run([*command, "--doc", str(rewritten)], check=True, capture_output=True, cwd=ROOT)
    again = json.loads(rewritten.with_suffix(".json").read_text())
    assert again["command"] == record["command"]  # the run's, not the rewrite's
    chosen, tie = again["summary"]["chosen"]["kd"], again["summary"]["tie"]["kd"]
    assert {chosen, *tie} == {"kd [fm-clean-1x]", "kd [fm-clean-2x]"}
    page = rewritten.with_suffix(".md").read_text()
    assert f"- kd: `{chosen}`: tie (gap < std) with `{tie[0]}`, broken by the lower" in page


def test_unfinished_seeds_are_named_not_tabulated(fashion):
    tmp, _ = fashion
    doc = tmp / "docs" / "results" / "partial"
    quick(tmp, doc, "--dataset", "fashion-mnist", "--seeds", "0", "1", "--tabulate-only")
    record = json.loads(doc.with_suffix(".json").read_text())
    assert record["summary"]["seeds"] == [0]
    assert record["unfinished"] == [1]
    assert "not finished yet" in doc.with_suffix(".md").read_text()
    # No finished seed: nothing to tabulate, no page, and no error.
    empty = tmp / "docs" / "results" / "empty"
    result = quick(tmp, empty, "--dataset", "fashion-mnist", "--seeds", "1", "--tabulate-only")
    assert "no page written" in result.stdout
    assert not empty.with_suffix(".md").exists()


SHARED = ROOT.parent / "shared" / "data"


@pytest.mark.skipif(not (SHARED / "mnist").is_dir(), reason="needs ../shared/data/mnist")
def test_digits_study_distils_on_the_auxiliary_inputs_it_writes(tmp_path, recipes):
    doc = tmp_path / "docs" / "results" / "recipes_digits"
    command = [sys.executable, str(SCRIPT), "--quick", "--dataset", "digits", "--seeds", "0"]
    command += ["--data-dir", str(SHARED), "--runs", str(tmp_path / "runs"), "--doc", str(doc)]
    subprocess.run(command, check=True, capture_output=True, cwd=ROOT, text=True)
    inputs = np.load(tmp_path / "runs" / recipes.AUXILIARY)["x"]
    assert inputs.shape == (recipes.AUXILIARY_COUNT, 1, 8, 8) and inputs.dtype == np.float32
    assert np.allclose(inputs.max(axis=(1, 2, 3)), 1.0) and inputs.min() >= 0
    run = tmp_path / "runs" / "seed0" / "fm-auxiliary-6x"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["distill_data"] == str(tmp_path / "runs" / recipes.AUXILIARY)
    record = json.loads(doc.with_suffix(".json").read_text())
    rows = record["per_seed"]["0"]["recipes"]
    # The same students and epochs; the auxiliary run adds the teachers' outputs on its inputs.
    assert rows["fm-auxiliary-6x"]["kd"]["train_flops"] > rows["fm-clean-6x"]["kd"]["train_flops"]
