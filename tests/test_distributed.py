"""DDP under torchrun (gloo, 2 CPU processes) against a single-process run of the same config.

Tolerance: with members split across ranks a member is trained by exactly the code and data
order of a single process; data-parallel students differ only in float summation order (each
rank sums its shard, the all-reduce sums the ranks), about 1e-7 relative per reduction. After
a few dozen Adam steps at lr 1e-3 the observed weight difference is ~3e-8; ATOL leaves a
300x margin and is still far below what a wrong shard weighting (e.g. of an uneven last batch)
would give, which the SGD test below shows directly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from ensemble_distill.cli import main
from ensemble_distill.config import OptimConfig, load_config
from ensemble_distill.data import ArrayDataset, DataSplits
from ensemble_distill.engine import prepare
from ensemble_distill.models import ModelSpec
from ensemble_distill.pipeline import evaluate_run
from ensemble_distill.teachers.train import train_deep_ensemble
from ensemble_distill.training import fit

pytestmark = pytest.mark.slow  # torchrun, 2 processes: `make test-all` only

ATOL = 1e-5
# 4 members (2 per rank); digits' 1293 training examples make the last batch of 100 uneven
# (93 = 47 + 46); Hydra's phases get one epoch each.
ARGS = [
    # bf16 rounds each rank's half-batch and the whole batch differently: exactness is fp32's.
    "precision=fp32",
    "members=4",
    "epochs=2",
    "batch_size=100",
    "model_args={widths: [16]}",
    "methods=[kd,hydra]",
    "hydra.head_widths=[8]",
    "eval.latency_repeats=1",
    "eval.diversity_etas=[]",
]
CHECKPOINTS = ("teacher", "students/kd", "students/hydra")
EXACT_METRICS = ("acc", "nll", "brier", "ece", "cnll")


def torchrun_and_single(tmp_path: Path, args: list[str], title: str) -> tuple[Path, dict]:
    """``run`` under torchrun with 2 ranks, then the same steps in this process (without the
    report): the DDP run folder and the reference's results."""
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    done = subprocess.run(
        [*launch, "-m", "ensemble_distill", "run", "--out", str(ddp), "--quiet", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count(f"# {title}") == 1  # only rank 0 prints the results
    assert main(["train-teacher", "--out", str(single), "--quiet", *args]) == 0
    assert main(["distill", "--out", str(single), "--quiet"]) == 0
    return ddp, evaluate_run(prepare(load_config(single / "config.yaml")), single)


def assert_same_weights(ddp: Path, single: Path) -> None:
    for name in CHECKPOINTS:
        got = load_file(ddp / name / "model.safetensors")
        want = load_file(single / name / "model.safetensors")
        assert got.keys() == want.keys()
        for key in want:
            torch.testing.assert_close(got[key], want[key], atol=ATOL, rtol=0, msg=key)


def test_torchrun_on_streamed_image_files_matches_one_process(tmp_path, make_image_tree):
    """Each rank's data-parallel shards are planned for its DataLoader workers (fit's
    prefetch gets the shards): the same weights as one process."""
    tree = make_image_tree(tmp_path / "images", per_class=20)
    data = ["dataset=imagefolder", f"data_dir={tree}", "dataset_args={workers: 1}"]
    ddp, _ = torchrun_and_single(tmp_path, [*ARGS, *data, "batch_size=16"], "imagefolder")
    assert_same_weights(ddp, tmp_path / "single")


def test_torchrun_two_processes_match_one(tmp_path):
    ddp, expected = torchrun_and_single(tmp_path, ARGS, "digits")
    single = tmp_path / "single"
    assert_same_weights(ddp, single)
    results = json.loads((ddp / "results.json").read_text())
    for method, row in expected["methods"].items():
        for metric in EXACT_METRICS:
            assert results["methods"][method][metric] == pytest.approx(row[metric], abs=ATOL)

    files = sorted(str(p.relative_to(ddp)) for p in ddp.rglob("*") if p.is_file())
    assert not any(".tmp" in f or f.startswith("progress") for f in files)
    for name in CHECKPOINTS:
        assert [f for f in files if f.startswith(f"{name}/")] == [
            f"{name}/{f}" for f in ("history.csv", "manifest.json", "model.safetensors")
        ]
    assert (ddp / "run.log").read_text().count("teacher + distill + evaluate") == 1


def _linear_fit() -> tuple[dict[str, torch.Tensor], list[float]]:
    """SGD on 7 examples in batches of 3: uneven shards 2 + 1, 2 + 1, then 1 + none (empty)."""
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(7, 3, generator=generator), torch.randn(7, generator=generator)
    torch.manual_seed(0)
    model = nn.Linear(3, 1)

    def loss_fn(index: torch.Tensor) -> torch.Tensor:  # index: (1, batch)
        return F.mse_loss(model(x[index[0]])[:, 0], y[index[0]])

    history = fit(
        model.parameters(),
        loss_fn,
        num_examples=7,
        epochs=3,
        batch_size=3,
        optim=OptimConfig(name="sgd", lr=0.1, momentum=0.0, schedule="constant"),
        seeds=[0],
        quiet=True,
        module=model,
    )
    return model.state_dict(), [row["loss"] for row in history]


def _random_splits() -> DataSplits:
    """60 random 1x4x4 inputs of 3 classes: a member's weights after training are what counts."""
    generator = torch.Generator().manual_seed(0)

    def split(count: int) -> ArrayDataset:
        x = torch.rand(count, 1, 4, 4, generator=generator)
        return ArrayDataset(x, torch.arange(count) % 3)

    return DataSplits("random", split(60), split(20), split(20), 3)


def _teachers() -> dict[str, dict[str, torch.Tensor]]:
    """3 members (ranks get 2 and 1), vectorised and looped."""
    data = _random_splits()
    spec = ModelSpec("mlp", data.input_shape, data.num_classes, {"widths": [8]})
    common = dict(members=3, seed=0, epochs=2, batch_size=16, optim=OptimConfig(), quiet=True)
    return {
        vectorize: train_deep_ensemble(spec, data, vectorize=vectorize, **common)[0].state_dict()
        for vectorize in ("true", "false")
    }


def _worker(rank: int, store: str, out: Path) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        torch.set_num_threads(1)
        torch.save({"fit": _linear_fit(), "teachers": _teachers()}, out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> list[dict]:
    """What each of 2 gloo ranks (spawned processes) computed."""
    out = tmp_path_factory.mktemp("ranks")
    torch.multiprocessing.spawn(_worker, args=(str(out / "store"), out), nprocs=2)
    return [torch.load(out / f"rank{rank}.pt") for rank in range(2)]


def test_data_parallel_fit_equals_the_global_batch_mean(two_ranks):
    weights, losses = _linear_fit()
    for rank in two_ranks:
        got_weights, got_losses = rank["fit"]
        for key in weights:
            torch.testing.assert_close(got_weights[key], weights[key], atol=1e-6, rtol=0)
        assert got_losses == pytest.approx(losses, abs=1e-6)


def test_split_members_equal_a_single_process_teacher(two_ranks):
    for vectorize, expected in _teachers().items():
        for rank in two_ranks:
            got = rank["teachers"][vectorize]
            # Looped: the same code and data; vectorised: only the stack's size differs.
            atol = 0 if vectorize == "false" else 1e-7
            for key in expected:
                torch.testing.assert_close(got[key], expected[key], atol=atol, rtol=0)
