"""A pool of perturbed distillation inputs (``perturbation.pool``): built once, drawn from."""

import pytest
import torch

from ensemble_distill import cli
from ensemble_distill.config import build_config
from ensemble_distill.errors import ConfigError
from ensemble_distill.methods import METHODS, DistillContext, resolve_method
from ensemble_distill.methods.perturbations import (
    PerturbationConfig,
    PerturbationState,
    check_pool,
    pool_copies,
)
from ensemble_distill.models import ModelSpec, create_model
from ensemble_distill.settings import student_settings
from ensemble_distill.teachers import DeepEnsemble
from ensemble_distill.training import resolve_precision

SPEC = ModelSpec("mlp", (1, 4, 4), 3, {"widths": [8]})
CHAIN = "kd+mixup+gaussian"  # two inputs composed: both random, one per-batch pairing


def make_teacher():
    torch.manual_seed(0)
    return DeepEnsemble([create_model(SPEC) for _ in range(2)]).eval()


def make_context(splits, pool, name=CHAIN, seed=0, **overrides):
    config = build_config(
        {
            "members": 2,
            "epochs": 2,
            "batch_size": 16,
            "seed": seed,
            "student": {"epochs_multiple": 1, "schedule": None},
            "eval": {"batch_size": 25},  # the pool is built in eval batches: several here
            "perturbation": {"pool": pool, "eta": 0.05},
            **overrides,
        }
    )
    teacher = make_teacher()
    with torch.no_grad():
        cached = teacher(splits.train.x)
    _, perturbation = resolve_method(name)
    return DistillContext(splits, teacher, cached, config, torch.device("cpu"), True, perturbation)


def count_teacher_calls(teacher):
    """Replace the teacher's entry points by counting wrappers; returns the live count."""
    calls = {"n": 0}
    for entry in ("forward", "forward_member", "forward_members"):
        original = getattr(teacher, entry)

        def counted(*args, _original=original, **kwargs):
            calls["n"] += 1
            return _original(*args, **kwargs)

        setattr(teacher, entry, counted)
    return calls


def train_kd(context):
    method = METHODS.get("kd")
    options = method.options(context.config)
    torch.manual_seed(1)
    student = method.build(SPEC, 2, options, context.data.mean, context.data.std)
    method.train(student, context, options)
    return student


def test_pooled_training_never_runs_the_teacher(splits):
    pooled = make_context(splits, pool=3)
    calls = count_teacher_calls(pooled.teacher)
    train_kd(pooled)
    assert calls["n"] == 0
    live = make_context(splits, pool=0)
    live_calls = count_teacher_calls(live.teacher)
    train_kd(live)
    assert live_calls["n"] > 0  # the counter sees the live path's teacher passes


def test_pool_holds_the_chains_outputs_on_each_copy(splits):
    context = make_context(splits, pool=3)
    # Oracle: the same chain, a fresh stream of the same seed, the same eval batches.
    _, chain = resolve_method(CHAIN)
    state = PerturbationState(
        make_teacher(), 0.05, 1.0, torch.Generator().manual_seed(0), clip=True
    )
    x = splits.train.x
    expected = torch.cat(
        [chain(x[i : i + 25], state) for _ in range(3) for i in range(0, len(x), 25)]
    )
    torch.testing.assert_close(context.pool.inputs, expected, rtol=0, atol=0)
    assert not torch.equal(context.pool.inputs[: len(x)], context.pool.inputs[len(x) :][: len(x)])


def test_the_pool_computes_the_teachers_outputs_in_the_resolved_precision(splits):
    """``precision: auto`` builds the pool as ``fit`` runs a live step: in what it resolves to
    (bf16 on a CPU with native bf16, where fp32 outputs would differ from a live run's)."""
    resolved = resolve_precision("auto", "cpu")
    auto = make_context(splits, pool=2, precision="auto").pool.outputs
    torch.testing.assert_close(auto, make_context(splits, pool=2, precision=resolved).pool.outputs)


def test_a_pooled_batch_is_one_copy_of_each_example_with_the_teachers_outputs(splits):
    context = make_context(splits, pool=4, precision="fp32")
    index = torch.arange(16).unsqueeze(0)
    batch = context.batch(index)
    copies = context.pool.inputs.view(4, len(splits.train), 1, 4, 4)[:, :16]  # (K, 16, ...)
    matches = (copies == batch.x_distill.unsqueeze(0)).flatten(2).all(-1)  # (K, 16)
    assert matches.any(0).all()  # each row is one of its own example's copies
    assert len(set(matches.float().argmax(0).tolist())) > 1  # drawn per example, not per batch
    torch.testing.assert_close(batch.x, splits.train.x[:16])
    with torch.no_grad():
        torch.testing.assert_close(batch.teacher_outputs, context.teacher(batch.x_distill))


