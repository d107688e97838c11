"""The one split helper (holdout_split), golden splits that must never drift, OOD partners."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import ensemble_distill.data as data_pkg
from ensemble_distill.data import (
    DATASETS,
    OOD_PARTNERS,
    OOD_TEST_SETS,
    create_dataset,
    holdout_split,
    ood_test_sets,
    stratified_split,
    torch_permutations,
)
from ensemble_distill.errors import DataError

DATA_SRC = Path(data_pkg.__file__).parent


def sha(t: torch.Tensor) -> str:
    """First 16 hex digits of the SHA-256 of a tensor's dtype, shape and bytes."""
    a = t.contiguous().numpy()
    return hashlib.sha256(f"{a.dtype}{a.shape}".encode() + a.tobytes()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# holdout_split
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_fraction_outside_0_1_is_refused(fraction: float) -> None:
    with pytest.raises(DataError, match=re.escape(f"must lie in (0, 1); got {fraction}")):
        holdout_split(10, fraction, torch_permutations(0))
    with pytest.raises(DataError, match=re.escape(f"must lie in (0, 1); got {fraction}")):
        stratified_split(torch.arange(10) % 2, fraction, 0)


def test_unstratified_split_is_a_sorted_partition_with_at_least_one_held_out() -> None:
    rest, held = holdout_split(50, 0.01, torch_permutations(3))
    assert len(held) == 1 and len(rest) == 49  # round(0.5) = 0, raised to one
    assert rest.dtype == held.dtype == torch.int64
    assert torch.equal(torch.cat([rest, held]).sort().values, torch.arange(50))
    assert torch.equal(rest, rest.sort().values) and torch.equal(held, held.sort().values)


def test_min_rest_caps_the_held_out_share() -> None:
    rest, held = holdout_split(2, 0.9, torch_permutations(0))
    assert (len(rest), len(held)) == (0, 2)
    rest, held = holdout_split(2, 0.9, torch_permutations(0), min_rest=1)
    assert (len(rest), len(held)) == (1, 1)


def test_stratified_split_holds_out_the_fraction_of_every_class() -> None:
    labels = torch.arange(200) % 4
    rest, held = holdout_split(200, 0.2, torch_permutations(0), strata=labels)
    assert torch.bincount(labels[held]).tolist() == [10] * 4
    assert torch.equal(torch.cat([rest, held]).sort().values, torch.arange(200))
    # stratified_split is the same split.
    assert all(map(torch.equal, stratified_split(labels, 0.2, 0), (rest, held)))
    with pytest.raises(ValueError, match=r"strata must have shape \(199,\)"):
        holdout_split(199, 0.2, torch_permutations(0), strata=labels)


def test_numpy_and_torch_sources_are_each_deterministic_and_leave_global_rngs_alone() -> None:
    torch.manual_seed(0)
    np.random.seed(0)  # noqa: NPY002
    state, np_state = torch.get_rng_state(), np.random.get_state()[1].copy()  # noqa: NPY002
    a = holdout_split(30, 0.3, np.random.default_rng(5).permutation)
    b = holdout_split(30, 0.3, np.random.default_rng(5).permutation)
    c = holdout_split(30, 0.3, torch_permutations(5))
    assert all(map(torch.equal, a, b))
    assert not torch.equal(a[1], c[1])  # two streams: each loader keeps its own
    assert torch.equal(torch.get_rng_state(), state)
    assert np.array_equal(np.random.get_state()[1], np_state)  # noqa: NPY002


# --------------------------------------------------------------------------------------------
# Golden splits (split_seed 0, val_fraction 0.1): a change here changes every published number
# --------------------------------------------------------------------------------------------


def test_golden_helper_indices() -> None:
    from sklearn.datasets import load_digits

    # digits: test carved from all 1797 (seed 0), validation from the rest (seed 1).
    y = torch.from_numpy(load_digits().target).long()
    rest, test = holdout_split(len(y), 0.2, torch_permutations(0), strata=y)
    train, val = holdout_split(len(rest), 0.1, torch_permutations(1), strata=y[rest])
    assert (len(rest[train]), len(rest[val]), len(test)) == (1295, 143, 359)
    assert test[:10].tolist() == [1, 2, 6, 10, 13, 16, 22, 25, 29, 31]
    assert rest[val][:10].tolist() == [15, 36, 52, 55, 64, 72, 73, 80, 92, 96]
    # toy-gap: validation carved from the 1000 training draws with the 4th spawned stream.
    split_seq = np.random.SeedSequence(0).spawn(4)[3]
    train, val = holdout_split(1000, 0.1, np.random.default_rng(split_seq).permutation)
    assert val[:10].tolist() == [3, 6, 10, 17, 24, 54, 67, 73, 96, 108]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "digits",
            {
                "train": (1295, "314a8158ece085f4", "b57cb3ee6ee04b51"),
                "val": (143, "e640da7d25776d8f", "459f003eb6e86901"),
                "test": (359, "95d54ce8248e7893", "55d66f184dcd6449"),
                "patches": (500, "c95af011d0a74eb9", "66189967b8e1599a"),
            },
        ),
        (
            "toy-gap",
            {
                "train": (900, "9e2745acda8173c4", "acecbc20f4972443"),
                "val": (100, "1804d9f4674c7fbd", "5edc2c0345263af0"),
                "test": (500, "5885a0e7109e904f", "130ff32bec01bb79"),
                "gap": (200, "fd0439a91cdbf202", "b2af4a03a5436292"),
            },
        ),
        (
            "diabetes",
            {
                "train": (286, "68dcb2f4425840e6", "7c7d0ba0a4184560"),
                "val": (32, "fd59b2c69722bb70", "59e26ba5c9022035"),
                "test": (79, "030f2aa92ff98bec", "2600840635677ef4"),
                "shift": (45, "86332d5a4e02baf7", "afead40296c94791"),
            },
        ),
    ],
)
def test_golden_loader_splits(name: str, expected: dict) -> None:
    splits = create_dataset(name, split_seed=0, val_fraction=0.1)
    parts = {"train": splits.train, "val": splits.val, "test": splits.test, **splits.ood}
    found = {key: (len(p), sha(p.x), sha(p.y)) for key, p in parts.items()}
    assert found == expected


