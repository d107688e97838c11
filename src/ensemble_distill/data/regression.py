"""Regression datasets: a 1-D toy with a gap, diabetes, Auto MPG and the user's own CSV table.

Every loader returns :class:`DataSplits` with ``task="regression"``, ``num_classes=1``,
inputs ``x`` (N, D) float32 and targets ``y`` (N,) float32. Targets are standardised with the
training split's mean and standard deviation (kept as ``target_mean`` / ``target_std`` so
metrics can be reported in original units); tabular features are standardised per column with
training statistics too (OOD sets use the same training statistics, targets included).
Nothing reads or advances the global RNG: every draw comes from a
generator seeded with ``split_seed``.

Tables get a *covariate-shift* OOD set ``"shift"``: the examples whose value of one feature
lies in the top 10 % (strictly above the feature's 90th percentile) are held out of train,
validation and test, so the model never sees that range of the feature.
"""

from __future__ import annotations

import codecs
import csv
import importlib.util
import io
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from ensemble_distill.data.base import ArrayDataset, DataSplits, holdout_split
from ensemble_distill.errors import DataError
from ensemble_distill.options import is_number

TEST_FRACTION = 0.2
SHIFT_QUANTILE = 0.9
MIN_CSV_ROWS = 10

TOY_TRAIN = 1000  # before the validation split is carved out
TOY_TEST = 500
TOY_GAP = 200
TOY_NOISE_SD = 3.0
TOY_INNER, TOY_OUTER = 2.0, 4.0

DIABETES_SHIFT = "bmi"
AUTO_MPG_SHIFT = "Weight_in_lbs"
AUTO_MPG_NUMERIC = (
    "Cylinders",
    "Displacement",
    "Horsepower",
    "Weight_in_lbs",
    "Acceleration",
    "Year",
)
AUTO_MPG_ORIGINS = ("USA", "Europe", "Japan")
AUTO_MPG_TARGET = "Miles_per_Gallon"

SPLITS = ("train", "val", "test")
Parts = dict[str, tuple[np.ndarray, np.ndarray]]


# --------------------------------------------------------------------------------------------
# Toy data
# --------------------------------------------------------------------------------------------


def toy_function(x: np.ndarray) -> np.ndarray:
    """The noise-free toy target ``x**3``; any shape in, same shape out."""
    return x**3


def load_toy_gap_splits(split_seed: int, val_fraction: float) -> DataSplits:
    """1-D cubic with a gap in its inputs: the classic picture of epistemic uncertainty.

    ``y = x**3 + eps``, ``eps ~ N(0, 3**2)`` (the toy of Hernández-Lobato & Adams 2015, also in
    Lakshminarayanan et al. 2017), but with inputs uniform on ``[-4, -2] ∪ [2, 4]`` so there is
    no training data in ``(-2, 2)``: wide enough that the members disagree there (with a gap of
    (-1, 1) every member interpolates the cubic alike and the gap shows little epistemic
    variance). The noise sd is about a tenth of the function's (≈ 28).

    Splits: 1000 training draws (``val_fraction`` of them carved out as validation), 500 test
    draws from the same two intervals, and the OOD set ``"gap"``: 200 inputs uniform on
    ``(-2, 2)`` with targets from the same noisy process (for AUROC by epistemic variance and
    for calibration in the gap). The data themselves are drawn from ``split_seed``.

    Inputs are kept in their original units (the gap stays at ``(-2, 2)`` for plots; they are
    already roughly zero-mean with sd ≈ 3.1); targets are standardised with training statistics.

    Returns:
        DataSplits with x (N, 1) float32 and y (N,) float32.
    """
    train_seq, test_seq, gap_seq, split_seq = np.random.SeedSequence(split_seed).spawn(4)
    pool_x, pool_y = _toy_set(TOY_TRAIN, np.random.default_rng(train_seq), in_gap=False)
    train, val = holdout_split(
        TOY_TRAIN, val_fraction, np.random.default_rng(split_seq).permutation
    )
    parts = {
        "train": (pool_x[train.numpy()], pool_y[train.numpy()]),
        "val": (pool_x[val.numpy()], pool_y[val.numpy()]),
        "test": _toy_set(TOY_TEST, np.random.default_rng(test_seq), in_gap=False),
    }
    ood = {"gap": _toy_set(TOY_GAP, np.random.default_rng(gap_seq), in_gap=True)}
    return standardised_splits("toy-gap", parts, ood, scale_inputs=False)


