"""Inputs off the data (issue 28): ``patchshuffle``, ``clean`` and ``mixture``."""

import numpy as np
import pytest
import torch

from ensemble_distill.config import build_config
from ensemble_distill.errors import ConfigError
from ensemble_distill.methods.perturbations import (
    PerturbationState,
    clean,
    expand_mixture,
    mixture,
    patch_shuffle,
)


def state(seed=0, patch=7, weights=None):
    return PerturbationState(
        None, 0.0, 1.0, torch.Generator().manual_seed(seed), patch=patch, mixture=weights or {}
    )


def tile_ids(height, width, p):
    """An image whose every whole p x p tile holds its own index; -1 past the last tile."""
    ids = np.full((height, width), -1.0)
    for r in range(height // p):
        for c in range(width // p):
            ids[r * p : (r + 1) * p, c * p : (c + 1) * p] = r * (width // p) + c
    return ids


def test_patch_shuffle_moves_whole_tiles_as_a_numpy_reference_does():
    height, width, p = 30, 23, 7  # a border past the last whole tile on both sides
    ids = tile_ids(height, width, p)
    pixels = np.random.default_rng(0).random((3, height, width))
    x = torch.from_numpy(np.stack([np.stack([ids, pixel]) for pixel in pixels])).float()
    out = patch_shuffle(x, state(patch=p)).numpy()
    cols = width // p
    for image in range(3):
        expected = pixels[image].copy()  # the border stays
        for target in range(ids.max().astype(int) + 1):
            r, c = divmod(target, cols)
            block = out[image, 0, r * p : (r + 1) * p, c * p : (c + 1) * p]
            source = int(block[0, 0])
            assert (block == source).all()  # a whole tile landed here
            sr, sc = divmod(source, cols)
            expected[r * p : (r + 1) * p, c * p : (c + 1) * p] = pixels[
                image, sr * p : (sr + 1) * p, sc * p : (sc + 1) * p
            ]
        np.testing.assert_array_equal(out[image, 1], expected.astype(np.float32))
    orders = {tuple(out[i, 0, ::p, ::p][: height // p, :cols].flatten()) for i in range(3)}
    assert len(orders) == 3  # every image has its own order
    assert sorted(out[0, 0].flatten()) == sorted(ids.astype(np.float32).flatten())


def test_patch_shuffle_is_seeded_and_keeps_at_least_four_tiles():
    x = torch.rand(4, 1, 8, 8)
    a, b = patch_shuffle(x, state(seed=3, patch=7)), patch_shuffle(x, state(seed=3, patch=7))
    assert torch.equal(a, b) and not torch.equal(a, x)  # p = 7 on 8 x 8 is cut to 4: 4 tiles


def test_clean_returns_the_inputs():
    x = torch.rand(3, 1, 4, 4)
    assert torch.equal(clean(x, state()), x)


def test_mixture_gives_each_input_its_share():
    x = torch.rand(4000, 1, 8, 8)
    out = mixture(x, state(patch=2, weights={"clean": 1.0, "patchshuffle": 3.0}))
    unchanged = (out == x).flatten(1).all(dim=1).float().mean().item()
    assert abs(unchanged - 0.25) < 0.03  # a shuffle that keeps every tile is 1 in 16!
    same_pixels = torch.equal(out.flatten(1).sort(dim=1).values, x.flatten(1).sort(dim=1).values)
    assert same_pixels  # both inputs only move pixels


def test_mixture_config_is_checked_and_expanded():
    config = build_config({"perturbation": {"mixture": {"clean": 1, "mixup": 0}}})
    assert expand_mixture(["mixture"], config.perturbation) == ["clean"]
    assert expand_mixture(["gaussian"], config.perturbation) == ["gaussian"]
    with pytest.raises(ConfigError, match=r"perturbation.mixture.diverse' must name one of"):
        build_config({"perturbation": {"mixture": {"diverse": 1}}})
    with pytest.raises(ConfigError, match=r"perturbation.mixture.mixup' must be a weight >= 0"):
        build_config({"perturbation": {"mixture": {"mixup": -1}}})
    with pytest.raises(ConfigError, match="needs a positive weight"):
        build_config({"perturbation": {"mixture": {"mixup": 0}}})


def test_patchshuffle_on_a_table_is_refused_before_training(tmp_path, capsys):
    from ensemble_distill.cli import main

    args = ["run", "--out", str(tmp_path / "o"), "dataset=toy-gap", "methods=[kd+mixture]"]
    assert main(args) == 2
    assert "+patchshuffle needs images" in capsys.readouterr().err
