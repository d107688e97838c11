"""Distillation inputs: augmented views, mixup, and chains of inputs (``be+mixup+confods``)."""

import numpy as np
import pytest
import torch
from scipy import stats

from ensemble_distill import cli
from ensemble_distill.methods import input_names, resolve_method
from ensemble_distill.methods.perturbations import PerturbationState, augment, chain, mixup
from ensemble_distill.models import ModelSpec, create_model
from ensemble_distill.teachers import DeepEnsemble


def make_state(seed=0, **options):
    spec = ModelSpec("mlp", (3, 6, 6), 4, {"widths": [5]})
    teacher = DeepEnsemble([create_model(spec) for _ in range(2)]).eval()
    return PerturbationState(
        teacher, 0.01, 1.0, generator=torch.Generator().manual_seed(seed), **options
    )


def test_augment_is_a_shift_of_each_image_with_zero_fill():
    x = torch.rand(16, 1, 6, 6)
    views = augment(x, make_state(max_shift=2))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for view, image in zip(views, padded, strict=True):
        # Exactly one of the 5 × 5 crops of the zero-padded image.
        crops = [image[:, r : r + 6, c : c + 6] for r in range(5) for c in range(5)]
        assert any(torch.equal(view, crop) for crop in crops)
    assert not torch.equal(views, x)  # 16 images: some were shifted


def test_augment_flips_natural_images_left_right_about_half_the_time():
    x = torch.rand(400, 3, 6, 6)
    views = augment(x, make_state(max_shift=0))
    flipped = torch.tensor([torch.equal(v, i.flip(-1)) for v, i in zip(views, x, strict=True)])
    unchanged = torch.tensor([torch.equal(v, i) for v, i in zip(views, x, strict=True)])
    assert bool((flipped ^ unchanged).all())
    assert stats.binomtest(int(flipped.sum()), 400, 0.5).pvalue > 1e-3


def test_mixup_is_a_convex_combination_with_beta_weights():
    x = torch.rand(2000, 1, 2, 2, dtype=torch.float64)
    state = make_state(mixup_alpha=0.4)
    replay = torch.Generator().set_state(state.generator.get_state())
    mixed = mixup(x, state).double()
    # Replay the draws: λ from the seed, then the partner permutation.
    seed = int(torch.randint(2**62, (1,), generator=replay))
    lam = torch.from_numpy(np.random.default_rng(seed).beta(0.4, 0.4, len(x))).float().double()
    partner = torch.randperm(len(x), generator=replay)
    expected = lam.view(-1, 1, 1, 1) * x + (1 - lam.view(-1, 1, 1, 1)) * x[partner]
    torch.testing.assert_close(mixed, expected, rtol=0, atol=1e-6)
    # λ ~ Beta(0.4, 0.4): Kolmogorov–Smirnov against scipy's distribution.
    assert stats.kstest(lam.numpy(), stats.beta(0.4, 0.4).cdf).pvalue > 1e-3


def test_mixup_depends_only_on_its_own_random_stream():
    x = torch.rand(8, 1, 2, 2)
    torch.manual_seed(1)
    first = mixup(x, make_state(seed=3))
    torch.manual_seed(2)  # the global RNG must not matter (a resume restores the stream only)
    assert torch.equal(first, mixup(x, make_state(seed=3)))


def test_chain_applies_inputs_left_to_right():
    def add(value):
        return lambda x, state: x + value

    def double(x, state):
        return 2 * x

    x = torch.ones(2)
    assert torch.equal(chain([add(1), double])(x, None), torch.full((2,), 4.0))
    assert torch.equal(chain([double, add(1)])(x, None), torch.full((2,), 3.0))


def test_method_names_chain_inputs():
    method, perturbation = resolve_method("be+mixup+confods")
    assert method.section == "be" and perturbation is not None
    assert input_names("be+mixup+confods") == ["mixup", "confods"]
    assert resolve_method("kd")[1] is None
    assert input_names("latentbe") == ["diverse"]  # LatentBE's own default
    assert input_names("latentbe+ods") == ["ods"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["methods=[kd+augment]", "dataset=toy-gap"], "+augment needs images"),  # a table
        (["methods=[kd+diverse]"], "probes the student's members"),
        (["methods=[latentbe]", "members=1"], "compares two members"),  # its default input
        (["methods=[kd+mixup+mixup]"], "names an input twice"),
        (["methods=[kd+bogus]"], "bogus"),
    ],
)
def test_impossible_input_combinations_are_refused_before_writing(
    tmp_path, capsys, overrides, message
):
    out = tmp_path / "out"
    assert cli.main(["run", "--out", str(out), "--quiet", *overrides]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_regression_allows_mixup_but_not_probability_based_inputs(tmp_path, capsys):
    base = ["run", "--quiet", "dataset=toy-gap", "epochs=1", "members=2"]
    base += ["eval.latency_repeats=1", "model_args={widths: [8]}"]
    assert cli.main([*base, "--out", str(tmp_path / "a"), "methods=[kd+ods]"]) == 2
    assert "does not support regression" in capsys.readouterr().err
    assert cli.main([*base, "--out", str(tmp_path / "b"), "methods=[hydra+mixup]"]) == 0
