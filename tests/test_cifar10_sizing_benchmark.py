"""benchmarks/cifar10_sizing.py: the subset it extracts, its projections, and (slow, on the shared
JPEG copy) a quick run that writes its page and JSON."""

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import cifar10_sizing as sizing  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / sizing.ARCHIVE


def write_archive(path: Path, per_class: int) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for split in ("train", "test"):
            for label in ("cat", "dog"):
                for index in range(per_class):
                    info = tarfile.TarInfo(f"{split}/{label}/{index:04d}.jpg")
                    info.size = 3
                    tar.addfile(info, io.BytesIO(b"jpg"))


def test_the_subset_takes_the_first_images_of_every_class_once(tmp_path):
    write_archive(tmp_path / "a.tar.gz", per_class=12)
    out = sizing.extract_subset(tmp_path / "a.tar.gz", tmp_path / "out", per_class=10)
    assert sorted(p.name for p in (out / "train" / "cat").iterdir())[-1] == "0009.jpg"
    assert len(list((out / "train" / "dog").iterdir())) == 10
    assert len(list((out / "test" / "dog").iterdir())) == 2  # a fifth of the training share
    (out / "train" / "cat" / "0000.jpg").unlink()
    sizing.extract_subset(tmp_path / "a.tar.gz", tmp_path / "out", per_class=10)
    assert not (out / "train" / "cat" / "0000.jpg").exists()  # extracted once, not again


def test_the_projection_multiplies_the_measured_epochs_out():
    row = {"member_s_per_image": 1e-3, "kd_s_per_image": 2e-3, "be_s_per_image": 8e-3}
    got = sizing.projection(row)
    member_epoch = 45_000 * 1e-3
    assert got["member_epoch_s"] == pytest.approx(member_epoch)
    assert got["teacher_h"] == pytest.approx(4 * 30 * member_epoch / 3600)
    assert got["kd_h"] == pytest.approx(60 * 2e-3 * 45_000 / 3600)
    assert got["seed_h"] == pytest.approx(got["teacher_h"] + 5 * got["kd_h"] + 5 * got["be_h"])
    assert got["paper_teacher_h"] == pytest.approx(50 * 30 * member_epoch / 3600)


@pytest.mark.slow
@pytest.mark.skipif(not SHARED.is_file(), reason=f"needs ../shared/data/{sizing.ARCHIVE}")
def test_a_quick_run_writes_its_page(tmp_path):
    doc = tmp_path / "sizing"
    command = ["cifar10_sizing.py", "--data-dir", str(SHARED.parent), "--quick", "--doc", str(doc)]
    subprocess.run(
        [sys.executable, *command],
        cwd=ROOT / "benchmarks",
        check=True,
        capture_output=True,
    )
    record = json.loads(doc.with_suffix(".json").read_text())
    assert [row["variant"] for row in record["rows"]] == list(sizing.VARIANTS)
    assert all(row["member_s_per_image"] > 0 and row["gflops"] > 0 for row in record["rows"])
    assert record["decoding"]["images"] == 10 * (12 + 2)  # every image of the subset
    assert "## The study, projected" in doc.with_suffix(".md").read_text()
