"""Every script in examples/ runs end to end in its --tiny mode (a few seconds each)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
# The shared data folder beside the repository (CI has ../shared/data/mnist, full MNIST).
SHARED = ROOT.parent / "shared" / "data"
IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")  # dataset-fashion-mnist's files


def has_idx(folder: Path) -> bool:
    return all((folder / name).is_file() for name in IDX_FILES)


def run_example(script: str, *args: str) -> str:
    env = os.environ | {"OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--tiny", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"{script} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_byo_ensemble_hydra():
    out = run_example("byo_ensemble_hydra.py")
    for name in ("ensemble", "member 0", "hydra"):
        assert f"\n{name} " in f"\n{out}"
    assert "mean mutual information" in out


def test_own_dataset_from_tensors_and_an_image_folder():
    out = run_example("own_dataset.py")
    for name in ("tensors: kd", "tensors: hydra", "images: kd", "images: hydra"):
        assert name in out
    assert "in 3 classes ['circle', 'cross', 'square']" in out


def fashion_example_args() -> list[str] | None:
    """Arguments that need no download: the shared MNIST (always there in CI), else
    Debian's Fashion-MNIST; None when neither exists."""
    if has_idx(SHARED / "mnist"):
        return ["--dataset", "mnist", "--data-dir", str(SHARED)]
    if has_idx(DEBIAN_FASHION):
        return ["--dataset", "fashion-mnist"]
    return None


@pytest.mark.slow  # real data (../shared/data/mnist): `make test-all` only
@pytest.mark.skipif(
    fashion_example_args() is None,
    reason=f"no MNIST in {SHARED}/mnist and no Fashion-MNIST in {DEBIAN_FASHION}; the example "
    "would have to download its data",
)
def test_hydra_confods_fashion_example():
    args = fashion_example_args()
    out = run_example("hydra_confods_fashion.py", *args, "--no-download", "--limit", "500")
    assert "500 training examples" in out
    for name in ("ensemble", "hydra", "hydra+confods"):
        assert f"\n{name} " in out
