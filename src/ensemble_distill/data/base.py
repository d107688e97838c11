"""Datasets (in memory, or images streamed from files) and the train / validation / test / OOD
bundle every loader returns."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from ensemble_distill.data.image_files import ImageFiles, ImageTransform
from ensemble_distill.errors import DataError


@dataclass(frozen=True)
class ArrayDataset:
    """Examples: labels in memory, inputs in memory or read from image files when indexed.

    Attributes:
        x: inputs, (N, channels, height, width) float32 in [0, 1] for images, (N, D) for tables;
            or :class:`ImageFiles`, which decodes the images it is indexed with.
        y: integer labels, (N,) int64 in [0, num_classes); for regression, targets (N,) float32.
    """

    x: Tensor | ImageFiles
    y: Tensor

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise DataError(
                f"{self.x.shape[0]} inputs but {self.y.shape[0]} labels; give one label per example"
            )
        if self.x.shape[0] == 0:
            raise DataError("the dataset is empty; give at least one example")
        if isinstance(self.x, Tensor) and not torch.isfinite(self.x).all():
            raise DataError("inputs contain NaN or Inf; clean the data before training")
        if self.y.is_floating_point() and not torch.isfinite(self.y).all():
            raise DataError("targets contain NaN or Inf; clean the data before training")

    def __len__(self) -> int:
        return self.x.shape[0]

    def subset(self, index: Tensor) -> ArrayDataset:
        """Examples ``index`` (int64); image files are selected, not read."""
        x = self.x.subset(index) if isinstance(self.x, ImageFiles) else self.x[index]
        return ArrayDataset(x, self.y[index])


TASKS = ("classification", "regression")


@dataclass(frozen=True)
class OodSource:
    """Which OOD set a run is scored against and what was done to it (results.json
    ``ood_set``; :mod:`ensemble_distill.data.ood`).

    Attributes:
        name: the OOD set's name (``DataSplits.ood``'s key); None: no OOD set.
        source: where its images come from, or why there is none, in words.
        converted: how its images were changed to the run's input shape, e.g.
            ``"grey 28x28 upsampled to 3x32x32"``; None when they already had it.
        identity: a folder's files, as :mod:`ensemble_distill.data.identity` records them;
            None for a registered set (its files are checksummed) or no set.
    """

    name: str | None
    source: str
    converted: str | None = None
    identity: str | None = None


@dataclass(frozen=True)
class DataSplits:
    """What every dataset loader returns.

    Attributes:
        name: registry name of the in-distribution dataset.
        train, val, test: disjoint splits; ``val`` is carved from the training data with a
            fixed seed and serves temperature scaling and model selection.
        num_classes: C; 1 for regression (one scalar target).
        ood: named out-of-distribution sets (labels are meaningless there), e.g.
            ``{"fashion-mnist": ...}`` for MNIST, or a covariate-shift split of a table.
        task: ``"classification"`` (integer labels) or ``"regression"`` (float targets, in the
            standardised units of ``target_mean`` / ``target_std``).
        target_mean, target_std: training-target statistics used to standardise regression
            targets; metrics are reported back in the original units with them.
        mean, std: per-channel statistics of ``train.x``; models normalise with them
            internally so perturbations act in [0, 1] pixel space.
        class_names: each class's name in label order, where the data names them (an image
            folder's class folders); kept in the students' manifests and exports.
        identity: what the user's files behind the data were (an image folder, a CSV table),
            as :mod:`ensemble_distill.data.identity` records it; None for built-in and
            in-memory data. Part of every phase's fingerprint (config key ``data_identity``).
        transform: how an image folder's files became inputs; an OOD folder is read through
            it too, so that its images get the training images' size and channels.
        ood_source: what ``ood`` is (:class:`OodSource`); None for in-memory data.
    """

    name: str
    train: ArrayDataset
    val: ArrayDataset
    test: ArrayDataset
    num_classes: int
    ood: dict[str, ArrayDataset] = field(default_factory=dict)
    task: str = "classification"
    target_mean: float = 0.0
    target_std: float = 1.0
    class_names: tuple[str, ...] | None = None
    identity: str | None = None
    transform: ImageTransform | None = None
    ood_source: OodSource | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise DataError(f"unknown task {self.task!r}; choose one of {', '.join(TASKS)}")
        if self.task == "regression":
            return
        for split in ("train", "val", "test"):
            y = getattr(self, split).y
            if y.min() < 0 or y.max() >= self.num_classes:
                raise DataError(
                    f"{split} labels must lie in [0, {self.num_classes}); "
                    f"found {int(y.min())}..{int(y.max())}"
                )

    def with_inputs(
        self, convert: Callable[[Tensor | ImageFiles], Tensor | ImageFiles]
    ) -> DataSplits:
        """These splits (train, val, test and every OOD set) with ``convert`` applied to each
        split's inputs; labels and everything else as they are."""

        def split(data: ArrayDataset) -> ArrayDataset:
            return ArrayDataset(convert(data.x), data.y)

        return dataclasses.replace(
            self,
            train=split(self.train),
            val=split(self.val),
            test=split(self.test),
            ood={name: split(data) for name, data in self.ood.items()},
        )

    def in_memory(self) -> DataSplits:
        """These splits with images streamed from files (:class:`ImageFiles`) decoded into
        float32 tensors: faster training where they fit in memory, the same weights."""

        def held(x: Tensor | ImageFiles) -> Tensor:
            return torch.cat(list(x.batches(1024))) if isinstance(x, ImageFiles) else x

        return self.with_inputs(held)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example, e.g. (1, 28, 28)."""
        return tuple(self.train.x.shape[1:])

    @property
    def mean(self) -> tuple[float, ...]:
        x = self.train.x  # image files: one streamed pass for both statistics, kept
        return tuple(
            x.channel_stats()[0] if isinstance(x, ImageFiles) else _channel_reduce(x, torch.mean)
        )

    @property
    def std(self) -> tuple[float, ...]:
        x = self.train.x
        std = x.channel_stats()[1] if isinstance(x, ImageFiles) else _channel_reduce(x, torch.std)
        return tuple(v if v > 0 else 1.0 for v in std)


def _channel_reduce(x: Tensor, fn) -> list[float]:
    """Per-channel statistic of (N, C, ...) data (a single value for (N, D) data)."""
    if x.dim() <= 2:
        return [float(fn(x.double()))]
    dims = [0, *range(2, x.dim())]
    return [float(v) for v in fn(x.double(), dim=dims)]


Permutation = Callable[[int], Tensor | np.ndarray]
"""``n -> a random permutation of 0..n-1``; successive calls continue one random stream."""


def torch_permutations(seed: int) -> Permutation:
    """Permutations drawn from one ``torch.Generator`` seeded with ``seed``.

    The image loaders' and the in-memory adapters' source; the regression loaders draw from a
    NumPy ``Generator`` instead (pass ``rng.permutation``). The two streams differ for the same
    seed, so each loader keeps the source it was published with: its splits stay the same.
    Neither touches the global RNG.
    """
    generator = torch.Generator().manual_seed(seed)
    return lambda n: torch.randperm(n, generator=generator)


def holdout_split(
    size: int,
    fraction: float,
    permutation: Permutation,
    *,
    strata: Tensor | None = None,
    min_rest: int = 0,
) -> tuple[Tensor, Tensor]:
    """Positions ``0..size-1`` split at random into sorted (rest, held_out) int64 index tensors.

    The one split helper of every loader (test and validation carving) and of the in-memory
    adapters. Deterministic for a given permutation source, independent of the global RNG.

    Args:
        size: number of examples.
        fraction: share held out, in (0, 1).
        permutation: the random source, e.g. ``torch_permutations(seed)`` or a NumPy
            ``Generator``'s ``rng.permutation``.
        strata: (size,) integer labels: split stratified — each class in ascending order
            draws its own permutation and holds out ``round(n_c * fraction)`` of its ``n_c``
            examples (none when the class is that small). Without: one permutation of all
            positions and ``round(size * fraction)`` held out, at least one and at most
            ``size - min_rest``.
        min_rest: examples the unstratified split always leaves in ``rest``.
    """
    if not 0.0 < fraction < 1.0:
        raise DataError(f"split fraction must lie in (0, 1); got {fraction}")
    if strata is None:
        order = torch.as_tensor(permutation(size))
        n_held = min(size - min_rest, max(1, round(size * fraction)))
        return order[n_held:].sort().values, order[:n_held].sort().values
    if strata.shape != (size,):
        raise ValueError(f"strata must have shape ({size},); got {tuple(strata.shape)}")
    rest, held = [], []
    for c in torch.unique(strata):
        idx = torch.nonzero(strata == c).flatten()
        idx = idx[torch.as_tensor(permutation(len(idx)))]
        n_held = round(len(idx) * fraction)
        held.append(idx[:n_held])
        rest.append(idx[n_held:])
    return torch.cat(rest).sort().values, torch.cat(held).sort().values


def stratified_split(labels: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Split indices into (rest, held_out) with ``fraction`` of every class held out.

    :func:`holdout_split` stratified by ``labels`` with ``torch_permutations(seed)``.
    Deterministic for a given seed, independent of the global RNG.
    """
    return holdout_split(len(labels), fraction, torch_permutations(seed), strata=labels)
