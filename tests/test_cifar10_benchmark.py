"""benchmarks/cifar10.py on a few real CIFAR-10 JPEGs with a tiny CNN: the teacher once, students
from copies of it, their rows, the corruption curves and the page (numbers mean nothing)."""

import sys
from pathlib import Path

import pytest
import torch

from ensemble_distill.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import cifar10 as study  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (DATA / study.ARCHIVE).is_file(), reason="no ../shared/data"),
]


def test_a_quick_study_writes_rows_curves_and_the_page(tmp_path):
    pytest.importorskip("imagecorruptions")  # eval.corruptions: the shift extra
    images = study.prepare_images(str(DATA), tmp_path, per_class=6)
    assert {"train", "test", "fashion-mnist"} <= {p.name for p in images.iterdir()}
    names = ["kd", "hydra+mixture"]
    study.run_seed(images, tmp_path, 0, names, quick=True)
    record = study.collect(tmp_path, 0)
    assert set(record["rows"]) == {"ensemble", "member", *names}
    hydra = record["rows"]["hydra+mixture"]
    assert hydra["mi"] > 0 and record["rows"]["kd"]["mi"] == 0.0
    # The curve starts at the clean test split's own scores, then the two severities.
    assert set(record["shift"]["kd"]) == {"0", "1", "5"}
    assert record["shift"]["kd"]["0"]["acc"] == record["rows"]["kd"]["acc"]
    summary = study.tabulate({0: record})
    study.plot_shift(summary, tmp_path / "shift.png")
    page = study.markdown(
        {"command": "c", "machine_line": "m", "summary": summary, "per_seed": {0: record}}
    )
    assert "| hydra+mixture | 0 |" in page and "Tran et al. 2020" in page
    assert "Not trained yet (the command resumes and adds them): `hydra`" in page
    # A rerun keeps the finished students (their results.json) instead of training them again.
    before = (tmp_path / "seed0" / "kd" / "results.json").stat().st_mtime_ns
    study.run_seed(images, tmp_path, 0, ["kd"], quick=True)
    assert (tmp_path / "seed0" / "kd" / "results.json").stat().st_mtime_ns == before


def test_the_device_reaches_every_config(tmp_path):
    """``--device cuda`` trains the teacher and every student on the GPU (refused without one)."""
    if torch.cuda.is_available():
        assert study.config_for(tmp_path, 0, "kd", [], quick=True, device="cuda").device == "cuda"
    else:
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            study.config_for(tmp_path, 0, "kd", [], quick=True, device="cuda")
    assert study.config_for(tmp_path, 0, "kd", [], quick=True).device == "cpu"


def test_a_misspelt_only_name_is_refused_before_the_teacher_trains(tmp_path):
    with pytest.raises(SystemExit, match=r"no student named \['kd typo'\]"):
        study.run_seed(tmp_path / "images", tmp_path / "runs", 0, ["kd typo"], quick=True)
    assert not any(tmp_path.iterdir())  # no teacher, no folder
