"""CIFAR-10-C corruptions (data/corruptions.py): the package's own output is the oracle."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest
import torch

from ensemble_distill.config import load_config
from ensemble_distill.data.corruptions import (
    CORRUPTIONS,
    INSTALL,
    SEEDED_BY_ARGUMENT,
    corrupt_batch,
    corrupt_image,
    image_seed,
    load_package,
    shift_data_problem,
)
from ensemble_distill.errors import ConfigError

imagecorruptions = pytest.importorskip("imagecorruptions")

# Draw fresh randomness on every call (the rest are deterministic functions of the image).
RANDOM = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "glass_blur", "snow")


def image(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A smooth-plus-noise uint8 test image (H, W, C)."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(40, 200, shape[0] * shape[1]).reshape(shape[0], shape[1], 1)
    noise = rng.integers(-30, 30, size=shape)
    return np.clip(ramp + noise, 0, 255).astype(np.uint8)


def test_the_names_are_the_packages():
    assert tuple(imagecorruptions.get_corruption_names("all")) == CORRUPTIONS


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_each_corruption_matches_the_package_on_a_32x32_rgb_image(name):
    picture, seed = image((32, 32, 3)), 1234
    extra = {"seed": seed} if name in SEEDED_BY_ARGUMENT else {}
    np.random.seed(seed)  # noqa: NPY002 - the package's own global state
    expected = imagecorruptions.corrupt(picture, corruption_name=name, severity=3, **extra)
    got = corrupt_image(picture, name, 3, seed)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("name", CORRUPTIONS)
@pytest.mark.parametrize("size", [8, 28])
def test_every_corruption_runs_on_small_grey_images_as_on_their_rgb_stack(name, size):
    grey = image((size, size, 1), seed=size)
    for severity in (1, 5):
        out = corrupt_image(grey, name, severity, seed=7)
        assert out.shape == grey.shape and out.dtype == np.uint8
        stacked = corrupt_image(np.repeat(grey, 3, axis=-1), name, severity, seed=7)
        np.testing.assert_array_equal(out[..., 0], stacked[..., 0])


def test_the_package_itself_refuses_images_under_32_pixels():
    # Why corrupt_image calls the functions directly: corrupt() refuses MNIST's 28 x 28.
    with pytest.raises(AttributeError, match="at least 32"):
        imagecorruptions.corrupt(image((28, 28, 3)), corruption_name="contrast", severity=1)


def test_a_colourless_corruption_of_grey_keeps_the_channels_equal():
    grey = np.repeat(image((32, 32, 1)), 3, axis=-1)
    out = corrupt_image(grey, "contrast", 4, seed=0)
    np.testing.assert_array_equal(out[..., 0], out[..., 1])
    assert not np.array_equal(out, grey)


@pytest.mark.parametrize("name", RANDOM)
def test_same_seed_same_copy_other_seed_other_copy(name):
    picture = image((32, 32, 3))
    first = corrupt_image(picture, name, 2, seed=5)
    np.testing.assert_array_equal(corrupt_image(picture, name, 2, seed=5), first)
    assert not np.array_equal(corrupt_image(picture, name, 2, seed=6), first)


def test_the_callers_random_state_is_restored():
    np.random.seed(99)  # noqa: NPY002
    expected = np.random.rand(3)  # noqa: NPY002
    np.random.seed(99)  # noqa: NPY002
    corrupt_image(image((32, 32, 3)), "gaussian_noise", 1, seed=0)
    np.testing.assert_array_equal(np.random.rand(3), expected)  # noqa: NPY002


def test_image_seeds_differ_by_corruption_severity_index_and_run_seed():
    base = image_seed(0, "gaussian_noise", 1, 0)
    others = [
        image_seed(1, "gaussian_noise", 1, 0),
        image_seed(0, "shot_noise", 1, 0),
        image_seed(0, "gaussian_noise", 2, 0),
        image_seed(0, "gaussian_noise", 1, 1),
    ]
    assert base == image_seed(0, "gaussian_noise", 1, 0) and base not in others
    assert all(0 <= s < 2**32 for s in [base, *others])


def test_a_batch_is_corrupted_the_same_whatever_the_batching():
    x = torch.rand(5, 1, 8, 8)
    whole = corrupt_batch(x, "gaussian_noise", 3, run_seed=2)
    parts = torch.cat(
        [
            corrupt_batch(x[:2], "gaussian_noise", 3, run_seed=2, start=0),
            corrupt_batch(x[2:], "gaussian_noise", 3, run_seed=2, start=2),
        ]
    )
    assert whole.shape == x.shape and whole.dtype == torch.float32
    assert float(whole.min()) >= 0 and float(whole.max()) <= 1
    torch.testing.assert_close(whole, parts, rtol=0, atol=0)
    assert not torch.equal(whole[0], whole[1])  # each image its own noise
    rounded = (x * 255).round() / 255
    assert float((whole - rounded).abs().max()) > 0.05  # it did corrupt


def test_a_missing_package_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "imagecorruptions", None)  # import raises ImportError
    with pytest.raises(ConfigError, match=re.escape(f"`{INSTALL}`")):
        load_package()
    with pytest.raises(ConfigError, match="ensemble-distill\\[shift\\]"):
        load_config(None, ["eval.corruptions=[contrast]"])
    assert load_config(None, []).eval.corruptions == []  # off by default: no import needed


def test_config_refuses_unknown_names_listing_the_known_ones():
    with pytest.raises(ConfigError, match=r"'eval.corruptions'.*\['rain'\].*gaussian_noise, shot"):
        load_config(None, ["eval.corruptions=[contrast, rain]"])
    with pytest.raises(ConfigError, match="each corruption once"):
        load_config(None, ["eval.corruptions=[contrast, contrast]"])


@pytest.mark.parametrize("severities", ["[0]", "[6]", "[]", "[1, 1]"])
def test_config_refuses_bad_severities(severities):
    with pytest.raises(ConfigError, match=r"eval\.severities"):
        load_config(None, [f"eval.severities={severities}"])


def test_config_accepts_names_and_severities():
    config = load_config(None, ["eval.corruptions=[fog, contrast]", "eval.severities=[2, 5]"])
    assert config.eval.corruptions == ["fog", "contrast"] and config.eval.severities == [2, 5]
    assert load_config(None, []).eval.severities == [1, 2, 3, 4, 5]


def test_only_grey_or_rgb_classification_images_can_be_shifted():
    assert shift_data_problem((1, 8, 8), "classification") is None
    assert shift_data_problem((3, 32, 32), "classification") is None
    assert "classification" in shift_data_problem((1, 8, 8), "regression")
    assert "1 or 3 channels" in shift_data_problem((2, 8, 8), "classification")
    assert "1 or 3 channels" in shift_data_problem((64,), "classification")
