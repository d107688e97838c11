"""In-memory data adapters: every accepted data form, dtypes, the train/validation carve, errors."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ensemble_distill.data import (
    ArrayDataset,
    as_dataset,
    as_inputs,
    holdout_split,
    in_memory_splits,
    torch_permutations,
    train_val,
)
from ensemble_distill.errors import DataError

FEATURES = 16
CLASSES = 3


def tabular(n: int = 90, seed: int = 0, regression: bool = False) -> tuple:
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(n, FEATURES, generator=generator)
    if regression:
        return x, x[:, :3].sum(1) + 0.1 * torch.randn(n, generator=generator)
    return x, x[:, :CLASSES].argmax(1)


class PairDataset(Dataset):
    """A plain map-style Dataset of (x, y) pairs, as users write them."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], self.y[i]


class InputsDataset(Dataset):
    """A Dataset of inputs only (no labels)."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i]


def same(a: ArrayDataset, b: ArrayDataset) -> bool:
    return (
        a.x.dtype == b.x.dtype
        and a.y.dtype == b.y.dtype
        and (torch.equal(a.x, b.x) and torch.equal(a.y, b.y))
    )


# --------------------------------------------------------------------------------------------
# as_dataset
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("regression", [False, True])
def test_every_form_gives_the_same_tensors(regression: bool) -> None:
    x, y = tabular(regression=regression)
    forms = [
        (x, y),
        [x, y],
        (x.numpy(), y.numpy()),
        TensorDataset(x, y),
        PairDataset(x, y),
        DataLoader(PairDataset(x, y), batch_size=7, shuffle=False),
        ArrayDataset(x, y),
    ]
    data = [as_dataset(form, "train_data") for form in forms]
    assert data[0].x.dtype == torch.float32
    assert data[0].y.dtype == (torch.float32 if regression else torch.int64)
    assert torch.equal(data[0].x, x) and torch.equal(data[0].y, y)
    for other in data[1:]:
        assert same(data[0], other)


def test_dataset_is_read_in_index_order_past_one_read_batch() -> None:
    x = torch.arange(2500, dtype=torch.float32)[:, None]
    data = as_dataset(PairDataset(x, torch.arange(2500) % 2), "train_data")
    assert torch.equal(data.x, x) and len(data) == 2500


def test_uint8_inputs_are_scaled_to_0_1_and_labels_become_int64() -> None:
    x = torch.tensor([[0, 51, 255]], dtype=torch.uint8).repeat(4, 1)
    data = as_dataset((x, np.array([0, 1, 2, 1], dtype=np.int32)), "data")
    assert data.x.dtype == torch.float32
    assert torch.allclose(data.x[0], torch.tensor([0.0, 0.2, 1.0]))
    assert data.y.dtype == torch.int64


def test_float64_targets_become_float32_and_column_labels_are_flattened() -> None:
    data = as_dataset((torch.zeros(5, 2), torch.zeros(5, 1, dtype=torch.float64)), "data")
    assert data.y.shape == (5,) and data.y.dtype == torch.float32
    data = as_dataset((torch.zeros(5, 2), torch.arange(5)[:, None]), "data")
    assert data.y.shape == (5,) and data.y.dtype == torch.int64


def test_one_dimensional_inputs_become_a_column() -> None:
    data = as_dataset((torch.arange(6.0), torch.arange(6.0)), "data")
    assert data.x.shape == (6, 1)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            "data.csv",
            "train_data must be a torch Dataset, a DataLoader or an (x, y) tuple of "
            "tensors; got str",
        ),
        (3, "got int"),
        (
            (torch.zeros(4, 2), torch.zeros(4, 3)),
            "labels must be one per example, shape (N,); "
            "got (4, 3) (for one-hot labels pass y.argmax(1))",
        ),
        ((torch.tensor(1.0), torch.tensor(1)), "inputs must have an example axis"),
        ((torch.zeros(4, 2), torch.zeros(3)), "4 inputs but 3 labels"),
        ((torch.zeros(0, 2), torch.zeros(0)), "the dataset is empty"),
        ((torch.full((2, 2), float("nan")), torch.zeros(2)), "inputs contain NaN or Inf"),
        (
            DataLoader(TensorDataset(torch.zeros(4, 2)), batch_size=2),
            "train_data must yield (inputs, labels) pairs; got a batch of type list with 1 items",
        ),
        (
            DataLoader(torch.zeros(4, 2), batch_size=2),
            "train_data must yield (inputs, labels) pairs; got a batch of type Tensor with 2 items",
        ),
        (PairDataset(torch.zeros(0, 2), torch.zeros(0)), "train_data is empty"),
    ],
)
def test_bad_data_is_named(data, message: str) -> None:
    with pytest.raises(DataError, match=re.escape(message)):
        as_dataset(data, "train_data")


def test_one_hot_labels_are_refused() -> None:
    x, y = tabular()
    with pytest.raises(DataError, match="one-hot"):
        as_dataset((x, torch.nn.functional.one_hot(y)), "train_data")


# --------------------------------------------------------------------------------------------
# as_inputs
# --------------------------------------------------------------------------------------------


def test_as_inputs_takes_every_form_and_ignores_labels() -> None:
    x, y = tabular(n=40)
    forms = [
        x,
        x.numpy(),
        (x, y),
        [x, y],
        TensorDataset(x, y),
        PairDataset(x, y),
        InputsDataset(x),
        DataLoader(InputsDataset(x), batch_size=6),
        DataLoader(PairDataset(x, y), batch_size=6),
        ArrayDataset(x, y),
    ]
    for form in forms:
        inputs = as_inputs(form)
        assert inputs.dtype == torch.float32 and torch.equal(inputs, x), type(form)


def test_as_inputs_scales_uint8_and_widens_1d() -> None:
    assert torch.equal(
        as_inputs(torch.tensor([0, 255], dtype=torch.uint8)), torch.tensor([[0.0], [1.0]])
    )
    assert as_inputs(np.arange(3)).shape == (3, 1)


def test_as_inputs_refuses_other_types() -> None:
    with pytest.raises(
        DataError,
        match=re.escape(
            "inputs must be a tensor, a torch Dataset, a DataLoader or an (x, y) tuple; got str"
        ),
    ):
        as_inputs("x.npy")
    with pytest.raises(DataError, match="inputs is empty"):
        as_inputs(InputsDataset(torch.zeros(0, 2)))


# --------------------------------------------------------------------------------------------
# train_val and in_memory_splits
# --------------------------------------------------------------------------------------------


def test_given_val_data_is_used_as_is() -> None:
    train, val = train_val(tabular(), tabular(n=20, seed=1), 0.1, 0)
    assert (len(train), len(val)) == (90, 20)
    assert torch.equal(val.x, tabular(n=20, seed=1)[0])


def test_labels_are_carved_stratified_and_deterministically() -> None:
    x, y = tabular(n=300)
    train, val = train_val((x, y), None, 0.2, 3)
    rest, held = holdout_split(300, 0.2, torch_permutations(3), strata=y)
    assert torch.equal(train.x, x[rest]) and torch.equal(val.x, x[held])
    assert all(map(same, (train, val), train_val((x, y), None, 0.2, 3)))
    counts, held_counts = torch.bincount(y), torch.bincount(val.y, minlength=CLASSES)
    assert held_counts.tolist() == [round(int(c) * 0.2) for c in counts]


def test_float_targets_are_carved_at_random() -> None:
    x, y = tabular(n=50, regression=True)
    train, val = train_val((x, y), None, 0.1, 0)
    rest, held = holdout_split(50, 0.1, torch_permutations(0), min_rest=1)
    assert torch.equal(train.y, y[rest]) and torch.equal(val.y, y[held])
    assert (len(train), len(val)) == (45, 5)


def test_golden_carve() -> None:
    x = torch.arange(100, dtype=torch.float32)
    _, val = train_val((x, torch.arange(100) % 10), None, 0.1, 0)
    assert val.x[:, 0].long().tolist() == [8, 16, 24, 31, 40, 42, 47, 75, 93, 99]
    _, val = train_val((x[:50], torch.linspace(0, 1, 50)), None, 0.1, 1)
    assert val.x[:, 0].long().tolist() == [14, 25, 31, 33, 45]


def test_too_small_classes_fall_back_to_a_random_carve_with_both_sides_non_empty() -> None:
    # Five classes of one example: a stratified 10 % holds out nothing, so the carve is random.
    x = torch.arange(5, dtype=torch.float32)
    train, val = train_val((x, torch.arange(5)), None, 0.1, 0)
    assert (len(train), len(val)) == (4, 1)
    assert val.x[:, 0].long().tolist() == [4]
    train, val = train_val((torch.zeros(2, 3), torch.tensor([0.5, 1.5])), None, 0.9, 0)
    assert (len(train), len(val)) == (1, 1)


def test_train_val_errors_are_named() -> None:
    x, y = tabular()
    with pytest.raises(DataError, match="train_data needs at least 2 examples"):
        train_val((x[:1], y[:1]), None, 0.1, 0)
    with pytest.raises(DataError, match="different label types"):
        train_val((x, y), (x, y.float()), 0.1, 0)
    with pytest.raises(
        DataError, match=re.escape("val_data inputs are (15,) but train_data inputs are (16,)")
    ):
        train_val((x, y), (x[:, :15], y), 0.1, 0)
    with pytest.raises(DataError, match=r"val_data must be a torch Dataset"):
        train_val((x, y), "val.csv", 0.1, 0)


def test_the_callers_random_state_is_left_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_val(tabular(regression=True), None, 0.2, 0)
    train_val(tabular(), None, 0.2, 0)
    assert torch.equal(torch.rand(3), expected)


def test_in_memory_splits() -> None:
    train, val = train_val(tabular(), None, 0.1, 0)
    splits = in_memory_splits(train, val, CLASSES)
    assert splits.name == "custom" and splits.task == "classification"
    assert splits.num_classes == CLASSES and splits.test is splits.val
    train, val = train_val(tabular(regression=True), None, 0.1, 0)
    splits = in_memory_splits(train, val, CLASSES)
    assert splits.task == "regression" and splits.num_classes == 1
    with pytest.raises(DataError, match=r"labels must lie in \[0, 2\)"):
        in_memory_splits(*train_val(tabular(), None, 0.1, 0), 2)