def _toy_set(
    count: int, rng: np.random.Generator, *, in_gap: bool
) -> tuple[np.ndarray, np.ndarray]:
    """x (count, 1) and y (count,) = x**3 + N(0, 3**2) noise.

    Inputs uniform on the gap (-2, 2) when ``in_gap``, else on [-4, -2] ∪ [2, 4].
    """
    if in_gap:
        x = rng.uniform(-TOY_INNER, TOY_INNER, count)
    else:
        sign = np.where(rng.random(count) < 0.5, -1.0, 1.0)
        x = sign * rng.uniform(TOY_INNER, TOY_OUTER, count)
    y = toy_function(x) + rng.normal(0.0, TOY_NOISE_SD, count)
    return x.reshape(-1, 1), y


# --------------------------------------------------------------------------------------------
# Bundled tables
# --------------------------------------------------------------------------------------------


def load_diabetes_splits(split_seed: int, val_fraction: float) -> DataSplits:
    """scikit-learn's bundled diabetes table (no download): 442 patients, 10 features.

    Target: disease progression one year after baseline. Features in raw units (age, sex,
    bmi, bp, s1..s6), standardised with training statistics. Shift feature: ``bmi`` — the 45
    patients above its 90th percentile (32.28) form the OOD set ``"shift"``; the remaining 397
    are split into test (20 %), validation and train.

    Returns:
        DataSplits with x (N, 10) float32 and y (N,) float32.
    """
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes(scaled=False)
    names = list(bunch.feature_names)
    return tabular_splits(
        "diabetes",
        bunch.data,
        bunch.target,
        shift_feature=names.index(DIABETES_SHIFT),
        split_seed=split_seed,
        val_fraction=val_fraction,
        feature_name=DIABETES_SHIFT,
    )


def load_auto_mpg_splits(split_seed: int, val_fraction: float) -> DataSplits:
    """UCI Auto MPG (cars of 1970-82), read from the ``vega_datasets`` package's ``cars.json``.

    The file has 406 cars; 8 lack the target and 6 lack horsepower, leaving the classic 392.
    Features (9): Cylinders, Displacement, Horsepower, Weight_in_lbs, Acceleration, Year
    (model year as a number) and Origin one-hot (USA, Europe, Japan), standardised with
    training statistics (vega's copy has no 1981: those cars carry 1982). Target:
    Miles_per_Gallon. Shift feature: ``Weight_in_lbs`` — the 40 heaviest cars (top 10 %)
    form the OOD set ``"shift"``.

    Returns:
        DataSplits with x (N, 9) float32 and y (N,) float32.
    """
    x, y = auto_mpg_arrays()
    return tabular_splits(
        "auto-mpg",
        x,
        y,
        shift_feature=AUTO_MPG_NUMERIC.index(AUTO_MPG_SHIFT),
        split_seed=split_seed,
        val_fraction=val_fraction,
        feature_name=AUTO_MPG_SHIFT,
    )


def auto_mpg_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The usable Auto MPG rows: x (392, 9) float64 and y (392,) float64."""
    records = _read_cars_json()
    needed = (AUTO_MPG_TARGET, *AUTO_MPG_NUMERIC, "Origin")
    complete = [r for r in records if all(r.get(key) is not None for key in needed)]
    x = np.array([_auto_mpg_features(r) for r in complete], dtype=np.float64)
    y = np.array([float(r[AUTO_MPG_TARGET]) for r in complete], dtype=np.float64)
    return x, y


def _read_cars_json() -> list[dict]:
    """The records of ``vega_datasets/_data/cars.json``.

    The file is located with ``find_spec``, which does not run the package's ``__init__``
    (``importlib.resources.files`` would, and that imports pandas).
    """
    spec = importlib.util.find_spec("vega_datasets")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "auto-mpg reads cars.json from the vega_datasets package, which is missing; "
            "run `pip install vega_datasets`"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "_data" / "cars.json"
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
    raise DataError(
        "the vega_datasets package has no _data/cars.json; "
        "run `pip install --force-reinstall vega_datasets`"
    )


def _auto_mpg_features(record: dict) -> list[float]:
    """One car's 9 features; ``Year`` is a date string like ``"1970-01-01"``."""
    values = [float(record[key]) for key in AUTO_MPG_NUMERIC[:-1]]
    values.append(float(str(record["Year"])[:4]))
    origin = record["Origin"]
    if origin not in AUTO_MPG_ORIGINS:
        raise DataError(f"cars.json has an unknown Origin {origin!r}; reinstall vega_datasets")
    values.extend(float(origin == o) for o in AUTO_MPG_ORIGINS)
    return values


# --------------------------------------------------------------------------------------------
# The user's own CSV table
# --------------------------------------------------------------------------------------------


