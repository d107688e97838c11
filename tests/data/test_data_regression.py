"""Regression datasets: toy-gap, diabetes, auto-mpg and the user's CSV table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ensemble_distill.data import DATASETS, DataSplits, create_dataset, regression
from ensemble_distill.errors import ConfigError, DataError

BUILT_IN = ("toy-gap", "diabetes", "auto-mpg")
SHIFT_COLUMN = {"diabetes": 2, "auto-mpg": 3}  # bmi, Weight_in_lbs


def all_parts(splits: DataSplits) -> dict:
    return {"train": splits.train, "val": splits.val, "test": splits.test, **splits.ood}


def rows(part) -> set[tuple[float, ...]]:
    return {tuple(r) for r in torch.cat([part.x, part.y[:, None]], dim=1).tolist()}


def test_registered() -> None:
    assert {"toy-gap", "diabetes", "auto-mpg", "csv"} <= set(DATASETS)


@pytest.mark.parametrize(
    ("name", "sizes", "ood", "features"),
    [
        ("toy-gap", (900, 100, 500), {"gap": 200}, 1),
        ("diabetes", (286, 32, 79), {"shift": 45}, 10),
        ("auto-mpg", (254, 28, 70), {"shift": 40}, 9),
    ],
)
def test_sizes_and_types(name: str, sizes: tuple, ood: dict, features: int) -> None:
    splits = create_dataset(name, split_seed=0, val_fraction=0.1)
    assert (len(splits.train), len(splits.val), len(splits.test)) == sizes
    assert {key: len(part) for key, part in splits.ood.items()} == ood
    assert splits.task == "regression" and splits.num_classes == 1
    assert splits.input_shape == (features,)
    for part in all_parts(splits).values():
        assert part.x.dtype == torch.float32 and part.y.dtype == torch.float32
        assert part.x.dim() == 2 and part.y.dim() == 1


@pytest.mark.parametrize("name", BUILT_IN)
def test_splits_disjoint(name: str) -> None:
    parts = [rows(p) for p in all_parts(create_dataset(name)).values()]
    assert sum(len(p) for p in parts) == len(set().union(*parts))


@pytest.mark.parametrize("name", BUILT_IN)
def test_deterministic_per_seed_and_global_rng_untouched(name: str) -> None:
    torch.manual_seed(1)
    np.random.seed(1)  # noqa: NPY002
    a = create_dataset(name, split_seed=5)
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()  # noqa: NPY002
    torch.manual_seed(2)
    np.random.seed(2)  # noqa: NPY002
    b = create_dataset(name, split_seed=5)
    c = create_dataset(name, split_seed=6)
    for key, part in all_parts(a).items():
        other = all_parts(b)[key]
        assert torch.equal(part.x, other.x) and torch.equal(part.y, other.y)
    assert not torch.equal(a.test.y, c.test.y)
    torch.manual_seed(1)
    np.random.seed(1)  # noqa: NPY002
    create_dataset(name, split_seed=5)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], numpy_state[1])  # noqa: NPY002


@pytest.mark.parametrize("name", BUILT_IN)
def test_standardised_with_training_statistics(name: str) -> None:
    splits = create_dataset(name)
    train_y = splits.train.y.double()
    assert abs(float(train_y.mean())) < 1e-6
    assert float(train_y.std(unbiased=False)) == pytest.approx(1.0, abs=1e-5)
    assert abs(float(splits.test.y.double().mean())) > 1e-4  # test statistics were not used
    assert splits.target_std > 0 and isinstance(splits.target_mean, float)
    if name != "toy-gap":
        x = splits.train.x.double()
        assert x.mean(0).abs().max() < 1e-5
        assert torch.allclose(x.std(0, unbiased=False), torch.ones_like(x[0]), atol=1e-5)
        assert x.mean(0).sub(splits.test.x.double().mean(0)).abs().max() > 1e-3


def test_targets_back_in_original_units() -> None:
    from sklearn.datasets import load_diabetes

    splits = create_dataset("diabetes")
    raw = np.sort(load_diabetes().target)
    restored = torch.cat([p.y for p in all_parts(splits).values()]).double()
    restored = restored * splits.target_std + splits.target_mean
    np.testing.assert_allclose(np.sort(restored.numpy()), raw, atol=1e-3)
    train_raw = splits.train.y.double() * splits.target_std + splits.target_mean
    assert splits.target_mean == pytest.approx(float(train_raw.mean()), abs=1e-3)
    assert splits.target_mean != pytest.approx(float(raw.mean()), abs=1e-2)


@pytest.mark.parametrize("name", ["diabetes", "auto-mpg"])
def test_shift_set_lies_above_the_training_range(name: str) -> None:
    splits = create_dataset(name)
    column = SHIFT_COLUMN[name]
    seen = max(float(getattr(splits, s).x[:, column].max()) for s in ("train", "val", "test"))
    assert float(splits.ood["shift"].x[:, column].min()) > seen


def test_toy_gap_inputs() -> None:
    splits = create_dataset("toy-gap", split_seed=3)
    gap = splits.ood["gap"].x
    assert bool(((gap > -2) & (gap < 2)).all())
    for part in (splits.train, splits.val, splits.test):
        assert bool((part.x.abs() >= 2).all()) and bool((part.x.abs() <= 4).all())
        assert bool((part.x < 0).any()) and bool((part.x > 0).any())
    # inputs stay in original units; targets follow x**3 up to N(0, 3**2) noise
    restored = splits.train.y.double() * splits.target_std + splits.target_mean
    residual = restored - splits.train.x.double()[:, 0] ** 3
    assert float(residual.std()) == pytest.approx(regression.TOY_NOISE_SD, rel=0.15)


def test_auto_mpg_rows_and_features() -> None:
    x, y = regression.auto_mpg_arrays()
    assert x.shape == (392, 9) and y.shape == (392,)
    np.testing.assert_array_equal(x[:, 6:].sum(axis=1), np.ones(392))  # Origin one-hot
    assert set(np.unique(x[:, 5])) <= set(range(1970, 1983))  # model year as a number
    assert y.min() >= 9 and y.max() <= 47  # miles per gallon
    splits = create_dataset("auto-mpg")
    assert sum(len(p) for p in all_parts(splits).values()) == 392


def test_auto_mpg_without_vega_datasets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(regression.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match="pip install vega_datasets"):
        create_dataset("auto-mpg")


# --------------------------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------------------------


def write_csv(path: Path, header: list[str], values: np.ndarray) -> Path:
    lines = [",".join(header)] + [",".join(repr(float(v)) for v in row) for row in values]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    table = rng.normal(size=(60, 4)) * [1.0, 5.0, 100.0, 2.0] + [0.0, 3.0, 50.0, -1.0]
    write_csv(tmp_path / "data.csv", ["a", "b", "price", "c"], table)
    monkeypatch.chdir(tmp_path)  # a relative path is resolved against the working directory
    splits = create_dataset("csv", path="data.csv", target="price", shift_feature="b")
    x_raw, y_raw = table[:, [0, 1, 3]], table[:, 2]
    assert splits.input_shape == (3,)
    assert (len(splits.train), len(splits.val), len(splits.test), len(splits.ood["shift"])) == (
        39,
        4,
        11,
        6,
    )
    train_rows = source_rows(splits.train, splits, y_raw)
    mean, std = x_raw[train_rows].mean(0), x_raw[train_rows].std(0)
    assert splits.target_mean == pytest.approx(y_raw[train_rows].mean())
    assert splits.target_std == pytest.approx(y_raw[train_rows].std())
    for part in all_parts(splits).values():
        index = source_rows(part, splits, y_raw)
        np.testing.assert_allclose(part.x.numpy(), (x_raw[index] - mean) / std, atol=1e-5)
    shifted = np.flatnonzero(x_raw[:, 1] > np.quantile(x_raw[:, 1], 0.9))
    assert sorted(source_rows(splits.ood["shift"], splits, y_raw)) == shifted.tolist()


def source_rows(part, splits: DataSplits, y_raw: np.ndarray) -> list[int]:
    """The table rows a split came from, found by its (distinct, continuous) targets."""
    restored = part.y.double().numpy() * splits.target_std + splits.target_mean
    distance = np.abs(restored[:, None] - y_raw[None, :])
    assert distance.min(axis=1).max() < 1e-3
    return distance.argmin(axis=1).tolist()


def test_csv_default_shift_feature_is_the_first_feature(tmp_path: Path) -> None:
    table = np.random.default_rng(1).normal(size=(30, 3))
    path = write_csv(tmp_path / "t.csv", ["y", "first", "second"], table)
    splits = create_dataset("csv", path=str(path), target="y")
    seen = max(float(getattr(splits, s).x[:, 0].max()) for s in ("train", "val", "test"))
    assert float(splits.ood["shift"].x[:, 0].min()) > seen


GOOD_HEADER = "a,b,y\n"
GOOD_ROWS = "".join(f"{i},{i * i % 7},{i / 3}\n" for i in range(12))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"is empty; give a header row"),
        ("\n\n", r"is empty; give a header row"),
        (GOOD_HEADER, r"has 0 data rows; give at least 10"),
        (GOOD_HEADER + GOOD_ROWS[:40], r"has \d data rows; give at least 10"),
        (GOOD_ROWS, r"looks like data, not a header; add a header row"),
        ("a,b,price\n" + GOOD_ROWS, r"no column named 'y'; available columns: a, b, price"),
        (GOOD_HEADER + GOOD_ROWS + "1,abc,3\n", r"line 14, column 'b': 'abc' is not a finite"),
        (GOOD_HEADER + "1,2,nan\n" + GOOD_ROWS, r"line 2, column 'y': 'nan' is not a finite"),
        (GOOD_HEADER + GOOD_ROWS + "1,,3\n", r"line 14, column 'b': empty cell"),
        (GOOD_HEADER + "1,2\n" + GOOD_ROWS, r"line 2: 2 cells but the header has 3"),
        ("a,a,y\n" + GOOD_ROWS, r"header names must be distinct.*'a'"),
        ("y\n" + "1\n" * 12, r"only the target column 'y'; add feature columns"),
    ],
)
def test_csv_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "table.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        create_dataset("csv", path=str(path), target="y")


def test_csv_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no CSV file at .*nowhere\.csv; check the path"):
        create_dataset("csv", path=str(tmp_path / "nowhere.csv"), target="y")


def test_csv_unknown_shift_feature(tmp_path: Path) -> None:
    path = tmp_path / "table.csv"
    path.write_text(GOOD_HEADER + GOOD_ROWS)
    with pytest.raises(DataError, match=r"shift_feature 'z' is not a feature.*one of: a, b"):
        create_dataset("csv", path=str(path), target="y", shift_feature="z")
    with pytest.raises(DataError, match=r"shift_feature 'y' is not a feature"):
        create_dataset("csv", path=str(path), target="y", shift_feature="y")


def test_csv_constant_shift_feature(tmp_path: Path) -> None:
    path = tmp_path / "table.csv"
    path.write_text("a,b,y\n" + "".join(f"1,{i},{i}\n" for i in range(12)))
    with pytest.raises(DataError, match=r"shift feature 'a'.*choose another shift feature"):
        create_dataset("csv", path=str(path), target="y")


# --------------------------------------------------------------------------------------------
# dataset_args
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["digits", "mnist", "toy-gap", "diabetes", "auto-mpg"])
def test_unknown_dataset_args_rejected(name: str) -> None:
    with pytest.raises(ConfigError, match=rf"dataset '{name}' does not take dataset_args path"):
        create_dataset(name, path="data.csv")


def test_csv_dataset_args_checked() -> None:
    with pytest.raises(ConfigError, match=r"dataset 'csv' needs dataset_args target"):
        create_dataset("csv", path="data.csv")
    with pytest.raises(ConfigError, match=r"dataset 'csv' does not take dataset_args colour"):
        create_dataset("csv", path="data.csv", target="y", colour="red")
    with pytest.raises(ConfigError, match=r"path must be a string"):
        create_dataset("csv", path=3, target="y")
