"""Every script in examples/ runs end to end in its --tiny mode (a few seconds each)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from optional_packages import import_problem

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


def load_nets():
    """examples/resnet_folder/nets.py as a module (it is not on sys.path)."""
    spec = importlib.util.spec_from_file_location("nets", EXAMPLES / "resnet_folder" / "nets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # 30-90 s: three processes, M = 3 ResNet-18s, three students, an ONNX export
@pytest.mark.vision  # run twice by `make test-all`: built-in network, then torchvision's
def test_resnet_folder_example(tmp_path):
    out = run_example("resnet_folder/run.py", "--out", str(tmp_path))
    backend = "torchvision" if import_problem("torchvision") is None else "built-in ResNet18"
    assert f"nets.resnet18: {backend}" in out
    assert "data: " in out and "(4 classes)" in out
    for name in ("ensemble", "hydra", "be", "kd"):
        assert f"\n{name} " in out
    assert out.count("onnxruntime vs PyTorch on ") == 2  # test and OOD images, each checked
    manifest = json.loads((tmp_path / "run" / "students" / "hydra" / "manifest.json").read_text())
    assert (manifest["model"]["name"], manifest["model"]["head"]) == ("nets:resnet18", "fc")
    assert (tmp_path / "run" / "students" / "hydra" / "student.onnx").is_file()


@pytest.mark.vision
@pytest.mark.skipif(
    import_problem("torchvision") is not None, reason=str(import_problem("torchvision"))
)
def test_the_fallback_resnet18_is_torchvisions_network():
    """nets.ResNet18 (used without torchvision) has torchvision's state_dict and computes the
    same function, so a run folder made with either is rebuilt by the other."""
    nets = load_nets()
    reference = nets.resnet18(num_classes=5).eval()
    assert type(reference).__module__.startswith("torchvision")
    own = nets.ResNet18(num_classes=5).eval()
    theirs, ours = reference.state_dict(), own.state_dict()
    assert list(theirs) == list(ours)
    assert all(theirs[key].shape == ours[key].shape for key in theirs)
    own.load_state_dict(theirs)
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(own(x), reference(x), rtol=0, atol=1e-6)


def test_the_fallback_resnet18_maps_small_colour_images_to_logits():
    nets = load_nets()
    model = nets.ResNet18(num_classes=4, width=4).eval()
    assert isinstance(model.fc, torch.nn.Linear) and model.fc.in_features == 32
    with torch.no_grad():
        assert model(torch.rand(2, 3, 16, 16)).shape == (2, 4)
    assert nets.resnet18(num_classes=4, width=4).fc.out_features == 4  # width ≠ 64: own network