def load_csv_splits(
    path: str | Path,
    target: str,
    split_seed: int,
    val_fraction: float,
    shift_feature: str | None = None,
) -> DataSplits:
    """A numeric CSV table of the user's: header row required, target column named ``target``.

    Every other column is a numeric feature (encode categories as numbers beforehand).
    ``path`` is resolved against the working directory. Shift feature: ``shift_feature``
    (a column name), by default the first feature column.

    Returns:
        DataSplits with x (N, D) float32 (D = columns - 1) and y (N,) float32.
    """
    header, rows = read_numeric_csv(path)
    if target not in header:
        raise DataError(
            f"{path}: no column named {target!r}; available columns: {', '.join(header)}"
        )
    features = [name for name in header if name != target]
    if not features:
        raise DataError(f"{path}: only the target column {target!r}; add feature columns")
    shift = features[0] if shift_feature is None else shift_feature
    if shift not in features:
        raise DataError(
            f"{path}: shift_feature {shift!r} is not a feature column; "
            f"choose one of: {', '.join(features)}"
        )
    t = header.index(target)
    _check_scale(rows, header, path)
    x = np.delete(rows, t, axis=1)
    return tabular_splits(
        "csv",
        x,
        rows[:, t],
        shift_feature=features.index(shift),
        split_seed=split_seed,
        val_fraction=val_fraction,
        feature_name=shift,
    )


def read_numeric_csv(path: str | Path) -> tuple[list[str], np.ndarray]:
    """The header and the (rows, columns) float64 values of a numeric CSV file."""
    file = Path(path)
    if not file.is_file():
        raise DataError(
            f"no CSV file at {file.resolve()}; check the path (relative paths are resolved "
            "against the working directory)"
        )
    reader = csv.reader(io.StringIO(_decode(file.read_bytes(), path), newline=""))
    try:
        header = _read_header(reader, path)
        rows = [_parse_row(cells, header, reader.line_num, path) for cells in reader if cells]
    except csv.Error as exc:  # a cell past csv's field size limit, a NUL byte
        raise DataError(
            f"{path} line {reader.line_num}: not readable as CSV ({exc}); every cell must "
            "be one number and the file plain comma-separated text"
        ) from None
    if len(rows) < MIN_CSV_ROWS:
        raise DataError(
            f"{path} has {len(rows)} data rows; give at least {MIN_CSV_ROWS} (the loader "
            "holds out test, validation and shift sets)"
        )
    return header, np.array(rows, dtype=np.float64)