def test_golden_digits_labels() -> None:
    splits = create_dataset("digits", split_seed=0, val_fraction=0.1)
    assert splits.val.y[:8].tolist() == [5, 0, 7, 0, 4, 0, 9, 1]
    assert splits.test.y[:8].tolist() == [1, 2, 6, 0, 3, 6, 2, 5]


# --------------------------------------------------------------------------------------------
# OOD partners
# --------------------------------------------------------------------------------------------


def test_ood_partners_are_declared_in_the_registry() -> None:
    assert OOD_PARTNERS == {
        "mnist": "fashion-mnist",
        "fashion-mnist": "mnist",
        "cifar10": "svhn",
        "cifar100": "svhn",
        "svhn": "cifar10",
    }
    for name, partner in OOD_PARTNERS.items():
        assert name in DATASETS and partner in DATASETS and partner in OOD_TEST_SETS


def test_a_dataset_without_partner_has_no_ood_test_sets(tmp_path: Path) -> None:
    assert ood_test_sets("digits", tmp_path, False) == {}


@pytest.mark.parametrize("module", ["cifar", "svhn", "idx", "digits", "regression"])
def test_loader_modules_do_not_import_each_other(module: str) -> None:
    source = (DATA_SRC / f"{module}.py").read_text()
    others = {"cifar", "svhn", "idx", "digits", "regression"} - {module}
    imports = re.findall(r"^\s*(?:from|import) ([\w.]+)(?: import (.+))?$", source, re.M)
    for target, names in imports:
        for other in others:
            assert not target.endswith(f".data.{other}"), f"{module} imports {target}"
            assert not (target == "ensemble_distill.data" and other in names.split(", "))