def test_the_draws_are_seeded(splits):
    index = torch.arange(16).unsqueeze(0)
    first, again = (make_context(splits, pool=3).batch(index) for _ in range(2))
    torch.testing.assert_close(first.x_distill, again.x_distill, rtol=0, atol=0)
    other = make_context(splits, pool=3, seed=5).batch(index)
    assert not torch.equal(first.x_distill, other.x_distill)


class Interrupted(Exception):
    """Stands in for a kill during training."""


def test_a_resumed_pooled_run_draws_what_an_uninterrupted_one_does(splits, tmp_path):
    whole = train_kd(make_context(splits, pool=3)).state_dict()
    context = make_context(splits, pool=3)
    context.progress_dir = tmp_path
    draw = context.batch
    steps = []

    def stop_in_epoch_two(index):
        if len(steps) == 6:  # 4 batches per epoch: in the middle of the second
            raise Interrupted
        steps.append(1)
        return draw(index)

    context.batch = stop_in_epoch_two
    with pytest.raises(Interrupted):
        train_kd(context)
    resumed = make_context(splits, pool=3)
    resumed.progress_dir = tmp_path
    for key, value in train_kd(resumed).state_dict().items():
        torch.testing.assert_close(value, whole[key], rtol=0, atol=0)


def test_check_pool_refuses_inputs_that_probe_the_student():
    with pytest.raises(ConfigError, match=r"perturbation.pool=2 cannot pool method 'latentbe'"):
        check_pool(PerturbationConfig(pool=2), {"latentbe": ["diverse"]}, 10, (1, 4, 4), (2, 3))
    check_pool(PerturbationConfig(pool=0), {"latentbe": ["diverse"]}, 10, (1, 4, 4), (2, 3))


def test_check_pool_refuses_a_pool_above_the_limit_in_gb():
    big = (3, 224, 224)  # 602 kB per float32 image: the 8 GiB limit is about 14,000 of them
    check_pool(PerturbationConfig(pool=2), {"kd+mixup": ["mixup"]}, 5000, big, (5, 10))
    with pytest.raises(ConfigError, match=r"would hold 9.6 GB .* above the 8.6 GB limit"):
        check_pool(PerturbationConfig(pool=4), {"kd+mixup": ["mixup"]}, 4000, big, (5, 10))
    check_pool(PerturbationConfig(pool=4), {"kd": []}, 4000, big, (5, 10))  # nothing to pool


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["methods=[latentbe]", "perturbation.pool=2"], "perturbation.pool=2 cannot pool"),
        (["methods=[kd+mixup]", "perturbation.pool=100000"], "GB"),
        (["perturbation.pool=-1"], "perturbation.pool"),
    ],
)
def test_impossible_pools_are_refused_before_writing(tmp_path, capsys, overrides, message):
    out = tmp_path / "out"
    assert cli.main(["run", "--out", str(out), "--quiet", *overrides]) == 2
    err = capsys.readouterr().err
    assert message in err and "perturbation.pool" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_the_pool_is_part_of_a_perturbed_students_fingerprint():
    live, pooled = (build_config({"perturbation": {"pool": k}}) for k in (0, 2))
    assert student_settings(pooled, "kd", True) != student_settings(live, "kd", True)
    assert student_settings(pooled, "kd", False) == student_settings(live, "kd", False)


@pytest.mark.parametrize(
    ("pool", "inputs", "examples", "copies"),
    [
        ("auto", ["mixup"], 10, 3),  # AUTO_POOL copies of what can be pooled
        ("auto", ["mixture"], 10, 3),
        ("auto", ["diverse"], 10, 0),  # probes the student: live
        ("auto", ["mixup"], 5000, 0),  # 3 copies of 5,000 big images pass 8 GiB: live
        ("auto", [], 10, 0),  # clean inputs: nothing to pool
        (2, ["mixup"], 10, 2),  # a count is taken as given
        (0, ["mixup"], 10, 0),
    ],
)
def test_pool_copies_decides_auto_per_method(pool, inputs, examples, copies):
    big = (3, 224, 224)  # 3 copies of 5,000 hold 9.0 GB with their outputs: above the limit
    shape = big if examples == 5000 else (1, 4, 4)
    assert pool_copies(PerturbationConfig(pool=pool), inputs, examples, shape, (5, 10)) == copies


def test_auto_pools_a_perturbed_method_and_runs_a_student_probe_live(splits):
    assert PerturbationConfig().pool == "auto"
    check_pool(PerturbationConfig(), {"latentbe": ["diverse"]}, 10, (1, 4, 4), (2, 3))  # no refusal
    # A context given ``auto`` undecided (not through the engine) runs live, as pool 0 does.
    assert make_context(splits, pool="auto").pool is None