def _decode(data: bytes, path: str | Path) -> str:
    """The file's text: UTF-16 when it starts with that byte-order mark (spreadsheets'
    "Unicode text"), else UTF-8 (a byte-order mark skipped); other encodings are refused with
    the line of the first byte that is not UTF-8."""
    utf16 = data[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
    try:
        return data.decode("utf-16" if utf16 else "utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path} line {line}: byte 0x{data[exc.start]:02x} is not "
            f"{'UTF-16' if utf16 else 'UTF-8'} text; save the table as UTF-8 CSV "
            "(e.g. iconv -f latin1 -t utf-8 FILE)"
        ) from None


def _check_scale(rows: np.ndarray, header: list[str], path: str | Path) -> None:
    """Every column must be standardisable: values so large (|x| near 1e300) that their
    standard deviation overflows are refused, naming the column."""
    with np.errstate(over="ignore", invalid="ignore"):
        spread = rows.std(axis=0)
    for name, value, column in zip(header, spread, rows.T, strict=True):
        if not np.isfinite(value):
            raise DataError(
                f"{path}: column {name!r} has values too large to standardise (largest "
                f"magnitude {np.abs(column).max():.3g}); rescale it, e.g. to other units"
            )


def _read_header(reader, path: str | Path) -> list[str]:
    """The first non-empty row, checked to be a header of distinct, non-numeric names."""
    header = next((row for row in reader if row), None)
    if header is None:
        raise DataError(f"{path} is empty; give a header row and at least {MIN_CSV_ROWS} rows")
    header = [name.strip() for name in header]
    if all(is_number(name) for name in header):
        raise DataError(
            f"{path}: the first row ({', '.join(header)}) looks like data, not a header; "
            "add a header row naming the columns"
        )
    repeated = sorted(name for name, count in Counter(header).items() if count > 1)
    if repeated or "" in header:
        raise DataError(
            f"{path}: header names must be distinct and non-empty; fix {repeated or ['<empty>']}"
        )
    return header


def _parse_row(cells: list[str], header: list[str], line: int, path: str | Path) -> list[float]:
    """One data row as floats; ``line`` is its 1-based line number in the file."""
    if len(cells) != len(header):
        raise DataError(
            f"{path} line {line}: {len(cells)} cells but the header has {len(header)}; "
            "give every row one value per column"
        )
    values = []
    for name, cell in zip(header, cells, strict=True):
        if not cell.strip():
            raise DataError(
                f"{path} line {line}, column {name!r}: empty cell (missing value); "
                "fill it or drop the row"
            )
        if not is_number(cell.strip()) or not math.isfinite(float(cell)):
            raise DataError(
                f"{path} line {line}, column {name!r}: {cell.strip()!r} is not a finite "
                "number in digits 0-9 (like 12.5 or -3e-2); every column must be numeric "
                "(encode categories as numbers, fill or drop rows with missing values)"
            )
        values.append(float(cell))
    return values


# --------------------------------------------------------------------------------------------
# Shared: splits, shift set, standardisation
# --------------------------------------------------------------------------------------------


def tabular_splits(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    *,
    shift_feature: int,
    split_seed: int,
    val_fraction: float,
    feature_name: str | None = None,
) -> DataSplits:
    """Split a table into train / val / test plus a covariate-shift OOD set, standardised.

    The examples whose column ``shift_feature`` lies strictly above its 90th percentile form
    ``ood["shift"]``; of the rest, 20 % (seeded by ``split_seed``) are the test split and
    ``val_fraction`` of the remainder the validation split.

    Args:
        x: (N, D) features; y: (N,) targets (any real dtype).
        shift_feature: column index of the feature to shift on.
        feature_name: its name, for error messages.

    Returns:
        DataSplits with x (n, D) float32 and y (n,) float32 per split.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise DataError(f"{name}: need x (N, D) and y (N,); got {x.shape} and {y.shape}")
    label = feature_name or f"column {shift_feature}"
    shifted = _shift_mask(x[:, shift_feature], name, label)
    kept = np.flatnonzero(~shifted)
    rng = np.random.default_rng(split_seed)
    rest, test = _carve_indices(kept, TEST_FRACTION, rng, name)
    train, val = _carve_indices(rest, val_fraction, rng, name)
    if len(train) < 2:
        raise DataError(f"{name}: only {len(train)} training rows remain; give more rows")
    parts = {split: (x[idx], y[idx]) for split, idx in zip(SPLITS, (train, val, test), strict=True)}
    ood = {"shift": (x[shifted], y[shifted])}
    return standardised_splits(name, parts, ood, scale_inputs=True)


def _shift_mask(values: np.ndarray, name: str, feature: str) -> np.ndarray:
    """(N,) bool: values strictly above the 90th percentile (so ties never straddle it)."""
    threshold = np.quantile(values, SHIFT_QUANTILE)
    shifted = values > threshold
    if not shifted.any():
        raise DataError(
            f"{name}: no value of shift feature {feature!r} lies above its 90th percentile "
            "(too few distinct values); choose another shift feature"
        )
    return shifted


def _carve_indices(
    index: np.ndarray, fraction: float, rng: np.random.Generator, name: str
) -> tuple[np.ndarray, np.ndarray]:
    """``index`` (n,) split into (rest, held_out) with ``fraction`` held out (at least one).

    :func:`holdout_split` drawing from ``rng``: NumPy's stream, which these splits were made with.
    """
    rest, held = holdout_split(len(index), fraction, rng.permutation)
    if len(rest) == 0:
        raise DataError(f"{name}: too few rows to split off {fraction:.0%}; give more rows")
    return index[rest.numpy()], index[held.numpy()]


def standardised_splits(name: str, parts: Parts, ood: Parts, *, scale_inputs: bool) -> DataSplits:
    """DataSplits from raw (x (N, D), y (N,)) arrays, standardised with train statistics.

    Targets always; inputs per column when ``scale_inputs`` (a constant column's std is 1).
    """
    x_train, y_train = parts["train"]
    x_mean, x_std = _column_stats(x_train) if scale_inputs else (0.0, 1.0)
    y_mean, y_std = (float(v[0]) for v in _column_stats(y_train[:, None]))

    def tensors(x: np.ndarray, y: np.ndarray) -> ArrayDataset:
        return ArrayDataset(
            torch.from_numpy((x - x_mean) / x_std).float(),
            torch.from_numpy((y - y_mean) / y_std).float(),
        )

    return DataSplits(
        name=name,
        train=tensors(*parts["train"]),
        val=tensors(*parts["val"]),
        test=tensors(*parts["test"]),
        num_classes=1,
        ood={key: tensors(*value) for key, value in ood.items()},
        task="regression",
        target_mean=y_mean,
        target_std=y_std,
    )


def _column_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and std (population) of (N, D) data, std 0 replaced by 1; each (D,)."""
    mean, std = x.mean(axis=0), x.std(axis=0)
    return mean, np.where(std > 0, std, 1.0)
