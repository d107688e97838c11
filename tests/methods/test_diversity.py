import torch

from ensemble_distill.methods.diversity import diversity_analysis, perturbed_inputs
from ensemble_distill.models import ModelSpec, create_model
from ensemble_distill.teachers import DeepEnsemble

SPEC = ModelSpec("mlp", (1, 4, 4), 3, {"widths": [8]})


def test_analysis_structure_and_ratios(splits):
    torch.manual_seed(0)
    teacher = DeepEnsemble([create_model(SPEC) for _ in range(3)])
    result = diversity_analysis(
        teacher,
        splits.train.x,
        splits.train.y,
        splits.test.x,
        etas=[0.01, 0.1],
        perturbations=("gaussian", "ods"),
        num_bins=4,
    )
    assert set(result["perturbed"]) == {"gaussian", "ods"}
    for name in ("gaussian", "ods"):
        for eta in ("0.01", "0.1"):
            bins = result["perturbed"][name][eta]
            assert sum(bins["counts"]) == len(splits.train)
            ratio = result["ratio_to_clean_train"][name][eta]
            assert ratio == bins["mean"] / result["clean_train"]["mean"]
    assert result["clean_test"]["mean"] > 0
    member_accuracy = [
        (teacher.forward_member(splits.train.x, m).argmax(-1) == splits.train.y).double().mean()
        for m in range(3)
    ]
    assert abs(result["member_train_accuracy"] - sum(member_accuracy).item() / 3) < 1e-9


def test_perturbed_inputs_are_reproducible_and_stay_in_range(splits):
    teacher = DeepEnsemble([create_model(SPEC) for _ in range(2)])
    a = perturbed_inputs(teacher, splits.train.x, "confods", 0.05, seed=1)
    b = perturbed_inputs(teacher, splits.train.x, "confods", 0.05, seed=1)
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 1
    assert not torch.equal(a, splits.train.x)
